//! Every committed fuzz corpus file, replayed through its target's invariant check on
//! stable Rust: the seeds, and every input a fuzzing run once found failing, stay checked on
//! each `cargo test` without a fuzzer.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use otpgate::fuzz_checks::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_file_keeps_its_targets_invariants() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (target, check) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(target));
        assert!(
            corpus.len() >= 5,
            "{target}: only {} seed files",
            corpus.len()
        );
        for path in corpus {
            let data = std::fs::read(&path).unwrap();
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&data))) {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failures.push(format!("{}: {message}", path.display()));
            }
            replayed += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {replayed} corpus files break an invariant:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Each check has its libFuzzer target and its corpus, and nothing else is there.
#[test]
fn targets_checks_and_corpora_match() {
    let names: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    let stems = |dir: &str| -> Vec<String> {
        let mut stems: Vec<String> = std::fs::read_dir(fuzz_dir().join(dir))
            .unwrap()
            .map(|entry| {
                let path = entry.unwrap().path();
                path.file_stem().unwrap().to_string_lossy().into_owned()
            })
            .collect();
        stems.sort();
        stems
    };
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(stems("fuzz_targets"), sorted);
    assert_eq!(stems("corpus"), sorted);
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for name in names {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
        let source =
            std::fs::read_to_string(fuzz_dir().join("fuzz_targets").join(format!("{name}.rs")))
                .unwrap();
        assert!(
            source.contains(&format!("fuzz_checks::{name}(")),
            "fuzz/fuzz_targets/{name}.rs does not call fuzz_checks::{name}"
        );
    }
}
