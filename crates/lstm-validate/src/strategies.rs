//! proptest strategies for whole `nn.LSTM` calls: a config, its weights, an input, an optional
//! `(h0, c0)` and optional per-sequence lengths.
//!
//! A [`Case`] holds only what shrinks well: sizes, flags, and a seed plus a scale for each
//! block of numbers (weights, input, state), which [`Case::weights`], [`Case::input`] and
//! [`Case::state`] expand deterministically. A counterexample therefore shrinks to the smallest
//! sizes, the fewest options and the mildest scales that still fail, and its `Debug` output is
//! enough to rebuild it exactly.
//!
//! Shrinking order: every size toward 1 (sizes at SIMD widths toward 7), layers toward 1, every
//! option toward PyTorch's default (unidirectional, bias on, no projection, sequence-first,
//! batched, no state, no lengths), scales toward PyTorch's default initialisation.

use lstm_core::{Direction, LstmConfig, LstmState, LstmWeights, Result, SplitMix64, Tensor};
use proptest::prelude::*;
use proptest::sample::select;

/// Sizes just below, at and above the lane counts of 128-, 256- and 512-bit f32 vectors (and
/// twice 16): every kernel tail (0, 1 and lanes-1 leftover elements) is hit.
pub const SIMD_EDGE_SIZES: [usize; 9] = [7, 8, 9, 15, 16, 17, 31, 32, 33];

/// A feature size: `1..=6` (1 and odd sizes) or one of [`SIMD_EDGE_SIZES`]; shrinks toward 1.
pub fn size() -> impl Strategy<Value = usize> + Clone {
    prop_oneof![1..=6usize, select(&SIMD_EDGE_SIZES[..])]
}

/// The spread of a block of random weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WeightScale {
    /// PyTorch's default initialisation, `U(-1/√H, 1/√H)`.
    PyTorch,
    /// `U(-k/√H, k/√H)`: trained weights are often a few times wider than at initialisation.
    Wider(f64),
    /// `U(-s, s)` whatever H: gates saturate (σ near 0 or 1, tanh near ±1) on most rows.
    Saturating(f64),
}

impl WeightScale {
    /// The half-width of the uniform range for hidden size `hidden`.
    pub fn bound(self, hidden: usize) -> f64 {
        let k = 1.0 / (hidden.max(1) as f64).sqrt();
        match self {
            WeightScale::PyTorch => k,
            WeightScale::Wider(m) => m * k,
            WeightScale::Saturating(s) => s,
        }
    }
}

/// Weight spreads, saturating ones only when `saturating`; shrinks toward
/// [`WeightScale::PyTorch`].
pub fn weight_scale(saturating: bool) -> BoxedStrategy<WeightScale> {
    weight_scale_up_to(saturating, f64::INFINITY)
}

/// [`weight_scale`] with saturating spreads up to `max_saturating`.
pub fn weight_scale_up_to(saturating: bool, max_saturating: f64) -> BoxedStrategy<WeightScale> {
    if saturating {
        let spreads: Vec<f64> = [2.0, 5.0, 20.0]
            .into_iter()
            .filter(|&s| s <= max_saturating)
            .collect();
        prop_oneof![
            4 => Just(WeightScale::PyTorch),
            2 => select(vec![2.0, 4.0]).prop_map(WeightScale::Wider),
            1 => pick(&spreads, 2.0).prop_map(WeightScale::Saturating),
        ]
        .boxed()
    } else {
        prop_oneof![
            2 => Just(WeightScale::PyTorch),
            1 => select(vec![2.0, 4.0]).prop_map(WeightScale::Wider),
        ]
        .boxed()
    }
}

/// Input and state spreads `U(-s, s)`: small, unit, large, saturating; shrinks toward 1.
pub fn data_scale() -> BoxedStrategy<f32> {
    data_scale_up_to(f32::INFINITY)
}

/// [`data_scale`] without the spreads above `max`.
pub fn data_scale_up_to(max: f32) -> BoxedStrategy<f32> {
    if max >= 1000.0 {
        prop_oneof![
            4 => Just(1.0f32),
            1 => Just(0.01f32),
            1 => Just(10.0f32),
            1 => Just(1000.0f32),
        ]
        .boxed()
    } else if max >= 10.0 {
        prop_oneof![4 => Just(1.0f32), 1 => Just(0.01f32), 1 => Just(10.0f32)].boxed()
    } else {
        prop_oneof![4 => Just(1.0f32), 1 => Just(0.01f32)].boxed()
    }
}

/// How the weights of a [`Case`] are drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightSpec {
    /// Seed of [`LstmWeights::random_uniform`].
    pub seed: u64,
    /// Spread.
    pub scale: WeightScale,
    /// Added to every forget-gate bias (`bias_ih` rows `[H, 2H)`) when the config has biases:
    /// a large value holds the forget gate open, so the cell integrates and `|c|` grows with T.
    pub forget_bias: f32,
}

/// A block of numbers `U(-scale, scale)` drawn from `seed`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DataSpec {
    /// Seed of the [`SplitMix64`] stream.
    pub seed: u64,
    /// Half-width of the range.
    pub scale: f32,
}

impl DataSpec {
    /// `n` values.
    pub fn values(&self, n: usize) -> Vec<f32> {
        SplitMix64::new(self.seed).fill_f32(n, self.scale)
    }
}

/// One `forward` call of one model, everything an engine sees.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    /// The model, with the call layout (`batch_first`).
    pub config: LstmConfig,
    /// Its weights.
    pub weights: WeightSpec,
    /// T.
    pub seq_len: usize,
    /// B (1 when `unbatched`).
    pub batch: usize,
    /// Unbatched input `[T, I]` (states without the batch axis, no lengths).
    pub unbatched: bool,
    /// The input, drawn in the canonical `[T, B, I]` order.
    pub input: DataSpec,
    /// `(h0, c0)`: `h0` from the spec, `c0` from the next seed with 4× the scale (cells run
    /// larger than `h`); `None` for zeros.
    pub state: Option<DataSpec>,
    /// Per-sequence lengths, each in `1..=T`.
    pub lengths: Option<Vec<usize>>,
}

impl Case {
    /// The weights, in f32 (the f64 reference gets their exact widening).
    pub fn weights(&self) -> Result<LstmWeights<f32>> {
        let bound = self.weights.scale.bound(self.config.hidden_size);
        let w = LstmWeights::<f32>::random_uniform(self.config.clone(), self.weights.seed, bound)?;
        if self.weights.forget_bias == 0.0 || !self.config.bias {
            return Ok(w);
        }
        let h = self.config.hidden_size;
        let mut cells = w.cells().to_vec();
        for cell in &mut cells {
            if let Some(b) = cell.b_ih.as_mut() {
                for v in &mut b[h..2 * h] {
                    *v += self.weights.forget_bias;
                }
            }
        }
        LstmWeights::with_peepholes(self.config.clone(), cells, w.peepholes().to_vec())
    }

    /// The input in the canonical layout, `[T, B, I]`.
    pub fn canonical_input(&self) -> Result<Tensor<f32>> {
        let (t, b, i) = (self.seq_len, self.batch, self.config.input_size);
        Tensor::new([t, b, i], self.input.values(t * b * i))
    }

    /// The input in the caller's layout: `[T, B, I]`, `[B, T, I]` with `batch_first`, or
    /// `[T, I]` when unbatched.
    pub fn input(&self) -> Result<Tensor<f32>> {
        let x = self.canonical_input()?;
        if self.unbatched {
            x.reshape([self.seq_len, self.config.input_size])
        } else if self.config.batch_first {
            x.swap_leading_axes()
        } else {
            Ok(x)
        }
    }

    /// `(h0, c0)`, or `None` for zeros.
    pub fn state(&self) -> Result<Option<LstmState<f32>>> {
        let Some(spec) = self.state else {
            return Ok(None);
        };
        let mut s = LstmState::<f32>::zeros(&self.config, (!self.unbatched).then_some(self.batch))?;
        let h = spec.values(s.h.len());
        let c = DataSpec {
            seed: spec.seed.wrapping_add(1),
            scale: 4.0 * spec.scale,
        }
        .values(s.c.len());
        s.h.data_mut().copy_from_slice(&h);
        s.c.data_mut().copy_from_slice(&c);
        Ok(Some(s))
    }

    /// The lengths, as `forward` takes them.
    pub fn lengths(&self) -> Option<&[usize]> {
        self.lengths.as_deref()
    }

    /// The caller's layout of the output.
    pub fn layout(&self) -> crate::tolerance::Layout {
        crate::tolerance::Layout {
            batch_first: self.config.batch_first,
            unbatched: self.unbatched,
        }
    }

    /// The largest `|x|` the input may hold, and the largest `|h0|` (0 without a state).
    pub fn data_bounds(&self) -> (f64, f64) {
        (
            f64::from(self.input.scale),
            self.state.map_or(0.0, |s| f64::from(s.scale)),
        )
    }

    /// The length of sequence `b` (T without lengths).
    pub fn length(&self, b: usize) -> usize {
        self.lengths
            .as_ref()
            .and_then(|l| l.get(b).copied())
            .unwrap_or(self.seq_len)
    }
}

/// Which calls [`cases`] draws. Every `allow_*` flag off gives PyTorch's default for it.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseSpace {
    /// Sequence lengths drawn: `min_seq_len..=max_seq_len`.
    pub min_seq_len: usize,
    /// See `min_seq_len`.
    pub max_seq_len: usize,
    /// Batch sizes drawn: `1..=max_batch` (and 0 when `allow_empty_batch`).
    pub max_batch: usize,
    /// Layers drawn: `1..=max_layers`.
    pub max_layers: usize,
    /// Feature sizes (input and hidden) drawn; shrinks toward the first values.
    pub sizes: Vec<usize>,
    /// `bidirectional=True` may be drawn.
    pub allow_bidirectional: bool,
    /// `proj_size > 0` may be drawn.
    pub allow_proj: bool,
    /// `bias=False` may be drawn.
    pub allow_no_bias: bool,
    /// `batch_first=True` may be drawn.
    pub allow_batch_first: bool,
    /// Unbatched `[T, I]` input may be drawn.
    pub allow_unbatched: bool,
    /// An initial `(h0, c0)` may be drawn.
    pub allow_state: bool,
    /// Per-sequence lengths may be drawn.
    pub allow_lengths: bool,
    /// B = 0 may be drawn.
    pub allow_empty_batch: bool,
    /// [`WeightScale::Saturating`] weights may be drawn. Off for long sequences: wide recurrent
    /// weights make an LSTM chaotic, and over tens of steps any rounding (f32 or f64) then
    /// grows to O(1), so no engine can be compared with the reference there.
    pub allow_saturating_weights: bool,
    /// Lengths on every batched case (for the properties about lengths).
    pub always_lengths: bool,
    /// Forget-gate biases added (shrinks toward the first; 0 = none).
    pub forget_biases: Vec<f32>,
    /// The largest spread of inputs and states drawn ([`data_scale_up_to`]).
    pub max_data_scale: f32,
    /// The largest [`WeightScale::Saturating`] spread drawn ([`weight_scale_up_to`]).
    pub max_saturating: f64,
    /// ONNX's cell options may be drawn: a reverse-only direction (unidirectional configs),
    /// peepholes, `clip`, `input_forget`. Off by default: several properties are about
    /// PyTorch's cell (zero weights halve the cell, saturated gates count, `bias=False`).
    pub allow_onnx_options: bool,
}

impl Default for CaseSpace {
    /// Every option; short sequences (T ≤ 8), B ≤ 3, L ≤ 3, sizes [`size`] draws.
    fn default() -> Self {
        CaseSpace {
            min_seq_len: 1,
            max_seq_len: 8,
            max_batch: 3,
            max_layers: 3,
            sizes: [1, 2, 3, 4, 5, 6]
                .into_iter()
                .chain(SIMD_EDGE_SIZES)
                .collect(),
            allow_bidirectional: true,
            allow_proj: true,
            allow_no_bias: true,
            allow_batch_first: true,
            allow_unbatched: true,
            allow_state: true,
            allow_lengths: true,
            allow_empty_batch: true,
            always_lengths: false,
            allow_saturating_weights: true,
            forget_biases: vec![0.0, 3.0],
            max_data_scale: f32::INFINITY,
            max_saturating: f64::INFINITY,
            allow_onnx_options: false,
        }
    }
}

impl CaseSpace {
    /// Only calls `step` can make: unidirectional, no lengths.
    pub fn streamable(mut self) -> Self {
        self.allow_bidirectional = false;
        self.allow_lengths = false;
        self
    }

    /// Every option of [`Default`](CaseSpace::default) and ONNX's cell options, over weights
    /// that do not saturate (the tolerance model's conditioning does not bound the peephole
    /// term `P ⊙ c`; short sequences keep `c` small).
    pub fn onnx_options() -> Self {
        CaseSpace {
            allow_onnx_options: true,
            allow_saturating_weights: false,
            ..CaseSpace::default()
        }
    }

    /// `self` within the domain of 8-bit arithmetic (bf16's 8 significant bits, int8's 255
    /// steps): inputs and states up to ±10 and saturating weights up to `U(-5, 5)`. With
    /// inputs of ±1000 or weights of `U(-20, 20)` one rounding of the operands moves a gate
    /// pre-activation by 1-100 and flips gates near their switching point: the result then
    /// depends on which roundings happen, not on the model, for every bf16 or int8 engine
    /// (PyTorch's included; docs/numerics.md, growth at 10× PyTorch's init).
    pub fn reduced_precision(self) -> Self {
        CaseSpace {
            max_data_scale: 10.0,
            max_saturating: 5.0,
            ..self
        }
    }

    /// Long sequences (`min..=max` steps) over small models, with open forget gates so that
    /// the cell grows: for the long-sequence rule.
    pub fn long(min: usize, max: usize) -> Self {
        CaseSpace {
            min_seq_len: min,
            max_seq_len: max,
            max_batch: 2,
            max_layers: 2,
            sizes: vec![1, 2, 3, 5, 8, 9, 16, 17],
            forget_biases: vec![0.0, 3.0, 8.0],
            allow_saturating_weights: false,
            ..CaseSpace::default()
        }
    }
}

/// `true` with some probability when `allowed`, else always `false`; shrinks to `false`.
fn flag(allowed: bool) -> BoxedStrategy<bool> {
    if allowed {
        prop_oneof![3 => Just(false), 1 => Just(true)].boxed()
    } else {
        Just(false).boxed()
    }
}

/// A value from `values` (shrinks toward the first); `fallback` when `values` is empty.
fn pick<T: Clone + std::fmt::Debug + 'static>(values: &[T], fallback: T) -> BoxedStrategy<T> {
    if values.is_empty() {
        Just(fallback).boxed()
    } else {
        select(values.to_vec()).boxed()
    }
}

/// ONNX's cell options, `(reverse_only, peepholes, clip, input_forget)`, when `allowed`;
/// shrinks toward none.
fn onnx_options(allowed: bool) -> BoxedStrategy<(bool, bool, Option<f32>, bool)> {
    if !allowed {
        return Just((false, false, None, false)).boxed();
    }
    let clip = prop_oneof![2 => Just(None), 1 => select(vec![0.25f32, 1.0, 3.0]).prop_map(Some)];
    (flag(true), flag(true), clip, flag(true)).boxed()
}

/// The config of `nn.LSTM` over `space`: sizes, layers and every option (and ONNX's cell
/// options when [`CaseSpace::allow_onnx_options`]).
pub fn configs(space: &CaseSpace) -> impl Strategy<Value = LstmConfig> {
    (
        (
            pick(&space.sizes, 1),
            pick(&space.sizes, 1),
            1..=space.max_layers.max(1),
        ),
        (
            flag(space.allow_bidirectional),
            flag(space.allow_no_bias),
            flag(space.allow_batch_first),
        ),
        // The projection: 0, or a fraction of H mapped into 1..H (none when H = 1).
        prop_oneof![3 => Just(None), 1 => (0..u16::MAX).prop_map(Some)],
        Just(space.allow_proj),
        onnx_options(space.allow_onnx_options),
    )
        .prop_map(
            |(
                (input, hidden, layers),
                (bidir, no_bias, batch_first),
                proj,
                allow_proj,
                (reverse_only, peepholes, clip, input_forget),
            )| {
                let proj_size = match proj {
                    Some(p) if allow_proj && hidden > 1 => 1 + usize::from(p) % (hidden - 1),
                    _ => 0,
                };
                let direction = match (bidir, reverse_only) {
                    (true, _) => Direction::Bidirectional,
                    (false, true) => Direction::Reverse,
                    (false, false) => Direction::Forward,
                };
                LstmConfig::new(input, hidden)
                    .with_num_layers(layers)
                    .with_direction(direction)
                    .with_bias(!no_bias)
                    .with_batch_first(batch_first)
                    .with_proj_size(proj_size)
                    .with_peepholes(peepholes)
                    .with_clip(clip)
                    .with_input_forget(input_forget)
            },
        )
}

/// Whole calls over `space`.
pub fn cases(space: CaseSpace) -> impl Strategy<Value = Case> {
    let max_batch = space.max_batch.max(1);
    let batch = if space.allow_empty_batch {
        prop_oneof![12 => 1..=max_batch, 1 => Just(0usize)].boxed()
    } else {
        (1..=max_batch).boxed()
    };
    let lengths = if space.always_lengths {
        prop::collection::vec(0..u16::MAX, max_batch)
            .prop_map(Some)
            .boxed()
    } else if space.allow_lengths {
        // Raw draws mapped to T - raw % T: shrinks toward full-length sequences.
        prop_oneof![2 => Just(None), 1 => prop::collection::vec(0..u16::MAX, max_batch).prop_map(Some)]
            .boxed()
    } else {
        Just(None).boxed()
    };
    let state = if space.allow_state {
        prop_oneof![2 => Just(None), 1 => (any::<u64>(), data_scale_up_to(space.max_data_scale)).prop_map(|(seed, scale)| Some(DataSpec { seed, scale }))].boxed()
    } else {
        Just(None).boxed()
    };
    (
        configs(&space),
        (
            any::<u64>(),
            weight_scale_up_to(space.allow_saturating_weights, space.max_saturating),
            pick(&space.forget_biases, 0.0),
        ),
        (space.min_seq_len.max(1)..=space.max_seq_len.max(space.min_seq_len).max(1)),
        (batch, flag(space.allow_unbatched)),
        (any::<u64>(), data_scale_up_to(space.max_data_scale)),
        state,
        lengths,
    )
        .prop_map(
            |(
                config,
                (wseed, scale, forget_bias),
                seq_len,
                (batch, unbatched),
                (xseed, xscale),
                state,
                lengths,
            )| {
                // Unbatched input has one sequence and cannot carry lengths (as in PyTorch).
                let batch = if unbatched { 1 } else { batch };
                let lengths = match lengths {
                    Some(raw) if !unbatched => Some(
                        raw.iter()
                            .take(batch)
                            .map(|&r| seq_len - usize::from(r) % seq_len)
                            .collect(),
                    ),
                    _ => None,
                };
                Case {
                    config,
                    weights: WeightSpec {
                        seed: wseed,
                        scale,
                        forget_bias,
                    },
                    seq_len,
                    batch,
                    unbatched,
                    input: DataSpec {
                        seed: xseed,
                        scale: xscale,
                    },
                    state,
                    lengths,
                }
            },
        )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    #[test]
    fn cases_are_valid_calls() {
        let mut runner = TestRunner::deterministic();
        let strategy = cases(CaseSpace::default());
        let mut seen = (false, false, false, false, false);
        for _ in 0..300 {
            let case = strategy.new_tree(&mut runner).unwrap().current();
            case.config.validate().unwrap();
            let w = case.weights().unwrap();
            assert_eq!(w.config(), &case.config);
            let x = case.input().unwrap();
            let state = case.state().unwrap();
            lstm_core::SequenceBatch::new(&case.config, &x, state.as_ref(), case.lengths())
                .unwrap();
            seen.0 |= case.config.bidirectional;
            seen.1 |= case.config.proj_size > 0;
            seen.2 |= case.unbatched;
            seen.3 |= case.lengths.is_some();
            seen.4 |= case.batch == 0;
        }
        assert_eq!(seen, (true, true, true, true, true));
    }

    #[test]
    fn shrinks_to_the_smallest_default_call() {
        let mut runner = TestRunner::deterministic();
        let mut tree = cases(CaseSpace::default()).new_tree(&mut runner).unwrap();
        // A property that always fails: shrinking must reach the simplest call.
        while tree.simplify() {}
        let c = tree.current();
        assert_eq!(
            (
                c.config.input_size,
                c.config.hidden_size,
                c.config.num_layers
            ),
            (1, 1, 1)
        );
        assert!(!c.config.bidirectional && c.config.bias && !c.config.batch_first);
        assert_eq!((c.seq_len, c.batch, c.unbatched), (1, 1, false));
        assert_eq!((&c.state, &c.lengths), (&None, &None));
        assert_eq!(c.weights.scale, WeightScale::PyTorch);
    }
}
