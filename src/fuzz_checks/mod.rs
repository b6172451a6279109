//! The invariants the fuzz targets check, one public function per target, each taking the
//! fuzzer's raw bytes and panicking with a message naming the broken invariant.
//!
//! They live in the library so that `fuzz/` holds only thin libFuzzer wrappers, and so that
//! `tests/it/fuzz_corpus.rs` can replay every committed corpus file through the same checks on
//! stable Rust. `FUZZING.md` lists the invariants and how to reproduce a failure.
//!
//! Inputs are text where the target reads text: a corpus file is readable and a
//! dictionary word is a real token of the input language. Bytes a check cannot use (invalid
//! UTF-8 where the code under test takes `&str`) are skipped, not reported.

mod classify;
mod config;
mod human;
mod learn;
mod params;
mod phone;

pub use classify::classify_path;
pub use config::config_toml;
pub use human::human_token;
pub use learn::learn_response;
pub use params::form_params;
pub use phone::phone_target;

/// A target's check: panics when `data` breaks an invariant.
pub type Check = fn(data: &[u8]);

/// Every target: its name (as in `fuzz/fuzz_targets/` and `fuzz/corpus/`) and its check.
pub const TARGETS: [(&str, Check); 6] = [
    ("classify_path", classify_path),
    ("form_params", form_params),
    ("learn_response", learn_response),
    ("human_token", human_token),
    ("phone_target", phone_target),
    ("config_toml", config_toml),
];

/// Report a broken invariant. Panicking is the point: libFuzzer records the input that made
/// a target panic, and the corpus test fails with this message.
#[allow(clippy::panic)]
#[cold]
#[track_caller]
fn violated(message: std::fmt::Arguments<'_>) -> ! {
    panic!("invariant violated: {message}")
}

/// `ensure!(condition, "format", args…)`: [`violated`] unless `condition` holds.
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            $crate::fuzz_checks::violated(format_args!($($message)+));
        }
    };
}
use ensure;

/// Split `data` at its first newline when the first line is a header the target reads
/// (`?query`, `kind status`, …): `(Some(header), rest)`, else `(None, data)`.
fn header_line(data: &[u8], is_header: impl Fn(&[u8]) -> bool) -> (Option<&[u8]>, &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(at) if is_header(&data[..at]) => (Some(&data[..at]), &data[at + 1..]),
        _ => (None, data),
    }
}
