//! Every PyTorch fixture (`fixtures/pytorch/`, written by `tools/gen_fixtures.py`) run through
//! the `lstm run` command line exactly as a script would call it, for every engine, compared
//! element by element with PyTorch float64 within the case's tolerance
//! (max(2e-5, 4 × PyTorch f32's own error)).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use lstm::{io, EngineKind, Tensor};
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/pytorch")
}

fn read_f64(path: &Path) -> Tensor<f64> {
    io::read_npy(path)
        .unwrap()
        .into_f64_tensor("fixture")
        .unwrap()
}

fn run_case(case: &Value, engine: EngineKind, out: &Path) {
    let name = case["name"].as_str().unwrap();
    let dir = fixtures_dir().join(name);
    let file = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let target = |f: &str| {
        out.join(format!("{name}.{f}"))
            .to_string_lossy()
            .into_owned()
    };

    let mut args: Vec<String> = [
        "run",
        "--model",
        &file("model.safetensors"),
        "--input",
        &file("input.npy"),
    ]
    .map(String::from)
    .to_vec();
    args.extend(
        [
            "--output",
            &target("output.npy"),
            "--hn",
            &target("hn.npy"),
            "--cn",
            &target("cn.npy"),
        ]
        .map(String::from),
    );
    args.extend(["--engine".to_string(), engine.name().to_string()]);
    if engine == EngineKind::Parallel {
        args.extend(["--threads".to_string(), "2".to_string()]);
    }
    if case["has_state"].as_bool().unwrap() {
        args.extend(["--h0", &file("h0.npy"), "--c0", &file("c0.npy")].map(String::from));
    }
    if case["has_lengths"].as_bool().unwrap() {
        args.extend(["--lengths".to_string(), file("lengths.npy")]);
    }
    if let Some(n) = case["total_length"].as_u64() {
        args.extend(["--total-length".to_string(), n.to_string()]);
    }
    if case["config"]["batch_first"].as_bool().unwrap() {
        args.push("--batch-first".to_string());
    }
    let prefix = case["prefix"].as_str().unwrap();
    if !prefix.is_empty() {
        args.extend(["--prefix".to_string(), prefix.to_string()]);
    }

    let result = Command::new(env!("CARGO_BIN_EXE_lstm"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{name}: lstm {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&result.stderr)
    );

    for (produced, expected, key) in [
        ("output.npy", "expected_output.npy", "output"),
        ("hn.npy", "expected_hn.npy", "h_n"),
        ("cn.npy", "expected_cn.npy", "c_n"),
    ] {
        let got = io::read_npy(Path::new(&target(produced))).unwrap();
        assert!(
            matches!(got.data, io::NpyData::F32(_)),
            "{name}: {produced} must be f32"
        );
        let got = got.into_f64_tensor(produced).unwrap();
        let want = read_f64(&dir.join(expected));
        assert_eq!(got.shape(), want.shape(), "{name}: {key} shape");
        let tol = case["tolerance"][key].as_f64().unwrap();
        for (i, (g, w)) in got.data().iter().zip(want.data()).enumerate() {
            assert!(
                (g - w).abs() <= tol,
                "{name} ({engine}): {key}[{i}] = {g}, PyTorch f64 {w}, tolerance {tol:e}"
            );
        }
    }
}

#[test]
fn every_fixture_through_lstm_run() {
    let text = std::fs::read_to_string(fixtures_dir().join("manifest.json")).unwrap();
    let manifest: Value = serde_json::from_str(&text).unwrap();
    let cases = manifest["cases"].as_array().unwrap();
    assert!(
        cases.len() >= 20,
        "expected the full fixture set, found {}",
        cases.len()
    );
    let out = tempfile::tempdir().unwrap();
    for &engine in EngineKind::ALL {
        for case in cases {
            run_case(case, engine, out.path());
        }
    }
}
