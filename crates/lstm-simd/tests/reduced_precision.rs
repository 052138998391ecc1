//! bf16 and int8 weights on every backend this host supports: against the f64 reference run
//! on the same (rounded) weights, over the options and the tail sizes of each lane width.
#![allow(clippy::unwrap_used)]

use lstm_core::{
    LstmConfig, LstmEngine, LstmError, LstmState, LstmWeights, Precision, SplitMix64, Tensor,
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

/// Max |engine - f64 reference on the rounded weights| over output, h_n and c_n.
fn max_err(engine: &SimdEngine, weights: &LstmWeights<f32>, t: usize, b: usize, seed: u64) -> f64 {
    let config = weights.config();
    let rounded = weights.rounded_to(engine.precision());
    let reference = NaiveEngine::new(rounded.cast::<f64>()).unwrap();
    let i = config.input_size;
    let x = data(t * b * i, seed, 1.5);
    let x32 = Tensor::new([t, b, i], x.clone()).unwrap();
    let x64 = Tensor::new([t, b, i], x.iter().map(|&v| f64::from(v)).collect()).unwrap();
    let mut state = LstmState::<f32>::zeros(config, Some(b)).unwrap();
    let h = data(state.h.data().len(), seed ^ 5, 0.8);
    let c = data(state.c.data().len(), seed ^ 6, 2.0);
    state.h.data_mut().copy_from_slice(&h);
    state.c.data_mut().copy_from_slice(&c);
    let state64 = LstmState {
        h: state.h.map(|&v| f64::from(v)),
        c: state.c.map(|&v| f64::from(v)),
    };
    let lengths: Vec<usize> = (0..b).map(|r| t - (r * 3) % t).collect();
    let got = engine.forward(&x32, Some(&state), Some(&lengths)).unwrap();
    let want = reference
        .forward(&x64, Some(&state64), Some(&lengths))
        .unwrap();
    let pairs = [
        (got.output.data(), want.output.data()),
        (got.h_n.data(), want.h_n.data()),
        (got.c_n.data(), want.c_n.data()),
    ];
    pairs
        .iter()
        .flat_map(|(g, w)| g.iter().zip(w.iter()))
        .map(|(&g, &w)| (f64::from(g) - w).abs())
        .fold(0.0, f64::max)
}

fn configs() -> Vec<LstmConfig> {
    let mut out = Vec::new();
    for hidden in [1, 7, 9, 16, 17, 33] {
        for input in [1, 4, 9] {
            out.push(LstmConfig::new(input, hidden));
        }
    }
    out.push(
        LstmConfig::new(5, 24)
            .with_num_layers(2)
            .with_bidirectional(true),
    );
    out.push(LstmConfig::new(6, 20).with_proj_size(7).with_num_layers(2));
    out.push(
        LstmConfig::new(70, 40)
            .with_proj_size(13)
            .with_bidirectional(true),
    );
    out
}

/// Widening bf16 or int8 weights changes nothing but the weights: the result is the f32
/// engine's on the rounded weights, so within the f32 contract of the reference on those
/// weights. With `vdpbf16ps` the rows and `h` are rounded too: one more unit roundoff of bf16
/// (2^-8) on each product's other operand, which these sizes and bounded data keep below
/// 2e-2. With `vpdpbusd` they are quantized to 8 bits under their row's scale: an error of at
/// most `max|row| / 254` on each, below 3e-2 here.
#[test]
fn reduced_weights_match_the_reference_on_rounded_weights() {
    for (precision, dot_bound) in [(Precision::Bf16, 2e-2), (Precision::Int8, 3e-2)] {
        for backend in Backend::all_for(precision) {
            let mut worst: f64 = 0.0;
            for (n, config) in configs().into_iter().enumerate() {
                let weights = LstmWeights::<f32>::random(config, n as u64 + 1).unwrap();
                let engine = SimdEngine::with_options(&weights, backend, precision).unwrap();
                assert_eq!(engine.precision(), precision);
                let err = max_err(&engine, &weights, 11, 5, n as u64 + 100);
                let dot = matches!(backend, Backend::Avx512Bf16 | Backend::Avx512Vnni);
                let bound = if dot { dot_bound } else { 1e-4 };
                assert!(
                    err <= bound,
                    "{precision} {backend} case {n}: {err:e} > {bound:e}"
                );
                worst = worst.max(err);
            }
            println!(
                "{precision} {backend}: worst |engine - f64 on rounded weights| = {worst:.2e}"
            );
        }
    }
}

/// The backends that widen bf16 or int8 weights to f32 in registers run the f32 engine's
/// arithmetic and activations on the rounded weights: bit for bit what an f32 engine on the
/// same backend gives on `rounded_to(precision)` (for int8, `q·s_w` in f32), over every option.
#[test]
fn widened_weights_are_the_f32_engine_on_rounded_weights_bit_for_bit() {
    for precision in [Precision::Bf16, Precision::Int8] {
        let widened = Backend::all_for(precision)
            .into_iter()
            .filter(|b| !matches!(b, Backend::Avx512Bf16 | Backend::Avx512Vnni));
        for backend in widened {
            for (n, config) in configs().into_iter().enumerate() {
                let (t, b, i) = (9, 4, config.input_size);
                let weights = LstmWeights::<f32>::random(config, n as u64 + 7).unwrap();
                let reduced = SimdEngine::with_options(&weights, backend, precision).unwrap();
                let rounded = weights.rounded_to(precision);
                let f32_engine = SimdEngine::with_backend(&rounded, backend).unwrap();
                let x = Tensor::new([t, b, i], data(t * b * i, n as u64 + 50, 2.0)).unwrap();
                let lengths = [9, 3, 7, 9];
                let (got, want) = (
                    reduced.forward(&x, None, Some(&lengths)).unwrap(),
                    f32_engine.forward(&x, None, Some(&lengths)).unwrap(),
                );
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                for (name, g, w) in [
                    ("output", got.output.data(), want.output.data()),
                    ("h_n", got.h_n.data(), want.h_n.data()),
                    ("c_n", got.c_n.data(), want.c_n.data()),
                ] {
                    assert_eq!(bits(g), bits(w), "{precision} {backend} case {n}: {name}");
                }
            }
        }
    }
}

/// f32 engines are untouched by the option: bit for bit what `with_backend` builds.
#[test]
fn f32_precision_is_the_default_engine() {
    let weights = LstmWeights::<f32>::random(LstmConfig::new(9, 33).with_proj_size(5), 3).unwrap();
    let x = Tensor::new([6, 4, 9], data(216, 9, 1.0)).unwrap();
    for backend in Backend::all_for(Precision::Bf16) {
        let a = SimdEngine::with_options(&weights, backend, Precision::F32).unwrap();
        let b = SimdEngine::with_backend(&weights, backend).unwrap();
        let (ya, yb) = (
            a.forward(&x, None, None).unwrap(),
            b.forward(&x, None, None).unwrap(),
        );
        assert_eq!(ya.output.data(), yb.output.data(), "{backend}");
    }
    assert_eq!(Backend::detect_for(Precision::F32), Backend::detect());
    assert!(!Backend::all().contains(&Backend::Avx512Bf16));
}

#[test]
fn training_a_reduced_precision_engine_is_refused() {
    let config = LstmConfig::new(3, 8);
    let weights = LstmWeights::<f32>::random(config.clone(), 1).unwrap();
    for precision in [Precision::Bf16, Precision::Int8] {
        let engine = SimdEngine::with_options(&weights, Backend::Portable, precision).unwrap();
        let x = Tensor::new([2, 1, 3], vec![0.1; 6]).unwrap();
        let mut tape = TrainingTape::new();
        let err = engine.forward_train(&x, None, None, &mut tape).unwrap_err();
        assert!(matches!(err, LstmError::Unsupported(_)), "{err}");
    }
}

/// int8 sums stay exact only up to a reduction length: beyond it the engine says so.
#[test]
fn int8_refuses_reductions_its_sums_cannot_hold() {
    let config = LstmConfig::new(200_000, 1);
    let weights = LstmWeights::<f32>::random(config, 1).unwrap();
    let err = SimdEngine::with_options(&weights, Backend::Portable, Precision::Int8).unwrap_err();
    assert!(
        matches!(err, LstmError::Unsupported(ref m) if m.contains("200000")),
        "{err}"
    );
    assert!(SimdEngine::with_options(&weights, Backend::Portable, Precision::Bf16).is_ok());
}

/// Each row of a batch comes out as it would alone, bit for bit, however the kernels stage
/// their rows for `vdpbf16ps` or `vpdpbusd`: encoded once into groups (a hidden size of 1100
/// makes groups of 24 bf16 rows, so 30 rows take two, while 28, which fit the stage's 29, are
/// one group) or, for an input 6000 wide (too long for a 6-row bf16 stage), encoded chunk by
/// chunk for each tile. The first two also stay within this file's bound (the 6000-term sums
/// saturate every gate: their error is the tolerance model's business, in lstm-validate).
#[test]
fn rows_come_out_the_same_however_they_are_staged() {
    for (config, t, b, bound) in [
        (LstmConfig::new(5, 1100), 2, 30, 3e-2),
        (LstmConfig::new(5, 1100), 2, 28, 3e-2),
        (LstmConfig::new(6000, 8), 3, 7, f64::INFINITY),
        (LstmConfig::new(12000, 8), 2, 7, f64::INFINITY),
    ] {
        let weights = LstmWeights::<f32>::random(config.clone(), 11).unwrap();
        let i = config.input_size;
        let x = data(t * b * i, 12, 1.0);
        for precision in [Precision::Bf16, Precision::Int8] {
            for backend in Backend::all_for(precision) {
                let engine = SimdEngine::with_options(&weights, backend, precision).unwrap();
                let batch = engine
                    .forward(&Tensor::new([t, b, i], x.clone()).unwrap(), None, None)
                    .unwrap();
                let h = config.hidden_size;
                for r in 0..b {
                    let row: Vec<f32> = (0..t)
                        .flat_map(|s| x[(s * b + r) * i..][..i].iter().copied())
                        .collect();
                    let alone = engine
                        .forward(&Tensor::new([t, 1, i], row).unwrap(), None, None)
                        .unwrap();
                    for s in 0..t {
                        assert_eq!(
                            &batch.output.data()[(s * b + r) * h..][..h],
                            &alone.output.data()[s * h..][..h],
                            "{precision} {backend} {config:?}: row {r}, step {s}"
                        );
                    }
                }
                let err = max_err(&engine, &weights, t, b, 13);
                assert!(err <= bound, "{precision} {backend} {config:?}: {err:e}");
            }
        }
    }
}
