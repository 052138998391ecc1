//! End-to-end tests of the `lstm` binary: each test works in its own temporary directory,
//! builds its model and arrays there with the library, runs the binary and compares its
//! files with what the library computes (bitwise, same engine).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};

use lstm::{EngineKind, LstmConfig, LstmOutput, LstmState, LstmWeights, Model, Tensor};

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A temporary working directory; the binary runs inside it, so arguments are file names.
struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    fn new() -> Self {
        Dir {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// The default model of these tests: 2 layers, I = 3, H = 4, saved under `rnn.`.
    fn model(&self) -> Model {
        self.model_with(LstmConfig::new(3, 4).with_num_layers(2), "rnn.")
    }

    /// Saves a random model as `m.safetensors` and returns it as the library loads it.
    fn model_with(&self, config: LstmConfig, prefix: &str) -> Model {
        let weights = LstmWeights::random(config, 7).unwrap();
        lstm::io::save_safetensors(&self.path("m.safetensors"), &weights, prefix).unwrap();
        Model::load(self.path("m.safetensors")).unwrap()
    }

    /// Writes an f32 `.npy` of `shape` with deterministic, varied values.
    fn npy(&self, name: &str, shape: &[usize], seed: u64) -> Tensor<f32> {
        let n = shape.iter().product();
        let data = lstm::engine::SplitMix64::new(seed).fill_f32(n, 1.0);
        let t = Tensor::new(shape.to_vec(), data).unwrap();
        lstm::io::write_npy_f32(&self.path(name), &t).unwrap();
        t
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.path(name), bytes).unwrap();
    }

    fn read_f32(&self, name: &str) -> Tensor<f32> {
        lstm::io::read_npy(&self.path(name))
            .unwrap()
            .into_f32_tensor(name)
            .unwrap()
    }

    /// The names in the directory (hidden temporaries included).
    fn files(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn lstm(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_lstm"))
            .args(args)
            .current_dir(self.tmp.path())
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .output()
            .unwrap()
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.lstm(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "lstm {args:?} failed ({:?}): {stderr}",
            out.status
        );
        assert!(stderr.is_empty(), "lstm {args:?} wrote to stderr: {stderr}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and asserts a clean failure: exit `code`, one `error:` line naming every word of
    /// `words`, no panic, and the directory exactly as before (no output, no temporary).
    /// Returns the error line.
    fn fails(&self, args: &[&str], code: i32, words: &[&str]) -> String {
        let before = self.files();
        let out = self.lstm(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "lstm {args:?}: stderr {stderr:?}"
        );
        assert!(
            !stderr.contains("panicked"),
            "lstm {args:?} panicked: {stderr}"
        );
        assert!(
            stderr.ends_with('\n') && stderr.matches('\n').count() == 1,
            "lstm {args:?}: expected one line on stderr, got {stderr:?}"
        );
        let line = stderr.trim_end().to_string();
        assert!(line.starts_with("error: "), "{line}");
        for word in words {
            assert!(
                line.contains(word),
                "lstm {args:?}: {line:?} does not mention {word:?}"
            );
        }
        assert!(out.stdout.is_empty(), "lstm {args:?} wrote to stdout");
        assert_eq!(
            self.files(),
            before,
            "lstm {args:?} left files behind ({line})"
        );
        line
    }
}

/// The library's result for the same call, through the same engine.
fn expected(
    model: &Model,
    input: &Tensor<f32>,
    state: Option<&LstmState<f32>>,
    lengths: Option<&[usize]>,
) -> LstmOutput<f32> {
    model
        .engine(EngineKind::default())
        .unwrap()
        .forward(input, state, lengths)
        .unwrap()
}

fn assert_bitwise(what: &str, got: &Tensor<f32>, want: &Tensor<f32>) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let bits = |t: &Tensor<f32>| t.data().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(bits(got) == bits(want), "{what}: values differ");
}

/// A `.npy` v1 file built by hand: `descr` such as `<i8`, header padded to 64 bytes.
fn npy_raw(descr: &str, shape: &[usize], payload: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&u16::try_from(header.len()).unwrap().to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

fn npy_i64(values: &[i64]) -> Vec<u8> {
    let payload: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    npy_raw("<i8", &[values.len()], &payload)
}

fn npy_i32(values: &[i32]) -> Vec<u8> {
    let payload: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    npy_raw("<i4", &[values.len()], &payload)
}

/// A safetensors file built by hand from `(name, shape, data)` (all F32).
fn safetensors_raw(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let start = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        entries.push(format!(
            "\"{name}\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{start},{}]}}",
            dims.join(","),
            data.len()
        ));
    }
    let mut header = format!("{{{}}}", entries.join(","));
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&data);
    bytes
}

/// The tensors of random weights, names under `prefix`.
fn named(config: LstmConfig, prefix: &str) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let w = LstmWeights::random(config, 3).unwrap();
    w.named_tensors()
        .into_iter()
        .map(|(n, s, d)| (format!("{prefix}{n}"), s, d.to_vec()))
        .collect()
}

const RUN: [&str; 7] = [
    "run",
    "--model",
    "m.safetensors",
    "--input",
    "x.npy",
    "--output",
    "y.npy",
];

fn run_with(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = RUN.to_vec();
    v.extend_from_slice(extra);
    v
}

// ---------------------------------------------------------------------------------------------
// Happy paths
// ---------------------------------------------------------------------------------------------

#[test]
fn run_sequence_first_with_final_states() {
    let d = Dir::new();
    let model = d.model();
    let x = d.npy("x.npy", &[5, 2, 3], 1);
    d.ok(&run_with(&["--hn", "hn.npy", "--cn", "cn.npy"]));
    let want = expected(&model, &x, None, None);
    assert_bitwise("output", &d.read_f32("y.npy"), &want.output);
    assert_bitwise("h_n", &d.read_f32("hn.npy"), &want.h_n);
    assert_bitwise("c_n", &d.read_f32("cn.npy"), &want.c_n);
    let names = ["cn.npy", "hn.npy", "m.safetensors", "x.npy", "y.npy"];
    assert_eq!(d.files(), names.iter().map(|s| s.to_string()).collect());
}

#[test]
fn run_writes_only_the_output_by_default() {
    let d = Dir::new();
    let model = d.model();
    let x = d.npy("x.npy", &[3, 1, 3], 2);
    assert_eq!(d.ok(&RUN), "");
    assert_eq!(d.read_f32("y.npy").shape(), &[3, 1, 4]);
    assert_bitwise(
        "output",
        &d.read_f32("y.npy"),
        &expected(&model, &x, None, None).output,
    );
    assert_eq!(d.files().len(), 3);
}

#[test]
fn run_batch_first_bidirectional_projected() {
    let d = Dir::new();
    let config = LstmConfig::new(3, 6)
        .with_num_layers(2)
        .with_bidirectional(true)
        .with_proj_size(2);
    let model = d.model_with(config, "").with_batch_first(true).unwrap();
    let x = d.npy("x.npy", &[2, 5, 3], 3); // [B, T, I]
    d.ok(&run_with(&[
        "--batch-first",
        "--hn",
        "hn.npy",
        "--cn",
        "cn.npy",
    ]));
    let want = expected(&model, &x, None, None);
    assert_eq!(want.output.shape(), &[2, 5, 4]);
    assert_bitwise("output", &d.read_f32("y.npy"), &want.output);
    assert_bitwise("h_n", &d.read_f32("hn.npy"), &want.h_n);
    assert_bitwise("c_n", &d.read_f32("cn.npy"), &want.c_n);
}

#[test]
fn run_unbatched_with_initial_state() {
    let d = Dir::new();
    let model = d.model();
    let x = d.npy("x.npy", &[4, 3], 4); // [T, I]
    let h0 = d.npy("h0.npy", &[2, 4], 5);
    let c0 = d.npy("c0.npy", &[2, 4], 6);
    d.ok(&run_with(&[
        "--h0", "h0.npy", "--c0", "c0.npy", "--hn", "hn.npy",
    ]));
    let state = LstmState { h: h0, c: c0 };
    let want = expected(&model, &x, Some(&state), None);
    assert_eq!(want.output.shape(), &[4, 4]);
    assert_bitwise("output", &d.read_f32("y.npy"), &want.output);
    assert_bitwise("h_n", &d.read_f32("hn.npy"), &want.h_n);
}

#[test]
fn run_batched_with_initial_state_and_f64_input() {
    let d = Dir::new();
    let model = d.model();
    // f64 arrays are read and rounded to f32.
    let x64: Vec<f64> = (0..30).map(|i| f64::from(i) / 7.0 - 2.0).collect();
    let payload: Vec<u8> = x64.iter().flat_map(|v| v.to_le_bytes()).collect();
    d.write("x.npy", &npy_raw("<f8", &[5, 2, 3], &payload));
    let x = Tensor::new([5, 2, 3], x64.iter().map(|&v| v as f32).collect()).unwrap();
    let h0 = d.npy("h0.npy", &[2, 2, 4], 7);
    let c0 = d.npy("c0.npy", &[2, 2, 4], 8);
    d.ok(&run_with(&[
        "--h0", "h0.npy", "--c0", "c0.npy", "--cn", "cn.npy",
    ]));
    let want = expected(&model, &x, Some(&LstmState { h: h0, c: c0 }), None);
    assert_bitwise("output", &d.read_f32("y.npy"), &want.output);
    assert_bitwise("c_n", &d.read_f32("cn.npy"), &want.c_n);
}

#[test]
fn run_with_int64_and_int32_lengths() {
    for (name, bytes) in [
        ("int64", npy_i64(&[4, 1, 3])),
        ("int32", npy_i32(&[4, 1, 3])),
    ] {
        let d = Dir::new();
        let model = d.model();
        let x = d.npy("x.npy", &[4, 3, 3], 9);
        d.write("lengths.npy", &bytes);
        d.ok(&run_with(&[
            "--lengths",
            "lengths.npy",
            "--hn",
            "hn.npy",
            "--cn",
            "cn.npy",
        ]));
        let want = expected(&model, &x, None, Some(&[4, 1, 3]));
        assert_bitwise(name, &d.read_f32("y.npy"), &want.output);
        assert_bitwise(name, &d.read_f32("hn.npy"), &want.h_n);
        assert_bitwise(name, &d.read_f32("cn.npy"), &want.c_n);
        // Past a sequence's end the output is zero.
        let y = d.read_f32("y.npy");
        assert!(y.data()[(3 * 3 + 1) * 4..(3 * 3 + 2) * 4]
            .iter()
            .all(|&v| v == 0.0));
    }
}

#[test]
fn run_lengths_with_batch_first() {
    let d = Dir::new();
    let model = d.model().with_batch_first(true).unwrap();
    let x = d.npy("x.npy", &[2, 4, 3], 10);
    d.write("lengths.npy", &npy_i64(&[2, 4]));
    d.ok(&run_with(&["--batch-first", "--lengths", "lengths.npy"]));
    let want = expected(&model, &x, None, Some(&[2, 4]));
    assert_bitwise("output", &d.read_f32("y.npy"), &want.output);
}

#[test]
fn run_lengths_stop_at_the_longest_unless_total_length() {
    let d = Dir::new();
    let model = d.model();
    let x = d.npy("x.npy", &[5, 2, 3], 13);
    d.write("lengths.npy", &npy_i64(&[3, 2]));
    // pad_packed_sequence's default: as many steps as the longest sequence.
    d.ok(&run_with(&["--lengths", "lengths.npy"]));
    let want = expected(&model, &x, None, Some(&[3, 2]));
    assert_eq!(d.read_f32("y.npy").shape(), &[3, 2, 4]);
    assert_bitwise("output", &d.read_f32("y.npy"), &want.output);
    // total_length=5: the same steps, then zeros.
    d.ok(&run_with(&[
        "--lengths",
        "lengths.npy",
        "--total-length",
        "5",
    ]));
    let padded = lstm::pad_to_total_length(want.output, 5, false).unwrap();
    assert_eq!(d.read_f32("y.npy").shape(), &[5, 2, 4]);
    assert_bitwise("output", &d.read_f32("y.npy"), &padded);
    // Shorter than the longest sequence: refused, as PyTorch does; no output written.
    std::fs::remove_file(d.path("y.npy")).unwrap();
    d.fails(
        &run_with(&["--lengths", "lengths.npy", "--total-length", "2"]),
        1,
        &["--total-length 2", "longest"],
    );
    // Without lengths there is nothing to pad: a usage error.
    d.fails(&run_with(&["--total-length", "5"]), 2, &["--lengths"]);
}

#[test]
fn run_chooses_the_lstm_by_prefix() {
    let d = Dir::new();
    let enc = LstmConfig::new(3, 4);
    let dec = LstmConfig::new(4, 5).with_num_layers(2);
    let mut tensors = named(enc, "encoder.rnn.");
    tensors.extend(named(dec, "decoder.rnn."));
    d.write("m.safetensors", &safetensors_raw(&tensors));
    let x = d.npy("x.npy", &[3, 2, 4], 11);
    for prefix in ["decoder.rnn", "decoder.rnn."] {
        d.ok(&run_with(&["--prefix", prefix]));
        let model = Model::load_with_prefix(d.path("m.safetensors"), Some("decoder.rnn")).unwrap();
        assert_eq!(model.config().hidden_size, 5);
        let want = expected(&model, &x, None, None);
        assert_bitwise("output", &d.read_f32("y.npy"), &want.output);
    }
}

#[test]
fn run_with_explicit_engine_and_threads() {
    let d = Dir::new();
    let model = d.model();
    let x = d.npy("x.npy", &[3, 2, 3], 12);
    for name in EngineKind::ALL.iter().map(|k| k.name()) {
        d.ok(&run_with(&["--engine", name, "--threads", "2"]));
        let engine = model.engine(name.parse().unwrap()).unwrap();
        let want = engine.forward(&x, None, None).unwrap();
        assert_bitwise(name, &d.read_f32("y.npy"), &want.output);
    }
}

#[test]
fn run_with_absolute_paths_replaces_an_existing_output() {
    let d = Dir::new();
    let model = d.model();
    let x = d.npy("x.npy", &[2, 2, 3], 13);
    d.write("y.npy", b"old contents");
    let p = |n: &str| d.path(n).to_str().unwrap().to_string();
    let (m, xi, y) = (p("m.safetensors"), p("x.npy"), p("y.npy"));
    let out = Command::new(env!("CARGO_BIN_EXE_lstm"))
        .args(["run", "--model", &m, "--input", &xi, "--output", &y])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_bitwise(
        "output",
        &d.read_f32("y.npy"),
        &expected(&model, &x, None, None).output,
    );
    assert_eq!(d.files().len(), 3);
}

#[test]
fn run_propagates_non_finite_input() {
    let d = Dir::new();
    let model = d.model();
    let mut x = Tensor::new([3, 2, 3], vec![0.25f32; 18]).unwrap();
    x.data_mut()[0] = f32::NAN;
    x.data_mut()[4] = f32::INFINITY;
    lstm::io::write_npy_f32(&d.path("x.npy"), &x).unwrap();
    d.ok(&RUN);
    let got = d.read_f32("y.npy");
    let want = expected(&model, &x, None, None).output;
    assert!(got.data()[0].is_nan());
    let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
    assert!(got
        .data()
        .iter()
        .zip(want.data())
        .all(|(&a, &b)| same(a, b)));
}

#[test]
fn inspect_prints_config_tensors_and_count() {
    let d = Dir::new();
    let model = d.model_with(LstmConfig::new(3, 4).with_num_layers(2), "encoder.rnn.");
    let text = d.ok(&["inspect", "--model", "m.safetensors"]);
    for line in [
        "prefix:        \"encoder.rnn.\"",
        "input_size:    3",
        "hidden_size:   4",
        "num_layers:    2",
        "bias:          true",
        "bidirectional: false",
        "proj_size:     0",
        "tensors:       8",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    let tensor_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("  ")).collect();
    assert_eq!(tensor_lines.len(), 8, "{text}");
    let first: Vec<&str> = tensor_lines[0].split_whitespace().collect();
    assert_eq!(first, ["encoder.rnn.weight_ih_l0", "F32", "[16,", "3]"]);
    let count = model.config().parameter_count();
    assert_eq!(count, 16 * 3 + 16 * 4 + 32 + 16 * 4 + 16 * 4 + 32);
    assert!(text.contains(&format!("parameters:    {count}")), "{text}");
}

#[test]
fn inspect_json_is_one_valid_object() {
    let d = Dir::new();
    let config = LstmConfig::new(5, 6)
        .with_bidirectional(true)
        .with_proj_size(3);
    let model = d.model_with(config, "");
    let text = d.ok(&[
        "inspect",
        "--model",
        "m.safetensors",
        "--json",
        "--prefix",
        "",
    ]);
    assert_eq!(text.lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["model"], "m.safetensors");
    assert_eq!(v["prefix"], "");
    let c = &v["config"];
    assert_eq!(c["input_size"], 5);
    assert_eq!(c["hidden_size"], 6);
    assert_eq!(c["num_layers"], 1);
    assert_eq!(c["bias"], true);
    assert_eq!(c["bidirectional"], true);
    assert_eq!(c["proj_size"], 3);
    assert_eq!(v["parameter_count"], model.config().parameter_count());
    let tensors = v["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), model.tensors().len());
    for (t, info) in tensors.iter().zip(model.tensors()) {
        assert_eq!(t["name"], info.name.as_str());
        assert_eq!(t["dtype"], "F32");
        assert_eq!(t["shape"], serde_json::json!(info.shape));
    }
}

#[test]
fn inspect_json_escapes_the_path() {
    let d = Dir::new();
    d.model();
    let name = "we\"ird\\name.safetensors";
    std::fs::rename(d.path("m.safetensors"), d.path(name)).unwrap();
    let text = d.ok(&["inspect", "--model", name, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["model"], name);
    assert_eq!(v["prefix"], "rnn.");
}

#[test]
fn help_is_helpful() {
    let d = Dir::new();
    let top = d.ok(&["--help"]);
    assert!(top.contains("run") && top.contains("inspect"), "{top}");
    let run = d.ok(&["run", "--help"]);
    for flag in [
        "--model",
        "--input",
        "--output",
        "--hn",
        "--cn",
        "--h0",
        "--c0",
        "--lengths",
        "--batch-first",
        "--prefix",
        "--engine",
        "--threads",
    ] {
        assert!(run.contains(flag), "run --help lacks {flag}");
    }
    assert!(run.contains("naive") && run.contains("simd"));
}

// ---------------------------------------------------------------------------------------------
// Broken inputs: one error line, the right exit code, nothing written
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_model_file() {
    let d = Dir::new();
    d.npy("x.npy", &[2, 1, 3], 1);
    d.fails(&RUN, 1, &["--model", "m.safetensors"]);
}

#[test]
fn corrupt_safetensors() {
    let d = Dir::new();
    d.npy("x.npy", &[2, 1, 3], 1);
    let junk: Vec<u8> = lstm::engine::SplitMix64::new(5)
        .fill_f32(64, 1.0)
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    d.write("m.safetensors", &junk);
    d.fails(&RUN, 1, &["m.safetensors"]);
    d.fails(
        &["inspect", "--model", "m.safetensors"],
        1,
        &["m.safetensors"],
    );
}

#[test]
fn truncated_safetensors() {
    let d = Dir::new();
    d.model();
    d.npy("x.npy", &[2, 1, 3], 1);
    let bytes = std::fs::read(d.path("m.safetensors")).unwrap();
    d.write("m.safetensors", &bytes[..bytes.len() / 2]);
    d.fails(&RUN, 1, &["m.safetensors"]);
    d.write("m.safetensors", &bytes[..5]);
    d.fails(&RUN, 1, &["m.safetensors"]);
}

#[test]
fn safetensors_header_claiming_a_huge_length() {
    let d = Dir::new();
    d.npy("x.npy", &[2, 1, 3], 1);
    for len in [u64::MAX, 1 << 40] {
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}      ");
        d.write("m.safetensors", &bytes);
        d.fails(&RUN, 1, &["m.safetensors"]);
    }
}

#[test]
fn missing_tensor() {
    let d = Dir::new();
    d.npy("x.npy", &[2, 1, 3], 1);
    let tensors: Vec<_> = named(LstmConfig::new(3, 4), "")
        .into_iter()
        .filter(|(n, _, _)| n != "bias_hh_l0")
        .collect();
    d.write("m.safetensors", &safetensors_raw(&tensors));
    d.fails(&RUN, 1, &["m.safetensors", "bias_hh_l0"]);
    d.fails(&["inspect", "--model", "m.safetensors"], 1, &["bias_hh_l0"]);
}

#[test]
fn inconsistent_tensor_shapes() {
    let d = Dir::new();
    d.npy("x.npy", &[2, 1, 3], 1);
    let mut tensors = named(LstmConfig::new(3, 4), "");
    for (name, shape, data) in &mut tensors {
        if name == "weight_hh_l0" {
            *shape = vec![16, 5];
            *data = vec![0.5; 16 * 5];
        }
    }
    d.write("m.safetensors", &safetensors_raw(&tensors));
    d.fails(&RUN, 1, &["m.safetensors", "weight_hh_l0"]);
}

#[test]
fn unknown_prefix() {
    let d = Dir::new();
    d.model();
    d.npy("x.npy", &[2, 1, 3], 1);
    d.fails(
        &run_with(&["--prefix", "nope"]),
        1,
        &["m.safetensors", "nope"],
    );
    d.fails(
        &["inspect", "--model", "m.safetensors", "--prefix", "nope"],
        1,
        &["nope"],
    );
}

#[test]
fn two_lstms_without_prefix() {
    let d = Dir::new();
    let mut tensors = named(LstmConfig::new(3, 4), "a.");
    tensors.extend(named(LstmConfig::new(3, 4), "b."));
    d.write("m.safetensors", &safetensors_raw(&tensors));
    d.npy("x.npy", &[2, 1, 3], 1);
    d.fails(&RUN, 1, &["m.safetensors", "prefix"]);
    d.fails(&["inspect", "--model", "m.safetensors"], 1, &["prefix"]);
}

#[test]
fn input_of_wrong_size() {
    let d = Dir::new();
    d.model();
    d.npy("x.npy", &[2, 1, 5], 1);
    d.fails(&RUN, 1, &["--input", "x.npy", "expected shape"]);
}

#[test]
fn one_dimensional_input() {
    let d = Dir::new();
    d.model();
    d.npy("x.npy", &[6], 1);
    d.fails(&RUN, 1, &["--input", "x.npy"]);
}

#[test]
fn empty_input() {
    let d = Dir::new();
    d.model();
    d.npy("x.npy", &[0, 2, 3], 1);
    d.fails(&RUN, 1, &["--input", "x.npy"]);
}

#[test]
fn input_of_integer_dtype() {
    let d = Dir::new();
    d.model();
    d.write("x.npy", &npy_raw("<i4", &[2, 1, 3], &[0u8; 24]));
    d.fails(&RUN, 1, &["--input", "x.npy", "dtype"]);
}

#[test]
fn truncated_npy() {
    let d = Dir::new();
    d.model();
    d.npy("x.npy", &[4, 2, 3], 1);
    let bytes = std::fs::read(d.path("x.npy")).unwrap();
    d.write("x.npy", &bytes[..bytes.len() - 10]);
    d.fails(&RUN, 1, &["--input", "x.npy"]);
    d.write("x.npy", &bytes[..20]);
    d.fails(&RUN, 1, &["--input", "x.npy"]);
}

#[test]
fn missing_input_file() {
    let d = Dir::new();
    d.model();
    d.fails(&RUN, 1, &["--input", "x.npy"]);
}

#[test]
fn h0_of_wrong_shape() {
    let d = Dir::new();
    d.model();
    d.npy("x.npy", &[2, 3, 3], 1);
    d.npy("h0.npy", &[2, 4], 2);
    d.npy("c0.npy", &[2, 3, 4], 3);
    let line = d.fails(
        &run_with(&["--h0", "h0.npy", "--c0", "c0.npy"]),
        1,
        &["--h0 h0.npy"],
    );
    assert!(
        line.contains("h0: expected shape [2, 3, 4], found [2, 4]"),
        "{line}"
    );
}

#[test]
fn c0_of_wrong_shape() {
    let d = Dir::new();
    d.model();
    d.npy("x.npy", &[2, 3, 3], 1);
    d.npy("h0.npy", &[2, 3, 4], 2);
    d.npy("c0.npy", &[2, 3, 5], 3);
    d.fails(
        &run_with(&["--h0", "h0.npy", "--c0", "c0.npy"]),
        1,
        &["--c0 c0.npy", "c0"],
    );
}

#[test]
fn h0_without_c0() {
    let d = Dir::new();
    d.model();
    d.npy("x.npy", &[2, 3, 3], 1);
    d.npy("h0.npy", &[2, 3, 4], 2);
    d.fails(&run_with(&["--h0", "h0.npy"]), 2, &["--c0"]);
    d.fails(&run_with(&["--c0", "h0.npy"]), 2, &["--h0"]);
}

#[test]
fn bad_lengths() {
    let d = Dir::new();
    d.model();
    d.npy("x.npy", &[4, 2, 3], 1);
    let cases: [(&str, Vec<u8>); 6] = [
        ("zero", npy_i64(&[0, 2])),
        ("longer than T", npy_i64(&[5, 2])),
        ("negative", npy_i64(&[-1, 2])),
        ("too few", npy_i64(&[3])),
        ("too many", npy_i32(&[1, 2, 3])),
        (
            "float dtype",
            npy_raw("<f4", &[2], &[0, 0, 128, 63, 0, 0, 0, 64]),
        ),
    ];
    for (case, bytes) in cases {
        d.write("lengths.npy", &bytes);
        let line = d.fails(
            &run_with(&["--lengths", "lengths.npy"]),
            1,
            &["--lengths lengths.npy"],
        );
        assert!(
            line.contains("length") || line.contains("dtype"),
            "{case}: {line}"
        );
    }
}

#[test]
fn lengths_with_unbatched_input() {
    // PyTorch's pack_padded_sequence has no unbatched form; neither do we.
    let d = Dir::new();
    d.model();
    d.npy("x.npy", &[4, 3], 1);
    d.write("lengths.npy", &npy_i64(&[2]));
    d.fails(
        &run_with(&["--lengths", "lengths.npy"]),
        1,
        &["--lengths lengths.npy", "unbatched"],
    );
}

#[test]
fn output_into_a_missing_directory() {
    let d = Dir::new();
    d.model();
    d.npy("x.npy", &[2, 1, 3], 1);
    let mut args = RUN.to_vec();
    args[6] = "missing/y.npy";
    d.fails(&args, 1, &["--output", "missing"]);
    // A later output's directory is checked too: not even the first output is written.
    d.fails(
        &run_with(&["--hn", "nowhere/hn.npy"]),
        1,
        &["--hn", "nowhere"],
    );
}

#[test]
fn output_onto_an_input_or_another_output() {
    let d = Dir::new();
    d.model();
    d.npy("x.npy", &[2, 1, 3], 1);
    let before = std::fs::read(d.path("x.npy")).unwrap();
    let mut args = RUN.to_vec();
    args[6] = "x.npy";
    d.fails(&args, 1, &["--output", "--input"]);
    args[6] = "./m.safetensors";
    d.fails(&args, 1, &["--output", "--model"]);
    d.fails(&run_with(&["--hn", "./y.npy"]), 1, &["--hn", "--output"]);
    d.fails(
        &run_with(&["--hn", "h.npy", "--cn", "h.npy"]),
        1,
        &["--cn", "--hn"],
    );
    assert_eq!(std::fs::read(d.path("x.npy")).unwrap(), before);
}

#[test]
fn output_onto_a_directory() {
    let d = Dir::new();
    d.model();
    d.npy("x.npy", &[2, 1, 3], 1);
    std::fs::create_dir(d.path("y.npy")).unwrap();
    d.fails(&RUN, 1, &["--output", "y.npy", "directory"]);
}

#[test]
fn a_failed_run_leaves_an_existing_output_untouched() {
    let d = Dir::new();
    d.model();
    d.npy("x.npy", &[2, 3, 3], 1);
    d.npy("h0.npy", &[2, 3, 4], 2);
    d.npy("c0.npy", &[9], 3);
    d.write("y.npy", b"previous result");
    d.write("hn.npy", b"previous h_n");
    d.fails(
        &run_with(&["--hn", "hn.npy", "--h0", "h0.npy", "--c0", "c0.npy"]),
        1,
        &["c0"],
    );
    assert_eq!(std::fs::read(d.path("y.npy")).unwrap(), b"previous result");
    assert_eq!(std::fs::read(d.path("hn.npy")).unwrap(), b"previous h_n");
}

#[test]
fn threads_zero() {
    let d = Dir::new();
    d.model();
    d.npy("x.npy", &[2, 1, 3], 1);
    d.fails(&run_with(&["--threads", "0"]), 2, &["--threads"]);
    d.fails(&run_with(&["--threads", "x"]), 2, &["--threads"]);
}

#[test]
fn unknown_engine() {
    let d = Dir::new();
    d.model();
    d.npy("x.npy", &[2, 1, 3], 1);
    d.fails(&run_with(&["--engine", "gpu"]), 2, &["--engine", "gpu"]);
}

#[test]
fn usage_errors_are_one_line() {
    let d = Dir::new();
    d.fails(&["run", "--model", "m.safetensors"], 2, &["--input"]);
    d.fails(&["run", "--modle", "m.safetensors"], 2, &["--modle"]);
    d.fails(&["frobnicate"], 2, &["frobnicate"]);
}
