//! Training: the types of the backward pass (BPTT) that every engine shares.
//!
//! A training step is two calls on an engine that implements [`LstmBackward`]:
//!
//! 1. `forward_train(input, state, lengths, &mut tape)`: the forward pass of
//!    [`LstmEngine::forward`](crate::LstmEngine::forward), same arguments, same result, which
//!    also records in a [`TrainingTape`] what the backward needs.
//! 2. `backward(&tape, &GradOutputs { grad_output, grad_h_n, grad_c_n })`: the gradients of a
//!    loss with respect to the input, the initial state and every parameter
//!    ([`LstmGradients`]), given the loss's gradients with respect to the forward's results.
//!
//! This module owns the layout rules of the backward, as [`SequenceBatch`] owns those of the
//! forward: the tape keeps the call's layout, [`TrainingTape::canonical_grads`] validates the
//! upstream gradients against it and brings them to the canonical sequence-first layout, and
//! [`TrainingTape::finish_gradients`] brings an engine's canonical result back to the caller's
//! layout. Engines only ever see canonical, validated buffers.
//!
//! What autograd gives, and so what these types hold:
//!
//! - `grad_input` has the input's shape and layout (all `T` steps); the steps past a sequence's
//!   length (padding under `pack_padded_sequence`) get zero gradient, and the upstream gradient
//!   of the output at those steps is ignored (`pad_packed_sequence` writes constants there).
//! - `grad_h_n`/`grad_c_n` enter at each sequence's last valid step: step `len_b − 1` for the
//!   forward direction, step 0 for the reverse direction.
//! - `bias_ih` and `bias_hh` always get the same gradient (they are added).
//! - `grad_h0`/`grad_c0` are always returned. When the call had no `(h0, c0)`, they are the
//!   gradients with respect to the zero initial state PyTorch uses then (what autograd gives
//!   for an explicit zero `h0` with `requires_grad`; PyTorch itself reports none, as the zeros
//!   are not a leaf the caller holds).

use crate::config::LstmConfig;
use crate::engine::{LstmOutput, LstmState, SequenceBatch};
use crate::error::{LstmError, Operand, Result};
use crate::tensor::{checked_numel, Tensor};
use crate::weights::{CellWeights, LstmWeights};

/// The loss's gradients with respect to the results of
/// [`forward_train`](LstmBackward::forward_train): the upstream gradients of a backward call.
///
/// Shapes are those of [`LstmOutput`]: `grad_output` like `output` (`[T', B, D·H_out]`,
/// `[B, T', D·H_out]` with `batch_first`, `[T, D·H_out]` unbatched, where `T'` is the output's
/// length: `max(lengths)` with lengths, else `T`; with lengths the input's `T` is accepted as
/// well, as `pad_packed_sequence(total_length=T)` gives), `grad_h_n` like `h_n`, `grad_c_n`
/// like `c_n`. An absent `grad_h_n`/`grad_c_n` is zero (the loss does not use the final state).
#[derive(Clone, Copy, Debug)]
pub struct GradOutputs<'a, T> {
    /// dL/d(output); required.
    pub grad_output: &'a Tensor<T>,
    /// dL/d(h_n), `[L·D, B, H_out]` (`[L·D, H_out]` unbatched); zero when `None`.
    pub grad_h_n: Option<&'a Tensor<T>>,
    /// dL/d(c_n), `[L·D, B, H]` (`[L·D, H]` unbatched); zero when `None`.
    pub grad_c_n: Option<&'a Tensor<T>>,
}

impl<'a, T> GradOutputs<'a, T> {
    /// Only dL/d(output); the final state does not enter the loss.
    pub fn new(grad_output: &'a Tensor<T>) -> Self {
        GradOutputs {
            grad_output,
            grad_h_n: None,
            grad_c_n: None,
        }
    }

    /// Adds dL/d(h_n).
    pub fn with_h_n(mut self, grad_h_n: &'a Tensor<T>) -> Self {
        self.grad_h_n = Some(grad_h_n);
        self
    }

    /// Adds dL/d(c_n).
    pub fn with_c_n(mut self, grad_c_n: &'a Tensor<T>) -> Self {
        self.grad_c_n = Some(grad_c_n);
        self
    }
}

/// The result of a backward pass: gradients with respect to every input of the forward.
#[derive(Clone, Debug, PartialEq)]
pub struct LstmGradients<T> {
    /// dL/d(input), in the input's shape and layout (`[T, B, I]`, `[B, T, I]` with
    /// `batch_first`, `[T, I]` unbatched); zero at padded steps.
    pub grad_input: Tensor<T>,
    /// dL/d(h0), `[L·D, B, H_out]` (`[L·D, H_out]` unbatched); with respect to the zero state
    /// when the call had none.
    pub grad_h0: Tensor<T>,
    /// dL/d(c0), `[L·D, B, H]` (`[L·D, H]` unbatched); likewise.
    pub grad_c0: Tensor<T>,
    params: LstmWeights<T>,
}

impl<T> LstmGradients<T> {
    /// The parameter gradients, shaped and named exactly like the model's weights (an
    /// optimiser can walk both in step).
    pub fn params(&self) -> &LstmWeights<T> {
        &self.params
    }

    /// The parameter gradients, by value.
    pub fn into_params(self) -> LstmWeights<T> {
        self.params
    }

    /// The gradients of the cell of `layer` and `direction` (0 forward, 1 reverse).
    pub fn cell(&self, layer: usize, direction: usize) -> Option<&CellWeights<T>> {
        self.params.cell(layer, direction)
    }

    /// Every parameter gradient as `(state_dict name, shape, data)`, in PyTorch's registration
    /// order, names under `prefix` (`""`, or a module path with or without its trailing `.`:
    /// `"encoder.rnn"` gives `encoder.rnn.weight_ih_l0`, ...).
    pub fn named_tensors(&self, prefix: &str) -> Vec<(String, Vec<usize>, &[T])> {
        let prefix = crate::io::normalise_prefix(prefix);
        self.params
            .named_tensors()
            .into_iter()
            .map(|(name, shape, data)| (format!("{prefix}{name}"), shape, data))
            .collect()
    }
}

/// The forward/backward pair of an engine that trains.
pub trait LstmBackward<T: Copy + Default> {
    /// The forward pass, exactly as [`LstmEngine::forward`](crate::LstmEngine::forward) (same
    /// arguments, validation and result), recording into `tape` what
    /// [`backward`](Self::backward) needs. The tape's buffers are reused across calls.
    fn forward_train(
        &self,
        input: &Tensor<T>,
        state: Option<&LstmState<T>>,
        lengths: Option<&[usize]>,
        tape: &mut TrainingTape<T>,
    ) -> Result<LstmOutput<T>>;

    /// The gradients of the loss with respect to the input, the initial state and every
    /// parameter, from the tape of the last `forward_train` and the upstream gradients.
    fn backward(
        &self,
        tape: &TrainingTape<T>,
        grads: &GradOutputs<'_, T>,
    ) -> Result<LstmGradients<T>>;
}

/// What the forward recorded of one (layer, direction) cell, for every step of every sequence,
/// `[T, B, ·]` row-major. Entries of padded steps (`t ≥ len_b`) are zero and meaningless.
#[derive(Clone, Debug, Default, PartialEq)]
struct CellTapeBuf<T> {
    gates: Vec<T>,
    c: Vec<T>,
    tanh_c: Vec<T>,
    h_cell: Vec<T>,
}

/// One cell's records, read-only: see [`TrainingTape`] for the layout.
#[derive(Clone, Copy, Debug)]
pub struct CellTape<'a, T> {
    /// `[T, B, 4H]`: the post-activation gates `i, f, g, o` (σ, σ, tanh, σ), in that order.
    pub gates: &'a [T],
    /// `[T, B, H]`: the new cell state `c_t`, as carried to the next step.
    pub c: &'a [T],
    /// `[T, B, H]`: `tanh(c_t)`.
    pub tanh_c: &'a [T],
    /// `[T, B, H]`: `o ⊙ tanh(c_t)`, the hidden state before the projection; `None` without
    /// projection (then it is the cell's output, in the layer output).
    pub h_cell: Option<&'a [T]>,
}

/// One cell's records, for the engine that fills them.
#[derive(Debug)]
pub struct CellTapeMut<'a, T> {
    /// `[T, B, 4H]`: post-activation `i, f, g, o`.
    pub gates: &'a mut [T],
    /// `[T, B, H]`: `c_t`.
    pub c: &'a mut [T],
    /// `[T, B, H]`: `tanh(c_t)`.
    pub tanh_c: &'a mut [T],
    /// `[T, B, H]` when projecting (`o ⊙ tanh(c_t)`), else empty.
    pub h_cell: &'a mut [T],
}

/// One layer of the tape, read-only.
#[derive(Clone, Debug)]
pub struct LayerTape<'a, T> {
    /// The layer's input, `[T, B, I_k]` (the call's input for layer 0, else the layer below's
    /// output).
    pub input: &'a [T],
    /// The layer's output, `[T, B, D·H_out]`, zero at padded steps.
    pub output: &'a [T],
    /// The layer's cells, forward direction first.
    pub cells: Vec<CellTape<'a, T>>,
}

/// One layer of the tape, for the engine that fills it.
#[derive(Debug)]
pub struct LayerTapeMut<'a, T> {
    /// The layer's input, `[T, B, I_k]` (already filled: the call's input, or the layer
    /// below's output).
    pub input: &'a [T],
    /// The layer's output to fill, `[T, B, D·H_out]`, zeroed by [`TrainingTape::begin`].
    pub output: &'a mut [T],
    /// The layer's cells, forward direction first.
    pub cells: Vec<CellTapeMut<'a, T>>,
}

/// The layout of the call a tape was filled for.
#[derive(Clone, Debug, PartialEq)]
struct TapeCall {
    config: LstmConfig,
    seq_len: usize,
    batch: usize,
    lengths: Option<Vec<usize>>,
    unbatched: bool,
}

/// The workspace of a training step: what [`LstmBackward::forward_train`] records and
/// [`LstmBackward::backward`] reads. Create one with [`TrainingTape::new`] and pass it to every
/// training step: its buffers are kept and reused (they only grow).
///
/// It holds, in the canonical sequence-first layout, in the engine's float type:
///
/// - the call's input `[T, B, I]`, `h0` `[L·D, B, H_out]` and `c0` `[L·D, B, H]` (zeros when
///   none were given), and its lengths;
/// - each layer's output `[T, B, D·H_out]` (the next layer's input; the last is the output);
/// - per (layer, direction) cell and step: the gates `i, f, g, o` after their activations
///   (4H), `c_t` (H), `tanh(c_t)` (H) and, with `proj_size > 0`, `o ⊙ tanh(c_t)` (H).
///
/// Memory, in elements of the float type (4 bytes for f32, 8 for f64): per `T·B`,
/// `I + L·D·(H_out + 6H + [P > 0]·H)`, plus the states. Without projection that is
/// `7·L·D` elements per `T·B·H` plus `I` per `T·B`: 28·L·D bytes per `T·B·H` in f32, 56·L·D
/// in f64 (2 layers, bidirectional, T = 100, B = 32, H = 256 in f32: 92 MB).
/// [`TrainingTape::required_elements`] gives the exact count for a call.
#[derive(Clone, Debug, Default)]
pub struct TrainingTape<T> {
    call: Option<TapeCall>,
    filled: bool,
    input: Vec<T>,
    h0: Vec<T>,
    c0: Vec<T>,
    outputs: Vec<Vec<T>>,
    cells: Vec<CellTapeBuf<T>>,
}

/// Clears `buf` and refills it with `n` zeros, keeping its capacity; a failed allocation is an
/// error, not an abort (sizes come from the caller).
fn refill<T: Copy + Default>(buf: &mut Vec<T>, n: usize, what: &str) -> Result<()> {
    buf.clear();
    let fail = || LstmError::Allocation {
        what: format!("training tape ({what})"),
        elements: n,
        element_bytes: std::mem::size_of::<T>(),
    };
    if n.checked_mul(std::mem::size_of::<T>())
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(fail());
    }
    buf.try_reserve_exact(n).map_err(|_| fail())?;
    buf.resize(n, T::default());
    Ok(())
}

/// The element count of `dims`, `usize::MAX` on overflow (which [`refill`] refuses).
fn numel(dims: &[usize]) -> usize {
    checked_numel(dims).unwrap_or(usize::MAX)
}

impl<T: Copy + Default> TrainingTape<T> {
    /// An empty tape; it takes its size from the first call it records.
    pub fn new() -> Self {
        TrainingTape {
            call: None,
            filled: false,
            input: Vec::new(),
            h0: Vec::new(),
            c0: Vec::new(),
            outputs: Vec::new(),
            cells: Vec::new(),
        }
    }

    /// The number of elements the tape holds for a call of `seq_len` steps and `batch`
    /// sequences (`None` when that count overflows `usize`). Multiply by the element size
    /// for bytes.
    pub fn required_elements(config: &LstmConfig, seq_len: usize, batch: usize) -> Option<usize> {
        let (h, h_out, cells) = (config.hidden_size, config.h_out(), config.num_cells());
        let per_cell_step = h
            .checked_mul(if config.proj_size > 0 { 7 } else { 6 })?
            .checked_mul(cells)?;
        let outputs = config.output_size().checked_mul(config.num_layers)?;
        let per_step = config
            .input_size
            .checked_add(outputs)?
            .checked_add(per_cell_step)?;
        let states = cells
            .checked_mul(batch)?
            .checked_mul(h.checked_add(h_out)?)?;
        per_step
            .checked_mul(seq_len)?
            .checked_mul(batch)?
            .checked_add(states)
    }

    /// The bytes the tape's buffers hold now (their capacity, which persists across calls).
    pub fn memory_bytes(&self) -> usize {
        let mut elements = self.input.capacity() + self.h0.capacity() + self.c0.capacity();
        elements += self.outputs.iter().map(Vec::capacity).sum::<usize>();
        elements += self
            .cells
            .iter()
            .map(|c| {
                c.gates.capacity() + c.c.capacity() + c.tanh_c.capacity() + c.h_cell.capacity()
            })
            .sum::<usize>();
        elements.saturating_mul(std::mem::size_of::<T>())
    }

    /// Starts recording a validated call (for engines): sizes every buffer for it (zeroed),
    /// copies its input, initial state (zeros when absent) and lengths. The tape counts as
    /// filled only once the engine calls [`complete`](Self::complete).
    pub fn begin(&mut self, call: &SequenceBatch<'_, T>) -> Result<()> {
        self.filled = false;
        self.call = None;
        let config = call.config();
        let (t, b) = (call.seq_len(), call.batch());
        let (h, h_out, cells) = (config.hidden_size, config.h_out(), config.num_cells());

        refill(&mut self.input, call.x().len(), "input")?;
        self.input.copy_from_slice(call.x());
        refill(&mut self.h0, numel(&[cells, b, h_out]), "h0")?;
        if let Some(h0) = call.h0() {
            self.h0.copy_from_slice(h0);
        }
        refill(&mut self.c0, numel(&[cells, b, h]), "c0")?;
        if let Some(c0) = call.c0() {
            self.c0.copy_from_slice(c0);
        }

        self.outputs.resize_with(config.num_layers, Vec::new);
        for out in &mut self.outputs {
            refill(out, numel(&[t, b, config.output_size()]), "layer output")?;
        }
        self.cells.resize_with(cells, CellTapeBuf::default);
        let per_unit = numel(&[t, b, h]);
        for cell in &mut self.cells {
            refill(&mut cell.gates, per_unit.saturating_mul(4), "gates")?;
            refill(&mut cell.c, per_unit, "cell states")?;
            refill(&mut cell.tanh_c, per_unit, "tanh of cell states")?;
            let h_cell = if config.proj_size > 0 { per_unit } else { 0 };
            refill(&mut cell.h_cell, h_cell, "unprojected hidden states")?;
        }
        self.call = Some(TapeCall {
            config: config.clone(),
            seq_len: t,
            batch: b,
            lengths: call.lengths().map(<[usize]>::to_vec),
            unbatched: call.unbatched(),
        });
        Ok(())
    }

    /// Marks the tape as completely filled (for engines, after the last layer).
    pub fn complete(&mut self) {
        self.filled = self.call.is_some();
    }

    /// Layer `layer`'s buffers, to fill (for engines); `None` when out of range or before
    /// [`begin`](Self::begin).
    pub fn layer_mut(&mut self, layer: usize) -> Option<LayerTapeMut<'_, T>> {
        let dirs = self.call.as_ref()?.config.num_directions();
        if layer >= self.outputs.len() {
            return None;
        }
        let (below, rest) = self.outputs.split_at_mut(layer);
        let input: &[T] = match below.last() {
            Some(prev) => prev,
            None => &self.input,
        };
        let output = rest.first_mut()?;
        let cells = self
            .cells
            .get_mut(layer * dirs..(layer + 1) * dirs)?
            .iter_mut()
            .map(|c| CellTapeMut {
                gates: &mut c.gates,
                c: &mut c.c,
                tanh_c: &mut c.tanh_c,
                h_cell: &mut c.h_cell,
            })
            .collect();
        Some(LayerTapeMut {
            input,
            output,
            cells,
        })
    }
}

impl<T: Copy + Default> TrainingTape<T> {
    /// Fails unless the tape holds a complete recording of a call to a model with `config`'s
    /// shapes: a backward must read the tape of its own model's forward.
    pub fn ensure_filled_for(&self, config: &LstmConfig) -> Result<()> {
        let call = match (&self.call, self.filled) {
            (Some(call), true) => call,
            _ => {
                return Err(LstmError::TapeMismatch {
                    reason: "holds no complete forward pass; call forward_train first".to_string(),
                })
            }
        };
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
        if key(&call.config) == key(config) {
            Ok(())
        } else {
            Err(LstmError::TapeMismatch {
                reason: format!(
                    "was recorded for {:?}, but the engine runs {:?}",
                    call.config, config
                ),
            })
        }
    }

    fn call(&self) -> Result<&TapeCall> {
        self.call.as_ref().ok_or_else(|| LstmError::TapeMismatch {
            reason: "holds no forward pass; call forward_train first".to_string(),
        })
    }

    /// T, the recorded call's number of steps (0 before any call).
    pub fn seq_len(&self) -> usize {
        self.call.as_ref().map_or(0, |c| c.seq_len)
    }

    /// B, the recorded call's batch size (1 for unbatched input; 0 before any call).
    pub fn batch(&self) -> usize {
        self.call.as_ref().map_or(0, |c| c.batch)
    }

    /// The length of sequence `b` (T without lengths); `None` when `b ≥ B`.
    pub fn length(&self, b: usize) -> Option<usize> {
        let call = self.call.as_ref()?;
        if b >= call.batch {
            return None;
        }
        match &call.lengths {
            Some(l) => l.get(b).copied(),
            None => Some(call.seq_len),
        }
    }

    /// The recorded `h0`, `[L·D, B, H_out]` (zeros when the call had none).
    pub fn h0(&self) -> &[T] {
        &self.h0
    }

    /// The recorded `c0`, `[L·D, B, H]` (zeros when the call had none).
    pub fn c0(&self) -> &[T] {
        &self.c0
    }

    /// Layer `layer`'s records; `None` when out of range or nothing was recorded.
    pub fn layer(&self, layer: usize) -> Option<LayerTape<'_, T>> {
        let call = self.call.as_ref()?;
        let dirs = call.config.num_directions();
        let projecting = call.config.proj_size > 0;
        let output = self.outputs.get(layer)?;
        let input = match layer.checked_sub(1) {
            Some(prev) => self.outputs.get(prev)?,
            None => &self.input,
        };
        let cells = self
            .cells
            .get(layer * dirs..(layer + 1) * dirs)?
            .iter()
            .map(|c| CellTape {
                gates: &c.gates,
                c: &c.c,
                tanh_c: &c.tanh_c,
                h_cell: projecting.then_some(c.h_cell.as_slice()),
            })
            .collect();
        Some(LayerTape {
            input,
            output,
            cells,
        })
    }

    /// Validates upstream gradients against the recorded call and brings them to the
    /// canonical layout (for engines): `output` `[T, B, D·H_out]` (padded to the input's T,
    /// zero at every step past a sequence's length, where autograd ignores it), `h_n`
    /// `[L·D, B, H_out]` and `c_n` `[L·D, B, H]` (`None` when not given).
    pub fn canonical_grads(&self, grads: &GradOutputs<'_, T>) -> Result<CanonicalGrads<T>> {
        let call = self.call()?;
        let config = &call.config;
        let (t, b, f) = (call.seq_len, call.batch, config.output_size());
        let t_out = match &call.lengths {
            Some(l) => l.iter().copied().max().unwrap_or(t),
            None => t,
        };
        let layout = |steps: usize| -> Vec<usize> {
            if call.unbatched {
                vec![steps, f]
            } else if config.batch_first {
                vec![b, steps, f]
            } else {
                vec![steps, b, f]
            }
        };
        let g = grads.grad_output;
        let steps = if g.shape() == layout(t_out).as_slice() {
            t_out
        } else if g.shape() == layout(t).as_slice() {
            t // padded to total_length = T
        } else {
            return Err(LstmError::ShapeMismatch {
                what: Operand::GradOutput.into(),
                expected: layout(t_out),
                found: g.shape().to_vec(),
            });
        };
        let seq_first = if config.batch_first && !call.unbatched {
            g.swap_leading_axes()?.into_parts().1
        } else {
            g.data().to_vec()
        };
        let mut output = Vec::new();
        refill(&mut output, numel(&[t, b, f]), "grad_output")?;
        output[..steps * b * f].copy_from_slice(&seq_first);
        if let Some(lengths) = &call.lengths {
            for (seq, &len) in lengths.iter().enumerate() {
                for step in len..t {
                    let start = (step * b + seq) * f;
                    output[start..start + f].fill(T::default());
                }
            }
        }

        let cells = config.num_cells();
        let state =
            |what: Operand, given: Option<&Tensor<T>>, n: usize| -> Result<Option<Vec<T>>> {
                let Some(given) = given else {
                    return Ok(None);
                };
                let expected = if call.unbatched {
                    vec![cells, n]
                } else {
                    vec![cells, b, n]
                };
                if given.shape() != expected.as_slice() {
                    return Err(LstmError::ShapeMismatch {
                        what: what.into(),
                        expected,
                        found: given.shape().to_vec(),
                    });
                }
                Ok(Some(given.data().to_vec()))
            };
        Ok(CanonicalGrads {
            output,
            h_n: state(Operand::GradHN, grads.grad_h_n, config.h_out())?,
            c_n: state(Operand::GradCN, grads.grad_c_n, config.hidden_size)?,
        })
    }

    /// Wraps an engine's canonical gradients in the caller's layout (for engines):
    /// `grad_input` `[T, B, I]`, `grad_h0` `[L·D, B, H_out]`, `grad_c0` `[L·D, B, H]` flat, and
    /// one [`CellWeights`] of parameter gradients per cell (`layer·D + direction`).
    pub fn finish_gradients(
        &self,
        grad_input: Vec<T>,
        grad_h0: Vec<T>,
        grad_c0: Vec<T>,
        params: Vec<CellWeights<T>>,
    ) -> Result<LstmGradients<T>> {
        let call = self.call()?;
        let config = &call.config;
        let (t, b, cells) = (call.seq_len, call.batch, config.num_cells());
        let params = LstmWeights::new(config.clone(), params)?;
        if call.unbatched {
            return Ok(LstmGradients {
                grad_input: Tensor::new([t, config.input_size], grad_input)?,
                grad_h0: Tensor::new([cells, config.h_out()], grad_h0)?,
                grad_c0: Tensor::new([cells, config.hidden_size], grad_c0)?,
                params,
            });
        }
        let mut grad_input = Tensor::new([t, b, config.input_size], grad_input)?;
        if config.batch_first {
            grad_input = grad_input.swap_leading_axes()?;
        }
        Ok(LstmGradients {
            grad_input,
            grad_h0: Tensor::new([cells, b, config.h_out()], grad_h0)?,
            grad_c0: Tensor::new([cells, b, config.hidden_size], grad_c0)?,
            params,
        })
    }
}

/// Upstream gradients in the canonical layout, validated against a tape
/// ([`TrainingTape::canonical_grads`]).
#[derive(Clone, Debug, PartialEq)]
pub struct CanonicalGrads<T> {
    /// dL/d(output), `[T, B, D·H_out]`, zero past each sequence's length.
    pub output: Vec<T>,
    /// dL/d(h_n), `[L·D, B, H_out]`, or `None` (zero).
    pub h_n: Option<Vec<T>>,
    /// dL/d(c_n), `[L·D, B, H]`, or `None` (zero).
    pub c_n: Option<Vec<T>>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tape_for(
        config: &LstmConfig,
        x: &Tensor<f32>,
        lengths: Option<&[usize]>,
    ) -> TrainingTape<f32> {
        let call = SequenceBatch::new(config, x, None, lengths).unwrap();
        let mut tape = TrainingTape::new();
        tape.begin(&call).unwrap();
        tape.complete();
        tape
    }

    #[test]
    fn tape_sizes_and_reuse() {
        let config = LstmConfig::new(3, 4)
            .with_num_layers(2)
            .with_bidirectional(true);
        let x = Tensor::new([5, 2, 3], vec![0.5f32; 30]).unwrap();
        let tape = tape_for(&config, &x, None);
        let want = TrainingTape::<f32>::required_elements(&config, 5, 2).unwrap();
        assert_eq!(tape.memory_bytes(), want * 4);
        let layer = tape.layer(1).unwrap();
        assert_eq!((layer.input.len(), layer.output.len()), (80, 80));
        assert_eq!(layer.cells.len(), 2);
        assert_eq!(layer.cells[1].gates.len(), 160);
        assert!(layer.cells[0].h_cell.is_none());
        assert!(tape.layer(2).is_none());
        // Reused for a smaller call: no new allocation, sizes follow the call.
        let mut tape = tape;
        let small = Tensor::new([2, 1, 3], vec![0.5f32; 6]).unwrap();
        let before = tape.memory_bytes();
        tape.begin(&SequenceBatch::new(&config, &small, None, None).unwrap())
            .unwrap();
        assert_eq!(tape.memory_bytes(), before);
        assert_eq!(tape.layer(0).unwrap().cells[0].c.len(), 8);
        assert!(
            tape.ensure_filled_for(&config).is_err(),
            "begun, not complete"
        );
        tape.complete();
        assert!(tape.ensure_filled_for(&config).is_ok());
        assert!(tape.ensure_filled_for(&LstmConfig::new(3, 4)).is_err());
        assert!(TrainingTape::<f32>::new()
            .ensure_filled_for(&config)
            .is_err());
    }

    #[test]
    fn grads_are_validated_and_made_canonical() {
        let config = LstmConfig::new(1, 2).with_batch_first(true);
        let x = Tensor::new([2, 4, 1], vec![0f32; 8]).unwrap(); // [B, T, I]
        let tape = tape_for(&config, &x, Some(&[3, 1]));
        // The output has max(lengths) = 3 steps: [B, 3, 2].
        let g = Tensor::new([2, 3, 2], (1..=12).map(|v| v as f32).collect()).unwrap();
        let c = tape.canonical_grads(&GradOutputs::new(&g)).unwrap();
        // canonical [T=4, B=2, 2]; sequence 1 has length 1, so its steps 1.. are zero.
        assert_eq!(
            c.output,
            vec![1., 2., 7., 8., 3., 4., 0., 0., 5., 6., 0., 0., 0., 0., 0., 0.]
        );
        assert!(c.h_n.is_none() && c.c_n.is_none());
        // The input's T (total_length) is accepted too.
        let g4 = Tensor::new([2, 4, 2], vec![1f32; 16]).unwrap();
        assert!(tape.canonical_grads(&GradOutputs::new(&g4)).is_ok());
        let bad = Tensor::new([3, 2, 2], vec![1f32; 12]).unwrap();
        assert!(matches!(
            tape.canonical_grads(&GradOutputs::new(&bad)),
            Err(LstmError::ShapeMismatch { what, expected, .. })
                if what == Operand::GradOutput.into() && expected == vec![2, 3, 2]
        ));
        let hn = Tensor::new([1, 2, 2], vec![1f32; 4]).unwrap();
        let bad_cn = Tensor::new([1, 2, 3], vec![1f32; 6]).unwrap();
        assert!(matches!(
            tape.canonical_grads(&GradOutputs::new(&g).with_h_n(&hn).with_c_n(&bad_cn)),
            Err(LstmError::ShapeMismatch { what, .. }) if what == Operand::GradCN.into()
        ));
        let c = tape
            .canonical_grads(&GradOutputs::new(&g).with_h_n(&hn).with_c_n(&hn))
            .unwrap();
        assert_eq!(c.h_n.as_deref(), Some(&[1f32; 4][..]));
    }

    #[test]
    fn gradients_take_the_callers_layout_and_names() {
        let config = LstmConfig::new(1, 2)
            .with_proj_size(1)
            .with_batch_first(true);
        let x = Tensor::new([2, 3, 1], vec![0f32; 6]).unwrap();
        let tape = tape_for(&config, &x, None);
        let zeros = LstmWeights::<f32>::random_uniform(config.clone(), 0, 0.0).unwrap();
        let grads = tape
            .finish_gradients(
                (0..6).map(|v| v as f32).collect(),
                vec![0.0; 2],
                vec![0.0; 4],
                zeros.cells().to_vec(),
            )
            .unwrap();
        assert_eq!(grads.grad_input.shape(), &[2, 3, 1]);
        assert_eq!(grads.grad_input.data(), &[0., 2., 4., 1., 3., 5.]);
        let names: Vec<String> = grads
            .named_tensors("encoder.rnn")
            .into_iter()
            .map(|(n, _, _)| n)
            .collect();
        assert_eq!(names[0], "encoder.rnn.weight_ih_l0");
        assert_eq!(names.last().unwrap(), "encoder.rnn.weight_hr_l0");
        assert!(tape
            .finish_gradients(
                vec![0.0; 5],
                vec![0.0; 2],
                vec![0.0; 4],
                zeros.cells().to_vec()
            )
            .is_err());
        assert!(tape
            .finish_gradients(vec![0.0; 6], vec![0.0; 2], vec![0.0; 4], vec![])
            .is_err());
    }
}
