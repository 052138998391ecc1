//! The backward pass against PyTorch autograd: every case of `fixtures/pytorch-grad/` (written
//! by `tools/gen_grad_fixtures.py` from float64 autograd through `torch.nn.LSTM`) run through the
//! reference engine in f32 and the SIMD engine on every backend this host supports (element by
//! element within the case's tolerance, max(2e-5, 4 × PyTorch f32 autograd's own error)), and
//! through the reference engine in f64 (within summation-order rounding).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lstm::{io, Backend, LstmState, Model, NaiveEngine, Tensor};
use lstm_core::{GradOutputs, LstmBackward, LstmGradients, TrainingTape};
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/pytorch-grad")
}

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures_dir().join("manifest.json"))
        .expect("fixtures/pytorch-grad/manifest.json (regenerate with tools/gen_grad_fixtures.py)");
    let manifest: Value = serde_json::from_str(&text).unwrap();
    let cases = manifest["cases"].as_array().unwrap().clone();
    assert!(
        cases.len() >= 20,
        "expected the full fixture set, found {}",
        cases.len()
    );
    cases
}

fn read_f64(path: &Path) -> Tensor<f64> {
    io::read_npy(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_f64_tensor("fixture")
        .unwrap()
}

/// The F64 tensors of a safetensors file, by name: a minimal reader (8-byte header length,
/// JSON header, little-endian data), as `lstm::io` converts every dtype to f32.
fn read_f64_safetensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut out = BTreeMap::new();
    for (name, info) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        assert_eq!(info["dtype"], "F64", "{name}");
        let shape: Vec<usize> = info["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let [start, end] = [0, 1].map(|i| info["data_offsets"][i].as_u64().unwrap() as usize);
        let values = data[start..end]
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        out.insert(name.clone(), (shape, values));
    }
    out
}

/// A case's arrays in f64, as stored (the f32 ones widen exactly).
struct Inputs {
    x: Tensor<f64>,
    state: Option<LstmState<f64>>,
    lengths: Option<Vec<usize>>,
    gy: Tensor<f64>,
    ghn: Option<Tensor<f64>>,
    gcn: Option<Tensor<f64>>,
}

fn inputs(case: &Value) -> Inputs {
    let dir = fixtures_dir().join(case["name"].as_str().unwrap());
    let flag = |k: &str| case[k].as_bool().unwrap();
    let opt = |on: bool, f: &str| on.then(|| read_f64(&dir.join(f)));
    Inputs {
        x: read_f64(&dir.join("input.npy")),
        state: flag("has_state").then(|| LstmState {
            h: read_f64(&dir.join("h0.npy")),
            c: read_f64(&dir.join("c0.npy")),
        }),
        lengths: flag("has_lengths").then(|| {
            io::read_npy(&dir.join("lengths.npy"))
                .unwrap()
                .into_lengths("lengths")
                .unwrap()
        }),
        gy: read_f64(&dir.join("grad_output.npy")),
        ghn: opt(flag("has_final_grads"), "grad_hn.npy"),
        gcn: opt(flag("has_final_grads"), "grad_cn.npy"),
    }
}

/// The engine's forward_train + backward in `T` on the case's inputs.
fn gradients<T: Real>(engine: &impl LstmBackward<T>, inp: &Inputs) -> LstmGradients<T> {
    let cast = |t: &Tensor<f64>| t.map(|&v| T::from_f64(v));
    let state = inp.state.as_ref().map(|s| LstmState {
        h: cast(&s.h),
        c: cast(&s.c),
    });
    let (gy, ghn, gcn) = (
        cast(&inp.gy),
        inp.ghn.as_ref().map(cast),
        inp.gcn.as_ref().map(cast),
    );
    let mut tape = TrainingTape::new();
    engine
        .forward_train(
            &cast(&inp.x),
            state.as_ref(),
            inp.lengths.as_deref(),
            &mut tape,
        )
        .unwrap();
    let grads = GradOutputs {
        grad_output: &gy,
        grad_h_n: ghn.as_ref(),
        grad_c_n: gcn.as_ref(),
    };
    engine.backward(&tape, &grads).unwrap()
}

/// Compares every gradient with PyTorch's f64 autograd under `(atol, rtol) = tolerance(key)`
/// (key: `grad_input`, `grad_h0`, `grad_c0` or a parameter's full name); returns the largest
/// ratio error / allowed.
fn compare<T: Real>(
    case: &Value,
    got: &LstmGradients<T>,
    tolerance: &dyn Fn(&str) -> (f64, f64),
) -> f64 {
    let name = case["name"].as_str().unwrap();
    let dir = fixtures_dir().join(name);
    let mut worst = 0.0f64;
    let mut check = |what: &str,
                     shape: &[usize],
                     data: &[T],
                     want_shape: &[usize],
                     want: &[f64]| {
        assert_eq!(shape, want_shape, "{name}: {what} shape");
        let (atol, rtol) = tolerance(what);
        for (i, (&g, &w)) in data.iter().zip(want).enumerate() {
            let g: f64 = g.into();
            let (err, allowed) = ((g - w).abs(), atol + rtol * w.abs());
            assert!(
                err <= allowed,
                "{name}: {what}[{i}] = {g}, PyTorch f64 autograd gives {w} (error {err:e} > {allowed:e})"
            );
            worst = worst.max(err / allowed);
        }
    };
    for (what, tensor, file) in [
        ("grad_input", &got.grad_input, "expected_grad_input.npy"),
        ("grad_h0", &got.grad_h0, "expected_grad_h0.npy"),
        ("grad_c0", &got.grad_c0, "expected_grad_c0.npy"),
    ] {
        let want = read_f64(&dir.join(file));
        check(
            what,
            tensor.shape(),
            tensor.data(),
            want.shape(),
            want.data(),
        );
    }
    let want = read_f64_safetensors(&dir.join("expected_grad_weights.safetensors"));
    let named = got.named_tensors(case["prefix"].as_str().unwrap());
    let mut names: Vec<&String> = named.iter().map(|(n, _, _)| n).collect();
    names.sort();
    assert_eq!(
        names,
        want.keys().collect::<Vec<_>>(),
        "{name}: parameter names"
    );
    for (param, shape, data) in &named {
        let (want_shape, want_data) = &want[param];
        check(param, shape, data, want_shape, want_data);
    }
    worst
}

/// The two float types the engines run in.
trait Real: Copy + Default + Into<f64> {
    fn from_f64(v: f64) -> Self;
}

impl Real for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Real for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
}

fn load(case: &Value) -> Model {
    let dir = fixtures_dir().join(case["name"].as_str().unwrap());
    Model::load_with_prefix(dir.join("model.safetensors"), case["prefix"].as_str())
        .and_then(|m| m.with_batch_first(case["config"]["batch_first"].as_bool().unwrap()))
        .unwrap()
}

#[test]
fn naive_f32_gradients_match_autograd() {
    let mut worst = (0.0, String::new());
    for case in cases() {
        let engine = NaiveEngine::new(load(&case).weights().clone()).unwrap();
        let got = gradients(&engine, &inputs(&case));
        let tol = &case["tolerance"];
        let ratio = compare(&case, &got, &|key| {
            let t = tol.get(key).or_else(|| tol["params"].get(key));
            (t.and_then(Value::as_f64).unwrap(), 0.0)
        });
        if ratio > worst.0 {
            worst = (ratio, case["name"].as_str().unwrap().to_string());
        }
    }
    println!(
        "naive f32: worst error / tolerance = {:.3} ({})",
        worst.0, worst.1
    );
}

#[test]
fn simd_gradients_match_autograd_on_every_backend() {
    for backend in Backend::all() {
        let mut worst = (0.0, String::new());
        for case in cases() {
            let engine = load(&case).simd_engine(backend).unwrap();
            let got = gradients(&engine, &inputs(&case));
            let tol = &case["tolerance"];
            let ratio = compare(&case, &got, &|key| {
                let t = tol.get(key).or_else(|| tol["params"].get(key));
                (t.and_then(Value::as_f64).unwrap(), 0.0)
            });
            if ratio > worst.0 {
                worst = (ratio, case["name"].as_str().unwrap().to_string());
            }
        }
        println!(
            "simd ({backend}): worst error / tolerance = {:.3} ({})",
            worst.0, worst.1
        );
    }
}

#[test]
fn naive_f64_gradients_match_autograd_to_rounding() {
    let mut worst = (0.0, String::new());
    for case in cases() {
        let engine = load(&case).reference_f64().unwrap();
        let got = gradients(&engine, &inputs(&case));
        // Only the summation order differs from PyTorch's float64 autograd.
        let ratio = compare(&case, &got, &|_| (1e-12, 1e-12));
        if ratio > worst.0 {
            worst = (ratio, case["name"].as_str().unwrap().to_string());
        }
    }
    println!(
        "naive f64: worst error / (1e-12 + 1e-12·|ref|) = {:.3} ({})",
        worst.0, worst.1
    );
}

/// Every upstream-gradient layout a fixture uses passes the shape checks, and a grad_output of
/// the input's T (pad_packed_sequence with total_length = T) gives the same result as one of
/// max(lengths) steps.
#[test]
fn total_length_grad_output_is_accepted() {
    for case in cases() {
        if !case["has_lengths"].as_bool().unwrap() {
            continue;
        }
        let engine = load(&case).reference_f64().unwrap();
        let inp = inputs(&case);
        let bf = case["config"]["batch_first"].as_bool().unwrap();
        let t = inp.x.shape()[usize::from(bf)];
        let padded = lstm::pad_to_total_length(inp.gy.clone(), t, bf).unwrap();
        let a = gradients(&engine, &inp);
        let b = gradients(&engine, &Inputs { gy: padded, ..inp });
        assert_eq!(a, b, "{}", case["name"]);
    }
}
