//! Every engine with bf16 weights ([`lstm_validate::bf16_engines_under_test`]) against the f64
//! reference run on the same bf16-rounded weights ("same weights, exact arithmetic"), under
//! the bf16 tolerance model ([`Tolerance::bf16_operands`]): over every option (layers,
//! bidirectional, proj_size, lengths, states, batch_first, unbatched) and every backend the
//! host supports, short and long sequences.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use lstm_core::{LstmOutput, Precision};
use lstm_validate::strategies::{cases, Case, CaseSpace};
use lstm_validate::tolerance::{self, compare, compare_sensitive, Conditioning, Tolerance};
use lstm_validate::{
    available, bf16_engines_under_test, check_property, note, run_perturbed_reference,
    run_reference, run_state_rounded, sensitivity_samples, tolerance_for, EngineUnderTest,
};
use proptest::test_runner::TestCaseError;

fn fail(engine: &EngineUnderTest, what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(format!("engine `{}`: {what}", engine.name))
}

/// The worst `|got - want| / allowed` over the output (how close the model is to failing).
fn worst_ratio(got: &LstmOutput<f32>, want: &LstmOutput<f64>, tol: Tolerance) -> f64 {
    got.output
        .data()
        .iter()
        .zip(want.output.data())
        .filter(|(g, w)| g.is_finite() && w.is_finite())
        .map(|(&g, &w)| (f64::from(g) - w).abs() / tol.allowed(w))
        .fold(0.0, f64::max)
}

fn check_bf16(space: CaseSpace, name: &str) {
    let engines = available(bf16_engines_under_test());
    let worst = Mutex::new(vec![0.0f64; engines.len()]);
    check_property(name, cases(space), |case: Case| {
        let weights = case.weights().unwrap().rounded_to(Precision::Bf16);
        let want = run_reference(&case, &weights).unwrap();
        let nudged = run_perturbed_reference(&case, &weights).unwrap();
        let input = case.input().unwrap();
        let state = case.state().unwrap();
        let rounded = run_state_rounded(&weights, &input, state.as_ref(), case.lengths()).unwrap();
        let base = tolerance_for(&case, &weights, &want).unwrap();
        let (x_max, h0_max) = case.data_bounds();
        let cond = Conditioning::of(&weights, x_max, h0_max);
        let c_max = state
            .as_ref()
            .map_or(0.0, |s| tolerance::max_abs(s.c.data()))
            .max(tolerance::max_abs(want.c_n.data()));
        let layers = case.config.num_layers;
        for (n, engine) in engines.iter().enumerate() {
            let e = engine.build(case.weights().unwrap()).unwrap();
            let got = e
                .forward(&input, state.as_ref(), case.lengths())
                .map_err(|err| fail(engine, err))?;
            let u = engine.operand_u;
            let tol = Tolerance::bf16_operands(base, &cond, u, (case.seq_len, layers), c_max);
            let mut samples = sensitivity_samples(&engine.name, &nudged, &rounded);
            if u > 0.0 {
                samples.extend(tolerance::bf16_sensitivity(&want, &nudged, u));
            }
            compare_sensitive(&got, &want, &samples, &[], case.layout(), tol)
                .map_err(|m| fail(engine, m))?;
            let mut w = worst.lock().unwrap();
            w[n] = w[n].max(worst_ratio(&got, &want, tol));
        }
        Ok(())
    });
    for (engine, w) in engines.iter().zip(worst.lock().unwrap().iter()) {
        note(&format!(
            "{name}: `{}` worst |error| / allowed = {w:.3}",
            engine.name
        ));
    }
}

#[test]
fn bf16_engines_match_the_reference_on_rounded_weights() {
    check_bf16(CaseSpace::default(), "bf16 engines match the f64 reference");
}

#[test]
fn bf16_long_sequences_match_the_reference_on_rounded_weights() {
    check_bf16(
        CaseSpace::long(tolerance::SHORT_SEQUENCE + 1, 96),
        "bf16 long sequences match the f64 reference",
    );
}

/// The parallel runner with bf16 weights equals the SIMD engine it runs, bit for bit.
#[test]
fn bf16_bit_identical_engines_are() {
    let engines = available(bf16_engines_under_test());
    check_property(
        "bf16 bit-identical engines are",
        cases(CaseSpace::default()),
        |case: Case| {
            let input = case.input().unwrap();
            let state = case.state().unwrap();
            for engine in engines.iter() {
                let Some(other) = &engine.bit_identical_to else {
                    continue;
                };
                let Some(twin) = engines.iter().find(|e| &e.name == other) else {
                    continue;
                };
                let a = engine.build(case.weights().unwrap()).unwrap();
                let b = twin.build(case.weights().unwrap()).unwrap();
                let got = a.forward(&input, state.as_ref(), case.lengths()).unwrap();
                let want = b.forward(&input, state.as_ref(), case.lengths()).unwrap();
                compare(&got, &want, case.layout(), Tolerance::EXACT)
                    .map_err(|m| fail(engine, m))?;
            }
            Ok(())
        },
    );
}
