//! End-to-end tests of `lstm grad`: every PyTorch autograd fixture (`fixtures/pytorch-grad/`)
//! through the command line, compared with float64 autograd within the case's tolerance; the
//! files compared bitwise with the library; and broken inputs (one error line, non-zero exit,
//! no file left behind).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lstm::{
    io, EngineKind, GradOutputs, LstmBackward, LstmConfig, LstmState, LstmWeights, Model,
    NaiveEngine, SimdEngine, Tensor, TrainingTape,
};
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/pytorch-grad")
}

fn lstm_in(dir: &Path, args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lstm"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap()
}

fn read_f32(path: &Path) -> Tensor<f32> {
    io::read_npy(path).unwrap().into_f32_tensor("t").unwrap()
}

fn read_f64(path: &Path) -> Tensor<f64> {
    io::read_npy(path).unwrap().into_f64_tensor("t").unwrap()
}

/// The names and dtypes in a safetensors file's header.
fn header(path: &Path) -> Vec<(String, String)> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut v: Vec<(String, String)> = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, info)| (k.clone(), info["dtype"].as_str().unwrap().to_string()))
        .collect();
    v.sort();
    v
}

fn assert_close(case: &str, what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{case}: {what}: element count");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs();
        assert!(
            err <= tol,
            "{case}: {what}[{i}] = {g}, PyTorch f64 autograd gives {w} (error {err:e} > {tol:e})"
        );
    }
}

/// Runs one fixture through `lstm grad` (the default engine, or `--engine` `engine`) with every
/// optional output, and compares.
fn run_fixture(case: &Value, out: &Path, engine: Option<&str>) {
    let name = case["name"].as_str().unwrap();
    let dir = fixtures_dir().join(name);
    let file = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let target = |f: &str| out.join(format!("{name}.{f}"));
    let mut args: Vec<String> = vec![
        "grad".into(),
        "--model".into(),
        file("model.safetensors"),
        "--input".into(),
        file("input.npy"),
        "--grad-output".into(),
        file("grad_output.npy"),
        "--grad-weights".into(),
        target("gw.safetensors").to_string_lossy().into_owned(),
    ];
    for (flag, f) in [
        ("--grad-input", "gx.npy"),
        ("--grad-h0", "gh0.npy"),
        ("--grad-c0", "gc0.npy"),
    ] {
        args.extend([flag.to_string(), target(f).to_string_lossy().into_owned()]);
    }
    if case["has_final_grads"].as_bool().unwrap() {
        args.extend(["--grad-hn".into(), file("grad_hn.npy")]);
        args.extend(["--grad-cn".into(), file("grad_cn.npy")]);
    }
    if case["has_state"].as_bool().unwrap() {
        args.extend(["--h0".into(), file("h0.npy"), "--c0".into(), file("c0.npy")]);
    }
    if case["has_lengths"].as_bool().unwrap() {
        args.extend(["--lengths".into(), file("lengths.npy")]);
    }
    if case["config"]["batch_first"].as_bool().unwrap() {
        args.push("--batch-first".into());
    }
    if let Some(engine) = engine {
        args.extend(["--engine".into(), engine.into()]);
    }
    let result = lstm_in(out, &args);
    assert!(
        result.status.success(),
        "{name}: lstm grad failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );

    let tol = &case["tolerance"];
    for (what, f, expected) in [
        ("grad_input", "gx.npy", "expected_grad_input.npy"),
        ("grad_h0", "gh0.npy", "expected_grad_h0.npy"),
        ("grad_c0", "gc0.npy", "expected_grad_c0.npy"),
    ] {
        let (got, want) = (read_f32(&target(f)), read_f64(&dir.join(expected)));
        assert_eq!(got.shape(), want.shape(), "{name}: {what} shape");
        assert_close(
            name,
            what,
            got.data(),
            want.data(),
            tol[what].as_f64().unwrap(),
        );
    }

    // The gradient file: F32 tensors named exactly like the model's LSTM tensors.
    let gw = target("gw.safetensors");
    let prefix = case["prefix"].as_str().unwrap();
    let want_path = dir.join("expected_grad_weights.safetensors");
    let names: Vec<(String, String)> = header(&want_path)
        .into_iter()
        .map(|(n, _)| (n, "F32".to_string()))
        .collect();
    assert_eq!(header(&gw), names, "{name}: tensor names and dtypes");
    let got = io::load_safetensors(&gw, Some(prefix)).unwrap();
    // F64 expected values, read as f32 (7 significant digits, far below the tolerances).
    let want = io::load_safetensors(&want_path, Some(prefix)).unwrap();
    let want_named = want.weights.named_tensors();
    for ((n, shape, data), (wn, wshape, wdata)) in
        got.weights.named_tensors().iter().zip(&want_named)
    {
        assert_eq!((n, shape), (wn, wshape), "{name}");
        let full = format!("{prefix}{n}");
        let t = tol["params"][&full].as_f64().unwrap();
        let w: Vec<f64> = wdata.iter().map(|&v| f64::from(v)).collect();
        // The f32 rounding of the expected value adds at most ½ ulp of it.
        let slack = w.iter().fold(0.0f64, |m, v| m.max(v.abs())) * 6e-8;
        assert_close(name, &full, data, &w, t + slack);
    }
}

#[test]
fn every_grad_fixture_through_the_command_line() {
    let text = std::fs::read_to_string(fixtures_dir().join("manifest.json")).unwrap();
    let manifest: Value = serde_json::from_str(&text).unwrap();
    let cases = manifest["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let out = tempfile::tempdir().unwrap();
    // The default engine (simd), the reference, and the parallel runner (whose training
    // runs the SIMD engine's code, so it must match just as well).
    for engine in [None, Some("naive"), Some("parallel")] {
        for case in cases {
            run_fixture(case, out.path(), engine);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Against the library, and broken inputs
// ---------------------------------------------------------------------------------------------

/// A temporary working directory holding a small model and call; the binary runs inside it.
struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    /// A 2-layer bidirectional projected model saved under `rnn.`, an input [5, 2, 3], states,
    /// lengths and upstream gradients.
    fn new() -> Self {
        let d = Dir {
            tmp: tempfile::tempdir().unwrap(),
        };
        let config = LstmConfig::new(3, 4)
            .with_num_layers(2)
            .with_bidirectional(true)
            .with_proj_size(2);
        let weights = LstmWeights::random(config, 7).unwrap();
        io::save_safetensors(&d.path("m.safetensors"), &weights, "rnn.").unwrap();
        d.npy("x.npy", &[5, 2, 3], 1);
        d.npy("gy.npy", &[5, 2, 4], 2);
        d.npy("h0.npy", &[4, 2, 2], 3);
        d.npy("c0.npy", &[4, 2, 4], 4);
        d.npy("ghn.npy", &[4, 2, 2], 5);
        d.npy("gcn.npy", &[4, 2, 4], 6);
        d.npy("bad_gy.npy", &[5, 2, 3], 7);
        d.write("lengths.npy", &npy_i64(&[5, 2]));
        d
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn npy(&self, name: &str, shape: &[usize], seed: u64) -> Tensor<f32> {
        let n = shape.iter().product();
        let data = lstm::engine::SplitMix64::new(seed).fill_f32(n, 1.0);
        let t = Tensor::new(shape.to_vec(), data).unwrap();
        io::write_npy_f32(&self.path(name), &t).unwrap();
        t
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.path(name), bytes).unwrap();
    }

    fn files(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn lstm(&self, args: &[&str]) -> Output {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        lstm_in(self.tmp.path(), &args)
    }

    fn ok(&self, args: &[&str]) {
        let out = self.lstm(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "lstm {args:?} failed: {stderr}");
        assert!(stderr.is_empty() && out.stdout.is_empty(), "{stderr}");
    }

    /// Asserts a clean failure: exit `code`, one `error:` line containing every word, no
    /// panic, and the directory exactly as before.
    fn fails(&self, args: &[&str], code: i32, words: &[&str]) -> String {
        let before = self.files();
        let out = self.lstm(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "lstm {args:?}: {stderr:?}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            stderr.ends_with('\n') && stderr.matches('\n').count() == 1,
            "lstm {args:?}: expected one line, got {stderr:?}"
        );
        let line = stderr.trim_end().to_string();
        assert!(line.starts_with("error: "), "{line}");
        for word in words {
            assert!(line.contains(word), "{line:?} does not mention {word:?}");
        }
        assert!(out.stdout.is_empty());
        assert_eq!(self.files(), before, "lstm {args:?} left files behind");
        line
    }
}

fn npy_i64(values: &[i64]) -> Vec<u8> {
    let mut header = format!(
        "{{'descr': '<i8', 'fortran_order': False, 'shape': ({},), }}",
        values.len()
    );
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&u16::try_from(header.len()).unwrap().to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    bytes
}

const GRAD: [&str; 9] = [
    "grad",
    "--model",
    "m.safetensors",
    "--input",
    "x.npy",
    "--grad-output",
    "gy.npy",
    "--grad-weights",
    "gw.safetensors",
];

fn grad_with(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = GRAD.to_vec();
    v.extend_from_slice(extra);
    v
}

fn bits(t: &[f32]) -> Vec<u32> {
    t.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn grad_files_equal_the_library_bitwise() {
    // The default engine is the SIMD one; `--engine naive` the reference.
    grad_files_equal(&[], &|m: &Model| {
        Box::new(SimdEngine::new(m.weights()).unwrap()) as Box<dyn LstmBackward<f32>>
    });
    grad_files_equal(&["--engine", "naive"], &|m: &Model| {
        Box::new(NaiveEngine::new(m.weights().clone()).unwrap()) as Box<dyn LstmBackward<f32>>
    });
}

/// `lstm grad` with `engine_args` writes exactly what the library's engine `build` gives.
fn grad_files_equal(
    engine_args: &[&'static str],
    build: &dyn Fn(&Model) -> Box<dyn LstmBackward<f32>>,
) {
    let d = Dir::new();
    let mut args = engine_args.to_vec();
    args.extend([
        "--h0",
        "h0.npy",
        "--c0",
        "c0.npy",
        "--grad-hn",
        "ghn.npy",
        "--grad-cn",
        "gcn.npy",
        "--lengths",
        "lengths.npy",
        "--grad-input",
        "gx.npy",
        "--grad-h0",
        "gh0.npy",
        "--grad-c0",
        "gc0.npy",
    ]);
    d.ok(&grad_with(&args));
    let model = Model::load(d.path("m.safetensors")).unwrap();
    let engine = build(&model);
    let state = LstmState {
        h: read_f32(&d.path("h0.npy")),
        c: read_f32(&d.path("c0.npy")),
    };
    let mut tape = TrainingTape::new();
    engine
        .forward_train(
            &read_f32(&d.path("x.npy")),
            Some(&state),
            Some(&[5, 2]),
            &mut tape,
        )
        .unwrap();
    let (gy, ghn, gcn) = (
        read_f32(&d.path("gy.npy")),
        read_f32(&d.path("ghn.npy")),
        read_f32(&d.path("gcn.npy")),
    );
    let want = engine
        .backward(&tape, &GradOutputs::new(&gy).with_h_n(&ghn).with_c_n(&gcn))
        .unwrap();
    for (f, t) in [
        ("gx.npy", &want.grad_input),
        ("gh0.npy", &want.grad_h0),
        ("gc0.npy", &want.grad_c0),
    ] {
        let got = read_f32(&d.path(f));
        assert_eq!(got.shape(), t.shape(), "{f}");
        assert_eq!(bits(got.data()), bits(t.data()), "{f}");
    }
    let got = io::load_safetensors(&d.path("gw.safetensors"), Some("rnn.")).unwrap();
    assert_eq!(&got.weights, want.params());
    assert!(header(&d.path("gw.safetensors"))
        .iter()
        .all(|(n, dtype)| n.starts_with("rnn.") && dtype == "F32"));
    assert_eq!(header(&d.path("gw.safetensors")).len(), 4 * 5);
}

#[test]
fn only_requested_outputs_are_written() {
    let d = Dir::new();
    let before = d.files();
    d.ok(&GRAD);
    let mut after = before.clone();
    after.insert("gw.safetensors".into());
    assert_eq!(d.files(), after);
    // Without --h0, --grad-h0 is the gradient with respect to the zero initial state.
    d.ok(&grad_with(&["--grad-h0", "gh0.npy"]));
    assert_eq!(read_f32(&d.path("gh0.npy")).shape(), &[4, 2, 2]);
    assert!(!d.path("gc0.npy").exists() && !d.path("gx.npy").exists());
}

#[test]
fn broken_inputs_fail_cleanly() {
    let d = Dir::new();
    d.fails(
        &[
            "grad",
            "--model",
            "m.safetensors",
            "--input",
            "x.npy",
            "--grad-output",
            "gy.npy",
        ],
        2,
        &["--grad-weights"],
    );
    d.fails(
        &grad_with(&[])
            .into_iter()
            .map(|a| if a == "gy.npy" { "bad_gy.npy" } else { a })
            .collect::<Vec<_>>(),
        1,
        &[
            "--grad-output",
            "bad_gy.npy",
            "expected shape [5, 2, 4]",
            "[5, 2, 3]",
        ],
    );
    d.fails(
        &grad_with(&["--grad-hn", "gcn.npy"]),
        1,
        &["--grad-hn", "gcn.npy", "grad_h_n", "[4, 2, 2]"],
    );
    d.fails(
        &grad_with(&["--grad-cn", "ghn.npy"]),
        1,
        &["--grad-cn", "ghn.npy", "[4, 2, 4]"],
    );
    d.fails(
        &grad_with(&["--h0", "c0.npy", "--c0", "c0.npy"]),
        1,
        &["--h0", "c0.npy", "h0"],
    );
    d.fails(
        &grad_with(&["--grad-hn", "missing.npy"]),
        1,
        &["--grad-hn", "missing.npy"],
    );
    d.write("short.npy", &npy_i64(&[5, 9]));
    d.fails(
        &grad_with(&["--lengths", "short.npy"]),
        1,
        &["--lengths", "short.npy", "1..=5"],
    );
    // With lengths [5, 2] the output has 5 steps; a 4-step grad_output is refused.
    d.npy("gy4.npy", &[4, 2, 4], 8);
    d.fails(
        &grad_with(&["--lengths", "lengths.npy"])
            .into_iter()
            .map(|a| if a == "gy.npy" { "gy4.npy" } else { a })
            .collect::<Vec<_>>(),
        1,
        &["--grad-output", "[5, 2, 4]"],
    );
    d.write("m_broken.safetensors", b"not a safetensors file");
    d.fails(
        &grad_with(&[])
            .into_iter()
            .map(|a| {
                if a == "m.safetensors" {
                    "m_broken.safetensors"
                } else {
                    a
                }
            })
            .collect::<Vec<_>>(),
        1,
        &["--model", "m_broken.safetensors"],
    );
    d.fails(
        &grad_with(&["--grad-input", "x.npy"]),
        1,
        &["--grad-input", "--input", "refusing to overwrite an input"],
    );
    d.fails(
        &grad_with(&["--grad-input", "gw.safetensors"]),
        1,
        &["same file as --grad-weights"],
    );
    d.fails(
        &grad_with(&["--grad-h0", "nowhere/gh0.npy"]),
        1,
        &["--grad-h0", "does not exist"],
    );
    // A failure in the backward, after the forward succeeded, leaves no file either, and
    // an existing output is left as it was.
    d.write("gw.safetensors", b"old");
    d.fails(&grad_with(&["--grad-hn", "gcn.npy"]), 1, &["--grad-hn"]);
    assert_eq!(std::fs::read(d.path("gw.safetensors")).unwrap(), b"old");
}

/// The engines with a backward run; others are refused with a clear message, not run.
#[test]
fn engines_without_a_backward_are_refused() {
    let d = Dir::new();
    for &kind in EngineKind::ALL {
        if matches!(
            kind,
            EngineKind::Naive | EngineKind::Simd | EngineKind::Parallel
        ) {
            d.ok(&grad_with(&["--engine", kind.name()]));
            continue;
        }
        d.fails(
            &grad_with(&["--engine", kind.name()]),
            1,
            &["--engine", kind.name(), "not yet supported for grad"],
        );
    }
    d.fails(&grad_with(&["--engine", "gpu"]), 2, &["gpu"]);
}

#[test]
fn grad_help_lists_the_contract() {
    let d = Dir::new();
    let out = d.lstm(&["grad", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--model",
        "--input",
        "--grad-output",
        "--grad-hn",
        "--grad-cn",
        "--h0",
        "--c0",
        "--lengths",
        "--batch-first",
        "--prefix",
        "--engine",
        "--threads",
        "--grad-weights",
        "--grad-input",
        "--grad-h0",
        "--grad-c0",
    ] {
        assert!(help.contains(flag), "grad --help lacks {flag}");
    }
}
