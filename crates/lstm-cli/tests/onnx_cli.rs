//! `lstm run`, `lstm inspect` and `lstm convert` on ONNX models: every fixture of
//! `tools/gen_onnx_fixtures.py` through the binary on every engine that runs its options (the
//! default engine included), against onnxruntime within `2e-5 + 1e-4·|ref|`; the broken
//! files each give one error line, a non-zero exit and no output file.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lstm::Tensor;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/onnx")
}

fn lstm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lstm"))
        .args(args)
        .output()
        .unwrap()
}

fn read(path: &Path) -> Tensor<f32> {
    lstm::io::read_npy(path)
        .unwrap()
        .into_f32_tensor("npy")
        .unwrap()
}

fn one_error_line(out: &Output) -> String {
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn run_matches_onnxruntime_on_every_fixture() {
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for case in manifest.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let dir = fixtures().join(name);
        let inputs: Vec<&str> = case["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for engine in [None, Some("naive"), Some("simd"), Some("parallel")] {
            let (y, hn, cn) = (
                tmp.path().join("y.npy"),
                tmp.path().join("hn.npy"),
                tmp.path().join("cn.npy"),
            );
            for p in [&y, &hn, &cn] {
                let _ = std::fs::remove_file(p);
            }
            let model = dir.join("model.onnx");
            let x = dir.join("x.npy");
            let mut args: Vec<String> =
                vec!["run".into(), "--model".into(), model.display().to_string()];
            args.extend(["--input".into(), x.display().to_string()]);
            args.extend(["--output".into(), y.display().to_string()]);
            args.extend(["--hn".into(), hn.display().to_string()]);
            args.extend(["--cn".into(), cn.display().to_string()]);
            for (flag, file) in [("--h0", "h0"), ("--c0", "c0"), ("--lengths", "lens")] {
                if inputs.contains(&file) {
                    args.extend([
                        flag.into(),
                        dir.join(format!("{file}.npy")).display().to_string(),
                    ]);
                }
            }
            if let Some(e) = engine {
                args.extend(["--engine".into(), e.into()]);
            }
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            // Every engine, the default included, runs ONNX's cell options.
            let out = lstm(&argv);
            assert!(
                out.status.success(),
                "{name} {engine:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            for (got, want) in [(&y, "y"), (&hn, "y_h"), (&cn, "y_c")] {
                let (got, want) = (read(got), read(&dir.join(format!("{want}.npy"))));
                assert_eq!(got.shape(), want.shape(), "{name} {engine:?}");
                for (k, (&g, &w)) in got.data().iter().zip(want.data()).enumerate() {
                    assert!(
                        (g - w).abs() <= 2e-5 + 1e-4 * w.abs(),
                        "{name} {engine:?} [{k}]: {g} vs {w}"
                    );
                }
            }
        }
    }
}

#[test]
fn broken_files_give_one_error_line_and_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let x = fixtures().join("forward/x.npy");
    let broken = fixtures().join("broken");
    for entry in std::fs::read_dir(&broken).unwrap() {
        let model = entry.unwrap().path();
        if model.extension().is_none_or(|e| e != "onnx") {
            continue;
        }
        let y = tmp.path().join("y.npy");
        let out = lstm(&[
            "run",
            "--model",
            model.to_str().unwrap(),
            "--input",
            x.to_str().unwrap(),
            "--output",
            y.to_str().unwrap(),
        ]);
        let err = one_error_line(&out);
        assert!(err.contains("--model"), "{}: {err}", model.display());
        assert!(!y.exists());
        let converted = tmp.path().join("c.safetensors");
        let out = lstm(&[
            "convert",
            "--model",
            model.to_str().unwrap(),
            "--output",
            converted.to_str().unwrap(),
        ]);
        one_error_line(&out);
        assert!(!converted.exists());
        let out = lstm(&["inspect", "--model", model.to_str().unwrap()]);
        // A file that decodes lists its nodes with why they do not load; the others fail.
        if !out.status.success() {
            one_error_line(&out);
        } else {
            let text = String::from_utf8(out.stdout).unwrap();
            assert!(text.contains("loads:       no: "), "{text}");
        }
    }
}

#[test]
fn inspect_lists_nodes_and_picks_one() {
    let model = fixtures().join("torch_2layer/model.onnx");
    let out = lstm(&["inspect", "--model", model.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("2 LSTM node(s)") && text.contains("layer 1 of the LSTM"),
        "{text}"
    );
    let out = lstm(&["inspect", "--model", model.to_str().unwrap(), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(json["nodes"][0]["hidden_size"], 5);
    let out = lstm(&[
        "inspect",
        "--model",
        model.to_str().unwrap(),
        "--node",
        "nope",
    ]);
    let err = one_error_line(&out);
    assert!(
        err.contains("no LSTM node named `nope`") && err.contains("/LSTM"),
        "{err}"
    );
    let nested = fixtures().join("lstm_cell_nested_if/model.onnx");
    let out = lstm(&["inspect", "--model", nested.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("main/If_0.then_branch/If_1.then_branch"),
        "{text}"
    );
}

#[test]
fn convert_writes_a_pytorch_state_dict_or_refuses_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let out_path = tmp.path().join("m.safetensors");
    let model = fixtures().join("torch_2layer_bidirectional/model.onnx");
    let out = lstm(&[
        "convert",
        "--model",
        model.to_str().unwrap(),
        "--output",
        out_path.to_str().unwrap(),
        "--output-prefix",
        "rnn",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let onnx = lstm::Model::load(&model).unwrap();
    let st = lstm::Model::load(&out_path).unwrap();
    assert_eq!(st.prefix(), "rnn.");
    assert_eq!(st.weights(), onnx.weights());
    assert_eq!(st.tensors()[0].name, "rnn.weight_ih_l0");
    for (case, reason) in [
        ("peepholes", "peepholes"),
        ("clip", "clip=0.7"),
        ("input_forget", "input_forget"),
        ("reverse", "reverse-only"),
    ] {
        let target = tmp.path().join(format!("{case}.safetensors"));
        let m = fixtures().join(case).join("model.onnx");
        let out = lstm(&[
            "convert",
            "--model",
            m.to_str().unwrap(),
            "--output",
            target.to_str().unwrap(),
        ]);
        let err = one_error_line(&out);
        assert!(err.contains(reason) && err.contains("nn.LSTM"), "{err}");
        assert!(!target.exists());
    }
    // An nn.LSTMCell state_dict converts to nn.LSTM names.
    let cell = fixtures().join("lstm_cell_nested_if/cell.safetensors");
    let target = tmp.path().join("cell_as_lstm.safetensors");
    let out = lstm(&[
        "convert",
        "--model",
        cell.to_str().unwrap(),
        "--output",
        target.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert_eq!(
        lstm::Model::load(&target).unwrap().tensors()[0].name,
        "weight_ih_l0"
    );
}

/// Weights a graph takes as inputs (as ONNX's own node tests feed them) run when bound.
#[test]
fn bound_inputs_become_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let y = tmp.path().join("y.npy");
    let model = fixtures().join("broken/dynamic_weights.onnx");
    let w = fixtures().join("broken/dynamic_weights_W.npy");
    let x = fixtures().join("forward/x.npy");
    let bind = format!("W={}", w.display());
    let out = lstm(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--input",
        x.to_str().unwrap(),
        "--output",
        y.to_str().unwrap(),
        "--bind",
        &bind,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (got, want) = (read(&y), read(&fixtures().join("forward/y.npy")));
    assert_eq!(got.shape(), want.shape());
    for (&g, &w) in got.data().iter().zip(want.data()) {
        assert!((g - w).abs() <= 2e-5 + 1e-4 * w.abs());
    }
    let out = lstm(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--input",
        x.to_str().unwrap(),
        "--output",
        y.to_str().unwrap(),
        "--bind",
        &format!("Q={}", w.display()),
    ]);
    let err = one_error_line(&out);
    assert!(err.contains("no input of that name"), "{err}");
}

/// `--precision` reaches ONNX models too: bf16 and int8 move the outputs off the f32 run's
/// (the flag is not ignored) while staying within the reduced precisions' few 1e-3 of
/// onnxruntime on these small models (a loose 3e-2 here; the contract is lstm-validate's).
#[test]
fn onnx_models_run_at_reduced_precision() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["forward", "peepholes", "bidirectional"] {
        let dir = fixtures().join(name);
        let (model, x) = (dir.join("model.onnx"), dir.join("x.npy"));
        let want = read(&dir.join("y.npy"));
        let run = |precision: &str, engine: &str| {
            let y = tmp.path().join(format!("y_{precision}_{engine}.npy"));
            let out = lstm(&[
                "run",
                "--model",
                model.to_str().unwrap(),
                "--input",
                x.to_str().unwrap(),
                "--output",
                y.to_str().unwrap(),
                "--precision",
                precision,
                "--engine",
                engine,
            ]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            read(&y)
        };
        for engine in ["simd", "parallel"] {
            let exact = run("f32", engine);
            for precision in ["bf16", "int8"] {
                let got = run(precision, engine);
                assert_ne!(got.data(), exact.data(), "{name} {precision} {engine}");
                let worst = got
                    .data()
                    .iter()
                    .zip(want.data())
                    .map(|(g, w)| (g - w).abs())
                    .fold(0.0, f32::max);
                assert!(worst <= 3e-2, "{name} {precision} {engine}: {worst}");
            }
        }
    }
}
