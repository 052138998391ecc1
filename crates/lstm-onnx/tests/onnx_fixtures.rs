//! The ONNX fixtures of `tools/gen_onnx_fixtures.py` (`fixtures/onnx/`): every case loads,
//! and every engine (naive, simd on each backend this CPU has, parallel) matches onnxruntime
//! (or `onnx.reference`, or PyTorch) within `2e-5 + 1e-4·|ref|`, element by element, ONNX's
//! cell options included. The broken files are refused with an error, never a panic.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use lstm_core::io::read_npy;
use lstm_core::{LstmEngine, LstmError, Tensor};
use lstm_naive::NaiveEngine;
use lstm_onnx::{load_onnx, parse_onnx, OnnxLstm};
use lstm_parallel::ParallelEngine;
use lstm_simd::{Backend, SimdEngine};

const ATOL: f32 = 2e-5;
const RTOL: f32 = 1e-4;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/onnx")
}

fn tensor(dir: &Path, name: &str) -> Tensor<f32> {
    read_npy(&dir.join(format!("{name}.npy")))
        .unwrap()
        .into_f32_tensor(name)
        .unwrap()
}

fn assert_close(case: &str, engine: &str, what: &str, got: &Tensor<f32>, want: &Tensor<f32>) {
    assert_eq!(got.shape(), want.shape(), "{case} {engine} {what}: shape");
    for (k, (&g, &w)) in got.data().iter().zip(want.data()).enumerate() {
        assert!(
            (g - w).abs() <= ATOL + RTOL * w.abs(),
            "{case} {engine} {what}[{k}]: got {g}, expected {w}"
        );
    }
}

struct Case {
    name: String,
    node: String,
    inputs: Vec<String>,
    layers: usize,
}

fn manifest() -> Vec<Case> {
    let text = std::fs::read_to_string(root().join("manifest.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            node: c["node"].as_str().unwrap().to_string(),
            inputs: c["inputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect(),
            layers: c["layers"].as_u64().map_or(1, |n| n as usize),
        })
        .collect()
}

fn check(case: &Case, lstm: &OnnxLstm, engine_name: &str, engine: &dyn LstmEngine<f32>) {
    let dir = root().join(&case.name);
    let x = tensor(&dir, "x");
    let state = case
        .inputs
        .contains(&"h0".to_string())
        .then(|| (tensor(&dir, "h0"), tensor(&dir, "c0")));
    let lens: Option<Vec<i64>> = case.inputs.contains(&"lens".to_string()).then(|| {
        read_npy(&dir.join("lens.npy"))
            .unwrap()
            .into_lengths("lens")
            .unwrap()
            .into_iter()
            .map(|n| n as i64)
            .collect()
    });
    let out = lstm
        .run(
            engine,
            &x,
            state.as_ref().map(|(h, c)| (h, c)),
            lens.as_deref(),
        )
        .unwrap_or_else(|e| panic!("{} {engine_name}: {e}", case.name));
    assert_close(&case.name, engine_name, "Y", &out.y, &tensor(&dir, "y"));
    assert_close(
        &case.name,
        engine_name,
        "Y_h",
        &out.y_h,
        &tensor(&dir, "y_h"),
    );
    assert_close(
        &case.name,
        engine_name,
        "Y_c",
        &out.y_c,
        &tensor(&dir, "y_c"),
    );
}

#[test]
fn every_fixture_matches_its_reference_on_every_engine() {
    let cases = manifest();
    assert!(cases.len() >= 20, "{} cases", cases.len());
    for case in &cases {
        let bytes = std::fs::read(root().join(&case.name).join("model.onnx")).unwrap();
        let lstm = load_onnx(&bytes, None).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(lstm.nodes()[0], case.node, "{}", case.name);
        assert_eq!(lstm.nodes().len(), case.layers, "{}", case.name);
        assert_eq!(lstm.weights().config().num_layers, case.layers);
        // Chosen by name too.
        assert_eq!(load_onnx(&bytes, Some(&case.node)).unwrap(), lstm);

        let naive = NaiveEngine::new(lstm.weights().clone()).unwrap();
        check(case, &lstm, "naive", &naive);
        let mut fast_runs = 0;
        for backend in Backend::all() {
            if !backend.is_supported() {
                eprintln!("note: backend {backend} not supported on this CPU, skipped");
                continue;
            }
            let simd = SimdEngine::with_backend(lstm.weights(), backend)
                .unwrap_or_else(|e| panic!("{} simd/{backend}: {e}", case.name));
            check(case, &lstm, &format!("simd/{backend}"), &simd);
            let par = ParallelEngine::with_backend(lstm.weights(), backend, 2)
                .unwrap_or_else(|e| panic!("{} parallel/{backend}: {e}", case.name));
            check(case, &lstm, &format!("parallel/{backend}"), &par);
            fast_runs += 1;
        }
        assert!(fast_runs > 0, "{}: no backend ran", case.name);
    }
}

#[test]
fn broken_files_are_one_error_each() {
    let dir = root().join("broken");
    let expect = [
        ("truncated", "invalid ONNX model"),
        ("not_onnx", "invalid ONNX model"),
        ("lying_size", "needs"),
        ("huge_dims", "elements"),
        (
            "missing_initializer",
            "no initializer, node or graph input produces it",
        ),
        ("activations", "activations"),
        ("activation_alpha", "activation_alpha"),
        ("dynamic_weights", "computed at run time"),
        ("int_weights", "integer dtype"),
        ("cycle", "cycle"),
    ];
    for (name, needle) in expect {
        let bytes = std::fs::read(dir.join(format!("{name}.onnx"))).unwrap();
        let err = load_onnx(&bytes, None).unwrap_err().to_string();
        assert!(err.contains(needle), "{name}: {err}");
        assert!(!err.contains('\n'), "{name}: {err}");
    }
    // Unsupported attributes name the node and the attribute.
    let bytes = std::fs::read(dir.join("activations.onnx")).unwrap();
    match load_onnx(&bytes, None) {
        Err(LstmError::OnnxUnsupported {
            node, attribute, ..
        }) => assert_eq!((node.as_str(), attribute.as_str()), ("lstm", "activations")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_truncation_of_a_model_is_an_error_or_a_model() {
    let bytes = std::fs::read(root().join("all_options/model.onnx")).unwrap();
    for len in 0..bytes.len() {
        let _ = load_onnx(&bytes[..len], None);
    }
    // A byte flipped anywhere: never a panic.
    for at in 0..bytes.len() {
        let mut b = bytes.clone();
        b[at] ^= 0x5a;
        let _ = parse_onnx(&b);
    }
}

#[test]
fn nodes_are_listed_with_paths_and_chains() {
    let bytes = std::fs::read(root().join("lstm_cell_nested_if/model.onnx")).unwrap();
    let file = parse_onnx(&bytes).unwrap();
    let nodes = file.nodes();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].path, "main/If_0.then_branch/If_1.then_branch");
    assert_eq!(nodes[0].hidden_size, Some(6));
    let bytes = std::fs::read(root().join("torch_2layer_bidirectional/model.onnx")).unwrap();
    let file = parse_onnx(&bytes).unwrap();
    let nodes = file.nodes();
    assert_eq!(nodes.len(), 2);
    let first = nodes[0].name.clone();
    assert_eq!(nodes[0].chain, Some((first.clone(), 0)));
    assert_eq!(nodes[1].chain, Some((first, 1)));
    // A later node of a chain, named, loads alone.
    let second = load_onnx(&bytes, Some(&nodes[1].name)).unwrap();
    assert_eq!(second.weights().config().num_layers, 1);
    assert_eq!(second.weights().config().input_size, 10);
    match load_onnx(&bytes, Some("nope")) {
        Err(LstmError::OnnxNodeChoice { available, .. }) => {
            assert_eq!(available, vec![nodes[0].name.clone()]);
        }
        other => panic!("{other:?}"),
    }
}

/// An `nn.LSTMCell` state_dict loads as a one-layer LSTM whose `step` is `LSTMCell.forward`
/// (h1, c1 from PyTorch), and equals the weights of the same cell exported as an ONNX node.
#[test]
fn lstm_cell_state_dict_steps_like_lstm_cell() {
    let dir = root().join("lstm_cell_nested_if");
    let loaded = lstm_core::io::load_safetensors(&dir.join("cell.safetensors"), None).unwrap();
    assert_eq!(loaded.prefix, "cell.");
    let config = loaded.weights.config().clone();
    assert_eq!((config.num_layers, config.bidirectional), (1, false));
    let onnx = load_onnx(&std::fs::read(dir.join("model.onnx")).unwrap(), None).unwrap();
    assert_eq!(onnx.weights(), &loaded.weights);

    let x = tensor(&dir, "x"); // [1, B, I]: one step
    let (h1, c1) = (tensor(&dir, "y_h"), tensor(&dir, "y_c"));
    let batch = x.shape()[1];
    let mut engines: Vec<(String, Box<dyn LstmEngine<f32>>)> = vec![(
        "naive".into(),
        Box::new(NaiveEngine::new(loaded.weights.clone()).unwrap()),
    )];
    for backend in Backend::all().into_iter().filter(|b| b.is_supported()) {
        engines.push((
            format!("simd/{backend}"),
            Box::new(SimdEngine::with_backend(&loaded.weights, backend).unwrap()),
        ));
    }
    for (name, engine) in &engines {
        let mut state = lstm_core::LstmState {
            h: tensor(&dir, "h0"),
            c: tensor(&dir, "c0"),
        };
        let mut out = vec![f32::NAN; batch * config.hidden_size];
        engine.step(x.data(), &mut state, &mut out).unwrap();
        let out = Tensor::new([1, batch, config.hidden_size], out).unwrap();
        assert_close("lstm_cell", name, "h1", &out, &h1);
        assert_close("lstm_cell", name, "c1", &state.c, &c1);
    }
}
