//! The contract every engine implements: [`LstmEngine`].
//!
//! Callers use the provided [`LstmEngine::forward`] with PyTorch's shapes (`[T, B, I]`,
//! `[B, T, I]` with `batch_first`, or unbatched `[T, I]`). It validates every shape once, brings
//! the call into the canonical sequence-first layout ([`SequenceBatch`]) and hands it to the
//! engine's [`LstmEngine::forward_batch`], which therefore only ever sees validated input.

use std::borrow::Cow;

use crate::config::LstmConfig;
use crate::error::{LstmError, Operand, Result};
use crate::tensor::Tensor;

/// Hidden and cell state of every (layer, direction) cell.
///
/// `h`: `[L·D, B, H_out]`, `c`: `[L·D, B, H]`, ordered layer-major then direction, exactly as
/// `nn.LSTM`'s `(h0, c0)` and `(h_n, c_n)`; without the `B` axis for unbatched input.
#[derive(Clone, Debug, PartialEq)]
pub struct LstmState<T> {
    /// Hidden state, `[L·D, B, H_out]` (or `[L·D, H_out]`).
    pub h: Tensor<T>,
    /// Cell state, `[L·D, B, H]` (or `[L·D, H]`).
    pub c: Tensor<T>,
}

impl<T: Copy + Default> LstmState<T> {
    /// The zero state for `batch` sequences (`None`: unbatched), what PyTorch uses when no
    /// `(h0, c0)` is given.
    pub fn zeros(config: &LstmConfig, batch: Option<usize>) -> Result<Self> {
        config.validate()?;
        let cells = config.num_cells();
        let (h_shape, c_shape) = match batch {
            Some(b) => (
                vec![cells, b, config.h_out()],
                vec![cells, b, config.hidden_size],
            ),
            None => (vec![cells, config.h_out()], vec![cells, config.hidden_size]),
        };
        Ok(LstmState {
            h: Tensor::zeros(h_shape)?,
            c: Tensor::zeros(c_shape)?,
        })
    }
}

impl<T> LstmState<T> {
    /// The state's batch size, or `None` when it is unbatched (rank 2).
    pub fn batch(&self) -> Option<usize> {
        (self.h.rank() == 3).then(|| self.h.shape()[1])
    }
}

/// What [`LstmEngine::forward`] returns, in PyTorch's shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct LstmOutput<T> {
    /// `[T, B, D·H_out]` (`[B, T, D·H_out]` with `batch_first`, `[T, D·H_out]` unbatched).
    pub output: Tensor<T>,
    /// `[L·D, B, H_out]` (`[L·D, H_out]` unbatched).
    pub h_n: Tensor<T>,
    /// `[L·D, B, H]` (`[L·D, H]` unbatched).
    pub c_n: Tensor<T>,
}

/// A validated forward call in the canonical layout: sequence-first, batched.
///
/// Only [`SequenceBatch::new`] builds one, after checking every shape and length against a
/// config, which the batch keeps. An engine checks once that this is its own config
/// ([`SequenceBatch::ensure_config`]) and may then index the batch without further checks.
#[derive(Debug)]
pub struct SequenceBatch<'a, T: Clone> {
    config: LstmConfig,
    x: Cow<'a, [T]>,
    seq_len: usize,
    batch: usize,
    h0: Option<&'a [T]>,
    c0: Option<&'a [T]>,
    lengths: Option<Vec<usize>>,
    batch_first: bool,
    unbatched: bool,
}

impl<'a, T: Copy + Default> SequenceBatch<'a, T> {
    /// Validates a call against `config` and brings it to `[T, B, I]`.
    ///
    /// - `input`: `[T, B, I]`, `[B, T, I]` when `config.batch_first`, or unbatched `[T, I]`.
    /// - `state`: `(h0, c0)`; shapes as in [`LstmState`] (without `B` for unbatched input).
    /// - `lengths`: one per sequence (one in all for unbatched input), each in `1..=T`, with
    ///   `pack_padded_sequence(enforce_sorted=False)` semantics.
    pub fn new(
        config: &LstmConfig,
        input: &'a Tensor<T>,
        state: Option<&'a LstmState<T>>,
        lengths: Option<&[usize]>,
    ) -> Result<Self> {
        config.validate()?;
        let i = config.input_size;
        let (seq_len, batch, unbatched) = match *input.shape() {
            [t, n] => {
                if n != i {
                    return Err(LstmError::shape(Operand::Input, &[t, i], input.shape()));
                }
                (t, 1, true)
            }
            [a, b, n] => {
                let (t, bs) = if config.batch_first { (b, a) } else { (a, b) };
                if n != i {
                    return Err(LstmError::shape(Operand::Input, &[a, b, i], input.shape()));
                }
                (t, bs, false)
            }
            _ => {
                return Err(LstmError::RankMismatch {
                    what: Operand::Input.into(),
                    expected: if config.batch_first {
                        "a 3-D array [B, T, I] or a 2-D array [T, I]".to_string()
                    } else {
                        "a 3-D array [T, B, I] or a 2-D array [T, I]".to_string()
                    },
                    found: input.rank(),
                    shape: input.shape().to_vec(),
                })
            }
        };
        if seq_len == 0 {
            return Err(LstmError::InvalidOperand {
                operand: Operand::Input,
                reason: format!(
                    "sequence length must be at least 1, shape {:?}",
                    input.shape()
                ),
            });
        }
        let (h0, c0) = match state {
            None => (None, None),
            Some(s) => {
                let cells = config.num_cells();
                let (h_exp, c_exp) = if unbatched {
                    (vec![cells, config.h_out()], vec![cells, config.hidden_size])
                } else {
                    (
                        vec![cells, batch, config.h_out()],
                        vec![cells, batch, config.hidden_size],
                    )
                };
                if s.h.shape() != h_exp.as_slice() {
                    return Err(LstmError::shape(Operand::H0, &h_exp, s.h.shape()));
                }
                if s.c.shape() != c_exp.as_slice() {
                    return Err(LstmError::shape(Operand::C0, &c_exp, s.c.shape()));
                }
                (Some(s.h.data()), Some(s.c.data()))
            }
        };

        let lengths = match lengths {
            None => None,
            Some(_) if unbatched => {
                // As in PyTorch, whose pack_padded_sequence has no unbatched form.
                return Err(LstmError::InvalidOperand {
                    operand: Operand::Lengths,
                    reason: format!(
                        "per-sequence lengths need batched input [T, B, I]; the input is unbatched {:?}",
                        input.shape()
                    ),
                });
            }
            Some(l) => {
                if l.len() != batch {
                    return Err(LstmError::LengthCount {
                        expected: batch,
                        found: l.len(),
                    });
                }
                if let Some((b, &len)) = l.iter().enumerate().find(|(_, &n)| n == 0 || n > seq_len)
                {
                    return Err(LstmError::LengthOutOfRange {
                        sequence: b,
                        length: i64::try_from(len).unwrap_or(i64::MAX),
                        max: Some(seq_len),
                    });
                }
                Some(l.to_vec())
            }
        };

        let x = if config.batch_first && !unbatched {
            Cow::Owned(input.swap_leading_axes()?.into_parts().1)
        } else {
            Cow::Borrowed(input.data())
        };
        Ok(SequenceBatch {
            config: config.clone(),
            x,
            seq_len,
            batch,
            h0,
            c0,
            lengths,
            batch_first: config.batch_first,
            unbatched,
        })
    }
}

impl<T: Clone> SequenceBatch<'_, T> {
    /// The config the call was validated against.
    pub fn config(&self) -> &LstmConfig {
        &self.config
    }

    /// Fails unless the call was validated against a config with the same shapes as `config`
    /// (sizes, layers, directions, bias, projection, layout): an engine calls this first in
    /// [`LstmEngine::forward_batch`], so a batch built for another model can never reach its
    /// kernels.
    pub fn ensure_config(&self, config: &LstmConfig) -> Result<()> {
        let key = |c: &LstmConfig| {
            (
                c.input_size,
                c.hidden_size,
                c.num_layers,
                c.bias,
                c.bidirectional,
                c.proj_size,
                c.batch_first,
            )
        };
        if key(&self.config) == key(config) {
            Ok(())
        } else {
            Err(LstmError::CallMismatch {
                reason: format!(
                    "the call was validated for {:?}, but the engine runs {:?}",
                    self.config, config
                ),
            })
        }
    }

    /// The input, `[T, B, I]` row-major.
    pub fn x(&self) -> &[T] {
        &self.x
    }

    /// T.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// B (1 for unbatched input; may be 0, as PyTorch allows).
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// `h0`, `[L·D, B, H_out]`, or `None` for zeros.
    pub fn h0(&self) -> Option<&[T]> {
        self.h0
    }

    /// `c0`, `[L·D, B, H]`, or `None` for zeros.
    pub fn c0(&self) -> Option<&[T]> {
        self.c0
    }

    /// True when the caller's input was unbatched (`[T, I]`); the batch then has B = 1.
    pub fn unbatched(&self) -> bool {
        self.unbatched
    }

    /// Per-sequence lengths (each in `1..=T`), or `None` when every sequence has length T.
    pub fn lengths(&self) -> Option<&[usize]> {
        self.lengths.as_deref()
    }

    /// The length of sequence `b` (T when no lengths were given), or `None` when `b >= B`.
    pub fn length(&self, b: usize) -> Option<usize> {
        if b >= self.batch {
            return None;
        }
        match &self.lengths {
            Some(l) => l.get(b).copied(),
            None => Some(self.seq_len),
        }
    }

    /// Wraps an engine's canonical result in the caller's layout (`batch_first`, unbatched).
    ///
    /// `output` is `[T, B, D·H_out]`, `h_n` `[L·D, B, H_out]`, `c_n` `[L·D, B, H]`, all flat.
    pub fn finish(&self, output: Vec<T>, h_n: Vec<T>, c_n: Vec<T>) -> Result<LstmOutput<T>>
    where
        T: Copy + Default,
    {
        let config = &self.config;
        let (t, b, cells) = (self.seq_len, self.batch, config.num_cells());
        let out_size = config.output_size();
        if self.unbatched {
            return Ok(LstmOutput {
                output: Tensor::new([t, out_size], output)?,
                h_n: Tensor::new([cells, config.h_out()], h_n)?,
                c_n: Tensor::new([cells, config.hidden_size], c_n)?,
            });
        }
        let mut output = Tensor::new([t, b, out_size], output)?;
        // With lengths, the output is what `pad_packed_sequence` gives by default: padded to
        // the longest sequence, not to the input's T (see `pad_to_total_length` for
        // `total_length`). The steps cut are past every sequence's end, hence all zero.
        if let Some(longest) = self.lengths.as_ref().and_then(|l| l.iter().max()) {
            if *longest < t {
                let (shape, mut data) = output.into_parts();
                data.truncate(longest * b * out_size);
                output = Tensor::new([*longest, shape[1], shape[2]], data)?;
            }
        }
        if self.batch_first {
            output = output.swap_leading_axes()?;
        }
        Ok(LstmOutput {
            output,
            h_n: Tensor::new([cells, b, config.h_out()], h_n)?,
            c_n: Tensor::new([cells, b, config.hidden_size], c_n)?,
        })
    }
}

/// Zero-pads the time axis of a batched `output` to `total_length` steps, as
/// `pad_packed_sequence(..., total_length=N)` does (`[T', B, F]` → `[N, B, F]`, or
/// `[B, T', F]` → `[B, N, F]` when `batch_first`). `total_length` must be at least the output's
/// length (PyTorch refuses a shorter one too).
pub fn pad_to_total_length<T: Copy + Default>(
    output: Tensor<T>,
    total_length: usize,
    batch_first: bool,
) -> Result<Tensor<T>> {
    let &[a, b, f] = output.shape() else {
        return Err(LstmError::RankMismatch {
            what: Operand::Output.into(),
            expected: "a 3-D (batched) output".to_string(),
            found: output.rank(),
            shape: output.shape().to_vec(),
        });
    };
    let (steps, batch) = if batch_first { (b, a) } else { (a, b) };
    if total_length < steps {
        return Err(LstmError::InvalidOperand {
            operand: Operand::TotalLength,
            reason: format!("{total_length} is shorter than the longest sequence ({steps} steps)"),
        });
    }
    let seq_first = if batch_first {
        output.swap_leading_axes()?
    } else {
        output
    };
    let (_, mut data) = seq_first.into_parts();
    let total = crate::tensor::checked_numel(&[total_length, batch, f]).unwrap_or(usize::MAX);
    let extra = total.saturating_sub(data.len());
    data.try_reserve_exact(extra)
        .map_err(|_| LstmError::Allocation {
            what: "output".to_string(),
            elements: total,
            element_bytes: std::mem::size_of::<T>(),
        })?;
    data.resize(total, T::default());
    let padded = Tensor::new([total_length, batch, f], data)?;
    if batch_first {
        padded.swap_leading_axes()
    } else {
        Ok(padded)
    }
}

/// The canonical result of [`LstmEngine::forward_batch`]: flat, sequence-first buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchOutput<T> {
    /// `[T, B, D·H_out]`.
    pub output: Vec<T>,
    /// `[L·D, B, H_out]`.
    pub h_n: Vec<T>,
    /// `[L·D, B, H]`.
    pub c_n: Vec<T>,
}

/// Checks a streaming step's arguments; returns the batch size (1 when unbatched).
///
/// `x_t` is `[B, I]` (or `[I]`), `output` `[B, H_out]` (or `[H_out]`), with `B` taken from the
/// state. Streaming runs the layers of a unidirectional LSTM one time step at a time.
pub fn check_step<T>(
    config: &LstmConfig,
    x_t: &[T],
    state: &LstmState<T>,
    output: &[T],
) -> Result<usize> {
    config.validate()?;
    if config.bidirectional {
        return Err(LstmError::Unsupported(
            "step() on a bidirectional LSTM: the reverse direction needs the whole sequence; use forward()".to_string(),
        ));
    }
    let cells = config.num_cells();
    let batch = state.batch();
    let b = batch.unwrap_or(1);
    let (h_exp, c_exp) = match batch {
        Some(b) => (
            vec![cells, b, config.h_out()],
            vec![cells, b, config.hidden_size],
        ),
        None => (vec![cells, config.h_out()], vec![cells, config.hidden_size]),
    };
    if state.h.shape() != h_exp.as_slice() {
        return Err(LstmError::shape(Operand::StateH, &h_exp, state.h.shape()));
    }
    if state.c.shape() != c_exp.as_slice() {
        return Err(LstmError::shape(Operand::StateC, &c_exp, state.c.shape()));
    }
    let check = |what: Operand, n: usize, found: usize| {
        let shape = match batch {
            Some(b) => vec![b, n],
            None => vec![n],
        };
        match b.checked_mul(n) {
            Some(expected) if expected == found => Ok(()),
            expected => Err(LstmError::ElementCount {
                what: what.into(),
                shape,
                expected: expected.unwrap_or(usize::MAX),
                found,
            }),
        }
    };
    check(Operand::StepInput, config.input_size, x_t.len())?;
    check(Operand::StepOutput, config.h_out(), output.len())?;
    Ok(b)
}

/// An LSTM inference engine: the naive reference, the SIMD engine and the parallel runner all
/// implement it and must agree numerically.
pub trait LstmEngine<T: Copy + Default> {
    /// The model's configuration.
    fn config(&self) -> &LstmConfig;

    /// A short name for logs and benches (`"naive"`, `"simd"`, ...).
    fn name(&self) -> &'static str;

    /// Runs a validated, sequence-first call. Implementations first call
    /// [`SequenceBatch::ensure_config`] with their own config; after that they may assume every
    /// invariant [`SequenceBatch::new`] checks.
    fn forward_batch(&self, call: &SequenceBatch<'_, T>) -> Result<BatchOutput<T>>;

    /// Advances `state` by one time step of a unidirectional LSTM and writes the last layer's
    /// `h` to `output`.
    ///
    /// `x_t`: `[B, I]` (or `[I]` for an unbatched state), `output`: `[B, H_out]`. Equal to
    /// calling [`forward`](Self::forward) with `T = 1` and this state, and to `forward` over a
    /// whole sequence when called once per step.
    fn step(&self, x_t: &[T], state: &mut LstmState<T>, output: &mut [T]) -> Result<()>;

    /// The whole forward pass of `nn.LSTM` in eval mode, with PyTorch's shapes.
    ///
    /// `state` is `(h0, c0)` (zeros when `None`); `lengths` gives each sequence's length as
    /// `pack_padded_sequence(enforce_sorted=False)` then `pad_packed_sequence` would: output
    /// past a sequence's end is 0, `h_n`/`c_n` come from its last valid step, the reverse
    /// direction starts there, and the output has `max(lengths)` steps (pad it to the input's
    /// `T`, PyTorch's `total_length`, with [`pad_to_total_length`]).
    fn forward(
        &self,
        input: &Tensor<T>,
        state: Option<&LstmState<T>>,
        lengths: Option<&[usize]>,
    ) -> Result<LstmOutput<T>> {
        let call = SequenceBatch::new(self.config(), input, state, lengths)?;
        let out = self.forward_batch(&call)?;
        call.finish(out.output, out.h_n, out.c_n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg() -> LstmConfig {
        LstmConfig::new(3, 4).with_num_layers(2)
    }

    #[test]
    fn accepts_pytorch_layouts() {
        let x = Tensor::new([5, 2, 3], vec![0f32; 30]).unwrap();
        let call = SequenceBatch::new(&cfg(), &x, None, None).unwrap();
        assert_eq!((call.seq_len(), call.batch()), (5, 2));
        let call = SequenceBatch::new(&cfg().with_batch_first(true), &x, None, None).unwrap();
        assert_eq!((call.seq_len(), call.batch()), (2, 5));
        let x = Tensor::new([5, 3], vec![0f32; 15]).unwrap();
        assert!(matches!(
            SequenceBatch::new(&cfg(), &x, None, Some(&[4])),
            Err(LstmError::InvalidOperand {
                operand: Operand::Lengths,
                ..
            })
        ));
        let call = SequenceBatch::new(&cfg(), &x, None, None).unwrap();
        assert_eq!(
            (call.seq_len(), call.batch(), call.length(0)),
            (5, 1, Some(5))
        );
    }

    #[test]
    fn rejects_bad_calls() {
        let c = cfg();
        let x = Tensor::new([5, 2, 4], vec![0f32; 40]).unwrap();
        assert!(matches!(
            SequenceBatch::new(&c, &x, None, None),
            Err(LstmError::ShapeMismatch { expected, .. }) if expected == vec![5, 2, 3]
        ));
        let x = Tensor::new([30], vec![0f32; 30]).unwrap();
        assert!(matches!(
            SequenceBatch::new(&c, &x, None, None),
            Err(LstmError::RankMismatch { .. })
        ));
        let x = Tensor::new([0, 2, 3], vec![0f32; 0]).unwrap();
        assert!(SequenceBatch::new(&c, &x, None, None).is_err());
        // B = 0 is allowed, as in PyTorch.
        let x = Tensor::new([4, 0, 3], vec![0f32; 0]).unwrap();
        let call = SequenceBatch::new(&c, &x, None, None).unwrap();
        assert_eq!((call.batch(), call.length(0)), (0, None));
        let x = Tensor::new([5, 2, 3], vec![0f32; 30]).unwrap();
        for bad in [&[1usize][..], &[1, 2, 3]] {
            assert!(matches!(
                SequenceBatch::new(&c, &x, None, Some(bad)),
                Err(LstmError::LengthCount { expected: 2, .. })
            ));
        }
        for (bad, seq) in [(&[1usize, 6][..], 1), (&[0, 5], 0)] {
            assert!(matches!(
                SequenceBatch::new(&c, &x, None, Some(bad)),
                Err(LstmError::LengthOutOfRange { sequence, max: Some(5), .. }) if sequence == seq
            ));
        }
        let call = SequenceBatch::new(&c, &x, None, Some(&[2, 5])).unwrap();
        assert_eq!(
            (call.length(0), call.length(1), call.length(2)),
            (Some(2), Some(5), None)
        );
        assert!(call.ensure_config(&c).is_ok());
        assert!(call.ensure_config(&c.clone().with_proj_size(2)).is_err());
        assert!(call.ensure_config(&LstmConfig::new(4, 4)).is_err());
        let mut s = LstmState::zeros(&c, Some(2)).unwrap();
        assert!(SequenceBatch::new(&c, &x, Some(&s), None).is_ok());
        s.c = Tensor::zeros([2, 3, 4]).unwrap();
        assert!(matches!(
            SequenceBatch::new(&c, &x, Some(&s), None),
            Err(LstmError::ShapeMismatch { what, .. }) if what == Operand::C0.into()
        ));
        let s = LstmState::zeros(&c, None).unwrap();
        assert!(SequenceBatch::new(&c, &x, Some(&s), None).is_err());
    }

    #[test]
    fn lengths_trim_to_the_longest_and_pad_restores_t() {
        let c = LstmConfig::new(1, 1);
        let x = Tensor::new([4, 2, 1], vec![0f32; 8]).unwrap();
        let call = SequenceBatch::new(&c, &x, None, Some(&[2, 3])).unwrap();
        let out = call
            .finish(
                (1..=8).map(|v| v as f32).collect(),
                vec![0.0; 2],
                vec![0.0; 2],
            )
            .unwrap();
        assert_eq!(out.output.shape(), &[3, 2, 1]);
        assert_eq!(out.output.data(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let padded = pad_to_total_length(out.output.clone(), 4, false).unwrap();
        assert_eq!(padded.data(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0]);
        let bf = out.output.swap_leading_axes().unwrap();
        let padded_bf = pad_to_total_length(bf, 4, true).unwrap();
        assert_eq!(padded_bf, padded.swap_leading_axes().unwrap());
        assert!(matches!(
            pad_to_total_length(out.output.clone(), 2, false),
            Err(LstmError::InvalidOperand {
                operand: Operand::TotalLength,
                ..
            })
        ));
        let flat = Tensor::new([3], vec![0f32; 3]).unwrap();
        assert!(pad_to_total_length(flat, 4, false).is_err());
    }

    #[test]
    fn check_step_shapes() {
        let c = cfg();
        let s = LstmState::<f32>::zeros(&c, Some(2)).unwrap();
        assert_eq!(check_step(&c, &[0.0; 6], &s, &[0.0; 8]).unwrap(), 2);
        assert!(check_step(&c, &[0.0; 5], &s, &[0.0; 8]).is_err());
        assert!(check_step(&c, &[0.0; 6], &s, &[0.0; 7]).is_err());
        let s = LstmState::<f32>::zeros(&c, None).unwrap();
        assert_eq!(check_step(&c, &[0.0; 3], &s, &[0.0; 4]).unwrap(), 1);
        let bi = c.with_bidirectional(true);
        let s = LstmState::<f32>::zeros(&bi, None).unwrap();
        assert!(matches!(
            check_step(&bi, &[0.0; 3], &s, &[0.0; 4]),
            Err(LstmError::Unsupported(_))
        ));
    }
}
