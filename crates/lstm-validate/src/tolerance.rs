//! The one tolerance model of `lstm-kernels` between an f32 engine and the f64 reference.
//!
//! An element passes when `|a − b| ≤ atol + rtol·|b|` (`a` the engine's value, `b` the
//! reference's), never relative alone: sigmoid tails make relative error meaningless near 0.
//! Outputs are checked time step by time step, so a failure names the first failing
//! `(t, b, feature)` together with the drift, the worst error per step relative to what was
//! allowed, which shows where an error starts and how it grows.
//!
//! `atol` depends on the case, through two rules whose constants all live here (the reasoning
//! is in `docs/numerics.md`, section "Tolerances of the validation harness"):
//!
//! - [`Tolerance::per_step`], for short sequences: a floor [`ATOL`] plus the rounding an f32
//!   dot product may make on the case's largest gate pre-activation sum
//!   ([`Conditioning::gate_sum`]): `DOT_ULPS · u · √K · Σ|w·x|`.
//! - [`Tolerance::long_sequence`]: the same, times the number of steps the cell integrates,
//!   plus [`LONG_CELL_ULPS`] `· u · T · max|c|` for the state rounding that an open forget
//!   gate carries forward unattenuated.
//!
//! Engines with reduced-precision weights (bf16, int8) are compared with the reference on the
//! same rounded weights under the f32 rule, widened where they round the data operand of their
//! products ([`OperandRounding`]) by [`OPERAND_SENSITIVITY`] times the reference's response to
//! a perturbation of that size ([`compare_samples`], [`Samples::operands`]), and held to the
//! a-priori operand bound ([`Tolerance::operands`]) as well.

use std::fmt;

use lstm_core::{LstmOutput, LstmWeights, Tensor};

/// The unit roundoff of f32, `2⁻²⁴`: half an ulp at 1.0.
pub const U: f64 = f32::EPSILON as f64 / 2.0;

/// Absolute floor for every element: 2e-6 ≈ 34 u (≈ 17 ulps at 1.0). An honest short
/// computation sits well below; a real bug (a swapped gate, a missed bias, a lane never
/// written) shows as 1e-3 or more.
pub const ATOL: f64 = 2e-6;

/// Relative term: 8 u (4 ulps) of the reference value, the rounding of large cell values.
pub const RTOL: f64 = 8.0 * U;

/// Multiple of `u · √K · Σ|w·x|` allowed for the dot products of one step (K terms): the
/// statistical size of an f32 dot product's rounding, with margin for several steps and for
/// the gate and cell arithmetic that follows.
pub const DOT_ULPS: f64 = 16.0;

/// Multiple of `u · T · max|c|` allowed on long sequences: each step rounds c (½ u relative)
/// and an open forget gate carries the error on with gain ≈ 1.
pub const LONG_CELL_ULPS: f64 = 4.0;

/// Multiple of the problem's own sensitivity allowed on top of `atol`: the largest change that
/// one f32 rounding of every weight, input and state element makes in the f64 reference's
/// result at the same time step ([`compare_sensitive`]). Large recurrent weights can make an
/// LSTM chaotic, amplifying any rounding ~5× per step; no f32 engine can do better there, and
/// an engine's error is then a small multiple of this sensitivity rather than of `u`.
pub const SENSITIVITY: f64 = 64.0;

/// Standard deviations of an engine's operand error allowed ([`OPERAND_SENSITIVITY`]): 6σ,
/// which a sum of a few independent bounded roundings or more exceeds with probability below
/// 1e-8.
pub const OPERAND_SIGMAS: f64 = 6.0;

/// The unit roundoff of bf16, `2⁻⁸` (8 significant bits): the relative error of one weight or
/// operand rounded to bf16.
pub const BF16_U: f64 = 1.0 / 256.0;

/// Half a step of int8 quantization with a scale of `max |row| / 127`, relative to `max |row|`:
/// `1/254`, the largest error of one element of a row quantized dynamically (VNNI), whatever
/// its own size.
pub const INT8_U: f64 = 1.0 / 254.0;

/// How an engine rounds the data operand of its products (the input rows, `h`, and the
/// projection's `o ⊙ tanh(c)`): the one error an engine with reduced-precision weights makes
/// beyond the f32 engine's on the same (rounded) weights
/// ([`LstmWeights::rounded_to`](lstm_core::LstmWeights::rounded_to)).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum OperandRounding {
    /// Kept in f32: f32 engines, and reduced-precision weights widened to f32 in registers.
    #[default]
    Exact,
    /// Each element rounded with relative error at most `u` (bf16 with `vdpbf16ps`:
    /// [`BF16_U`]).
    Relative(f64),
    /// Each row quantized with its own scale, each element's error at most `u · max |row|`
    /// (int8 with VNNI: [`INT8_U`]).
    RowScaled(f64),
}

impl OperandRounding {
    /// The size of the perturbation of [`crate::run_operand_perturbed_reference`], chosen so
    /// that every gate pre-activation (and projected `h`) moves with at least √6 times the
    /// standard deviation of the engine's operand error ([`OPERAND_SENSITIVITY`]); 0 when
    /// exact.
    ///
    /// - Relative `u` (bf16): every weight, input and state element moved by `±u`, relative. A
    ///   product `w·x` moves by `w·x·(±u ± u)`, a standard deviation of `√2·u·|w·x|`; the
    ///   engine's rounding `w·x·δ`, `δ` spread over `±u`, has `u/√3·|w·x|`: √6.
    /// - Row-scaled `u` (int8): every element of each weight row `w` moved by `±√2·u·‖w‖₂`,
    ///   absolute. A product row `Σ_k w_k·a_k` moves by a standard deviation of
    ///   `√2·u·‖w‖·‖a‖`; the engine's rounding `Σ_k w_k·δ_k`, `δ_k` spread over `±u·max|a|`,
    ///   has `u·max|a|/√3·‖w‖`, and `‖a‖ ≥ max|a|`: at least √6, whatever the operand `a`
    ///   (input row, `h`, the projection's `o ⊙ tanh(c)`) holds.
    pub fn perturbation(self) -> f64 {
        match self {
            OperandRounding::Exact => 0.0,
            OperandRounding::Relative(u) => u,
            OperandRounding::RowScaled(u) => std::f64::consts::SQRT_2 * u,
        }
    }
}

/// Multiple of the operand samples' spread ([`crate::run_operand_perturbed_reference`]: the
/// reference with every element moved by [`OperandRounding::perturbation`]) allowed on top of
/// the f32 rule, for an engine that rounds its products' data operands.
///
/// Derivation (docs/numerics.md, "The operand model"): the engine's
/// operand error at a step is the response of the recurrence (through the gates, the cell and
/// the feedback of `h` through `W_hh` and the next layers) to independent roundings of every
/// product, within [`OPERAND_SIGMAS`] of its standard deviation `σ_e`; a sample is the
/// response to a perturbation of the same kind with a standard deviation at least `√6·σ_e` at
/// every gate ([`OperandRounding::perturbation`]; a sample's perturbation of the weights
/// persists from step to step where the engine's roundings change, which only makes it
/// larger over time), and the largest of [`PERTURBATION_SAMPLES`] samples is below a third of
/// its standard deviation with probability ≈ 0.005: `6 · 3 / √6 = 3√6 ≈ 7.35`. The samples
/// are actual runs of the reference at that size (not f32-sized runs scaled up), so saturating
/// gates respond as they do; a large spread widens the tolerance, never voids the check.
pub const OPERAND_SENSITIVITY: f64 = OPERAND_SIGMAS * 3.0 / 2.449_489_742_783_178;

/// Independent perturbations of the reference whose largest effect is the sensitivity at each
/// step. One random-sign perturbation can lie almost orthogonal to the direction a chaotic
/// step amplifies most and under-estimate the growth several-fold; the largest of four rarely
/// does (the effect of each is the projection of a random vector on that direction, and the
/// largest of four such roughly Gaussian projections is below a third of its standard
/// deviation with probability 0.26⁴ ≈ 0.005, against 0.26 for one).
pub const PERTURBATION_SAMPLES: usize = 4;

/// Where the problem itself leaves f32 no digits to check: from the first step whose
/// sensitivity exceeds `CHAOTIC · max(1, max|reference|)` on, every later step and `h_n`,
/// `c_n` are checked for NaN alone (likewise `h_n` or `c_n` past it on their own). One
/// rounding of the data then moves the exact answer by more than 1e-4 of its size (an
/// amplification of the unit roundoff beyond ~2000), the estimate of that amplification from
/// a few samples is no longer reliable (saturating gates switch, the response is not linear),
/// and the f64 reference is no better an answer than any f32 engine's. Later steps inherit
/// the chaos even where the samples happen to agree (a gate that an f32 rounding flips from
/// one saturated side to the other flips in none of them). A real bug still shows
/// on the well-posed steps before chaos sets in, and on every non-chaotic case.
pub const CHAOTIC: f64 = 1e-4;

/// Independent samples perturbed by [`PROBE_ULPS`] f32 roundings instead of one
/// ([`crate::run_chaos_probes`]), for the [`CHAOTIC`] cut-off alone.
pub const PROBE_SAMPLES: usize = 2;

/// The perturbation of a chaos probe, in f32 roundings of every element: [`SENSITIVITY`], the
/// size of error the widened tolerance admits. An f32 engine's own error in a layer is a few
/// times the one-rounding samples' spread (its roundings happen at every step, not only in the
/// data), and a saturated gate downstream may absorb the samples' perturbation yet switch
/// under the engine's: the output then moves by O(1) where every sample agrees to 1e-4
/// (`regression-chaotic-portable-bidir-proj-sat20`, `regression-nan-input-chaotic-sat20`).
/// Where the response is linear a probe's spread divided by `PROBE_ULPS` is the samples' own
/// and changes nothing; where a switch lies between one rounding and the admitted error, it is
/// O(1) / `PROBE_ULPS`, past [`CHAOTIC`].
pub const PROBE_ULPS: f64 = SENSITIVITY;

/// Whether a sensitivity `spread` on values of size up to `scale` is past [`CHAOTIC`].
///
/// A non-finite `spread` is never chaotic (a NaN or infinite estimate must not void a check:
/// [`spread`] never makes one), and a non-finite `scale` counts as 1.
pub fn is_chaotic(spread: f64, scale: f64) -> bool {
    let scale = if scale.is_finite() {
        scale.max(1.0)
    } else {
        1.0
    };
    spread.is_finite() && spread > CHAOTIC * scale
}

/// The largest spreads of a step (or a final state) over each kind of sample: the f32-sized
/// perturbations, the chaos probes (not yet divided by [`PROBE_ULPS`]), and the operand-sized
/// perturbations.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Spreads {
    samples: f64,
    probes: f64,
    operands: f64,
}

/// `base` widened by [`SENSITIVITY`] × the samples' spread and [`OPERAND_SENSITIVITY`] × the
/// operand samples' spread, on values of size up to `scale`, or [`UNCHECKED`] where the
/// samples' spread or the probes' spread / [`PROBE_ULPS`] is past [`CHAOTIC`]. The operand
/// samples never void a check: their spread measures a perturbation far above f32's, and the
/// tolerance it buys grows with it. A non-finite spread widens nothing: it says nothing about
/// how far an engine may be, and an infinite or NaN `atol` would accept everything or nothing.
fn widen(base: Tolerance, spreads: Spreads, scale: f64) -> Tolerance {
    if is_chaotic(spreads.samples, scale) || is_chaotic(spreads.probes / PROBE_ULPS, scale) {
        return UNCHECKED;
    }
    let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
    Tolerance {
        atol: base.atol
            + SENSITIVITY * finite(spreads.samples)
            + OPERAND_SENSITIVITY * finite(spreads.operands),
        rtol: base.rtol,
    }
}

/// The tolerance of a step (or final state) past [`CHAOTIC`]: any finite value passes, NaN
/// only matches NaN and an infinity only itself.
pub const UNCHECKED: Tolerance = Tolerance {
    atol: f64::INFINITY,
    rtol: 0.0,
};

/// The longest sequence [`Tolerance::per_step`] is meant for; longer ones use
/// [`Tolerance::long_sequence`].
pub const SHORT_SEQUENCE: usize = 16;

/// Allowed deviation of an f32 activation at a point, for exact-structure tests that still
/// pass through one `tanh` (e.g. `h = ½ tanh(c)`): 4 ulps at 1.0.
pub const ACTIVATION_ATOL: f64 = 8.0 * U;

/// How hard a case is for f32 arithmetic: the size of its gate pre-activation sums.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conditioning {
    /// The largest `Σ_j |W_ij|·|x_j| + Σ_j |W_hj|·|h_j| + |b_i| + |b_h|` over every gate row of
    /// every cell, with `|x|` and `|h|` at their bounds: the scale of the rounding error of one
    /// gate pre-activation in f32.
    pub gate_sum: f64,
    /// The largest number of terms K = I_k + H_out of one gate's dot products.
    pub dot_len: usize,
    /// The largest `√(Σ_j (|W_ij|·|x_j|)² + Σ_j (|W_hj|·|h_j|)²)` over every gate row, with
    /// `|x|`, `|h|` at their bounds: the scale of the error of one gate pre-activation when
    /// every product's data operand is rounded independently ([`Tolerance::operands`]).
    pub gate_rss: f64,
}

impl Conditioning {
    /// The conditioning of `weights` fed inputs with `|x| ≤ input_max` and an initial state with
    /// `|h0| ≤ h0_max`. Later layers read `h`, bounded by 1 (`|o·tanh(c)| ≤ 1`) or, with a
    /// projection, by the largest row sum of `|W_hr|`.
    pub fn of(weights: &LstmWeights<f32>, input_max: f64, h0_max: f64) -> Self {
        let config = weights.config();
        let (hidden, h_out) = (config.hidden_size, config.h_out());
        let row_l1 = |m: &[f32], cols: usize, r: usize| -> f64 {
            m.get(r * cols..(r + 1) * cols)
                .map_or(0.0, |row| row.iter().map(|v| f64::from(v.abs())).sum())
        };
        // |h| of every layer after the first step; the projection widens the bound.
        let h_bound = |layer: usize| -> f64 {
            let cell_max = (0..config.num_directions())
                .filter_map(|d| weights.cell(layer, d))
                .filter_map(|c| c.w_hr.as_deref())
                .flat_map(|w| (0..h_out).map(move |p| row_l1(w, hidden, p)))
                .fold(0.0, f64::max);
            if config.proj_size > 0 {
                cell_max
            } else {
                1.0
            }
        };
        let row_l2_squared = |m: &[f32], cols: usize, r: usize| -> f64 {
            m.get(r * cols..(r + 1) * cols).map_or(0.0, |row| {
                row.iter().map(|&v| f64::from(v) * f64::from(v)).sum()
            })
        };
        let (mut gate_sum, mut gate_rss): (f64, f64) = (0.0, 0.0);
        for layer in 0..config.num_layers {
            let in_size = config.layer_input_size(layer);
            let x_max = if layer == 0 {
                input_max
            } else {
                h_bound(layer - 1)
            };
            let h_max = h_bound(layer).max(h0_max);
            for dir in 0..config.num_directions() {
                let Some(cell) = weights.cell(layer, dir) else {
                    continue;
                };
                for r in 0..4 * hidden {
                    let bias = |b: &Option<Vec<f32>>| {
                        b.as_ref()
                            .and_then(|b| b.get(r))
                            .map_or(0.0, |v| f64::from(v.abs()))
                    };
                    let sum = row_l1(&cell.w_ih, in_size, r) * x_max
                        + row_l1(&cell.w_hh, h_out, r) * h_max
                        + bias(&cell.b_ih)
                        + bias(&cell.b_hh);
                    gate_sum = gate_sum.max(sum);
                    let squares = row_l2_squared(&cell.w_ih, in_size, r) * x_max * x_max
                        + row_l2_squared(&cell.w_hh, h_out, r) * h_max * h_max;
                    gate_rss = gate_rss.max(squares.sqrt());
                }
            }
        }
        let dot_len = (0..config.num_layers)
            .map(|l| config.layer_input_size(l) + h_out)
            .max()
            .unwrap_or(0);
        Conditioning {
            gate_sum,
            dot_len,
            gate_rss,
        }
    }
}

/// `|a − b| ≤ atol + rtol·|b|` for an engine value `a` and a reference value `b`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Absolute term.
    pub atol: f64,
    /// Relative term, on the reference value.
    pub rtol: f64,
}

impl Tolerance {
    /// Bit-for-bit equality (NaN equals NaN).
    pub const EXACT: Tolerance = Tolerance {
        atol: 0.0,
        rtol: 0.0,
    };

    /// The rule for short sequences (T ≤ [`SHORT_SEQUENCE`]).
    pub fn per_step(cond: &Conditioning) -> Self {
        Tolerance {
            atol: ATOL + DOT_ULPS * U * (cond.dot_len as f64).sqrt() * cond.gate_sum,
            rtol: RTOL,
        }
    }

    /// The rule for a sequence of `seq_len` steps whose cells reach `max_abs_c`: the per-step
    /// allowance accumulated over the steps, plus the cell's own rounding carried forward.
    pub fn long_sequence(cond: &Conditioning, seq_len: usize, max_abs_c: f64) -> Self {
        let step = Self::per_step(cond);
        let t = seq_len.max(1) as f64;
        Tolerance {
            atol: step.atol * t.sqrt() + LONG_CELL_ULPS * U * t * max_abs_c,
            rtol: RTOL,
        }
    }

    /// The a-priori operand bound: `base` (the f32 rule of the case on the rounded weights)
    /// widened for products whose data operands are rounded as `rounding` says, over
    /// `seq_len` steps of `layers` layers whose cells reach `max_abs_c`, from the case's data
    /// bounds alone (no perturbed runs; `tools/torch_crosscheck.py --precision` applies it).
    /// Looser than the operand model ([`compare_samples`] with [`Samples::operands`]) and blind
    /// to the feedback through `W_hh`, it bounds what each step's own roundings can do.
    ///
    /// Derivation (docs/numerics.md, "The a-priori operand bound"): each element of a data
    /// operand moves by at most `u` times its bound (bf16: relative; int8: `u·max|row|`, and
    /// `max|row|` is within the bound), independently, so a gate pre-activation moves with a
    /// standard deviation of at most `u/√3 · gate_rss`; [`OPERAND_SIGMAS`] of it per gate.
    /// Through the gates (σ' ≤ ¼, tanh' ≤ 1) a step moves `c` by at most `(1.5 + ¼·max|c|)`
    /// times that and `h` by `¼` more; the cell carries each step's error on with gain
    /// `f ≤ 1`, and the steps' independent errors add like a random walk: `√(T·L)`.
    pub fn operands(
        base: Tolerance,
        cond: &Conditioning,
        rounding: OperandRounding,
        (seq_len, layers): (usize, usize),
        max_abs_c: f64,
    ) -> Self {
        let u = match rounding {
            OperandRounding::Exact => 0.0,
            OperandRounding::Relative(u) | OperandRounding::RowScaled(u) => u,
        };
        let gate = OPERAND_SIGMAS * u / 3f64.sqrt() * cond.gate_rss;
        let step = gate * (1.75 + 0.25 * max_abs_c);
        let walk = ((seq_len.max(1) * layers.max(1)) as f64).sqrt();
        Tolerance {
            atol: base.atol + step * walk,
            rtol: base.rtol,
        }
    }

    /// What may separate an engine value from `reference`.
    pub fn allowed(&self, reference: f64) -> f64 {
        self.atol + self.rtol * reference.abs()
    }

    /// Whether `got` is within tolerance of `reference`; NaN matches only NaN, an infinity
    /// only itself (whatever `atol` and `rtol` are: `rtol·|∞|` must not admit a finite value,
    /// nor [`UNCHECKED`]'s infinite `atol` an infinite one). A NaN `atol` or `rtol` admits only
    /// equal values.
    pub fn accepts(&self, got: f64, reference: f64) -> bool {
        if got.is_nan() || reference.is_nan() {
            return got.is_nan() && reference.is_nan();
        }
        if got.is_infinite() || reference.is_infinite() {
            return got == reference;
        }
        if self.atol == 0.0 && self.rtol == 0.0 {
            return got.to_bits() == reference.to_bits() || got == reference;
        }
        got == reference || (got - reference).abs() <= self.allowed(reference)
    }
}

/// The caller's layout of a forward call's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Output is `[B, T, F]`.
    pub batch_first: bool,
    /// Output is `[T, F]`.
    pub unbatched: bool,
}

/// The worst element of one time step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepError {
    /// Time index.
    pub t: usize,
    /// Largest `|a − b|` of the step.
    pub max_abs: f64,
    /// Largest `|a − b| / allowed` of the step (> 1 fails).
    pub max_ratio: f64,
}

/// Why two results differ: a shape, or the first element outside the tolerance.
#[derive(Clone, Debug, PartialEq)]
pub enum Mismatch {
    /// The tensors do not have the same shape.
    Shape {
        /// `output`, `h_n` or `c_n`.
        tensor: &'static str,
        /// The engine's shape.
        got: Vec<usize>,
        /// The reference's shape.
        want: Vec<usize>,
    },
    /// An element outside the tolerance.
    Value {
        /// `output`, `h_n` or `c_n`.
        tensor: &'static str,
        /// Time step (for `output`) or cell `layer·D + direction` (for `h_n`, `c_n`).
        outer: usize,
        /// Sequence.
        b: usize,
        /// Feature.
        feature: usize,
        /// The engine's value.
        got: f64,
        /// The reference's value.
        want: f64,
        /// The tolerance applied.
        tolerance: Tolerance,
        /// Per time step of `output`, the worst error up to and including the failing step.
        drift: Vec<StepError>,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Shape { tensor, got, want } => {
                write!(f, "{tensor}: shape {got:?}, reference {want:?}")
            }
            Mismatch::Value {
                tensor,
                outer,
                b,
                feature,
                got,
                want,
                tolerance,
                drift,
            } => {
                let axis = if *tensor == "output" { "t" } else { "cell" };
                write!(
                    f,
                    "{tensor}[{axis}={outer}, b={b}, feature={feature}] = {got:e}, reference \
                     {want:e}: |diff| {:.3e} > allowed {:.3e} (atol {:.3e} + rtol {:.3e}·|ref|)",
                    (got - want).abs(),
                    tolerance.allowed(*want),
                    tolerance.atol,
                    tolerance.rtol
                )?;
                if !drift.is_empty() {
                    write!(f, "\n  drift (worst |diff| / allowed per step):")?;
                    // The first step and the last 24: where the error starts to grow shows.
                    let skip = drift.len().saturating_sub(24).max(1);
                    if let Some(s) = drift.first() {
                        write!(f, " t{}: {:.2e} ({:.2}×)", s.t, s.max_abs, s.max_ratio)?;
                    }
                    if skip > 1 {
                        write!(f, " …")?;
                    }
                    for s in drift.iter().skip(skip) {
                        write!(f, " t{}: {:.2e} ({:.2}×)", s.t, s.max_abs, s.max_ratio)?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Mismatch {}

/// A tensor's elements as f64.
fn wide<T: Copy + Into<f64>>(t: &Tensor<T>) -> Vec<f64> {
    t.data().iter().map(|&v| v.into()).collect()
}

/// `[T, B, F]` dims and data of an output in `layout`.
fn canonical<T: Copy + Into<f64>>(out: &Tensor<T>, layout: Layout) -> (usize, usize, Vec<f64>) {
    match *out.shape() {
        [t, _] if layout.unbatched => (t, 1, wide(out)),
        [a, b, f] if layout.batch_first => {
            // [B, T, F] → [T, B, F].
            let data = wide(out);
            let mut c = Vec::with_capacity(data.len());
            for t in 0..b {
                for s in 0..a {
                    c.extend_from_slice(&data[(s * b + t) * f..(s * b + t + 1) * f]);
                }
            }
            (b, a, c)
        }
        [t, b, _] => (t, b, wide(out)),
        _ => (0, 0, wide(out)),
    }
}

/// Compares an engine's result with the reference's, both in the caller's `layout`: `output`
/// time step by time step (in time order), then `h_n` and `c_n`.
pub fn compare<A, B>(
    got: &LstmOutput<A>,
    want: &LstmOutput<B>,
    layout: Layout,
    tolerance: Tolerance,
) -> Result<(), Mismatch>
where
    A: Copy + Into<f64>,
    B: Copy + Into<f64>,
{
    compare_sensitive(got, want, &[], &[], layout, tolerance)
}

/// [`compare`], with the tolerance widened where the problem itself is sensitive: each of
/// `perturbed` is the reference's result on the same call with every weight, input and state
/// element moved by one f32 rounding ([`crate::run_perturbed_reference`], one result per
/// sample; empty for none). At each time step of `output`, `atol` grows by [`SENSITIVITY`] ×
/// the largest `|perturbed − reference|` of that step over every sample ([`spread`]: finite
/// values only); for `h_n` and `c_n` by [`SENSITIVITY`] × the tensor's largest. Steps past
/// [`CHAOTIC`] are checked for NaN alone ([`UNCHECKED`]); what is past it is judged on the
/// samples and on each of `probes` ([`crate::run_chaos_probes`], perturbed by [`PROBE_ULPS`]
/// roundings; empty for none), whose spread counts divided by [`PROBE_ULPS`]. The probes
/// never widen a tolerance.
pub fn compare_sensitive<A, B>(
    got: &LstmOutput<A>,
    want: &LstmOutput<B>,
    perturbed: &[LstmOutput<f64>],
    probes: &[LstmOutput<f64>],
    layout: Layout,
    base: Tolerance,
) -> Result<(), Mismatch>
where
    A: Copy + Into<f64>,
    B: Copy + Into<f64>,
{
    let samples = Samples {
        perturbed,
        probes,
        ..Samples::default()
    };
    compare_samples(got, want, &samples, layout, base).map(|_| ())
}

/// How close a passing comparison came to failing ([`compare_samples`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Margin {
    /// The largest `|a − b| / allowed` over the checked steps of `output`.
    pub worst_ratio: f64,
    /// Steps of `output` past [`CHAOTIC`], checked for NaN alone.
    pub unchecked_steps: usize,
}

/// The perturbed references a comparison is widened by ([`compare_samples`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Samples<'a> {
    /// f32-sized perturbations ([`crate::run_perturbed_reference`], and
    /// [`crate::run_state_rounded`] through [`crate::sensitivity_samples`]): widen by
    /// [`SENSITIVITY`] × their spread, and void a step past [`CHAOTIC`].
    pub perturbed: &'a [LstmOutput<f64>],
    /// Chaos probes ([`crate::run_chaos_probes`]): void a step whose spread / [`PROBE_ULPS`] is
    /// past [`CHAOTIC`], never widen.
    pub probes: &'a [LstmOutput<f64>],
    /// Operand-sized perturbations ([`crate::run_operand_perturbed_reference`]), for engines
    /// that round their products' data operands: widen by [`OPERAND_SENSITIVITY`] × their
    /// spread, never void.
    pub operands: &'a [LstmOutput<f64>],
}

/// [`compare_sensitive`] with every kind of sample ([`Samples`]): the comparison of an engine
/// with reduced-precision operands, whose tolerance is widened by the problem's response to
/// perturbations of its operand rounding's size as well as of f32's.
pub fn compare_samples<A, B>(
    got: &LstmOutput<A>,
    want: &LstmOutput<B>,
    samples: &Samples<'_>,
    layout: Layout,
    base: Tolerance,
) -> Result<Margin, Mismatch>
where
    A: Copy + Into<f64>,
    B: Copy + Into<f64>,
{
    let (perturbed, probes, operands) = (samples.perturbed, samples.probes, samples.operands);
    shapes_match("output", got.output.shape(), want.output.shape())?;
    let (steps, batch, g) = canonical(&got.output, layout);
    let (_, _, w) = canonical(&want.output, layout);
    let p: Vec<Vec<f64>> = perturbed
        .iter()
        .map(|p| canonical(&p.output, layout).2)
        .collect();
    let q: Vec<Vec<f64>> = probes
        .iter()
        .map(|q| canonical(&q.output, layout).2)
        .collect();
    let o: Vec<Vec<f64>> = operands
        .iter()
        .map(|o| canonical(&o.output, layout).2)
        .collect();
    let features = g.len().checked_div(steps * batch).unwrap_or(0);
    let mut drift = Vec::with_capacity(steps);
    let mut chaotic = false;
    let mut margin = Margin::default();
    for t in 0..steps {
        let row = (t * batch * features)..((t + 1) * batch * features);
        let tolerance = if chaotic {
            UNCHECKED
        } else {
            let spread_of = |samples: &[Vec<f64>]| {
                samples
                    .iter()
                    .map(|s| spread(&s[row.clone()], &w[row.clone()]))
                    .fold(0.0, f64::max)
            };
            let spreads = Spreads {
                samples: spread_of(&p),
                probes: spread_of(&q),
                operands: spread_of(&o),
            };
            widen(base, spreads, max_abs(&w[row.clone()]))
        };
        chaotic = tolerance == UNCHECKED;
        if chaotic {
            margin.unchecked_steps += 1;
        }
        let mut step = StepError {
            t,
            max_abs: 0.0,
            max_ratio: 0.0,
        };
        let mut first_bad = None;
        for b in 0..batch {
            for f in 0..features {
                let i = (t * batch + b) * features + f;
                let (a, r) = (g[i], w[i]);
                let diff = distance(a, r);
                let ratio = if diff == 0.0 || diff.is_infinite() {
                    diff
                } else {
                    diff / tolerance.allowed(r)
                };
                step.max_abs = step.max_abs.max(diff);
                step.max_ratio = step.max_ratio.max(ratio);
                if first_bad.is_none() && !tolerance.accepts(a, r) {
                    first_bad = Some((b, f, a, r));
                }
            }
        }
        if !chaotic {
            margin.worst_ratio = margin.worst_ratio.max(step.max_ratio);
        }
        drift.push(step);
        if let Some((b, feature, got, want)) = first_bad {
            return Err(Mismatch::Value {
                tensor: "output",
                outer: t,
                b,
                feature,
                got,
                want,
                tolerance,
                drift,
            });
        }
    }
    let state_tolerance = |pick: fn(&LstmOutput<f64>) -> &Tensor<f64>, w: &Tensor<B>| {
        if chaotic {
            return UNCHECKED;
        }
        let w = wide(w);
        let spread_of = |samples: &[LstmOutput<f64>]| {
            samples
                .iter()
                .map(|p| spread(pick(p).data(), &w))
                .fold(0.0, f64::max)
        };
        let spreads = Spreads {
            samples: spread_of(perturbed),
            probes: spread_of(probes),
            operands: spread_of(operands),
        };
        widen(base, spreads, max_abs(&w))
    };
    final_state(
        "h_n",
        &got.h_n,
        &want.h_n,
        layout,
        state_tolerance(|o| &o.h_n, &want.h_n),
    )?;
    final_state(
        "c_n",
        &got.c_n,
        &want.c_n,
        layout,
        state_tolerance(|o| &o.c_n, &want.c_n),
    )?;
    Ok(margin)
}

/// The sensitivity a sample `a` shows against the reference `b`: the largest `|a − b|` over
/// the elements where both are finite (and the difference too), 0 for none.
///
/// Where one is NaN or infinite and the other is not (or they are opposite infinities) the
/// sample buys no tolerance: the element is held to the reference's own `atol`, and
/// [`Tolerance::accepts`] demands the reference's NaN or infinity exactly. An f32 engine
/// cannot be excused by a sample whose value is no number, and an infinite spread would void
/// the check ([`is_chaotic`]) or make `atol` infinite. Such disagreement does not arise from
/// roundings: which elements are NaN or infinite follows from where the data has them and
/// from exact zeros, which the perturbation keeps.
pub fn spread(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| (x - y).abs())
        .filter(|d| d.is_finite())
        .fold(0.0, f64::max)
}

/// `|a − b|` for the drift: 0 where they agree (NaN with NaN included), infinite where one is
/// a NaN or an infinity the other is not.
fn distance(a: f64, b: f64) -> f64 {
    if a == b || (a.is_nan() && b.is_nan()) {
        0.0
    } else if a.is_finite() && b.is_finite() {
        (a - b).abs()
    } else {
        f64::INFINITY
    }
}

fn shapes_match(tensor: &'static str, got: &[usize], want: &[usize]) -> Result<(), Mismatch> {
    if got == want {
        Ok(())
    } else {
        Err(Mismatch::Shape {
            tensor,
            got: got.to_vec(),
            want: want.to_vec(),
        })
    }
}

/// `h_n` or `c_n` (`[L·D, B, F]`, or `[L·D, F]` unbatched), element by element.
fn final_state<A, B>(
    tensor: &'static str,
    got: &Tensor<A>,
    want: &Tensor<B>,
    layout: Layout,
    tolerance: Tolerance,
) -> Result<(), Mismatch>
where
    A: Copy + Into<f64>,
    B: Copy + Into<f64>,
{
    shapes_match(tensor, got.shape(), want.shape())?;
    let (cells, batch) = match *got.shape() {
        [c, _] if layout.unbatched => (c, 1),
        [c, b, _] => (c, b),
        _ => (1, 1),
    };
    let per = got.len().checked_div(cells * batch).unwrap_or(0);
    for (i, (&a, &r)) in got.data().iter().zip(want.data()).enumerate() {
        let (a, r) = (a.into(), r.into());
        if !tolerance.accepts(a, r) {
            return Err(Mismatch::Value {
                tensor,
                outer: i / per.max(1) / batch.max(1),
                b: (i / per.max(1)) % batch.max(1),
                feature: i % per.max(1),
                got: a,
                want: r,
                tolerance,
                drift: Vec::new(),
            });
        }
    }
    Ok(())
}

/// The largest finite `|v|` of a slice (0 when empty; NaN and ±∞ are ignored, so that one
/// infinity neither makes a tolerance infinite nor moves the [`CHAOTIC`] cut-off).
pub fn max_abs<T: Copy + Into<f64>>(values: &[T]) -> f64 {
    values
        .iter()
        .map(|&v| v.into().abs())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PLAIN: Layout = Layout {
        batch_first: false,
        unbatched: false,
    };

    /// A `[T, 1, F]` output (one step per row of `steps`) with one-element final states.
    fn out(steps: &[&[f64]]) -> LstmOutput<f64> {
        let features = steps.first().map_or(0, |s| s.len());
        let data = steps.iter().flat_map(|s| s.iter().copied()).collect();
        LstmOutput {
            output: Tensor::new([steps.len(), 1, features], data).unwrap(),
            h_n: Tensor::new([1, 1, 1], vec![0.5]).unwrap(),
            c_n: Tensor::new([1, 1, 1], vec![0.5]).unwrap(),
        }
    }

    const BASE: Tolerance = Tolerance {
        atol: 1e-6,
        rtol: 0.0,
    };

    #[test]
    fn an_infinity_matches_only_itself() {
        let tol = Tolerance {
            atol: 1e-6,
            rtol: RTOL,
        };
        assert!(tol.accepts(f64::INFINITY, f64::INFINITY));
        assert!(
            !tol.accepts(1.0, f64::INFINITY),
            "rtol·∞ admits a finite value"
        );
        assert!(!tol.accepts(f64::NEG_INFINITY, f64::INFINITY));
        assert!(!tol.accepts(f64::INFINITY, 1.0));
        assert!(!UNCHECKED.accepts(f64::INFINITY, 1.0), "∞ atol admits ∞");
        assert!(!UNCHECKED.accepts(f64::NEG_INFINITY, f64::INFINITY));
        assert!(UNCHECKED.accepts(1e30, -1.0));
        assert!(!UNCHECKED.accepts(f64::NAN, 1.0));
        let nan_atol = Tolerance {
            atol: f64::NAN,
            rtol: 0.0,
        };
        assert!(nan_atol.accepts(1.0, 1.0) && !nan_atol.accepts(1.0, 1.5));
    }

    #[test]
    fn a_non_finite_sample_buys_no_tolerance() {
        let want = out(&[&[0.5, 0.25]]);
        let got = out(&[&[0.5, 0.75]]); // 0.5 off: a bug under any honest tolerance
        for bad in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN] {
            // A sample non-finite where the reference is finite: no widening, no chaos cut-off.
            let sample = out(&[&[bad, 0.25]]);
            let r = compare_sensitive(&got, &want, &[sample], &[], PLAIN, BASE);
            assert!(
                matches!(r, Err(Mismatch::Value { ref tolerance, .. }) if *tolerance == BASE),
                "{bad}: {r:?}"
            );
        }
        // The reference infinite where the sample is finite: likewise.
        let want = out(&[&[f64::INFINITY, 0.25]]);
        let got = out(&[&[f64::INFINITY, 0.75]]);
        let sample = out(&[&[1.0, 0.25]]);
        let r = compare_sensitive(&got, &want, &[sample], &[], PLAIN, BASE);
        assert!(
            matches!(r, Err(Mismatch::Value { ref tolerance, feature: 1, .. }) if *tolerance == BASE),
            "{r:?}"
        );
        // A finite sample still widens.
        let want = out(&[&[0.5, 0.25]]);
        let sample = out(&[&[0.5, 0.25 + 1e-6]]);
        let near = out(&[&[0.5, 0.25 + 2e-5]]);
        assert!(compare_sensitive(&near, &want, &[sample], &[], PLAIN, BASE).is_ok());
    }

    #[test]
    fn an_infinite_reference_neither_voids_nor_widens_its_step() {
        // One infinity in the step's reference used to make the chaos scale infinite (never
        // chaotic) and a finite sample's spread infinite (an infinite atol).
        let want = out(&[&[f64::INFINITY, 0.25]]);
        let got = out(&[&[f64::INFINITY, 0.35]]);
        let sample = out(&[&[f64::INFINITY, 0.25]]);
        assert!(compare_sensitive(&got, &want, &[sample], &[], PLAIN, BASE).is_err());
        assert_eq!(max_abs(&[f64::INFINITY, -2.0, f64::NAN]), 2.0);
        assert_eq!(spread(&[f64::INFINITY, 1.0], &[2.0, 1.5]), 0.5);
        assert_eq!(spread(&[f64::NAN, 1.0], &[f64::NAN, 1.0]), 0.0);
    }

    #[test]
    fn a_non_finite_estimate_never_widens_or_voids() {
        for bad in [f64::NAN, f64::INFINITY] {
            assert!(!is_chaotic(bad, 1.0));
            let spreads = Spreads {
                samples: bad,
                probes: bad,
                operands: bad,
            };
            assert_eq!(widen(BASE, spreads, 1.0), BASE);
        }
        assert!(
            is_chaotic(1.0, f64::INFINITY),
            "an infinite scale hides chaos"
        );
        let samples = |samples| Spreads {
            samples,
            ..Spreads::default()
        };
        assert_eq!(widen(BASE, samples(1.0), 1.0), UNCHECKED);
        assert_eq!(
            widen(BASE, samples(1e-6), 1.0).atol,
            BASE.atol + SENSITIVITY * 1e-6
        );
    }

    #[test]
    fn operand_samples_widen_but_never_void() {
        let want = out(&[&[0.5, 0.25]]);
        let got = out(&[&[0.5, 0.25 + 0.05]]);
        // An operand sample 0.01 away: 0.05 is within OPERAND_SENSITIVITY (7.3) × 0.01.
        let near = out(&[&[0.5, 0.26]]);
        fn samples(operands: &[LstmOutput<f64>]) -> Samples<'_> {
            Samples {
                operands,
                ..Samples::default()
            }
        }
        let margin = compare_samples(
            &got,
            &want,
            &samples(std::slice::from_ref(&near)),
            PLAIN,
            BASE,
        )
        .unwrap();
        let allowed = BASE.atol + OPERAND_SENSITIVITY * 0.01;
        assert!(
            (margin.worst_ratio - 0.05 / allowed).abs() < 1e-9,
            "{margin:?}"
        );
        assert_eq!(margin.unchecked_steps, 0);
        // Half as far: 0.05 is not.
        let nearer = out(&[&[0.5, 0.255]]);
        assert!(compare_samples(&got, &want, &samples(&[nearer]), PLAIN, BASE).is_err());
        // A spread of 1 (past CHAOTIC for f32 samples) widens by 7.3 and checks NaN still.
        let far = out(&[&[0.5, 1.25]]);
        let nan = out(&[&[f64::NAN, 0.25]]);
        assert!(compare_samples(
            &got,
            &want,
            &samples(std::slice::from_ref(&far)),
            PLAIN,
            BASE
        )
        .is_ok());
        assert!(compare_samples(&nan, &want, &samples(&[far]), PLAIN, BASE).is_err());
        // The operand perturbation: √6 the engine's standard deviation at every gate.
        assert_eq!(OperandRounding::Exact.perturbation(), 0.0);
        assert_eq!(OperandRounding::Relative(BF16_U).perturbation(), BF16_U);
        let row_scaled = OperandRounding::RowScaled(INT8_U).perturbation();
        assert_eq!(row_scaled, std::f64::consts::SQRT_2 * INT8_U);
    }

    #[test]
    fn matching_nans_show_no_drift() {
        let want = out(&[&[f64::NAN, 0.25], &[f64::NAN, 0.5]]);
        let got = out(&[&[f64::NAN, 0.25], &[f64::NAN, 0.75]]);
        let Err(Mismatch::Value { drift, outer, .. }) =
            compare_sensitive(&got, &want, &[], &[], PLAIN, BASE)
        else {
            panic!("a 0.25 error passed");
        };
        assert_eq!(outer, 1);
        assert_eq!((drift[0].max_abs, drift[0].max_ratio), (0.0, 0.0));
        assert_eq!(drift[1].max_abs, 0.25);
        // A NaN the reference does not have is an infinite drift, not a NaN one.
        let got = out(&[&[0.0, 0.25], &[f64::NAN, 0.5]]);
        let Err(Mismatch::Value { drift, .. }) =
            compare_sensitive(&got, &want, &[], &[], PLAIN, BASE)
        else {
            panic!("a missing NaN passed");
        };
        assert_eq!(drift[0].max_ratio, f64::INFINITY);
    }

    #[test]
    fn a_probe_that_switches_unchecks_but_never_widens() {
        let want = out(&[&[0.5], &[0.5], &[0.5]]);
        let got = out(&[&[0.5], &[0.5 + 1e-3], &[0.9]]);
        // Linear: the probe moves PROBE_ULPS times what one rounding does. Nothing changes.
        let linear = out(&[&[0.5], &[0.5 + PROBE_ULPS * 1e-7], &[0.5]]);
        let r = compare_sensitive(&got, &want, &[], &[linear], PLAIN, BASE);
        assert!(
            matches!(r, Err(Mismatch::Value { outer: 1, ref tolerance, .. }) if *tolerance == BASE),
            "{r:?}"
        );
        // A switch: the probe moves by O(1) from step 1 on, which is then unchecked.
        let switched = out(&[&[0.5], &[0.7], &[0.1]]);
        assert!(compare_sensitive(
            &got,
            &want,
            &[],
            std::slice::from_ref(&switched),
            PLAIN,
            BASE
        )
        .is_ok());
        // Final states after it are unchecked too; before it they are not.
        let mut far = want.clone();
        far.c_n = Tensor::new([1, 1, 1], vec![3.0]).unwrap();
        assert!(compare_sensitive(&far, &want, &[], &[switched], PLAIN, BASE).is_ok());
        assert!(compare_sensitive(&far, &want, &[], &[], PLAIN, BASE).is_err());
    }
}
