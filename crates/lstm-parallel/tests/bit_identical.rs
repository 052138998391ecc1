//! Every plan and thread count gives the SIMD engine's bits, for every option, in inference and
//! in training.
#![allow(clippy::unwrap_used)]

use lstm_core::{
    GradOutputs, LstmBackward, LstmConfig, LstmEngine, LstmState, LstmWeights, Precision,
    SequenceBatch, SplitMix64, Tensor, TrainingTape,
};
use lstm_parallel::{ParallelEngine, Plan};
use lstm_simd::{Backend, SimdEngine};

fn data(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| rng.next_signed_unit() as f32 * scale)
        .collect()
}

fn configs() -> Vec<LstmConfig> {
    vec![
        LstmConfig::new(5, 40),
        LstmConfig::new(5, 33).with_num_layers(2),
        LstmConfig::new(7, 48).with_bidirectional(true),
        LstmConfig::new(7, 50)
            .with_proj_size(13)
            .with_bidirectional(true)
            .with_num_layers(2),
        LstmConfig::new(3, 17)
            .with_bias(false)
            .with_batch_first(true),
        LstmConfig::new(4, 64).with_proj_size(40),
    ]
}

/// ONNX's cell options (run forward only; training refuses them).
fn onnx_configs() -> Vec<LstmConfig> {
    use lstm_core::Direction;
    vec![
        LstmConfig::new(5, 40)
            .with_direction(Direction::Reverse)
            .with_num_layers(2),
        LstmConfig::new(7, 33)
            .with_bidirectional(true)
            .with_peepholes(true)
            .with_clip(Some(0.4)),
        LstmConfig::new(4, 48)
            .with_input_forget(true)
            .with_peepholes(true)
            .with_batch_first(true),
        LstmConfig::new(6, 17)
            .with_direction(Direction::Reverse)
            .with_peepholes(true)
            .with_clip(Some(0.5))
            .with_input_forget(true),
    ]
}

#[test]
fn every_plan_and_thread_count_is_bit_identical_to_simd() {
    for (n, config) in configs().into_iter().chain(onnx_configs()).enumerate() {
        let weights = LstmWeights::<f32>::random(config.clone(), n as u64).unwrap();
        // Every precision: the cost model picks its plan by the packed weights' size.
        for (backend, precision) in Precision::ALL
            .iter()
            .flat_map(|&p| Backend::all_for(p).into_iter().map(move |b| (b, p)))
        {
            let simd = SimdEngine::with_options(&weights, backend, precision).unwrap();
            let engines: Vec<ParallelEngine> = [1, 2, 3, 8]
                .into_iter()
                .map(|n| ParallelEngine::with_options(&weights, backend, precision, n).unwrap())
                .collect();
            for (t, b) in [(9, 1), (7, 3), (6, 13)] {
                let shape = if config.batch_first {
                    [b, t, config.input_size]
                } else {
                    [t, b, config.input_size]
                };
                let x = Tensor::new(shape, data(t * b * config.input_size, 3, 1.0)).unwrap();
                let mut state = LstmState::<f32>::zeros(&config, Some(b)).unwrap();
                let h = data(state.h.data().len(), 4, 0.5);
                let c = data(state.c.data().len(), 5, 1.5);
                state.h.data_mut().copy_from_slice(&h);
                state.c.data_mut().copy_from_slice(&c);
                let lengths: Vec<usize> = (0..b).map(|i| 1 + (i * 5 + 3) % t).collect();
                for (st, len) in [
                    (None, None),
                    (Some(&state), None),
                    (Some(&state), Some(lengths.as_slice())),
                    (None, Some(lengths.as_slice())),
                ] {
                    let call = SequenceBatch::new(&config, &x, st, len).unwrap();
                    let want = simd.forward_batch(&call).unwrap();
                    for par in &engines {
                        let threads = par.threads();
                        for plan in [
                            Plan::Serial,
                            Plan::Batch(threads),
                            Plan::Hidden(threads),
                            Plan::Directions,
                            par.plan(t, b),
                        ] {
                            let got = par.forward_batch_planned(&call, plan).unwrap();
                            assert!(
                                got == want,
                                "{backend} {precision:?} {config:?} T={t} B={b} threads={threads} \
                                 {plan:?} \
                                 state={} lengths={}",
                                st.is_some(),
                                len.is_some()
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn cost_model_stays_serial_for_tiny_work_and_splits_real_work() {
    let tiny = LstmWeights::<f32>::random(LstmConfig::new(64, 64), 1).unwrap();
    let par = ParallelEngine::new(&tiny, 2).unwrap();
    assert_eq!(par.plan(1, 1), Plan::Serial);
    let big = LstmWeights::<f32>::random(LstmConfig::new(256, 256), 1).unwrap();
    let par = ParallelEngine::new(&big, 2).unwrap();
    // Two threads: the batch when each shard has 12 rows, else the hidden units.
    assert_eq!(par.plan(100, 32), Plan::Batch(2));
    assert_eq!(par.plan(100, 23), Plan::Hidden(2));
    // A training forward keeps the hidden split there (its tape is one buffer).
    assert_eq!(par.train_plan(100, 32).0, Plan::Hidden(2));
    let narrow = LstmWeights::<f32>::random(LstmConfig::new(256, 40), 1).unwrap();
    let par3 = ParallelEngine::new(&narrow, 3).unwrap();
    assert!(matches!(par3.plan(100, 64), Plan::Batch(_)));
    assert_eq!(par.plan(100, 1), Plan::Hidden(2));
    // Bidirectional: both directions at once when one direction's `W_hh` fits a core's L2
    // (1 MiB): at bf16 (512 KiB here), whatever the batch; not at f32 (1 MiB).
    let bi = LstmConfig::new(256, 256).with_bidirectional(true);
    let bi = LstmWeights::<f32>::random(bi, 1).unwrap();
    let bf16 = ParallelEngine::with_options(&bi, Backend::detect(), Precision::Bf16, 2).unwrap();
    assert_eq!(bf16.plan(64, 32), Plan::Directions);
    let f32_bi = ParallelEngine::new(&bi, 2).unwrap();
    assert_eq!(f32_bi.plan(64, 32), Plan::Batch(2));
    assert_eq!(f32_bi.plan(64, 16), Plan::Hidden(2));
    let one = ParallelEngine::new(&big, 1).unwrap();
    assert_eq!(one.plan(100, 32), Plan::Serial);
    assert!(ParallelEngine::new(&big, 0).is_err());
}

#[test]
fn streaming_step_matches_forward() {
    let config = LstmConfig::new(6, 40).with_num_layers(2);
    let weights = LstmWeights::<f32>::random(config.clone(), 9).unwrap();
    let par = ParallelEngine::new(&weights, 2).unwrap();
    let (t, b) = (5, 2);
    let x = Tensor::new([t, b, 6], data(t * b * 6, 1, 1.0)).unwrap();
    let full = par.forward(&x, None, None).unwrap();
    let mut state = LstmState::zeros(&config, Some(b)).unwrap();
    let mut out = vec![f32::NAN; b * 40];
    for s in 0..t {
        par.step(&x.data()[s * b * 6..(s + 1) * b * 6], &mut state, &mut out)
            .unwrap();
        assert_eq!(out, full.output.data()[s * b * 40..(s + 1) * b * 40]);
    }
    assert_eq!(state.h, full.h_n);
}

#[test]
fn training_refuses_onnx_cell_options_at_every_plan() {
    for config in onnx_configs() {
        let weights = LstmWeights::<f32>::random(config.clone(), 3).unwrap();
        let par = ParallelEngine::new(&weights, 2).unwrap();
        let b = 3;
        let shape = if config.batch_first {
            [b, 4, config.input_size]
        } else {
            [4, b, config.input_size]
        };
        let x = Tensor::new(shape, data(4 * b * config.input_size, 1, 1.0)).unwrap();
        for plan in [Plan::Serial, Plan::Hidden(2), Plan::Directions] {
            let mut tape = TrainingTape::new();
            let got = par.forward_train_planned(&x, (None, None), &mut tape, plan);
            assert!(
                matches!(got, Err(lstm_core::LstmError::Unsupported(_))),
                "{config:?} {plan:?}: {got:?}"
            );
        }
    }
}

#[test]
fn training_at_every_plan_and_thread_count_is_bit_identical_to_simd() {
    for (n, config) in configs().into_iter().enumerate() {
        let weights = LstmWeights::<f32>::random(config.clone(), 40 + n as u64).unwrap();
        let backend = Backend::detect();
        let simd = SimdEngine::with_backend(&weights, backend).unwrap();
        let engines: Vec<ParallelEngine> = [2, 3, 8]
            .into_iter()
            .map(|n| ParallelEngine::with_backend(&weights, backend, n).unwrap())
            .collect();
        for (t, b) in [(9, 1), (6, 13), (5, 40)] {
            let shape = if config.batch_first {
                [b, t, config.input_size]
            } else {
                [t, b, config.input_size]
            };
            let x = Tensor::new(shape, data(t * b * config.input_size, 6, 1.0)).unwrap();
            let mut state = LstmState::<f32>::zeros(&config, Some(b)).unwrap();
            let h = data(state.h.data().len(), 7, 0.5);
            state.h.data_mut().copy_from_slice(&h);
            let lengths: Vec<usize> = (0..b).map(|i| 1 + (i * 7 + 2) % t).collect();
            for (st, len) in [(None, None), (Some(&state), Some(lengths.as_slice()))] {
                let mut tape = TrainingTape::new();
                let want = simd.forward_train(&x, st, len, &mut tape).unwrap();
                let gy = Tensor::new(
                    want.output.shape().to_vec(),
                    data(want.output.data().len(), 8, 1.0),
                )
                .unwrap();
                let ghn = Tensor::new(
                    want.h_n.shape().to_vec(),
                    data(want.h_n.data().len(), 9, 1.0),
                )
                .unwrap();
                let grads = GradOutputs::new(&gy).with_h_n(&ghn);
                let want_grads = simd.backward(&tape, &grads).unwrap();
                for par in &engines {
                    let threads = par.threads();
                    for plan in [
                        Plan::Serial,
                        Plan::Hidden(threads),
                        Plan::Directions,
                        par.train_plan(t, b).0,
                    ] {
                        let what = format!(
                            "{config:?} T={t} B={b} threads={threads} {plan:?} state={}",
                            st.is_some()
                        );
                        let mut tape = TrainingTape::new();
                        let got = par
                            .forward_train_planned(&x, (st, len), &mut tape, plan)
                            .unwrap();
                        assert!(got == want, "forward_train: {what}");
                        let got = par.backward_planned(&tape, &grads, threads).unwrap();
                        assert!(got == want_grads, "backward: {what}");
                        let got = par.backward(&tape, &grads).unwrap();
                        assert!(got == want_grads, "backward (cost model): {what}");
                    }
                }
            }
        }
    }
}
