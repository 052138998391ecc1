//! Every engine of [`lstm_validate::engines_under_test`] against the f64 reference and against
//! the identities `nn.LSTM`'s contract implies; each property runs over every engine the host
//! supports, with a fixed seed and case count (printed).
#![allow(clippy::unwrap_used)]

use lstm_core::{CellWeights, LstmConfig, LstmEngine, LstmOutput, LstmState, LstmWeights, Tensor};
use lstm_validate::strategies::{cases, Case, CaseSpace};
use lstm_validate::tolerance::{self, compare, compare_sensitive, Conditioning, Layout, Tolerance};
use lstm_validate::{
    available, check_property, check_required_backends_from_env, engines_under_test, note,
    run_chaos_probes, run_perturbed_reference, run_reference, run_state_rounded,
    sensitivity_samples, tolerance_for, EngineUnderTest,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

fn engines() -> Vec<EngineUnderTest> {
    available(engines_under_test())
}

fn fail(engine: &EngineUnderTest, what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(format!("engine `{}`: {what}", engine.name))
}

const SEQ_FIRST: Layout = Layout {
    batch_first: false,
    unbatched: false,
};

/// The output of a call in the canonical `[T', B, F]` layout.
fn canonical(out: &Tensor<f32>, case: &Case) -> Tensor<f32> {
    if case.unbatched {
        let (t, f) = (out.shape()[0], out.shape()[1]);
        out.clone().reshape([t, 1, f]).unwrap()
    } else if case.config.batch_first {
        out.swap_leading_axes().unwrap()
    } else {
        out.clone()
    }
}

#[test]
fn required_backends_are_available() {
    if let Err(e) = check_required_backends_from_env(&engines_under_test()) {
        panic!("{e}");
    }
}

/// Every engine on `case` against the f64 reference, under the harness's tolerance.
fn matches_the_f64_reference(
    engines: &[EngineUnderTest],
    case: &Case,
) -> Result<(), TestCaseError> {
    let weights = case.weights().unwrap();
    let want = run_reference(case, &weights).unwrap();
    let nudged = run_perturbed_reference(case, &weights).unwrap();
    let rounded = run_state_rounded(
        &weights,
        &case.input().unwrap(),
        case.state().unwrap().as_ref(),
        case.lengths(),
    )
    .unwrap();
    let tol = tolerance_for(case, &weights, &want).unwrap();
    let probes = run_chaos_probes(case, &weights).unwrap();
    for engine in engines {
        let e = engine.build(weights.clone()).unwrap();
        let got = e
            .forward(
                &case.input().unwrap(),
                case.state().unwrap().as_ref(),
                case.lengths(),
            )
            .map_err(|err| fail(engine, err))?;
        let samples = sensitivity_samples(&engine.name, &nudged, &rounded);
        compare_sensitive(&got, &want, &samples, &probes, case.layout(), tol)
            .map_err(|m| fail(engine, m))?;
    }
    Ok(())
}

#[test]
fn engines_match_the_f64_reference() {
    let engines = engines();
    check_property(
        "engines match the f64 reference",
        cases(CaseSpace::default()),
        |case| matches_the_f64_reference(&engines, &case),
    );
}

/// ONNX's cell options (reverse-only, peepholes, clip, input_forget) on every engine.
#[test]
fn onnx_cell_options_match_the_f64_reference() {
    let engines = engines();
    check_property(
        "ONNX cell options match the f64 reference",
        cases(CaseSpace::onnx_options()),
        |case| matches_the_f64_reference(&engines, &case),
    );
}

#[test]
fn long_sequences_match_the_f64_reference() {
    let engines = engines();
    check_property(
        "long sequences match the f64 reference",
        cases(CaseSpace::long(tolerance::SHORT_SEQUENCE + 1, 96)),
        |case| matches_the_f64_reference(&engines, &case),
    );
}

#[test]
fn bit_identical_engines_are() {
    let engines = engines();
    let pairs: Vec<(&EngineUnderTest, &EngineUnderTest)> = engines
        .iter()
        .filter_map(|e| {
            let other = e.bit_identical_to.as_deref()?;
            engines.iter().find(|o| o.name == other).map(|o| (e, o))
        })
        .collect();
    if pairs.is_empty() {
        note("no engine pair must be bit-identical on this host; property skipped");
        return;
    }
    check_property(
        "bit-identical engines are",
        cases(CaseSpace::default()),
        |case| {
            let weights = case.weights().unwrap();
            let (x, state) = (case.input().unwrap(), case.state().unwrap());
            for (engine, other) in &pairs {
                let run = |e: &EngineUnderTest| {
                    e.build(weights.clone())
                        .unwrap()
                        .forward(&x, state.as_ref(), case.lengths())
                        .unwrap()
                };
                compare(&run(engine), &run(other), case.layout(), Tolerance::EXACT)
                    .map_err(|m| fail(engine, format!("differs from `{}`: {m}", other.name)))?;
            }
            Ok(())
        },
    );
}

#[test]
fn step_t_times_equals_forward() {
    let engines = engines();
    check_property(
        "step T times equals forward",
        cases(CaseSpace::default().streamable()),
        |case| {
            let weights = case.weights().unwrap();
            let x = case.canonical_input().unwrap();
            let (t_len, b, i) = (case.seq_len, case.batch, case.config.input_size);
            let h_out = case.config.h_out();
            for engine in &engines {
                let e = engine.build(weights.clone()).unwrap();
                let full = e
                    .forward(&case.input().unwrap(), case.state().unwrap().as_ref(), None)
                    .unwrap();
                let full_out = canonical(&full.output, &case);
                let mut state = match case.state().unwrap() {
                    Some(s) => s,
                    None => LstmState::zeros(&case.config, (!case.unbatched).then_some(b)).unwrap(),
                };
                for t in 0..t_len {
                    // NaN-filled: a lane the engine never writes shows.
                    let mut out = vec![f32::NAN; b * h_out];
                    e.step(&x.data()[t * b * i..(t + 1) * b * i], &mut state, &mut out)
                        .map_err(|err| fail(engine, err))?;
                    let want = &full_out.data()[t * b * h_out..(t + 1) * b * h_out];
                    for (k, (&g, &w)) in out.iter().zip(want).enumerate() {
                        if !engine.identities.accepts(g.into(), w.into()) {
                            return Err(fail(
                                engine,
                                format!(
                                    "step {t}: output[b={}, feature={}] = {g:e}, forward gave {w:e}",
                                    k / h_out.max(1),
                                    k % h_out.max(1)
                                ),
                            ));
                        }
                    }
                }
                let stepped = LstmOutput {
                    output: full.output.clone(),
                    h_n: state.h,
                    c_n: state.c,
                };
                compare(&stepped, &full, case.layout(), engine.identities)
                    .map_err(|m| fail(engine, format!("state after {t_len} steps: {m}")))?;
            }
            Ok(())
        },
    );
}

#[test]
fn batch_first_is_the_transposed_layout() {
    let engines = engines();
    let space = CaseSpace {
        allow_unbatched: false,
        ..CaseSpace::default()
    };
    check_property(
        "batch_first is the transposed layout",
        cases(space),
        |case| {
            let mut seq_first = case.weights().unwrap();
            seq_first.set_call_options(false, 0.0).unwrap();
            let mut batch_first = seq_first.clone();
            batch_first.set_call_options(true, 0.0).unwrap();
            let x = case.canonical_input().unwrap();
            let state = case.state().unwrap();
            for engine in &engines {
                let a = engine
                    .build(seq_first.clone())
                    .unwrap()
                    .forward(&x, state.as_ref(), case.lengths())
                    .unwrap();
                let mut b = engine
                    .build(batch_first.clone())
                    .unwrap()
                    .forward(
                        &x.swap_leading_axes().unwrap(),
                        state.as_ref(),
                        case.lengths(),
                    )
                    .unwrap();
                b.output = b.output.swap_leading_axes().unwrap();
                compare(&b, &a, SEQ_FIRST, engine.identities).map_err(|m| fail(engine, m))?;
            }
            Ok(())
        },
    );
}

/// Sequence `seq` of a batched case as a call of its own: `[len, 1, I]` (truncated to its
/// length) and its slice of the state.
fn one_sequence(case: &Case, seq: usize) -> (Tensor<f32>, Option<LstmState<f32>>) {
    let x = case.canonical_input().unwrap();
    let (b, i) = (case.batch, case.config.input_size);
    let len = case.length(seq);
    let data: Vec<f32> = (0..len)
        .flat_map(|t| x.data()[(t * b + seq) * i..(t * b + seq + 1) * i].to_vec())
        .collect();
    let state = case.state().unwrap().map(|s| {
        let slice = |t: &Tensor<f32>| {
            let (cells, f) = (t.shape()[0], t.shape()[2]);
            let d: Vec<f32> = (0..cells)
                .flat_map(|c| t.data()[(c * b + seq) * f..(c * b + seq + 1) * f].to_vec())
                .collect();
            Tensor::new([cells, 1, f], d).unwrap()
        };
        LstmState {
            h: slice(&s.h),
            c: slice(&s.c),
        }
    });
    (Tensor::new([len, 1, i], data).unwrap(), state)
}

/// A batched call equals its sequences run one at a time (each truncated to its length), and
/// its output past each sequence's length is exactly 0.
fn batch_equals_sequences(engines: &[EngineUnderTest], case: Case) -> Result<(), TestCaseError> {
    let mut weights = case.weights().unwrap();
    weights.set_call_options(false, 0.0).unwrap();
    let x = case.canonical_input().unwrap();
    let state = case.state().unwrap();
    let (b, f) = (case.batch, case.config.output_size());
    for engine in engines {
        let e = engine.build(weights.clone()).unwrap();
        let all = e.forward(&x, state.as_ref(), case.lengths()).unwrap();
        let steps = all.output.shape()[0];
        for seq in 0..b {
            let (xs, ss) = one_sequence(&case, seq);
            let one = e.forward(&xs, ss.as_ref(), None).unwrap();
            let len = case.length(seq);
            for t in 0..steps {
                for k in 0..f {
                    let got = all.output.data()[(t * b + seq) * f + k];
                    let (want, ok) = if t < len {
                        let w = one.output.data()[t * f + k];
                        (w, engine.identities.accepts(got.into(), w.into()))
                    } else {
                        (0.0, got.to_bits() == 0)
                    };
                    if !ok {
                        return Err(fail(
                            engine,
                            format!(
                                "output[t={t}, b={seq}, feature={k}] = {got:e} in the batch, \
                                 {want:e} alone (length {len})"
                            ),
                        ));
                    }
                }
            }
            for (name, batched, alone) in [("h_n", &all.h_n, &one.h_n), ("c_n", &all.c_n, &one.c_n)]
            {
                let (cells, n) = (batched.shape()[0], batched.shape()[2]);
                for c in 0..cells {
                    for k in 0..n {
                        let g = batched.data()[(c * b + seq) * n + k];
                        let w = alone.data()[c * n + k];
                        if !engine.identities.accepts(g.into(), w.into()) {
                            return Err(fail(
                                engine,
                                format!(
                                    "{name}[cell={c}, b={seq}, feature={k}] = {g:e} in the \
                                     batch, {w:e} alone"
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[test]
fn a_batch_equals_its_sequences_one_by_one() {
    let engines = engines();
    let space = CaseSpace {
        allow_unbatched: false,
        allow_lengths: false,
        max_batch: 4,
        ..CaseSpace::default()
    };
    check_property(
        "a batch equals its sequences one by one",
        cases(space),
        |case| batch_equals_sequences(&engines, case),
    );
}

#[test]
fn lengths_equal_truncated_sequences_and_pad_with_zeros() {
    let engines = engines();
    let space = CaseSpace {
        allow_unbatched: false,
        always_lengths: true,
        max_batch: 4,
        ..CaseSpace::default()
    };
    check_property(
        "lengths equal truncated sequences, padding is 0",
        cases(space),
        |case| batch_equals_sequences(&engines, case),
    );
}

#[test]
fn unbatched_equals_a_batch_of_one() {
    let engines = engines();
    let space = CaseSpace {
        allow_lengths: false,
        allow_empty_batch: false,
        max_batch: 1,
        ..CaseSpace::default()
    };
    check_property("unbatched equals a batch of one", cases(space), |case| {
        let batched = Case {
            unbatched: false,
            batch: 1,
            ..case.clone()
        };
        let unbatched = Case {
            unbatched: true,
            ..batched.clone()
        };
        let weights = case.weights().unwrap();
        for engine in &engines {
            let e = engine.build(weights.clone()).unwrap();
            let run = |c: &Case| {
                e.forward(&c.input().unwrap(), c.state().unwrap().as_ref(), None)
                    .unwrap()
            };
            let (a, u) = (run(&batched), run(&unbatched));
            let u = LstmOutput {
                output: canonical(&u.output, &unbatched),
                h_n: u.h_n.clone().reshape(a.h_n.shape().to_vec()).unwrap(),
                c_n: u.c_n.clone().reshape(a.c_n.shape().to_vec()).unwrap(),
            };
            let a = LstmOutput {
                output: canonical(&a.output, &batched),
                ..a
            };
            compare(&u, &a, SEQ_FIRST, engine.identities).map_err(|m| fail(engine, m))?;
        }
        Ok(())
    });
}

#[test]
fn bias_false_equals_zero_biases() {
    let engines = engines();
    check_property(
        "bias=False equals zero biases",
        cases(CaseSpace::default()),
        |case| {
            let case = Case {
                config: case.config.clone().with_bias(false),
                ..case
            };
            let plain = case.weights().unwrap();
            let zero_bias = LstmWeights::new(
                case.config.clone().with_bias(true),
                plain
                    .cells()
                    .iter()
                    .map(|c| CellWeights {
                        b_ih: Some(vec![0.0; 4 * case.config.hidden_size]),
                        b_hh: Some(vec![0.0; 4 * case.config.hidden_size]),
                        ..c.clone()
                    })
                    .collect(),
            )
            .unwrap();
            let (x, state) = (case.input().unwrap(), case.state().unwrap());
            for engine in &engines {
                let run = |w: &LstmWeights<f32>| {
                    engine
                        .build(w.clone())
                        .unwrap()
                        .forward(&x, state.as_ref(), case.lengths())
                        .unwrap()
                };
                compare(
                    &run(&zero_bias),
                    &run(&plain),
                    case.layout(),
                    engine.identities,
                )
                .map_err(|m| fail(engine, m))?;
            }
            Ok(())
        },
    );
}

// ---- Exact tests: structures whose result f32 represents exactly. ----

/// With every weight 0: i = f = o = σ(0) = ½ and g = tanh(0) = 0, so each step halves the cell
/// exactly (c0 = k/8 stays exact for T ≤ 8) and h = ½ tanh(c) (0 with a projection, W_hr = 0).
#[test]
fn zero_weights_halve_the_cell_exactly() {
    let engines = engines();
    let space = CaseSpace {
        allow_state: false,
        ..CaseSpace::default()
    };
    check_property(
        "zero weights halve the cell exactly",
        (cases(space), any::<u64>()),
        |(case, c_seed)| {
            let zero = LstmWeights::random_uniform(case.config.clone(), 0, 0.0).unwrap();
            let mut state =
                LstmState::<f32>::zeros(&case.config, (!case.unbatched).then_some(case.batch))
                    .unwrap();
            let mut rng = lstm_core::SplitMix64::new(c_seed);
            for c in state.c.data_mut() {
                *c = (rng.next_u64() % 129) as f32 / 8.0 - 8.0;
            }
            let c0 = state.c.clone();
            let (b, hidden, h_out) = (case.batch, case.config.hidden_size, case.config.h_out());
            let dirs = case.config.num_directions();
            let last = case.config.num_layers - 1;
            for engine in &engines {
                let out = engine
                    .build(zero.clone())
                    .unwrap()
                    .forward(&case.input().unwrap(), Some(&state), case.lengths())
                    .map_err(|e| fail(engine, e))?;
                // c after `n` steps of cell `cell`, sequence `seq`, unit `k`.
                let c_after = |cell: usize, seq: usize, k: usize, n: usize| {
                    c0.data()[(cell * b + seq) * hidden + k] / (1u32 << n) as f32
                };
                let h_of = |c: f32| {
                    if case.config.proj_size > 0 {
                        0.0
                    } else {
                        0.5 * f64::from(c).tanh()
                    }
                };
                for seq in 0..b {
                    let len = case.length(seq);
                    for cell in 0..case.config.num_cells() {
                        for k in 0..hidden {
                            let (got, want) = (
                                out.c_n.data()[(cell * b + seq) * hidden + k],
                                c_after(cell, seq, k, len),
                            );
                            if got.to_bits() != want.to_bits() {
                                return Err(fail(engine, format!("c_n[cell={cell}, b={seq}, unit={k}] = {got:e}, exactly {want:e} expected (c0/2^{len})")));
                            }
                        }
                        for k in 0..h_out {
                            let got = f64::from(out.h_n.data()[(cell * b + seq) * h_out + k]);
                            let want = h_of(c_after(cell, seq, k, len));
                            if (got - want).abs() > tolerance::ACTIVATION_ATOL {
                                return Err(fail(engine, format!("h_n[cell={cell}, b={seq}, unit={k}] = {got:e}, ½tanh(c) = {want:e}")));
                            }
                        }
                    }
                    let canon = canonical(&out.output, &case);
                    for t in 0..canon.shape()[0] {
                        for d in 0..dirs {
                            for k in 0..h_out {
                                let got =
                                    canon.data()[(t * b + seq) * dirs * h_out + d * h_out + k];
                                let want = if t >= len {
                                    0.0
                                } else {
                                    let n = if d == 0 { t + 1 } else { len - t };
                                    h_of(c_after(last * dirs + d, seq, k, n))
                                };
                                if (f64::from(got) - want).abs() > tolerance::ACTIVATION_ATOL
                                    || (t >= len && got.to_bits() != 0)
                                {
                                    return Err(fail(engine, format!("output[t={t}, b={seq}, dir={d}, unit={k}] = {got:e}, expected {want:e}")));
                                }
                            }
                        }
                    }
                }
            }
            Ok(())
        },
    );
}

/// Saturated gates make an exact counter: i = f = o = σ(1000) = 1; in layer 0, g = tanh(±1000·x)
/// = ±x for x = ±1 (unit k reads feature k mod I, sign alternating with k); in later layers
/// g = tanh(1000) = 1. So c_n = c0 + Σ g over the sequence's steps, exactly, in both
/// directions, with lengths, for every hidden unit (every lane and tail of a kernel).
#[test]
fn saturated_gates_count_exactly() {
    let engines = engines();
    let space = CaseSpace {
        allow_state: false,
        allow_no_bias: false,
        ..CaseSpace::default()
    };
    check_property(
        "saturated gates count exactly",
        (cases(space), any::<u64>()),
        |(case, seed)| {
            let config = &case.config;
            let (hidden, h_out, b) = (config.hidden_size, config.h_out(), case.batch);
            let dirs = config.num_directions();
            let sign = |k: usize| if k & 1 == 0 { 1.0f32 } else { -1.0 };
            let proj = LstmWeights::<f32>::random(config.clone(), seed).unwrap();
            let cells = (0..config.num_cells())
                .map(|index| {
                    let layer = index / dirs;
                    let in_size = config.layer_input_size(layer);
                    let mut w_ih = vec![0.0f32; 4 * hidden * in_size];
                    let mut b_ih = vec![1000.0f32; 4 * hidden];
                    for k in 0..hidden {
                        if layer == 0 {
                            w_ih[(2 * hidden + k) * in_size + k % in_size] = 1000.0 * sign(k);
                            b_ih[2 * hidden + k] = 0.0;
                        }
                    }
                    CellWeights {
                        w_ih,
                        w_hh: vec![0.0; 4 * hidden * h_out],
                        b_ih: Some(b_ih),
                        b_hh: Some(vec![0.0; 4 * hidden]),
                        w_hr: proj.cells()[index].w_hr.clone(),
                    }
                })
                .collect();
            let weights = LstmWeights::new(config.clone(), cells).unwrap();
            let mut rng = lstm_core::SplitMix64::new(seed ^ 1);
            let (t_len, i) = (case.seq_len, config.input_size);
            let xs: Vec<f32> = (0..t_len * b * i)
                .map(|_| if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 })
                .collect();
            let mut state =
                LstmState::<f32>::zeros(config, (!case.unbatched).then_some(b)).unwrap();
            for c in state.c.data_mut() {
                *c = (rng.next_u64() % 17) as f32 - 8.0;
            }
            let c0 = state.c.clone();
            let x_canon = Tensor::new([t_len, b, i], xs.clone()).unwrap();
            let x = if case.unbatched {
                x_canon.clone().reshape([t_len, i]).unwrap()
            } else if config.batch_first {
                x_canon.swap_leading_axes().unwrap()
            } else {
                x_canon.clone()
            };
            // The increment of unit k of layer `layer` at step t of sequence seq.
            let g = |layer: usize, t: usize, seq: usize, k: usize| {
                if layer == 0 {
                    sign(k) * xs[(t * b + seq) * i + k % i]
                } else {
                    1.0
                }
            };
            for engine in &engines {
                let out = engine
                    .build(weights.clone())
                    .unwrap()
                    .forward(&x, Some(&state), case.lengths())
                    .map_err(|e| fail(engine, e))?;
                let canon = canonical(&out.output, &case);
                for seq in 0..b {
                    let len = case.length(seq);
                    for cell in 0..config.num_cells() {
                        let (layer, d) = (cell / dirs, cell % dirs);
                        for k in 0..hidden {
                            let c_start = c0.data()[(cell * b + seq) * hidden + k];
                            let want = c_start + (0..len).map(|t| g(layer, t, seq, k)).sum::<f32>();
                            let got = out.c_n.data()[(cell * b + seq) * hidden + k];
                            if got != want {
                                return Err(fail(engine, format!("c_n[cell={cell}, b={seq}, unit={k}] = {got:e}, exactly {want} expected")));
                            }
                            // The last layer's output without projection: h = tanh(c) after
                            // the steps this direction has consumed.
                            if layer + 1 == config.num_layers && config.proj_size == 0 {
                                for t in 0..len {
                                    let steps: Vec<usize> = if d == 0 {
                                        (0..=t).collect()
                                    } else {
                                        (t..len).collect()
                                    };
                                    let c = c_start
                                        + steps.iter().map(|&s| g(layer, s, seq, k)).sum::<f32>();
                                    let got =
                                        canon.data()[(t * b + seq) * dirs * h_out + d * h_out + k];
                                    let want = f64::from(c).tanh();
                                    if (f64::from(got) - want).abs() > tolerance::ACTIVATION_ATOL {
                                        return Err(fail(engine, format!("output[t={t}, b={seq}, dir={d}, unit={k}] = {got:e}, tanh({c}) = {want:e}")));
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Ok(())
        },
    );
}

/// `step` on every hidden size 1..=33 (every tail of 4-, 8- and 16-lane kernels), with and
/// without projection, batches 1..=9, writes every lane of a NaN-filled output and of the state,
/// and stays within the per-step tolerance of the f64 reference.
#[test]
fn step_writes_every_lane_at_every_hidden_size() {
    let engines = engines();
    let mut checked = 0;
    for hidden in 1..=33usize {
        for (n, &input) in [1usize, 3, 8, 17].iter().enumerate() {
            let proj = if n % 2 == 1 && hidden > 1 {
                1 + hidden / 2
            } else {
                0
            };
            let proj = proj.min(hidden - 1);
            let batch = [1usize, 2, 3, 9][n];
            let layers = 1 + n % 2;
            let config = LstmConfig::new(input, hidden)
                .with_proj_size(proj)
                .with_num_layers(layers);
            let weights = LstmWeights::<f32>::random(config.clone(), hidden as u64).unwrap();
            let oracle = lstm_validate::reference(&weights).unwrap();
            let mut rng = lstm_core::SplitMix64::new(n as u64);
            let x = rng.fill_f32(batch * input, 1.0);
            let tol = Tolerance::per_step(&Conditioning::of(&weights, 1.0, 1.0));
            for engine in &engines {
                let e = engine.build(weights.clone()).unwrap();
                let mut state = LstmState::<f32>::zeros(&config, Some(batch)).unwrap();
                let mut state64 = LstmState::<f64>::zeros(&config, Some(batch)).unwrap();
                let mut out64 = vec![0.0f64; batch * config.h_out()];
                let x64: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
                for step in 0..3 {
                    let mut out = vec![f32::NAN; batch * config.h_out()];
                    e.step(&x, &mut state, &mut out).unwrap();
                    oracle.step(&x64, &mut state64, &mut out64).unwrap();
                    for (what, got, want) in [
                        ("output", out.as_slice(), out64.as_slice()),
                        ("h", state.h.data(), state64.h.data()),
                        ("c", state.c.data(), state64.c.data()),
                    ] {
                        for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
                            assert!(
                                tol.accepts(g.into(), w),
                                "engine `{}`, {config:?}, B={batch}, step {step}: {what}[{k}] = {g:e}, reference {w:e}",
                                engine.name
                            );
                        }
                    }
                }
                checked += 1;
            }
        }
    }
    note(&format!(
        "step at every hidden size: {checked} engine configs checked"
    ));
}
