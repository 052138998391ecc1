//! Every committed fuzz input (`fuzz/corpus/<target>/*`) replayed through the target's body
//! (`lstm_validate::fuzz`), so that stable-Rust CI checks what the fuzzer checks and every
//! regression input stays fixed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use lstm_validate::fuzz::TARGETS;
use lstm_validate::note;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// The corpus files of `target` (hidden files, libFuzzer's by-products, skipped), sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fuzz corpus {} unreadable: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let Some((_, run)) = TARGETS.iter().find(|(name, _)| *name == target) else {
        panic!("no fuzz target `{target}` in lstm_validate::fuzz::TARGETS");
    };
    let files = inputs(target);
    assert!(!files.is_empty(), "fuzz corpus of `{target}` is empty");
    let mut failures = Vec::new();
    for path in &files {
        let data =
            std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        match catch_unwind(AssertUnwindSafe(|| run(&data))) {
            Ok(Ok(())) => {}
            Ok(Err(finding)) => failures.push(format!("{}: {finding}", path.display())),
            Err(_) => failures.push(format!("{}: panicked (message above)", path.display())),
        }
    }
    note(&format!(
        "fuzz corpus `{target}`: {} inputs replayed",
        files.len()
    ));
    assert!(
        failures.is_empty(),
        "{} of {} inputs of `{target}` fail:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn safetensors_loader_corpus() {
    replay("safetensors_loader");
}

#[test]
fn npy_reader_corpus() {
    replay("npy_reader");
}

#[test]
fn differential_corpus() {
    replay("differential");
}

#[test]
fn onnx_loader_corpus() {
    replay("onnx_loader");
}

/// Every target has a corpus directory and a replay test above.
#[test]
fn every_target_has_a_corpus() {
    for (name, _) in TARGETS {
        assert!(corpus_dir(name).is_dir(), "no fuzz/corpus/{name}/");
    }
    let source = include_str!("fuzz_corpus.rs");
    for (name, _) in TARGETS {
        assert!(
            source.contains(&format!("replay(\"{name}\")")),
            "no replay test for `{name}`"
        );
    }
}
