//! The backward pass in the harness: the engines that train ([`trainers_under_test`]), the
//! f64 reference backward on a [`Case`] with upstream gradients drawn for it, and the
//! tolerance model for gradients (the forward's, `|a − b| ≤ atol + rtol·|b|`, with an `atol`
//! per gradient tensor; constants here, reasoning in `docs/numerics.md`).
//!
//! **The model.** A gradient is a sum over the `T·B` rows of a call (parameters) or over the
//! steps after it (inputs, states) of products of the tape's values, the weights and the
//! upstream gradients, and the cell gradient carried backward integrates like the forward's
//! cell. An f32 evaluation therefore errs by about `u·√(K·T·B)` relative to the tensor's scale
//! (`K` terms per dot product, `T·B` summed rows) plus `u·T` for the carried gradient, where
//! the scale is the tensor's largest reference value `S`:
//!
//! `atol = ATOL·(1 + S) + GRAD_ULPS · u · (√(K·T·B) + T) · S`
//! `     + TAPE_ULPS · u · √(T·B) · S_model · max(1, |x|, |h0|) + SENSITIVITY · s`
//!
//! - The tape term: every engine reads the gates from an f32 tape, and a gate rounded to f32
//!   loses the derivative of a saturated sigmoid (`i(1 − i)` with `i` one ulp from 1 is off by
//!   `u` absolutely, however small the true derivative; so is `1 − tanh²c`): a gradient whose
//!   own scale is tiny (all gates of a cell saturated) still errs by about `u` times the
//!   gradients carried through those derivatives (`S_model`: the largest of the upstream
//!   gradients and of the reference's gradients) times the inputs they multiply, summed over
//!   the rows.
//! - `s` is the largest change of the tensor in the f64 reference when every weight, input,
//!   state and upstream element is moved by one f32 rounding ([`run_perturbed_backward`]): a
//!   chaotic model (wide recurrent weights) amplifies any rounding, f64's included, and no f32
//!   engine can do better than a small multiple of it.

use lstm_core::{
    GradOutputs, LstmBackward, LstmGradients, LstmState, LstmWeights, Result, SplitMix64, Tensor,
    TrainingTape,
};
use lstm_naive::NaiveEngine;
use lstm_parallel::ParallelEngine;
use lstm_simd::{Backend, SimdEngine};

use crate::strategies::Case;
use crate::tolerance::{Tolerance, ATOL, RTOL, SENSITIVITY, U};
use crate::{widen, widen_state};

/// Multiple of `u · (√(K·T·B) + T) · S` allowed on a gradient tensor of scale `S`.
pub const GRAD_ULPS: f64 = 16.0;

/// Multiple of `u · √(T·B) · S_model · max(1, |x|, |h0|)` allowed for the f32 tape.
pub const TAPE_ULPS: f64 = 16.0;

/// A training engine, boxed.
pub type BoxedTrainer = Box<dyn LstmBackward<f32>>;

/// How a [`TrainerUnderTest`] is built from a model's f32 weights.
pub type TrainerBuildFn = Box<dyn Fn(LstmWeights<f32>) -> Result<BoxedTrainer> + Send + Sync>;

/// One engine with a backward pass in the harness.
pub struct TrainerUnderTest {
    /// Shown in every failure (`"naive-f32"`, `"simd-avx2"`).
    pub name: String,
    build: TrainerBuildFn,
    /// The SIMD backend the entry pins, if any.
    pub backend: Option<String>,
    /// Whether this host can run it.
    pub available: bool,
}

impl TrainerUnderTest {
    /// Builds the engine over `weights`.
    pub fn build(&self, weights: LstmWeights<f32>) -> Result<BoxedTrainer> {
        (self.build)(weights)
    }
}

impl std::fmt::Debug for TrainerUnderTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainerUnderTest")
            .field("name", &self.name)
            .field("backend", &self.backend)
            .field("available", &self.available)
            .finish_non_exhaustive()
    }
}

/// Every f32 engine with a backward pass, each SIMD backend pinned explicitly (unsupported
/// ones marked unavailable).
pub fn trainers_under_test() -> Vec<TrainerUnderTest> {
    let mut v = vec![TrainerUnderTest {
        name: "naive-f32".to_string(),
        build: Box::new(|w| Ok(Box::new(NaiveEngine::new(w)?) as BoxedTrainer)),
        backend: None,
        available: true,
    }];
    for &backend in Backend::ALL {
        v.push(TrainerUnderTest {
            name: format!("simd-{}", backend.name()),
            build: Box::new(move |w| {
                Ok(Box::new(SimdEngine::with_backend(&w, backend)?) as BoxedTrainer)
            }),
            backend: Some(backend.name().to_string()),
            available: backend.is_supported(),
        });
    }
    // The parallel runner at 2, 3 and 8 threads (its cost model's plans; the properties of
    // `tests/backward.rs` also force every plan).
    for threads in [2, 3, 8] {
        v.push(TrainerUnderTest {
            name: format!("parallel-{threads}"),
            build: Box::new(move |w| {
                Ok(Box::new(ParallelEngine::new(&w, threads)?) as BoxedTrainer)
            }),
            // The backend it runs, so that the properties compare it with that SIMD engine.
            backend: Some(Backend::detect().name().to_string()),
            available: true,
        });
    }
    v
}

/// The upstream gradients of a case: `dL/d(output)` in the output's shape and, for about half
/// the cases, `dL/dh_n` and `dL/dc_n`, all `U(-1, 1)` from a stream seeded by the case.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// dL/d(output).
    pub output: Tensor<f32>,
    /// dL/dh_n, dL/dc_n.
    pub finals: Option<(Tensor<f32>, Tensor<f32>)>,
}

impl Upstream {
    /// Draws the upstream gradients for `case`, whose forward gave outputs of these shapes.
    pub fn draw(case: &Case, output: &[usize], h_n: &[usize], c_n: &[usize]) -> Result<Self> {
        let mut rng = SplitMix64::new(case.input.seed ^ 0x6772_6164_5f75_7073);
        let mut t = |shape: &[usize]| -> Result<Tensor<f32>> {
            let n = shape.iter().product();
            Tensor::new(shape.to_vec(), rng.fill_f32(n, 1.0))
        };
        let out = t(output)?;
        let finals = if case.input.seed % 2 == 1 {
            Some((t(h_n)?, t(c_n)?))
        } else {
            None
        };
        Ok(Upstream {
            output: out,
            finals,
        })
    }

    /// As [`GradOutputs`].
    pub fn grads(&self) -> GradOutputs<'_, f32> {
        let g = GradOutputs::new(&self.output);
        match &self.finals {
            Some((h, c)) => g.with_h_n(h).with_c_n(c),
            None => g,
        }
    }
}

/// `forward_train` then `backward` of `engine` on `case` with `upstream`.
pub fn run_backward<T: Copy + Default>(
    engine: &dyn LstmBackward<T>,
    x: &Tensor<T>,
    state: Option<&LstmState<T>>,
    lengths: Option<&[usize]>,
    upstream: &GradOutputs<'_, T>,
) -> Result<LstmGradients<T>> {
    let mut tape = TrainingTape::new();
    engine.forward_train(x, state, lengths, &mut tape)?;
    engine.backward(&tape, upstream)
}

/// The f64 reference backward on `case` (everything widened exactly from f32).
pub fn run_reference_backward(
    case: &Case,
    weights: &LstmWeights<f32>,
    upstream: &Upstream,
) -> Result<LstmGradients<f64>> {
    let oracle = NaiveEngine::new(weights.cast::<f64>())?;
    let state = case.state()?.map(|s| widen_state(&s));
    let gy = widen(&upstream.output);
    let finals = upstream.finals.as_ref().map(|(h, c)| (widen(h), widen(c)));
    let mut g = GradOutputs::new(&gy);
    if let Some((h, c)) = &finals {
        g = g.with_h_n(h).with_c_n(c);
    }
    run_backward(
        &oracle,
        &widen(&case.input()?),
        state.as_ref(),
        case.lengths(),
        &g,
    )
}

/// [`run_reference_backward`] with every weight, input, state and upstream element moved by
/// one f32 rounding (`v·(1 ± u)`, signs from a fixed stream): how much the gradients
/// themselves move under f32-sized perturbations.
pub fn run_perturbed_backward(
    case: &Case,
    weights: &LstmWeights<f32>,
    upstream: &Upstream,
) -> Result<LstmGradients<f64>> {
    let mut rng = SplitMix64::new(0x7f4a_7c15_9e37_79b9);
    let mut nudge = |v: f64| {
        let sign = if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
        v * (1.0 + sign * U)
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
    let oracle = NaiveEngine::new(LstmWeights::new(wide.config().clone(), cells)?)?;
    let mut widen_nudged = |t: &Tensor<f32>| t.map(|&v| nudge(f64::from(v)));
    let x = widen_nudged(&case.input()?);
    let state = case.state()?.map(|s| LstmState {
        h: widen_nudged(&s.h),
        c: widen_nudged(&s.c),
    });
    let gy = widen_nudged(&upstream.output);
    let finals = upstream
        .finals
        .as_ref()
        .map(|(h, c)| (widen_nudged(h), widen_nudged(c)));
    let mut g = GradOutputs::new(&gy);
    if let Some((h, c)) = &finals {
        g = g.with_h_n(h).with_c_n(c);
    }
    run_backward(&oracle, &x, state.as_ref(), case.lengths(), &g)
}

/// Every gradient tensor as `(name, data)`: `grad_input`, `grad_h0`, `grad_c0`, then the
/// parameters by state_dict name.
pub fn gradient_tensors<T: Copy + Into<f64>>(g: &LstmGradients<T>) -> Vec<(String, Vec<f64>)> {
    let wide = |d: &[T]| d.iter().map(|&v| v.into()).collect::<Vec<f64>>();
    let mut v = vec![
        ("grad_input".to_string(), wide(g.grad_input.data())),
        ("grad_h0".to_string(), wide(g.grad_h0.data())),
        ("grad_c0".to_string(), wide(g.grad_c0.data())),
    ];
    for (name, _, data) in g.named_tensors("") {
        v.push((name, wide(data)));
    }
    v
}

/// What the tolerance of a gradient tensor depends on (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradScale {
    /// `S`: the tensor's largest reference value.
    pub tensor: f64,
    /// `S_model`: the largest upstream gradient or reference gradient of the call.
    pub model: f64,
    /// `max(1, |x|, |h0|)`: the largest value a gradient is multiplied by into a weight's.
    pub amplitude: f64,
    /// `K`: the longest dot product of the model.
    pub dot_len: usize,
    /// `T` and `B` of the call.
    pub seq_len: usize,
    pub batch: usize,
    /// `s`: the perturbed reference's largest change of the tensor.
    pub spread: f64,
}

/// The tolerance of one gradient tensor (see the module docs).
pub fn gradient_tolerance(s: &GradScale) -> Tolerance {
    let rows = (s.seq_len * s.batch.max(1)) as f64;
    let growth = (s.dot_len as f64 * rows).sqrt() + s.seq_len as f64;
    Tolerance {
        atol: ATOL * (1.0 + s.tensor)
            + GRAD_ULPS * U * growth * s.tensor
            + TAPE_ULPS * U * rows.sqrt() * s.model * s.amplitude
            + SENSITIVITY * s.spread,
        rtol: RTOL,
    }
}

/// Compares an engine's gradients with the reference's under [`gradient_tolerance`]; the
/// error names the tensor, the element and the margin. Returns the worst `|a − b| / allowed`.
pub fn compare_gradients<A: Copy + Into<f64>>(
    case: &Case,
    upstream: &Upstream,
    got: &LstmGradients<A>,
    want: &LstmGradients<f64>,
    perturbed: &LstmGradients<f64>,
) -> std::result::Result<f64, String> {
    let config = &case.config;
    let dot_len = (0..config.num_layers)
        .map(|l| config.layer_input_size(l) + config.h_out())
        .chain([4 * config.hidden_size])
        .max()
        .unwrap_or(1);
    let (got, want, nudged) = (
        gradient_tensors(got),
        gradient_tensors(want),
        gradient_tensors(perturbed),
    );
    if got.len() != want.len() {
        return Err(format!(
            "{} gradient tensors, reference {}",
            got.len(),
            want.len()
        ));
    }
    let max_abs = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let mut model = want.iter().map(|(_, w)| max_abs(w)).fold(0.0, f64::max);
    for t in [Some(&upstream.output)]
        .into_iter()
        .chain(upstream.finals.iter().flat_map(|(h, c)| [Some(h), Some(c)]))
        .flatten()
    {
        model = model.max(crate::tolerance::max_abs(t.data()));
    }
    let (x_max, h0_max) = case.data_bounds();
    let mut worst = 0.0f64;
    for (((name, g), (wname, w)), (_, p)) in got.iter().zip(&want).zip(&nudged) {
        if name != wname || g.len() != w.len() {
            return Err(format!(
                "{name} ({} elements) against reference {wname} ({})",
                g.len(),
                w.len()
            ));
        }
        let scale = max_abs(w);
        let spread = w
            .iter()
            .zip(p)
            .map(|(a, b)| (a - b).abs())
            .filter(|d| !d.is_nan())
            .fold(0.0, f64::max);
        let tol = gradient_tolerance(&GradScale {
            tensor: scale,
            model,
            amplitude: 1f64.max(x_max).max(h0_max),
            dot_len,
            seq_len: case.seq_len,
            batch: case.batch,
            spread,
        });
        for (j, (&a, &b)) in g.iter().zip(w).enumerate() {
            if !tol.accepts(a, b) {
                return Err(format!(
                    "{name}[{j}] = {a:e}, reference {b:e}: |diff| {:.3e} > allowed {:.3e} \
                     (atol {:.3e}: scale {scale:.3e}, perturbation spread {spread:.3e})",
                    (a - b).abs(),
                    tol.allowed(b),
                    tol.atol
                ));
            }
            if a != b {
                worst = worst.max((a - b).abs() / tol.allowed(b));
            }
        }
    }
    Ok(worst)
}
