//! Every backend this host supports against the f64 reference, over every option and the tail
//! sizes of each lane width. (The property-based harness in `lstm-validate` goes wider.)
#![allow(clippy::unwrap_used)]

use lstm_core::{LstmConfig, LstmEngine, LstmState, LstmWeights, Precision, SplitMix64, Tensor};
use lstm_naive::NaiveEngine;
use lstm_simd::{activations, Backend, SimdEngine};

/// The accuracy contract: |simd - f64| <= 2e-5 + 1e-4·|f64|, element by element.
fn assert_close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (j, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = 2e-5 + 1e-4 * w.abs();
        assert!(
            (f64::from(g) - w).abs() <= tol,
            "{what}[{j}]: simd {g} vs f64 {w} (|diff| {:e} > {tol:e})",
            (f64::from(g) - w).abs()
        );
    }
}

fn max_err(got: &[f32], want: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - w).abs())
        .fold(0.0, f64::max)
}

fn data(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| rng.next_signed_unit() as f32 * scale)
        .collect()
}

struct Case {
    config: LstmConfig,
    t: usize,
    b: Option<usize>,
    state: bool,
    lengths: Option<Vec<usize>>,
    weight_scale: Option<f64>,
}

fn check(case: &Case, seed: u64) {
    let config = &case.config;
    let weights = match case.weight_scale {
        Some(s) => LstmWeights::<f32>::random_uniform(config.clone(), seed, s).unwrap(),
        None => LstmWeights::<f32>::random(config.clone(), seed).unwrap(),
    };
    let reference = NaiveEngine::new(weights.cast::<f64>()).unwrap();
    let i = config.input_size;
    let (shape, n) = match case.b {
        Some(b) if config.batch_first => (vec![b, case.t, i], b * case.t * i),
        Some(b) => (vec![case.t, b, i], case.t * b * i),
        None => (vec![case.t, i], case.t * i),
    };
    let x = data(n, seed ^ 77, 1.5);
    let x32 = Tensor::new(shape.clone(), x.clone()).unwrap();
    let x64 = Tensor::new(shape, x.iter().map(|&v| f64::from(v)).collect()).unwrap();
    let state32 = case.state.then(|| {
        let mut s = LstmState::<f32>::zeros(config, case.b).unwrap();
        let h = data(s.h.data().len(), seed ^ 5, 0.8);
        let c = data(s.c.data().len(), seed ^ 6, 2.0);
        s.h.data_mut().copy_from_slice(&h);
        s.c.data_mut().copy_from_slice(&c);
        s
    });
    let state64 = state32.as_ref().map(|s| LstmState {
        h: s.h.map(|&v| f64::from(v)),
        c: s.c.map(|&v| f64::from(v)),
    });
    let want = reference
        .forward(&x64, state64.as_ref(), case.lengths.as_deref())
        .unwrap();
    // Saturating weights make the recurrence ill-conditioned: there the yardstick is the most
    // accurate f32 LSTM (the naive engine), and a fast engine may be a few times further off.
    let naive32_err = case.weight_scale.map(|_| {
        let got = NaiveEngine::new(weights.clone())
            .unwrap()
            .forward(&x32, state32.as_ref(), case.lengths.as_deref())
            .unwrap();
        max_err(got.output.data(), want.output.data())
    });
    for backend in Backend::all() {
        let engine = SimdEngine::with_backend(&weights, backend).unwrap();
        let got = engine
            .forward(&x32, state32.as_ref(), case.lengths.as_deref())
            .unwrap();
        let tag = format!("{backend} {config:?} T={} B={:?}", case.t, case.b);
        assert_eq!(got.output.shape(), want.output.shape(), "{tag}");
        if let Some(naive) = naive32_err {
            let err = max_err(got.output.data(), want.output.data());
            assert!(
                err <= (4.0 * naive).max(2e-5),
                "{tag}: max error {err:e}, naive f32 {naive:e}"
            );
            continue;
        }
        assert_close(
            &format!("{tag} output"),
            got.output.data(),
            want.output.data(),
        );
        assert_close(&format!("{tag} h_n"), got.h_n.data(), want.h_n.data());
        assert_close(&format!("{tag} c_n"), got.c_n.data(), want.c_n.data());
    }
}

fn case(config: LstmConfig, t: usize, b: usize) -> Case {
    Case {
        config,
        t,
        b: Some(b),
        state: false,
        lengths: None,
        weight_scale: None,
    }
}

#[test]
fn every_tail_of_hidden_and_batch() {
    for h in [1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 65] {
        for b in [1, 2, 3, 5, 7, 13] {
            check(&case(LstmConfig::new(5, h), 4, b), (h * 31 + b) as u64);
        }
    }
}

#[test]
fn input_sizes_and_layers() {
    for i in [1, 3, 16, 40] {
        check(
            &case(LstmConfig::new(i, 24).with_num_layers(3), 6, 4),
            i as u64,
        );
    }
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
        for state in [false, true] {
            let mut c = case(config.clone(), 7, 6);
            c.state = state;
            check(&c, 100 + n as u64);
        }
    }
}

#[test]
fn unbatched_and_lengths() {
    let mut c = case(LstmConfig::new(4, 19).with_num_layers(2), 9, 1);
    c.b = None;
    c.state = true;
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
                check(&c, 9);
            }
        }
    }
}

#[test]
fn long_sequences_and_saturation() {
    let mut c = case(LstmConfig::new(8, 40), 300, 3);
    c.state = true;
    check(&c, 4);
    let mut c = case(LstmConfig::new(8, 24).with_num_layers(2), 50, 3);
    c.weight_scale = Some(1.0);
    check(&c, 5);
}

#[test]
fn step_equals_forward_bit_for_bit() {
    let config = LstmConfig::new(5, 37).with_num_layers(2).with_proj_size(9);
    let weights = LstmWeights::<f32>::random(config.clone(), 8).unwrap();
    let (t, b) = (6, 3);
    let x = Tensor::new([t, b, 5], data(t * b * 5, 1, 1.0)).unwrap();
    for backend in Backend::all() {
        let engine = SimdEngine::with_backend(&weights, backend).unwrap();
        let full = engine.forward(&x, None, None).unwrap();
        let mut state = LstmState::zeros(&config, Some(b)).unwrap();
        let mut out = vec![f32::NAN; b * 9];
        for s in 0..t {
            engine
                .step(&x.data()[s * b * 5..(s + 1) * b * 5], &mut state, &mut out)
                .unwrap();
            assert_eq!(out, full.output.data()[s * b * 9..(s + 1) * b * 9]);
        }
        assert_eq!(state.h, full.h_n, "{backend}");
        assert_eq!(state.c, full.c_n, "{backend}");
    }
}

/// An output of 4 MiB or more is written with streaming stores (past the caches, the rows'
/// misaligned heads and tails with plain ones): it must hold what a smaller call writes in
/// cache, row for row, bit for bit. Rows of 513 floats, and a bidirectional layer's halves
/// of 257, start off every alignment; each half of the batch alone stays under 4 MiB.
#[test]
fn outputs_written_past_the_caches_are_the_same() {
    let (t, b) = (40, 52);
    for config in [
        LstmConfig::new(4, 513),
        LstmConfig::new(4, 257).with_bidirectional(true),
    ] {
        let out = config.output_size();
        assert!(t * b * out * 4 >= 4 << 20 && t * (b / 2) * out * 4 < 4 << 20);
        let weights = LstmWeights::<f32>::random(config.clone(), 9).unwrap();
        let x = data(t * b * 4, 2, 1.0);
        let half = |rows: std::ops::Range<usize>| -> Vec<f32> {
            (0..t)
                .flat_map(|s| x[(s * b + rows.start) * 4..(s * b + rows.end) * 4].to_vec())
                .collect()
        };
        for precision in [Precision::F32, Precision::Bf16] {
            for backend in Backend::all_for(precision) {
                let engine = SimdEngine::with_options(&weights, backend, precision).unwrap();
                let full = engine
                    .forward(&Tensor::new([t, b, 4], x.clone()).unwrap(), None, None)
                    .unwrap();
                for rows in [0..b / 2, b / 2..b] {
                    let n = rows.len();
                    let part = engine
                        .forward(
                            &Tensor::new([t, n, 4], half(rows.clone())).unwrap(),
                            None,
                            None,
                        )
                        .unwrap();
                    for s in 0..t {
                        assert_eq!(
                            &full.output.data()[(s * b + rows.start) * out..][..n * out],
                            &part.output.data()[s * n * out..][..n * out],
                            "{precision} {backend} {config:?}: step {s}, rows {rows:?}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn nan_in_nan_out_and_saturation_is_finite() {
    let config = LstmConfig::new(3, 17);
    let weights = LstmWeights::<f32>::random_uniform(config, 2, 40.0).unwrap();
    let big = Tensor::new([20, 2, 3], data(120, 3, 1e4)).unwrap();
    let mut nan = vec![0.5f32; 6];
    nan[4] = f32::NAN; // sequence 1 only
    let nan = Tensor::new([1, 2, 3], nan).unwrap();
    for backend in Backend::all() {
        let engine = SimdEngine::with_backend(&weights, backend).unwrap();
        let out = engine.forward(&big, None, None).unwrap();
        assert!(out
            .output
            .data()
            .iter()
            .all(|v| v.is_finite() && v.abs() <= 1.0));
        let out = engine.forward(&nan, None, None).unwrap();
        assert!(out.output.data()[..17].iter().all(|v| v.is_finite()));
        assert!(out.output.data()[17..].iter().all(|v| v.is_nan()));
    }
}

#[test]
fn activations_match_f64() {
    let xs: Vec<f32> = (-40_000..=40_000).map(|i| i as f32 * 1e-3).collect();
    for backend in Backend::all() {
        let mut s = vec![0.0; xs.len()];
        let mut t = vec![0.0; xs.len()];
        activations::sigmoid(backend, &xs, &mut s).unwrap();
        activations::tanh(backend, &xs, &mut t).unwrap();
        for ((&x, &s), &t) in xs.iter().zip(&s).zip(&t) {
            let x = f64::from(x);
            let ws = 1.0 / (1.0 + (-x).exp());
            assert!((f64::from(s) - ws).abs() <= 1.2e-7, "{backend} σ({x})");
            assert!(
                (f64::from(t) - x.tanh()).abs() <= 2.4e-7,
                "{backend} tanh({x})"
            );
        }
        let mut out = [0.0f32; 3];
        activations::sigmoid(
            backend,
            &[f32::NAN, f32::INFINITY, -f32::INFINITY],
            &mut out,
        )
        .unwrap();
        assert!(out[0].is_nan() && out[1] == 1.0 && out[2] >= 0.0 && out[2] < 1e-37);
        activations::tanh(
            backend,
            &[f32::NAN, f32::INFINITY, -f32::INFINITY],
            &mut out,
        )
        .unwrap();
        assert!(out[0].is_nan() && out[1] == 1.0 && out[2] == -1.0);
        assert!(activations::tanh(backend, &[0.0; 2], &mut out).is_err());
    }
}

/// ONNX's cell options, alone and together: one config of each, with `f` for the rest.
fn onnx_options(f: impl Fn(LstmConfig) -> LstmConfig) -> Vec<LstmConfig> {
    use lstm_core::Direction;
    let base = f(LstmConfig::new(5, 17));
    vec![
        base.clone().with_direction(Direction::Reverse),
        base.clone().with_peepholes(true),
        base.clone().with_clip(Some(0.3)),
        base.clone().with_input_forget(true),
        base.with_direction(Direction::Reverse)
            .with_peepholes(true)
            .with_clip(Some(0.5))
            .with_input_forget(true),
    ]
}

#[test]
fn onnx_cell_options_every_tail() {
    for h in [1, 7, 8, 9, 16, 17, 33] {
        for b in [1, 3, 7] {
            let configs = onnx_options(|c| LstmConfig {
                hidden_size: h,
                ..c
            });
            for (n, config) in configs.into_iter().enumerate() {
                check(&case(config, 5, b), (h * 31 + b * 7 + n) as u64);
            }
        }
    }
}

#[test]
fn onnx_cell_options_layers_directions_lengths_states() {
    use lstm_core::Direction;
    let shapes: [fn(LstmConfig) -> LstmConfig; 4] = [
        |c| c.with_num_layers(2),
        |c| {
            c.with_direction(Direction::Bidirectional)
                .with_num_layers(2)
        },
        |c| c.with_batch_first(true),
        |c| c.with_proj_size(6).with_num_layers(2),
    ];
    for (s, shape) in shapes.into_iter().enumerate() {
        // (With the bidirectional shape, the reverse-only configs are reverse-only: the
        // direction set last wins.)
        for (n, config) in onnx_options(shape).into_iter().enumerate() {
            for lengths in [None, Some(vec![3, 9, 1, 9, 5])] {
                for state in [false, true] {
                    let mut c = case(config.clone(), 9, 5);
                    c.lengths = lengths.clone();
                    c.state = state;
                    check(&c, (s * 10 + n) as u64);
                }
            }
        }
    }
}

/// Each option changes the result (so the checks above cannot pass on an engine that ignored
/// it), and `step` runs the ONNX cell bit for bit as `forward` does.
#[test]
fn onnx_cell_options_take_effect_and_step_equals_forward() {
    let (t, b) = (6, 3);
    let x = Tensor::new([t, b, 5], data(t * b * 5, 1, 1.5)).unwrap();
    let plain = LstmConfig::new(5, 17).with_num_layers(2);
    let plain_weights = LstmWeights::<f32>::random(plain.clone(), 8).unwrap();
    for config in onnx_options(|c| c.with_num_layers(2)) {
        // The same cells; peepholes drawn on top.
        let weights = if config.peepholes {
            let drawn = LstmWeights::<f32>::random(config.clone(), 9).unwrap();
            LstmWeights::with_peepholes(
                config.clone(),
                plain_weights.cells().to_vec(),
                drawn.peepholes().to_vec(),
            )
            .unwrap()
        } else {
            LstmWeights::new(config.clone(), plain_weights.cells().to_vec()).unwrap()
        };
        for backend in Backend::all() {
            let base = SimdEngine::with_backend(&plain_weights, backend).unwrap();
            let engine = SimdEngine::with_backend(&weights, backend).unwrap();
            let full = engine.forward(&x, None, None).unwrap();
            assert_ne!(
                full.output,
                base.forward(&x, None, None).unwrap().output,
                "{backend} {config:?}"
            );
            if config.reverse_only {
                continue; // step() refuses a reverse-only LSTM (it reads from the end)
            }
            let mut state = LstmState::zeros(&config, Some(b)).unwrap();
            let mut out = vec![f32::NAN; b * 17];
            for s in 0..t {
                engine
                    .step(&x.data()[s * b * 5..(s + 1) * b * 5], &mut state, &mut out)
                    .unwrap();
                assert_eq!(out, full.output.data()[s * b * 17..(s + 1) * b * 17]);
            }
            assert_eq!(state.h, full.h_n, "{backend}");
            assert_eq!(state.c, full.c_n, "{backend}");
        }
    }
}
