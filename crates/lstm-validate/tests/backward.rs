//! The backward pass of every engine that trains ([`trainers_under_test`]) against the f64
//! reference backward on random calls over every `nn.LSTM` option, under the gradient
//! tolerance model of `lstm_validate::backward`; and what must hold exactly: `forward_train`
//! returns `forward`'s result bit for bit, the backward is deterministic, padded steps get
//! zero input gradient.
#![allow(clippy::unwrap_used)]

use lstm_core::{LstmBackward, LstmEngine, TrainingTape};
use lstm_naive::NaiveEngine;
use lstm_parallel::{ParallelEngine, Plan};
use lstm_simd::SimdEngine;
use lstm_validate::backward::{
    compare_gradients, run_backward, run_perturbed_backward, run_reference_backward,
    trainers_under_test, TrainerUnderTest, Upstream,
};
use lstm_validate::strategies::{cases, Case, CaseSpace};
use lstm_validate::{check_property, note, run_reference};
use proptest::test_runner::TestCaseError;

fn trainers() -> Vec<TrainerUnderTest> {
    trainers_under_test()
        .into_iter()
        .filter(|t| {
            if !t.available {
                note(&format!(
                    "skipping trainer `{}`: backend {:?} is not supported on this host",
                    t.name, t.backend
                ));
            }
            t.available
        })
        .collect()
}

fn upstream(case: &Case) -> Upstream {
    let out = run_reference(case, &case.weights().unwrap()).unwrap();
    Upstream::draw(case, out.output.shape(), out.h_n.shape(), out.c_n.shape()).unwrap()
}

#[test]
fn gradients_match_the_f64_reference() {
    let trainers = trainers();
    let worst = std::sync::Mutex::new(vec![0.0f64; trainers.len()]);
    check_property(
        "gradients match the f64 reference",
        cases(CaseSpace::default()),
        |case| {
            let weights = case.weights().unwrap();
            let up = upstream(&case);
            let want = run_reference_backward(&case, &weights, &up).unwrap();
            let nudged = run_perturbed_backward(&case, &weights, &up).unwrap();
            let (x, state) = (case.input().unwrap(), case.state().unwrap());
            for (k, t) in trainers.iter().enumerate() {
                let engine = t.build(weights.clone()).unwrap();
                let got = run_backward(
                    engine.as_ref(),
                    &x,
                    state.as_ref(),
                    case.lengths(),
                    &up.grads(),
                )
                .map_err(|e| TestCaseError::fail(format!("trainer `{}`: {e}", t.name)))?;
                let ratio = compare_gradients(&case, &up, &got, &want, &nudged)
                    .map_err(|m| TestCaseError::fail(format!("trainer `{}`: {m}", t.name)))?;
                let mut w = worst.lock().unwrap();
                w[k] = w[k].max(ratio);
            }
            Ok(())
        },
    );
    for (t, w) in trainers.iter().zip(worst.lock().unwrap().iter()) {
        note(&format!(
            "trainer `{}`: worst |diff| / allowed {w:.3}",
            t.name
        ));
    }
}

#[test]
fn forward_train_equals_forward_and_backward_is_deterministic() {
    let trainers = trainers();
    check_property(
        "forward_train equals forward; backward is deterministic",
        cases(CaseSpace::default()),
        |case| {
            let weights = case.weights().unwrap();
            let up = upstream(&case);
            let (x, state) = (case.input().unwrap(), case.state().unwrap());
            for t in &trainers {
                let fail = |m: String| TestCaseError::fail(format!("trainer `{}`: {m}", t.name));
                let trainer = t.build(weights.clone()).unwrap();
                let mut tape = TrainingTape::new();
                let trained = trainer
                    .forward_train(&x, state.as_ref(), case.lengths(), &mut tape)
                    .unwrap();
                let plain: Box<dyn LstmEngine<f32>> = match t.backend.as_deref() {
                    None => Box::new(NaiveEngine::new(weights.clone()).unwrap()),
                    Some(b) => {
                        Box::new(SimdEngine::with_backend(&weights, b.parse().unwrap()).unwrap())
                    }
                };
                let want = plain.forward(&x, state.as_ref(), case.lengths()).unwrap();
                if trained != want {
                    return Err(fail("forward_train differs from forward".into()));
                }
                let a = trainer.backward(&tape, &up.grads()).unwrap();
                let b = trainer.backward(&tape, &up.grads()).unwrap();
                let c = run_backward(
                    trainer.as_ref(),
                    &x,
                    state.as_ref(),
                    case.lengths(),
                    &up.grads(),
                )
                .unwrap();
                if a != b || a != c {
                    return Err(fail("two backward passes differ".into()));
                }
            }
            Ok(())
        },
    );
}

#[test]
fn parallel_training_is_the_simd_engines_bit_for_bit() {
    check_property(
        "parallel training at 2, 3 and 8 threads, every plan, equals the SIMD engine's",
        cases(CaseSpace::default()),
        |case| {
            let weights = case.weights().unwrap();
            let up = upstream(&case);
            let (x, state) = (case.input().unwrap(), case.state().unwrap());
            let simd = SimdEngine::new(&weights).unwrap();
            let mut tape = TrainingTape::new();
            let want = simd
                .forward_train(&x, state.as_ref(), case.lengths(), &mut tape)
                .unwrap();
            let want_grads = simd.backward(&tape, &up.grads()).unwrap();
            for threads in [2, 3, 8] {
                let par = ParallelEngine::new(&weights, threads).unwrap();
                for plan in [Plan::Serial, Plan::Hidden(threads), Plan::Directions] {
                    let fail =
                        |m: &str| TestCaseError::fail(format!("parallel-{threads} {plan:?}: {m}"));
                    let mut tape = TrainingTape::new();
                    let got = par
                        .forward_train_planned(
                            &x,
                            (state.as_ref(), case.lengths()),
                            &mut tape,
                            plan,
                        )
                        .unwrap();
                    if got != want {
                        return Err(fail("forward_train differs from the SIMD engine's"));
                    }
                    for workers in [threads, 1] {
                        let g = par.backward_planned(&tape, &up.grads(), workers).unwrap();
                        if g != want_grads {
                            return Err(fail("gradients differ from the SIMD engine's"));
                        }
                    }
                    if par.backward(&tape, &up.grads()).unwrap() != want_grads {
                        return Err(fail("gradients (cost model) differ from the SIMD engine's"));
                    }
                }
            }
            Ok(())
        },
    );
}

#[test]
fn padded_steps_get_zero_input_gradient() {
    let trainers = trainers();
    let space = CaseSpace {
        always_lengths: true,
        allow_unbatched: false,
        allow_empty_batch: false,
        ..CaseSpace::default()
    };
    check_property(
        "padded steps get zero input gradient",
        cases(space),
        |case| {
            let weights = case.weights().unwrap();
            let up = upstream(&case);
            let (x, state) = (case.input().unwrap(), case.state().unwrap());
            let i = case.config.input_size;
            for t in &trainers {
                let engine = t.build(weights.clone()).unwrap();
                let g = run_backward(
                    engine.as_ref(),
                    &x,
                    state.as_ref(),
                    case.lengths(),
                    &up.grads(),
                )
                .unwrap();
                let gx = g.grad_input.data();
                for b in 0..case.batch {
                    for step in case.length(b)..case.seq_len {
                        let at = if case.config.batch_first {
                            (b * case.seq_len + step) * i
                        } else {
                            (step * case.batch + b) * i
                        };
                        if gx[at..at + i].iter().any(|&v| v != 0.0) {
                            return Err(TestCaseError::fail(format!(
                                "trainer `{}`: grad_input at padded step {step} of sequence {b} \
                                 is not zero",
                                t.name
                            )));
                        }
                    }
                }
            }
            Ok(())
        },
    );
}
