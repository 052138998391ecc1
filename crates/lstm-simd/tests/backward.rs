//! The SIMD backward on every backend this host supports against the f64 reference backward,
//! over every option and the tail sizes of each lane width; and the training forward against
//! the forward, bit for bit. (The PyTorch autograd fixtures and the property harness in
//! `lstm-validate` go further.)
#![allow(clippy::unwrap_used)]

use lstm_core::{
    GradOutputs, LstmConfig, LstmEngine, LstmGradients, LstmState, LstmWeights, SplitMix64, Tensor,
    TrainingTape,
};
use lstm_naive::NaiveEngine;
use lstm_simd::{Backend, SimdEngine};

fn data(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| rng.next_signed_unit() as f32 * scale)
        .collect()
}

fn widen(t: &Tensor<f32>) -> Tensor<f64> {
    t.map(|&v| f64::from(v))
}

#[derive(Clone)]
struct Case {
    config: LstmConfig,
    t: usize,
    /// `None`: unbatched.
    b: Option<usize>,
    state: bool,
    final_grads: bool,
    lengths: Option<Vec<usize>>,
}

fn case(config: LstmConfig, t: usize, b: usize) -> Case {
    Case {
        config,
        t,
        b: Some(b),
        state: false,
        final_grads: false,
        lengths: None,
    }
}

/// Every gradient tensor as (name, data), in a fixed order.
fn tensors<T: Copy>(g: &LstmGradients<T>) -> Vec<(String, Vec<T>)> {
    let mut v = vec![
        ("grad_input".to_string(), g.grad_input.data().to_vec()),
        ("grad_h0".to_string(), g.grad_h0.data().to_vec()),
        ("grad_c0".to_string(), g.grad_c0.data().to_vec()),
    ];
    for (name, _, data) in g.named_tensors("") {
        v.push((name, data.to_vec()));
    }
    v
}

/// Runs the case on every backend and the f64 reference; checks each gradient tensor within
/// `1e-5 + 1e-5·max|ref|` of the reference and the training forward against the forward.
/// Returns the largest error relative to the tensor's largest reference value.
fn check(case: &Case, seed: u64) -> f64 {
    let config = &case.config;
    let weights = LstmWeights::<f32>::random(config.clone(), seed).unwrap();
    let i = config.input_size;
    let (t, out) = (case.t, config.output_size());
    let (x_shape, y_shape) = match case.b {
        Some(b) if config.batch_first => (vec![b, t, i], vec![b, t, out]),
        Some(b) => (vec![t, b, i], vec![t, b, out]),
        None => (vec![t, i], vec![t, out]),
    };
    let x = Tensor::new(
        x_shape.clone(),
        data(x_shape.iter().product(), seed ^ 1, 1.5),
    )
    .unwrap();
    // With lengths, grad_output covers max(lengths) steps.
    let t_out = case
        .lengths
        .as_ref()
        .map_or(t, |l| l.iter().copied().max().unwrap());
    let mut y_shape = y_shape;
    if let Some(l) = &case.lengths {
        let axis = usize::from(config.batch_first);
        y_shape[axis] = l.iter().copied().max().unwrap();
    }
    let _ = t_out;
    let gy = Tensor::new(
        y_shape.clone(),
        data(y_shape.iter().product(), seed ^ 2, 1.0),
    )
    .unwrap();
    let zero_state = LstmState::<f32>::zeros(config, case.b).unwrap();
    let state = case.state.then(|| {
        let mut s = zero_state.clone();
        let h = data(s.h.len(), seed ^ 3, 0.8);
        let c = data(s.c.len(), seed ^ 4, 2.0);
        s.h.data_mut().copy_from_slice(&h);
        s.c.data_mut().copy_from_slice(&c);
        s
    });
    let finals = case.final_grads.then(|| {
        let (h, c) = (zero_state.h.shape().to_vec(), zero_state.c.shape().to_vec());
        (
            Tensor::new(h.clone(), data(h.iter().product(), seed ^ 5, 1.0)).unwrap(),
            Tensor::new(c.clone(), data(c.iter().product(), seed ^ 6, 1.0)).unwrap(),
        )
    });
    let lengths = case.lengths.as_deref();

    let reference = NaiveEngine::new(weights.cast::<f64>()).unwrap();
    let mut tape64 = TrainingTape::new();
    let state64 = state.as_ref().map(|s| LstmState {
        h: widen(&s.h),
        c: widen(&s.c),
    });
    reference
        .forward_train(&widen(&x), state64.as_ref(), lengths, &mut tape64)
        .unwrap();
    let (gy64, finals64) = (
        widen(&gy),
        finals.as_ref().map(|(h, c)| (widen(h), widen(c))),
    );
    let mut up64 = GradOutputs::new(&gy64);
    if let Some((h, c)) = &finals64 {
        up64 = up64.with_h_n(h).with_c_n(c);
    }
    let want = tensors(&reference.backward(&tape64, &up64).unwrap());

    let mut worst = 0.0f64;
    for backend in Backend::all() {
        let engine = SimdEngine::with_backend(&weights, backend).unwrap();
        let tag = format!(
            "{backend} {config:?} T={t} B={:?} state={} lengths={:?}",
            case.b, case.state, case.lengths
        );
        let mut tape = TrainingTape::new();
        let trained = engine
            .forward_train(&x, state.as_ref(), lengths, &mut tape)
            .unwrap();
        let plain = engine.forward(&x, state.as_ref(), lengths).unwrap();
        assert_eq!(trained, plain, "{tag}: forward_train differs from forward");
        let mut up = GradOutputs::new(&gy);
        if let Some((h, c)) = &finals {
            up = up.with_h_n(h).with_c_n(c);
        }
        let got = tensors(&engine.backward(&tape, &up).unwrap());
        assert_eq!(got.len(), want.len(), "{tag}");
        for ((name, g), (wname, w)) in got.iter().zip(&want) {
            assert_eq!(name, wname, "{tag}");
            assert_eq!(g.len(), w.len(), "{tag}: {name}");
            let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let tol = 1e-5 + 1e-5 * scale;
            for (j, (&a, &b)) in g.iter().zip(w).enumerate() {
                let err = (f64::from(a) - b).abs();
                assert!(
                    err <= tol,
                    "{tag}: {name}[{j}] = {a}, f64 reference {b} (error {err:e} > {tol:e})"
                );
                worst = worst.max(err / (1.0 + scale));
            }
        }
    }
    worst
}

#[test]
fn every_tail_of_hidden_and_batch() {
    let mut worst = 0.0f64;
    for h in [1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 47] {
        for b in [1, 2, 3, 7, 13] {
            worst = worst.max(check(
                &case(LstmConfig::new(5, h), 4, b),
                (h * 31 + b) as u64,
            ));
        }
    }
    println!("worst error / (1 + max|ref|): {worst:e}");
}

#[test]
fn input_sizes_layers_and_long_batches() {
    for i in [1, 3, 16, 17, 40] {
        check(
            &case(LstmConfig::new(i, 24).with_num_layers(3), 6, 4),
            i as u64,
        );
    }
    // More than one reduction chunk of the weight-gradient GEMM (T·B > 256) and of the bias sums.
    check(&case(LstmConfig::new(9, 20), 40, 9), 5);
}

#[test]
fn bidirectional_projection_bias_states() {
    let configs = [
        LstmConfig::new(6, 20).with_bidirectional(true),
        LstmConfig::new(6, 20)
            .with_bidirectional(true)
            .with_num_layers(2),
        LstmConfig::new(6, 20).with_proj_size(7),
        LstmConfig::new(6, 33)
            .with_proj_size(17)
            .with_bidirectional(true)
            .with_num_layers(2),
        LstmConfig::new(6, 20).with_bias(false),
        LstmConfig::new(6, 18)
            .with_batch_first(true)
            .with_num_layers(2),
    ];
    for (n, config) in configs.into_iter().enumerate() {
        for (state, final_grads) in [(false, false), (true, true), (false, true)] {
            let mut c = case(config.clone(), 7, 6);
            c.state = state;
            c.final_grads = final_grads;
            check(&c, 100 + n as u64);
        }
    }
}

#[test]
fn unbatched_and_lengths() {
    let mut c = case(LstmConfig::new(4, 19).with_num_layers(2), 9, 1);
    c.b = None;
    c.state = true;
    c.final_grads = true;
    check(&c, 3);
    for config in [
        LstmConfig::new(4, 19),
        LstmConfig::new(4, 19)
            .with_bidirectional(true)
            .with_num_layers(2),
        LstmConfig::new(4, 21)
            .with_proj_size(5)
            .with_bidirectional(true)
            .with_batch_first(true),
    ] {
        for lengths in [
            vec![3, 9, 1, 9, 5],
            vec![9, 7, 7, 2, 1],
            vec![2, 2, 2, 2, 2],
        ] {
            for state in [false, true] {
                let mut c = case(config.clone(), 9, 5);
                c.lengths = Some(lengths.clone());
                c.state = state;
                c.final_grads = state;
                check(&c, 9);
            }
        }
    }
}

#[test]
fn a_tape_is_reused_across_calls_and_shapes() {
    let config = LstmConfig::new(3, 10).with_bidirectional(true);
    let weights = LstmWeights::<f32>::random(config.clone(), 4).unwrap();
    let engine = SimdEngine::new(&weights).unwrap();
    let mut tape = TrainingTape::new();
    let mut first = None;
    for (t, b) in [(5, 3), (2, 1), (5, 3)] {
        let x = Tensor::new([t, b, 3], data(t * b * 3, 7, 1.0)).unwrap();
        let gy = Tensor::new([t, b, 20], data(t * b * 20, 8, 1.0)).unwrap();
        engine.forward_train(&x, None, None, &mut tape).unwrap();
        let g = engine.backward(&tape, &GradOutputs::new(&gy)).unwrap();
        if t == 5 {
            match &first {
                None => first = Some(g),
                Some(f) => assert_eq!(f, &g, "deterministic across calls"),
            }
        }
    }
    // A tape of another model is refused.
    let other = SimdEngine::new(&LstmWeights::random(LstmConfig::new(3, 11), 1).unwrap()).unwrap();
    let gy = Tensor::new([5, 3, 20], vec![0.0; 300]).unwrap();
    assert!(other.backward(&tape, &GradOutputs::new(&gy)).is_err());
    assert!(engine
        .backward(&TrainingTape::new(), &GradOutputs::new(&gy))
        .is_err());
}

/// The forward runs ONNX's cell options; training them is refused, naming the option, before
/// any tape is written.
#[test]
fn training_refuses_onnx_cell_options() {
    use lstm_core::LstmError;
    let config = LstmConfig::new(3, 8).with_clip(Some(0.5));
    let weights = LstmWeights::<f32>::random(config.clone(), 1).unwrap();
    let x = Tensor::new([4, 2, 3], data(24, 2, 1.0)).unwrap();
    for backend in Backend::all() {
        let engine = SimdEngine::with_backend(&weights, backend).unwrap();
        assert!(engine.forward(&x, None, None).is_ok());
        let mut tape = TrainingTape::new();
        match engine.forward_train(&x, None, None, &mut tape) {
            Err(LstmError::Unsupported(why)) => assert!(why.contains("clip=0.5"), "{why}"),
            other => panic!("{backend}: expected Unsupported, got {other:?}"),
        }
    }
}
