//! The validation harness of `lstm-kernels`: every engine against the f64 reference, by
//! property-based testing.
//!
//! - [`strategies`]: proptest strategies for whole `nn.LSTM` calls (configs over every option,
//!   weights from PyTorch's default range to saturating, inputs, states, lengths) that shrink to
//!   small counterexamples.
//! - [`tolerance`]: the one tolerance model (`|a − b| ≤ atol + rtol·|b|`), checked time step by
//!   time step.
//! - [`engines_under_test`]: the registry. Each engine joins the harness with one entry, and
//!   every property in `tests/properties.rs` runs over every entry the host supports.
//! - [`check_property`]: runs a property with a fixed seed and case count, printed, so that a
//!   CI run can be reproduced exactly.
//! - [`activation`]: the exhaustive activation tests' measuring loop (SIMD kernels).
//! - [`fuzz`]: the bodies of the fuzz targets, shared with the corpus replay test.
//!
//! ```
//! use lstm_validate::{check_property_with, engines_under_test, run_reference, strategies};
//! use lstm_validate::{tolerance, tolerance_for};
//! use proptest::prelude::*;
//!
//! let engines = engines_under_test();
//! let space = strategies::CaseSpace { max_seq_len: 3, ..Default::default() };
//! check_property_with("doc: f32 engines near f64", 8, strategies::cases(space), |case| {
//!     let weights = case.weights().unwrap();
//!     let want = run_reference(&case, &weights).unwrap();
//!     let tol = tolerance_for(&case, &weights, &want).unwrap();
//!     for engine in &engines {
//!         let e = engine.build(weights.clone()).unwrap();
//!         let got = e.forward(&case.input().unwrap(), case.state().unwrap().as_ref(), case.lengths());
//!         tolerance::compare(&got.unwrap(), &want, case.layout(), tol)
//!             .map_err(|m| TestCaseError::fail(format!("{}: {m}", engine.name)))?;
//!     }
//!     Ok(())
//! });
//! ```

#![forbid(unsafe_code)]

pub mod activation;
pub mod backward;
pub mod fuzz;
pub mod strategies;
pub mod tolerance;

use std::fmt;
use std::io::Write;

use lstm_core::{
    BatchOutput, LstmConfig, LstmEngine, LstmOutput, LstmState, LstmWeights, Precision, Result,
    SequenceBatch, Tensor,
};
use lstm_naive::NaiveEngine;
use lstm_parallel::{ParallelEngine, Plan};
use lstm_simd::{Backend, SimdEngine};
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestCaseError, TestError, TestRunner};

pub use strategies::Case;
pub use tolerance::{Mismatch, Tolerance};

/// An engine the harness runs, boxed.
pub type BoxedEngine = Box<dyn LstmEngine<f32>>;

/// How an [`EngineUnderTest`] is built from a model's f32 weights.
pub type BuildFn = Box<dyn Fn(LstmWeights<f32>) -> Result<BoxedEngine> + Send + Sync>;

/// One engine in the harness: a name, how to build it, where it runs.
pub struct EngineUnderTest {
    /// Shown in every failure (`"naive-f32"`, `"simd-avx2"`, `"parallel-4"`).
    pub name: String,
    build: BuildFn,
    /// The SIMD backend the entry pins (`"portable"`, `"avx2"`, `"avx512"`), for
    /// [`REQUIRE_BACKEND_ENV`]; `None` for engines without one.
    pub backend: Option<String>,
    /// Whether this host can run it (an unsupported backend is skipped with a printed note).
    pub available: bool,
    /// Another entry this one must equal bit for bit on every call (the parallel runner at any
    /// thread count against the SIMD engine it parallelises).
    pub bit_identical_to: Option<String>,
    /// How its products' data operands (the input rows, `h`) are rounded: exact for f32
    /// engines and for reduced-precision weights widened to f32, bf16 where the products take
    /// bf16 operands (`vdpbf16ps`), int8 with a scale per row where they are quantized (VNNI);
    /// see [`tolerance::OPERAND_SENSITIVITY`].
    pub operands: tolerance::OperandRounding,
    /// How exactly the engine must satisfy the layout identities (`step` T times = `forward`,
    /// `batch_first` = transposed, a batch = its sequences one by one, lengths = truncation,
    /// unbatched = batch of one, `bias=False` = zero biases): [`Tolerance::EXACT`] unless the
    /// engine documents why its results depend on the layout.
    pub identities: Tolerance,
}

impl EngineUnderTest {
    /// An engine available everywhere, held to exact layout identities.
    pub fn new(
        name: impl Into<String>,
        build: impl Fn(LstmWeights<f32>) -> Result<BoxedEngine> + Send + Sync + 'static,
    ) -> Self {
        EngineUnderTest {
            name: name.into(),
            build: Box::new(build),
            backend: None,
            available: true,
            bit_identical_to: None,
            operands: tolerance::OperandRounding::Exact,
            identities: Tolerance::EXACT,
        }
    }

    /// Declares how the engine rounds its products' data operands.
    pub fn operands_rounded(mut self, rounding: tolerance::OperandRounding) -> Self {
        self.operands = rounding;
        self
    }

    /// Pins a SIMD backend, available when `supported` (`Backend::X.is_supported()`).
    pub fn backend(mut self, backend: impl Into<String>, supported: bool) -> Self {
        self.backend = Some(backend.into());
        self.available = supported;
        self
    }

    /// Demands bit-identical results to the entry named `other`.
    pub fn bit_identical_to(mut self, other: impl Into<String>) -> Self {
        self.bit_identical_to = Some(other.into());
        self
    }

    /// Loosens the layout identities to `tolerance` (document why in the engine).
    pub fn identities_within(mut self, tolerance: Tolerance) -> Self {
        self.identities = tolerance;
        self
    }

    /// Builds the engine over `weights`.
    pub fn build(&self, weights: LstmWeights<f32>) -> Result<BoxedEngine> {
        (self.build)(weights)
    }
}

impl fmt::Debug for EngineUnderTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineUnderTest")
            .field("name", &self.name)
            .field("backend", &self.backend)
            .field("available", &self.available)
            .field("bit_identical_to", &self.bit_identical_to)
            .field("identities", &self.identities)
            .finish_non_exhaustive()
    }
}

/// Every f32 engine of the workspace, each SIMD backend pinned explicitly. Adding an engine to
/// the harness is one entry here; every property then runs over it.
pub fn engines_under_test() -> Vec<EngineUnderTest> {
    vec![
        EngineUnderTest::new("naive-f32", |w| Ok(Box::new(NaiveEngine::new(w)?))),
        simd(Backend::Portable),
        simd(Backend::Avx2),
        simd(Backend::Avx512),
        // The parallel runner, bit-identical to the SIMD engine it runs (the best backend of
        // the host), with its own cost model and with each plan forced, at 1, 2, 3 threads.
        parallel(1, None),
        parallel(2, None),
        parallel(2, Some(Plan::Hidden(2))),
        parallel(3, Some(Plan::Hidden(3))),
        parallel(3, Some(Plan::Batch(3))),
        parallel(2, Some(Plan::Directions)),
    ]
}

/// How the SIMD engine on `backend` rounds the data operands of its products at `precision`.
pub fn operand_rounding(backend: Backend, precision: Precision) -> tolerance::OperandRounding {
    use tolerance::OperandRounding;
    match (precision, backend) {
        (Precision::Bf16, Backend::Avx512Bf16) => OperandRounding::Relative(tolerance::BF16_U),
        (Precision::Int8, Backend::Avx512Vnni) => OperandRounding::RowScaled(tolerance::INT8_U),
        _ => OperandRounding::Exact,
    }
}

/// Every engine with weights of `precision` (bf16, int8), compared with the reference on the
/// same rounded weights ([`LstmWeights::rounded_to`]) under the operand model
/// ([`tolerance::compare_samples`], [`tolerance::OPERAND_SENSITIVITY`]): the SIMD
/// engine on every backend whose kernels differ at that precision ([`Backend::all_for`]), the
/// parallel runner at 2 and 3 threads (bit-identical to the SIMD engine of the best backend),
/// and the engines the facade builds for `lstm run --precision …` (`cli-simd`, `cli-parallel`:
/// [`lstm::Model::engine_with`] with the precision and nothing else, as the CLI calls it).
pub fn reduced_engines_under_test(precision: Precision) -> Vec<EngineUnderTest> {
    let best = Backend::detect_for(precision);
    let p = precision.name();
    let mut engines: Vec<EngineUnderTest> = Backend::ALL
        .iter()
        .map(|&backend| {
            EngineUnderTest::new(format!("simd-{p}-{}", backend.name()), move |w| {
                Ok(Box::new(SimdEngine::with_options(&w, backend, precision)?))
            })
            .backend(
                backend.name(),
                Backend::all_for(precision).contains(&backend),
            )
            .operands_rounded(operand_rounding(backend, precision))
        })
        .collect();
    for threads in [2, 3] {
        engines.push(
            EngineUnderTest::new(format!("parallel-{p}-{threads}"), move |w| {
                let engine = ParallelEngine::with_options(&w, best, precision, threads)?;
                Ok(Box::new(ForcedPlan {
                    engine,
                    plan: Plan::Hidden(threads),
                }))
            })
            .bit_identical_to(format!("simd-{p}-{}", best.name()))
            .operands_rounded(operand_rounding(best, precision)),
        );
    }
    for kind in [lstm::EngineKind::Simd, lstm::EngineKind::Parallel] {
        engines.push(
            EngineUnderTest::new(format!("cli-{p}-{}", kind.name()), move |w| {
                let options = lstm::EngineOptions::default().with_precision(precision);
                let engine: BoxedEngine =
                    lstm::Model::from_weights(w).engine_with(kind, options)?;
                Ok(engine)
            })
            .bit_identical_to(format!("simd-{p}-{}", best.name()))
            .operands_rounded(operand_rounding(best, precision)),
        );
    }
    engines
}

/// The parallel runner on `threads` threads, with its cost model or a forced plan.
fn parallel(threads: usize, plan: Option<Plan>) -> EngineUnderTest {
    let best = Backend::detect();
    let name = match plan {
        None => format!("parallel-{threads}"),
        Some(p) => format!("parallel-{threads}-{p:?}").to_lowercase(),
    };
    EngineUnderTest::new(name, move |w| {
        let engine = ParallelEngine::with_backend(&w, best, threads)?;
        Ok(match plan {
            None => Box::new(engine),
            Some(plan) => Box::new(ForcedPlan { engine, plan }),
        })
    })
    .bit_identical_to(format!("simd-{}", best.name()))
}

/// The parallel runner with a plan forced on every call, so that the properties exercise each
/// split even on the small cases for which the cost model stays serial.
#[derive(Debug)]
struct ForcedPlan {
    engine: ParallelEngine,
    plan: Plan,
}

impl LstmEngine<f32> for ForcedPlan {
    fn config(&self) -> &LstmConfig {
        self.engine.config()
    }

    fn name(&self) -> &'static str {
        "parallel"
    }

    fn forward_batch(&self, call: &SequenceBatch<'_, f32>) -> Result<BatchOutput<f32>> {
        self.engine.forward_batch_planned(call, self.plan)
    }

    fn step(&self, x_t: &[f32], state: &mut LstmState<f32>, output: &mut [f32]) -> Result<()> {
        self.engine.step(x_t, state, output)
    }
}

/// The SIMD engine pinned to `backend` (skipped where the host lacks it).
fn simd(backend: Backend) -> EngineUnderTest {
    EngineUnderTest::new(format!("simd-{}", backend.name()), move |w| {
        Ok(Box::new(SimdEngine::with_backend(&w, backend)?))
    })
    .backend(backend.name(), backend.is_supported())
}

/// The entries of `engines` this host runs; prints one line per skipped entry.
pub fn available(engines: Vec<EngineUnderTest>) -> Vec<EngineUnderTest> {
    engines
        .into_iter()
        .filter(|e| {
            if !e.available {
                note(&format!(
                    "skipping engine `{}`: backend {:?} is not supported on this host",
                    e.name, e.backend
                ));
            }
            e.available
        })
        .collect()
}

/// The f64 reference over the exact widening of `weights`: the oracle of every property.
pub fn reference(weights: &LstmWeights<f32>) -> Result<NaiveEngine<f64>> {
    NaiveEngine::new(weights.cast::<f64>())
}

/// The tolerance for `case` against the reference's result `reference` on it: the per-step
/// rule for short sequences, the long-sequence rule (with `max|c|` over `c0` and `c_n`) beyond
/// [`tolerance::SHORT_SEQUENCE`] steps.
pub fn tolerance_for(
    case: &Case,
    weights: &LstmWeights<f32>,
    reference: &LstmOutput<f64>,
) -> Result<Tolerance> {
    let (x_max, h0_max) = case.data_bounds();
    let cond = tolerance::Conditioning::of(weights, x_max, h0_max);
    Ok(f32_rule(
        &cond,
        case.seq_len,
        case.state()?.as_ref(),
        reference,
    ))
}

/// [`tolerance_for`] for a call given explicitly (`x` of `seq_len` steps, `state`), its data
/// bounded by their own largest magnitudes: the f32 rule of any call, such as one made through
/// `lstm run` ([`check_call`]).
pub fn tolerance_for_call(
    weights: &LstmWeights<f32>,
    x: &Tensor<f32>,
    state: Option<&LstmState<f32>>,
    seq_len: usize,
    reference: &LstmOutput<f64>,
) -> Tolerance {
    let h0_max = state.map_or(0.0, |s| tolerance::max_abs(s.h.data()));
    let cond = tolerance::Conditioning::of(weights, tolerance::max_abs(x.data()), h0_max);
    f32_rule(&cond, seq_len, state, reference)
}

/// The per-step rule up to [`tolerance::SHORT_SEQUENCE`] steps, the long-sequence rule (with
/// `max|c|` over `c0` and `c_n`) beyond.
fn f32_rule(
    cond: &tolerance::Conditioning,
    seq_len: usize,
    state: Option<&LstmState<f32>>,
    reference: &LstmOutput<f64>,
) -> Tolerance {
    if seq_len <= tolerance::SHORT_SEQUENCE {
        return Tolerance::per_step(cond);
    }
    let c0_max = state.map_or(0.0, |s| tolerance::max_abs(s.c.data()));
    let c_max = c0_max.max(tolerance::max_abs(reference.c_n.data()));
    Tolerance::long_sequence(cond, seq_len, c_max)
}

/// One forward call given explicitly, for [`check_call`].
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    /// The input, in the model's layout.
    pub x: &'a Tensor<f32>,
    /// `(h0, c0)`, or `None` for zeros.
    pub state: Option<&'a LstmState<f32>>,
    /// Per-sequence lengths.
    pub lengths: Option<&'a [usize]>,
    /// T of `x`.
    pub seq_len: usize,
}

/// Checks one call's result `got` (from an engine with weights of `precision` rounding its
/// operands as `rounding` says: what `lstm run --precision …` wrote, say) against the f64
/// reference on `weights.rounded_to(precision)` under the model the property tests use: the
/// f32 rule ([`tolerance_for_call`]) with its sensitivity samples, widened by the operand
/// samples ([`run_operand_perturbed_reference_on`]), and the a-priori operand bound
/// ([`Tolerance::operands`]). `weights` are the model's own (f32) weights; the margin returned
/// is the operand model's.
pub fn check_call(
    weights: &LstmWeights<f32>,
    precision: Precision,
    rounding: tolerance::OperandRounding,
    call: &Call<'_>,
    got: &LstmOutput<f32>,
) -> Result<std::result::Result<tolerance::Margin, Mismatch>> {
    let Call {
        x,
        state,
        lengths,
        seq_len,
    } = *call;
    let weights = weights.rounded_to(precision);
    let want = run_reference_on(&weights, x, state, lengths)?;
    let base = tolerance_for_call(&weights, x, state, seq_len, &want);
    let nudged = run_perturbed_reference_on(&weights, x, state, lengths)?;
    let rounded = run_state_rounded(&weights, x, state, lengths)?;
    let perturbed = sensitivity_samples("", &nudged, &rounded);
    let operands = run_operand_perturbed_reference_on(&weights, x, state, lengths, rounding)?;
    let samples = tolerance::Samples {
        perturbed: &perturbed,
        probes: &[],
        operands: &operands,
    };
    let layout = tolerance::Layout {
        batch_first: weights.config().batch_first,
        unbatched: x.shape().len() == 2,
    };
    let margin = match tolerance::compare_samples(got, &want, &samples, layout, base) {
        Ok(margin) => margin,
        Err(mismatch) => return Ok(Err(mismatch)),
    };
    // The a-priori operand bound, with the f32 samples alone.
    let h0_max = state.map_or(0.0, |s| tolerance::max_abs(s.h.data()));
    let cond = tolerance::Conditioning::of(&weights, tolerance::max_abs(x.data()), h0_max);
    let c0_max = state.map_or(0.0, |s| tolerance::max_abs(s.c.data()));
    let c_max = c0_max.max(tolerance::max_abs(want.c_n.data()));
    let shape = (seq_len, weights.config().num_layers);
    let a_priori = Tolerance::operands(base, &cond, rounding, shape, c_max);
    let samples = tolerance::Samples {
        perturbed: &perturbed,
        ..tolerance::Samples::default()
    };
    Ok(tolerance::compare_samples(got, &want, &samples, layout, a_priori).map(|_| margin))
}

/// Runs the f64 reference on `case` (weights, input and state widened exactly from f32).
pub fn run_reference(case: &Case, weights: &LstmWeights<f32>) -> Result<LstmOutput<f64>> {
    run_reference_on(
        weights,
        &case.input()?,
        case.state()?.as_ref(),
        case.lengths(),
    )
}

/// Runs the f64 reference on one call given explicitly (weights, input and state widened
/// exactly from f32).
pub fn run_reference_on(
    weights: &LstmWeights<f32>,
    x: &Tensor<f32>,
    state: Option<&LstmState<f32>>,
    lengths: Option<&[usize]>,
) -> Result<LstmOutput<f64>> {
    let oracle = reference(weights)?;
    let state = state.map(widen_state);
    oracle.forward(&widen(x), state.as_ref(), lengths)
}

/// Runs the f64 reference on `case` [`tolerance::PERTURBATION_SAMPLES`] times, each time with
/// every weight, input and state element moved by one f32 rounding (`v·(1 ± 2⁻²⁴)`, signs
/// drawn from a fixed stream per sample): how much the problem itself moves under f32-sized
/// perturbations, for [`tolerance::compare_sensitive`].
pub fn run_perturbed_reference(
    case: &Case,
    weights: &LstmWeights<f32>,
) -> Result<Vec<LstmOutput<f64>>> {
    run_perturbed_reference_on(
        weights,
        &case.input()?,
        case.state()?.as_ref(),
        case.lengths(),
    )
}

/// [`run_perturbed_reference`] for a call given explicitly.
pub fn run_perturbed_reference_on(
    weights: &LstmWeights<f32>,
    x: &Tensor<f32>,
    state: Option<&LstmState<f32>>,
    lengths: Option<&[usize]>,
) -> Result<Vec<LstmOutput<f64>>> {
    (0..tolerance::PERTURBATION_SAMPLES)
        .map(|sample| perturbed_run(weights, x, state, lengths, sample as u64, 1.0))
        .collect()
}

/// Runs the f64 reference on `case` [`tolerance::PROBE_SAMPLES`] times, each time with every
/// weight, input and state element moved by [`tolerance::PROBE_ULPS`] f32 roundings: how the
/// problem responds to errors of the size the tolerance admits, for the chaos cut-off of
/// [`tolerance::compare_sensitive`].
pub fn run_chaos_probes(case: &Case, weights: &LstmWeights<f32>) -> Result<Vec<LstmOutput<f64>>> {
    run_chaos_probes_on(
        weights,
        &case.input()?,
        case.state()?.as_ref(),
        case.lengths(),
    )
}

/// [`run_chaos_probes`] for a call given explicitly.
pub fn run_chaos_probes_on(
    weights: &LstmWeights<f32>,
    x: &Tensor<f32>,
    state: Option<&LstmState<f32>>,
    lengths: Option<&[usize]>,
) -> Result<Vec<LstmOutput<f64>>> {
    // Sign streams of their own: samples PERTURBATION_SAMPLES.. of the same family.
    (0..tolerance::PROBE_SAMPLES)
        .map(|probe| {
            let sample = (tolerance::PERTURBATION_SAMPLES + probe) as u64;
            perturbed_run(weights, x, state, lengths, sample, tolerance::PROBE_ULPS)
        })
        .collect()
}

/// Runs the f64 reference on `case` [`tolerance::PERTURBATION_SAMPLES`] times, each time
/// perturbed as an engine rounding its operands as `rounding` says is, at √6 times its
/// standard deviation ([`tolerance::OperandRounding::perturbation`]; signs drawn from a fixed
/// stream per sample, as in [`run_perturbed_reference`]): the problem's response to errors of
/// the size such an engine makes, for [`tolerance::Samples::operands`]. Empty for
/// [`tolerance::OperandRounding::Exact`].
pub fn run_operand_perturbed_reference(
    case: &Case,
    weights: &LstmWeights<f32>,
    rounding: tolerance::OperandRounding,
) -> Result<Vec<LstmOutput<f64>>> {
    let (x, state) = (case.input()?, case.state()?);
    run_operand_perturbed_reference_on(weights, &x, state.as_ref(), case.lengths(), rounding)
}

/// [`run_operand_perturbed_reference`] for a call given explicitly.
pub fn run_operand_perturbed_reference_on(
    weights: &LstmWeights<f32>,
    x: &Tensor<f32>,
    state: Option<&LstmState<f32>>,
    lengths: Option<&[usize]>,
    rounding: tolerance::OperandRounding,
) -> Result<Vec<LstmOutput<f64>>> {
    let samples = 0..tolerance::PERTURBATION_SAMPLES as u64;
    operand_runs(weights, (x, state, lengths), rounding, samples)
}

/// The reference perturbed as `rounding`'s samples are, for each sign stream of `samples`;
/// none when exact.
fn operand_runs(
    weights: &LstmWeights<f32>,
    (x, state, lengths): (&Tensor<f32>, Option<&LstmState<f32>>, Option<&[usize]>),
    rounding: tolerance::OperandRounding,
    samples: std::ops::Range<u64>,
) -> Result<Vec<LstmOutput<f64>>> {
    use tolerance::OperandRounding;
    let size = rounding.perturbation();
    samples
        .map(|sample| match rounding {
            OperandRounding::Exact => Ok(None),
            OperandRounding::Relative(_) => {
                perturbed_run(weights, x, state, lengths, sample, size / tolerance::U).map(Some)
            }
            OperandRounding::RowScaled(_) => {
                row_perturbed_run(weights, x, state, lengths, sample, size).map(Some)
            }
        })
        .filter_map(Result::transpose)
        .collect()
}

/// One run of the f64 reference with every element of each row of `W_ih`, `W_hh` and `W_hr`
/// moved by `±size · ‖row‖₂` (signs from sample `sample`'s stream); biases, input and state
/// unchanged. A product row `Σ_k w_k·a_k` then moves by `Σ_k ±size·‖w‖·a_k`, a standard
/// deviation of `size·‖w‖·‖a‖ ≥ size·‖w‖·max|a|`: the structure of a row-scaled rounding of
/// the operand `a`, whose error does not shrink with `|a_k|`.
fn row_perturbed_run(
    weights: &LstmWeights<f32>,
    x: &Tensor<f32>,
    state: Option<&LstmState<f32>>,
    lengths: Option<&[usize]>,
    sample: u64,
    size: f64,
) -> Result<LstmOutput<f64>> {
    let mut rng = lstm_core::SplitMix64::new(
        0x9e37_79b9_7f4a_7c15 ^ sample.wrapping_mul(0xd1b5_4a32_d192_ed03),
    );
    let wide = weights.cast::<f64>();
    let config = wide.config().clone();
    let (gates, proj) = (4 * config.hidden_size, config.proj_size);
    let mut cells = wide.cells().to_vec();
    for cell in &mut cells {
        for (w, rows) in [
            (Some(&mut cell.w_ih), gates),
            (Some(&mut cell.w_hh), gates),
            (cell.w_hr.as_mut(), proj),
        ] {
            let Some(w) = w else { continue };
            let k = w.len().checked_div(rows).unwrap_or(0).max(1);
            for row in w.chunks_mut(k) {
                let step = size * row.iter().map(|v| v * v).sum::<f64>().sqrt();
                for v in row {
                    *v += if rng.next_u64() & 1 == 0 { step } else { -step };
                }
            }
        }
    }
    let oracle = NaiveEngine::new(LstmWeights::with_peepholes(
        config,
        cells,
        wide.peepholes().to_vec(),
    )?)?;
    oracle.forward(&widen(x), state.map(widen_state).as_ref(), lengths)
}

/// The name of the engine whose result [`run_state_rounded`] is.
pub const STATE_ROUNDED_ENGINE: &str = "naive-f32";

/// `NaiveEngine<f32>` on the call, widened: every step evaluated exactly (in f64) from the
/// f32 state, and only `h` and `c` rounded to f32 after each step. Its distance from the
/// reference is the problem's sensitivity to the per-step state roundings every f32 engine
/// makes, which perturbing the initial data alone misses where the state passes through
/// values near 0 (a relative perturbation of a tiny state is tiny) and later steps amplify.
pub fn run_state_rounded(
    weights: &LstmWeights<f32>,
    x: &Tensor<f32>,
    state: Option<&LstmState<f32>>,
    lengths: Option<&[usize]>,
) -> Result<LstmOutput<f64>> {
    let out = NaiveEngine::new(weights.clone())?.forward(x, state, lengths)?;
    Ok(LstmOutput {
        output: widen(&out.output),
        h_n: widen(&out.h_n),
        c_n: widen(&out.c_n),
    })
}

/// The sensitivity samples an engine is compared with ([`tolerance::compare_sensitive`]):
/// `perturbed` (from [`run_perturbed_reference`]), and `state_rounded` (from
/// [`run_state_rounded`]) unless the engine is [`STATE_ROUNDED_ENGINE`] itself, whose
/// error it would excuse.
pub fn sensitivity_samples(
    engine: &str,
    perturbed: &[LstmOutput<f64>],
    state_rounded: &LstmOutput<f64>,
) -> Vec<LstmOutput<f64>> {
    let mut samples = perturbed.to_vec();
    if engine != STATE_ROUNDED_ENGINE {
        samples.push(state_rounded.clone());
    }
    samples
}

/// One perturbed run of the f64 reference: sample `sample` of the sign streams, every element
/// moved by `ulps` f32 roundings, `v·(1 ± ulps·2⁻²⁴)`.
fn perturbed_run(
    weights: &LstmWeights<f32>,
    x: &Tensor<f32>,
    state: Option<&LstmState<f32>>,
    lengths: Option<&[usize]>,
    sample: u64,
    ulps: f64,
) -> Result<LstmOutput<f64>> {
    let mut rng = lstm_core::SplitMix64::new(
        0x9e37_79b9_7f4a_7c15 ^ sample.wrapping_mul(0xd1b5_4a32_d192_ed03),
    );
    let mut nudge = |v: f64| {
        let sign = if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
        v * (1.0 + sign * ulps * tolerance::U)
    };
    let wide = weights.cast::<f64>();
    let mut cells = wide.cells().to_vec();
    for cell in &mut cells {
        for v in cell
            .w_ih
            .iter_mut()
            .chain(cell.w_hh.iter_mut())
            .chain(cell.b_ih.iter_mut().flatten())
            .chain(cell.b_hh.iter_mut().flatten())
            .chain(cell.w_hr.iter_mut().flatten())
        {
            *v = nudge(*v);
        }
    }
    let peepholes: Vec<Vec<f64>> = wide
        .peepholes()
        .iter()
        .map(|p| p.iter().map(|&v| nudge(v)).collect())
        .collect();
    let oracle = NaiveEngine::new(LstmWeights::with_peepholes(
        wide.config().clone(),
        cells,
        peepholes,
    )?)?;
    let x = x.map(|&v| nudge(f64::from(v)));
    let state = state.map(|s| LstmState {
        h: s.h.map(|&v| nudge(f64::from(v))),
        c: s.c.map(|&v| nudge(f64::from(v))),
    });
    oracle.forward(&x, state.as_ref(), lengths)
}

/// An f32 tensor widened (exactly) to f64.
pub fn widen(t: &Tensor<f32>) -> Tensor<f64> {
    t.map(|&v| f64::from(v))
}

/// An f32 state widened (exactly) to f64.
pub fn widen_state(s: &LstmState<f32>) -> LstmState<f64> {
    LstmState {
        h: widen(&s.h),
        c: widen(&s.c),
    }
}

/// Comma-separated backends (`avx2,avx512`) that must be available, or the tests fail: so that
/// CI on a machine without them never passes on the wrong path silently.
pub const REQUIRE_BACKEND_ENV: &str = "LSTM_VALIDATE_REQUIRE_BACKEND";

/// Checks that every backend named in `demanded` (a comma list, case-insensitive, blanks
/// ignored) is in `available`; the error names the missing ones and what is available.
pub fn check_required_backends(
    demanded: &str,
    available: &[&str],
) -> std::result::Result<(), String> {
    let missing: Vec<&str> = demanded
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .filter(|d| !available.iter().any(|a| a.eq_ignore_ascii_case(d)))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{REQUIRE_BACKEND_ENV} demands {missing:?}, not available on this host \
             (available: {available:?})"
        ))
    }
}

/// [`check_required_backends`] for the environment's demand and the backends of `engines`
/// that this host supports. Ok when the variable is unset.
pub fn check_required_backends_from_env(
    engines: &[EngineUnderTest],
) -> std::result::Result<(), String> {
    let Ok(demanded) = std::env::var(REQUIRE_BACKEND_ENV) else {
        return Ok(());
    };
    let supported: Vec<&str> = engines
        .iter()
        .filter(|e| e.available)
        .filter_map(|e| e.backend.as_deref())
        .collect();
    check_required_backends(&demanded, &supported)
}

/// Cases per property when [`CASES_ENV`] is unset.
pub const DEFAULT_CASES: u32 = 256;
/// The base seed when [`SEED_ENV`] is unset; each property derives its own from it and its name.
pub const DEFAULT_SEED: u64 = 0x1575_7a11_da7e_2024;
/// Overrides the case count of every property (e.g. `LSTM_VALIDATE_CASES=10000` for a soak).
pub const CASES_ENV: &str = "LSTM_VALIDATE_CASES";
/// Overrides the base seed (decimal or `0x` hex), to explore other cases or replay a report.
pub const SEED_ENV: &str = "LSTM_VALIDATE_SEED";

/// Case count and base seed of a run: the environment's, else the defaults.
pub fn run_settings() -> std::result::Result<(u32, u64), String> {
    let cases = match std::env::var(CASES_ENV) {
        Ok(v) => v
            .trim()
            .parse::<u32>()
            .map_err(|e| format!("{CASES_ENV}={v:?}: {e}"))?,
        Err(_) => DEFAULT_CASES,
    };
    let seed = match std::env::var(SEED_ENV) {
        Ok(v) => {
            let t = v.trim();
            match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => t.parse::<u64>(),
            }
            .map_err(|e| format!("{SEED_ENV}={v:?}: {e}"))?
        }
        Err(_) => DEFAULT_SEED,
    };
    Ok((cases, seed))
}

/// The seed of property `name` under base seed `base` (FNV-1a of the name, mixed in), so
/// that properties explore different streams and each is reproducible on its own.
pub fn property_seed(base: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    base ^ h
}

/// Writes one line to stderr past the test harness's capture, so that CI logs always show
/// seeds, case counts and skipped engines.
pub fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "lstm-validate: {line}");
}

/// Runs `test` on the run's case count ([`DEFAULT_CASES`], or [`CASES_ENV`]) of cases drawn
/// from `strategy`; see [`check_property_with`].
///
/// # Panics
///
/// When the property fails, or when [`CASES_ENV`]/[`SEED_ENV`] do not parse.
pub fn check_property<S>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> std::result::Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: fmt::Debug,
{
    let cases = match run_settings() {
        Ok((cases, _)) => cases,
        Err(e) => panic!("{e}"),
    };
    check_property_with(name, cases, strategy, test);
}

/// Runs `test` on `cases` cases drawn from `strategy` by a ChaCha generator seeded from the
/// base seed ([`DEFAULT_SEED`], or [`SEED_ENV`]) and `name`, shrinking any failure to a minimal
/// case.
///
/// Prints the property's name, case count and seed first. Failures persist nowhere: the fixed
/// seed is the record, and the panic message says how to replay.
///
/// # Panics
///
/// When the property fails (with the minimal case and the failure), or when [`SEED_ENV`] does
/// not parse.
pub fn check_property_with<S>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> std::result::Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: fmt::Debug,
{
    let (base_cases, base_seed) = match run_settings() {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let seed = property_seed(base_seed, name);
    note(&format!(
        "property `{name}`: {cases} cases, ChaCha seed {seed:#018x} \
         (from {SEED_ENV}={base_seed:#x})"
    ));
    let config = Config {
        cases,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_time: 120_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    match runner.run(&strategy, test) {
        Ok(()) => {}
        Err(TestError::Fail(reason, minimal)) => panic!(
            "property `{name}` failed: {reason}\nminimal case: {minimal:#?}\n\
             replay: {SEED_ENV}={base_seed:#x} {CASES_ENV}={base_cases} (property seed {seed:#018x})"
        ),
        Err(TestError::Abort(reason)) => panic!("property `{name}` aborted: {reason}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn required_backends() {
        assert!(check_required_backends("", &[]).is_ok());
        assert!(check_required_backends(" avx2 , ", &["portable", "AVX2"]).is_ok());
        let err = check_required_backends("avx2,avx512", &["portable", "avx2"]).unwrap_err();
        assert!(
            err.contains("avx512") && !err.contains("[\"avx2\""),
            "{err}"
        );
    }

    #[test]
    fn property_seeds_differ_by_name() {
        assert_ne!(property_seed(1, "a"), property_seed(1, "b"));
        assert_eq!(property_seed(7, "a"), property_seed(7, "a"));
    }
}
