//! The engines against PyTorch: every case of `fixtures/pytorch/` (written by
//! `tools/gen_fixtures.py` from `torch.nn.LSTM` in float64) run through the library exactly as a
//! user would, in f32 (within the case's tolerance: max(2e-5, 4 × PyTorch f32's own error)) and
//! in f64 (within summation-order rounding).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use lstm::{io, EngineKind, LstmEngine, LstmState, Model, Tensor};
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/pytorch")
}

struct Case {
    name: String,
    dir: PathBuf,
    prefix: String,
    batch_first: bool,
    has_state: bool,
    has_lengths: bool,
    /// `pad_packed_sequence`'s `total_length` (else the output stops at the longest sequence).
    total_length: Option<usize>,
    tolerance: [f64; 3],
    json: Value,
}

fn cases() -> Vec<Case> {
    let dir = fixtures_dir();
    let text = std::fs::read_to_string(dir.join("manifest.json"))
        .expect("fixtures/pytorch/manifest.json (regenerate with tools/gen_fixtures.py)");
    let manifest: Value = serde_json::from_str(&text).unwrap();
    let cases: Vec<Case> = manifest["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let tol = &c["tolerance"];
            Case {
                name: c["name"].as_str().unwrap().to_string(),
                dir: dir.join(c["name"].as_str().unwrap()),
                prefix: c["prefix"].as_str().unwrap().to_string(),
                batch_first: c["config"]["batch_first"].as_bool().unwrap(),
                has_state: c["has_state"].as_bool().unwrap(),
                has_lengths: c["has_lengths"].as_bool().unwrap(),
                total_length: c["total_length"].as_u64().map(|n| n as usize),
                tolerance: ["output", "h_n", "c_n"].map(|k| tol[k].as_f64().unwrap()),
                json: c.clone(),
            }
        })
        .collect();
    assert!(
        cases.len() >= 20,
        "expected the full fixture set, found {} cases",
        cases.len()
    );
    cases
}

struct Inputs<T> {
    x: Tensor<T>,
    state: Option<LstmState<T>>,
    lengths: Option<Vec<usize>>,
}

fn read_f64(path: &Path) -> Tensor<f64> {
    io::read_npy(path)
        .unwrap()
        .into_f64_tensor("fixture")
        .unwrap()
}

fn inputs_f64(case: &Case) -> Inputs<f64> {
    let state = case.has_state.then(|| LstmState {
        h: read_f64(&case.dir.join("h0.npy")),
        c: read_f64(&case.dir.join("c0.npy")),
    });
    let lengths = case.has_lengths.then(|| {
        io::read_npy(&case.dir.join("lengths.npy"))
            .unwrap()
            .into_lengths("lengths")
            .unwrap()
    });
    Inputs {
        x: read_f64(&case.dir.join("input.npy")),
        state,
        lengths,
    }
}

fn load(case: &Case) -> Model {
    let model = Model::load_with_prefix(case.dir.join("model.safetensors"), Some(&case.prefix))
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    model.with_batch_first(case.batch_first).unwrap()
}

/// Asserts `|got - want| <= atol + rtol·|want|` element by element, naming the first failure.
fn assert_close(case: &str, what: &str, got: &[f64], want: &Tensor<f64>, atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{case}: {what}: element count");
    for (i, (&g, &w)) in got.iter().zip(want.data()).enumerate() {
        let err = (g - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{case}: {what}[{i}] = {g}, PyTorch f64 gives {w} (error {err:e} > {atol:e} + {rtol:e}·|ref|)"
        );
    }
}

fn expected(case: &Case) -> [Tensor<f64>; 3] {
    ["expected_output.npy", "expected_hn.npy", "expected_cn.npy"]
        .map(|f| read_f64(&case.dir.join(f)))
}

fn check_case_f32(case: &Case, kind: EngineKind) {
    let model = load(case);
    let inp = inputs_f64(case);
    let to32 = |t: &Tensor<f64>| t.map(|&v| v as f32);
    let x = to32(&inp.x);
    let state = inp.state.as_ref().map(|s| LstmState {
        h: to32(&s.h),
        c: to32(&s.c),
    });
    let engine = model.engine(kind).unwrap();
    let out = engine
        .forward(&x, state.as_ref(), inp.lengths.as_deref())
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let tol = case.tolerance;
    assert_matches_pytorch(case, &out, |k| (tol[k], 0.0));
}

/// Compares an engine's `(output, h_n, c_n)` with PyTorch's float64 result, tensor `k` under
/// `(atol, rtol) = tolerance(k)`.
fn assert_matches_pytorch<T: Copy + Default + Into<f64>>(
    case: &Case,
    out: &lstm::LstmOutput<T>,
    tolerance: impl Fn(usize) -> (f64, f64),
) {
    let mut out = out.clone();
    if let Some(n) = case.total_length {
        out.output = lstm::pad_to_total_length(out.output, n, case.batch_first).unwrap();
    }
    let want = expected(case);
    let got = [
        (&out.output, "output"),
        (&out.h_n, "h_n"),
        (&out.c_n, "c_n"),
    ];
    for (k, (got, what)) in got.into_iter().enumerate() {
        assert_eq!(got.shape(), want[k].shape(), "{}: {what} shape", case.name);
        let got: Vec<f64> = got.data().iter().map(|&v| v.into()).collect();
        let (atol, rtol) = tolerance(k);
        assert_close(&case.name, what, &got, &want[k], atol, rtol);
    }
}

#[test]
fn every_engine_matches_pytorch_f64() {
    for case in cases() {
        for &kind in EngineKind::ALL {
            check_case_f32(&case, kind);
        }
    }
}

/// The SIMD engine's contract, on every backend this CPU has: within 2e-5 + 1e-4·|ref| of
/// PyTorch's float64 result, element by element (F64-stored weights, which the loader rounds
/// to f32, get the manifest's f32 tolerance).
#[test]
fn every_simd_backend_within_contract() {
    for case in cases() {
        let model = load(&case);
        let inp = inputs_f64(&case);
        let to32 = |t: &Tensor<f64>| t.map(|&v| v as f32);
        let x = to32(&inp.x);
        let state = inp.state.as_ref().map(|s| LstmState {
            h: to32(&s.h),
            c: to32(&s.c),
        });
        let f64_weights = case.json["dtype"].as_str() == Some("F64");
        for backend in lstm::Backend::all() {
            let engine = model.simd_engine(backend).unwrap();
            let out = engine
                .forward(&x, state.as_ref(), inp.lengths.as_deref())
                .unwrap_or_else(|e| panic!("{} ({backend}): {e}", case.name));
            let tol = case.tolerance;
            assert_matches_pytorch(&case, &out, |k| {
                if f64_weights {
                    (tol[k].max(2e-5), 1e-4)
                } else {
                    (2e-5, 1e-4)
                }
            });
        }
    }
}

#[test]
fn naive_f64_matches_pytorch_f64_to_rounding() {
    for case in cases() {
        let model = load(&case);
        let inp = inputs_f64(&case);
        let engine = model.reference_f64().unwrap();
        let out = engine
            .forward(&inp.x, inp.state.as_ref(), inp.lengths.as_deref())
            .unwrap();
        // Only the summation order differs from PyTorch's f64 path: errors of a few ulps of
        // the largest partial sums, far below any f32 tolerance. F64 weights are stored
        // rounded to f32 on load (the library's weights are f32), so that case only gets the
        // f32 tolerance.
        let f64_weights = case.json["dtype"].as_str() == Some("F64");
        let tol = case.tolerance;
        assert_matches_pytorch(&case, &out, |k| {
            if f64_weights {
                (tol[k], 0.0)
            } else {
                (1e-12, 1e-12)
            }
        });
    }
}

/// The automatic prefix search finds the same LSTM whenever a file holds only one.
#[test]
fn automatic_prefix_agrees_with_the_manifest() {
    for case in cases() {
        let auto = Model::load(case.dir.join("model.safetensors"))
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(auto.prefix(), case.prefix, "{}", case.name);
        let cfg = &case.json["config"];
        let c = auto.config();
        assert_eq!(
            c.input_size as u64,
            cfg["input_size"].as_u64().unwrap(),
            "{}",
            case.name
        );
        assert_eq!(
            c.hidden_size as u64,
            cfg["hidden_size"].as_u64().unwrap(),
            "{}",
            case.name
        );
        assert_eq!(
            c.num_layers as u64,
            cfg["num_layers"].as_u64().unwrap(),
            "{}",
            case.name
        );
        assert_eq!(
            c.proj_size as u64,
            cfg["proj_size"].as_u64().unwrap(),
            "{}",
            case.name
        );
        assert_eq!(c.bias, cfg["bias"].as_bool().unwrap(), "{}", case.name);
        assert_eq!(
            c.bidirectional,
            cfg["bidirectional"].as_bool().unwrap(),
            "{}",
            case.name
        );
    }
}

/// Streaming: `step` called once per time step reproduces PyTorch's output at every step and
/// its final state, on every unidirectional case without lengths.
#[test]
fn step_matches_pytorch_step_by_step() {
    let mut checked = 0;
    for case in cases() {
        if case.json["config"]["bidirectional"].as_bool().unwrap() || case.has_lengths {
            continue;
        }
        let model = load(&case);
        let config = model.config().clone();
        let inp = inputs_f64(&case);
        let unbatched = case.json["unbatched"].as_bool().unwrap();
        let to32 = |t: &Tensor<f64>| t.map(|&v| v as f32);
        // Canonical [T, B, I] input and [T, B, H_out] expected output.
        let (mut x, mut want) = (to32(&inp.x), expected(&case));
        if case.batch_first && !unbatched {
            x = x.swap_leading_axes().unwrap();
            want[0] = want[0].swap_leading_axes().unwrap();
        }
        let batch = if unbatched { None } else { Some(x.shape()[1]) };
        let b = batch.unwrap_or(1);
        let state = match &inp.state {
            Some(s) => LstmState {
                h: to32(&s.h),
                c: to32(&s.c),
            },
            None => LstmState::zeros(&config, batch).unwrap(),
        };
        for &kind in EngineKind::ALL {
            let engine = model.engine(kind).unwrap();
            let mut st = state.clone();
            let (step_in, step_out) = (b * config.input_size, b * config.h_out());
            let mut out = vec![f32::NAN; step_out];
            let mut produced = Vec::new();
            for x_t in x.data().chunks_exact(step_in) {
                engine.step(x_t, &mut st, &mut out).unwrap();
                produced.extend(out.iter().map(|&v| v as f64));
            }
            assert_close(
                &case.name,
                "step output",
                &produced,
                &want[0],
                case.tolerance[0],
                0.0,
            );
            let h: Vec<f64> = st.h.data().iter().map(|&v| v as f64).collect();
            let c: Vec<f64> = st.c.data().iter().map(|&v| v as f64).collect();
            assert_close(&case.name, "step h", &h, &want[1], case.tolerance[1], 0.0);
            assert_close(&case.name, "step c", &c, &want[2], case.tolerance[2], 0.0);
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} unidirectional cases");
}
