//! The pretrained streaming voice-activity detector shipped in the `silero-vad` pip package:
//! its LSTM nodes sit inside nested `If` branches, their weights built from Constants by
//! Slice/Concat/Unsqueeze. One node is compared with onnxruntime on the expected outputs of
//! `tools/gen_silero_check.py` (`fixtures/onnx-silero/`); every LSTM node of every `.onnx`
//! file of the package must load.
//!
//! The model is not committed: the test finds the package through `$SILERO_VAD_DIR` (its
//! `data/` folder) or `python3 -c "import silero_vad"`, and skips with a note when absent.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use lstm_core::io::read_npy;
use lstm_core::{LstmEngine, Tensor};
use lstm_naive::NaiveEngine;
use lstm_onnx::{load_onnx, parse_onnx};
use lstm_parallel::ParallelEngine;
use lstm_simd::{Backend, SimdEngine};

fn package_data() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SILERO_VAD_DIR") {
        return Some(PathBuf::from(dir));
    }
    let out = Command::new("python3")
        .args([
            "-c",
            // find_spec locates the package without importing it (and torch with it).
            "import os, importlib.util as u; s = u.find_spec('silero_vad'); \
             print(os.path.join(os.path.dirname(s.origin), 'data') if s else '')",
        ])
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (out.status.success() && dir.is_dir()).then_some(dir)
}

fn fixture(name: &str) -> Tensor<f32> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/onnx-silero");
    read_npy(&dir.join(format!("{name}.npy")))
        .unwrap()
        .into_f32_tensor(name)
        .unwrap()
}

#[test]
fn silero_vad_lstm_matches_onnxruntime() {
    let Some(data) = package_data() else {
        eprintln!("note: the silero-vad package is not installed; test skipped");
        return;
    };
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/onnx-silero/info.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let bytes = std::fs::read(data.join("silero_vad.onnx")).unwrap();
    let file = parse_onnx(&bytes).unwrap();
    assert_eq!(file.nodes().len(), 4);
    assert!(file.nodes().iter().all(|n| n.problem.is_none()));
    let node = info["node"].as_str().unwrap();
    let lstm = load_onnx(&bytes, Some(node)).unwrap();
    assert_eq!(lstm.path(), info["path"].as_str().unwrap());
    let (x, h0, c0) = (fixture("x"), fixture("h0"), fixture("c0"));
    let mut engines: Vec<(String, Box<dyn LstmEngine<f32>>)> = vec![(
        "naive".into(),
        Box::new(NaiveEngine::new(lstm.weights().clone()).unwrap()),
    )];
    for backend in Backend::all().into_iter().filter(|b| b.is_supported()) {
        engines.push((
            format!("simd/{backend}"),
            Box::new(SimdEngine::with_backend(lstm.weights(), backend).unwrap()),
        ));
        engines.push((
            format!("parallel/{backend}"),
            Box::new(ParallelEngine::with_backend(lstm.weights(), backend, 2).unwrap()),
        ));
    }
    for (name, engine) in &engines {
        let out = lstm
            .run(engine.as_ref(), &x, Some((&h0, &c0)), None)
            .unwrap();
        for (what, got, want) in [
            ("Y", &out.y, fixture("y")),
            ("Y_h", &out.y_h, fixture("y_h")),
            ("Y_c", &out.y_c, fixture("y_c")),
        ] {
            assert_eq!(got.shape(), want.shape());
            for (k, (&g, &w)) in got.data().iter().zip(want.data()).enumerate() {
                assert!(
                    (g - w).abs() <= 2e-5 + 1e-4 * w.abs(),
                    "{name} {what}[{k}]: {g} vs {w}"
                );
            }
        }
    }
}

#[test]
fn every_lstm_node_of_the_package_loads() {
    let Some(data) = package_data() else {
        eprintln!("note: the silero-vad package is not installed; test skipped");
        return;
    };
    let mut seen = 0;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "onnx") {
            continue;
        }
        let file = parse_onnx(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for node in file.nodes() {
            assert_eq!(node.problem, None, "{}: {}", path.display(), node.name);
            assert_eq!(node.hidden_size, Some(128));
            seen += 1;
        }
    }
    assert!(seen >= 4, "{seen} LSTM nodes");
}
