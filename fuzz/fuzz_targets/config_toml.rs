//! A TOML configuration: loading and check-config --print.
//! The invariants: `otpgate::fuzz_checks::config_toml`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| otpgate::fuzz_checks::config_toml(data));
