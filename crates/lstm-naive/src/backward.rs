//! The reference backward pass (backpropagation through time), written as the textbook
//! equations, evaluated in f64 like the forward.
//!
//! For one (layer, direction) cell, walking its steps in the reverse of the order the forward
//! took them, with `dh`, `dc` the gradients carried from the step processed after this one
//! (at the start: dL/dh_n and dL/dc_n, which therefore enter at each sequence's last valid
//! step), and `dy_t` the gradient of this layer's output at the step:
//!
//! ```text
//! dh   += dy_t                                     the output and the recurrence both read h_t
//! dW_hr += dh ⊗ h_cell,   dh_cell = W_hrᵀ dh       with projection (h_t = W_hr h_cell)
//! dc   += dh_cell ⊙ o ⊙ (1 − tanh²c_t)             h_cell = o ⊙ tanh(c_t)
//! dz_i  = dc ⊙ g ⊙ i(1 − i)        dz_f = dc ⊙ c_{t−1} ⊙ f(1 − f)
//! dz_g  = dc ⊙ i ⊙ (1 − g²)        dz_o = dh_cell ⊙ tanh(c_t) ⊙ o(1 − o)
//! db_ih += dz,  db_hh += dz        (the two biases are added, so they share a gradient)
//! dW_ih += dz ⊗ x_t,   dx_t += W_ihᵀ dz            (dx_t: the layer below's output gradient)
//! dW_hh += dz ⊗ h_{t−1},   dh = W_hhᵀ dz           carried to the previous step
//! dc    = dc ⊙ f                                   the cell gradient carried back through f
//! ```
//!
//! After the first step processed (`t = 0` forward, `t = len − 1` reverse), `dh` and `dc` are
//! dL/dh0 and dL/dc0. Layers are walked from the top down; each layer's `dx` is the gradient of
//! the layer below's output. Padded steps (`t ≥ len_b`) are never visited, so their input
//! gradient stays zero and their output gradient is ignored, as autograd gives through
//! `pack_padded_sequence`.
//!
//! Every quantity is widened to f64 (exactly, from the tape and the weights), every product and
//! sum is taken in f64, the carried `dh`, `dc` stay in f64, and each gradient is rounded to `T`
//! once at the end: `NaiveEngine<f64>` is the f64 oracle of the backward too.

use lstm_core::grad::{CellTape, LayerTapeMut};
use lstm_core::tensor::try_filled_vec;
use lstm_core::{
    CellWeights, GradOutputs, LstmBackward, LstmError, LstmGradients, LstmOutput, LstmState,
    Result, SequenceBatch, Tensor, TrainingTape,
};
use num_traits::Float;

use crate::{cell_step_recorded, narrow, numel, wide, NaiveEngine};

/// An inconsistency between the tape and the config that the checks before make impossible;
/// kept as an error, never a panic.
fn tape_error(what: &str) -> LstmError {
    LstmError::Internal(format!("the training tape has no {what} for this model"))
}

/// The parameter gradients of one cell, accumulated in f64 over every step and sequence.
struct CellGrads {
    w_ih: Vec<f64>,
    w_hh: Vec<f64>,
    /// Shared by `bias_ih` and `bias_hh`.
    bias: Option<Vec<f64>>,
    w_hr: Option<Vec<f64>>,
}

impl CellGrads {
    fn zeros_like<T>(cell: &CellWeights<T>) -> Result<Self> {
        Ok(CellGrads {
            w_ih: try_filled_vec("grad weight_ih", cell.w_ih.len(), 0.0)?,
            w_hh: try_filled_vec("grad weight_hh", cell.w_hh.len(), 0.0)?,
            bias: match &cell.b_ih {
                Some(b) => Some(try_filled_vec("grad bias", b.len(), 0.0)?),
                None => None,
            },
            w_hr: match &cell.w_hr {
                Some(w) => Some(try_filled_vec("grad weight_hr", w.len(), 0.0)?),
                None => None,
            },
        })
    }

    fn narrow<T: Float>(&self) -> CellWeights<T> {
        let to_t = |v: &Vec<f64>| v.iter().map(|&x| narrow(x)).collect::<Vec<T>>();
        CellWeights {
            w_ih: to_t(&self.w_ih),
            w_hh: to_t(&self.w_hh),
            b_ih: self.bias.as_ref().map(to_t),
            b_hh: self.bias.as_ref().map(to_t),
            w_hr: self.w_hr.as_ref().map(to_t),
        }
    }
}

impl<T: Float + Default> NaiveEngine<T> {
    /// The forward pass, exactly as [`LstmEngine::forward`](lstm_core::LstmEngine::forward)
    /// computes it (the same step function, so the same bits), recording in `tape` the gates,
    /// cell states and layer outputs that [`backward`](Self::backward) reads.
    pub fn forward_train(
        &self,
        input: &Tensor<T>,
        state: Option<&LstmState<T>>,
        lengths: Option<&[usize]>,
        tape: &mut TrainingTape<T>,
    ) -> Result<LstmOutput<T>> {
        let config = self.weights.config();
        let call = SequenceBatch::new(config, input, state, lengths)?;
        call.ensure_config(config)?;
        tape.begin(&call)?;
        let batch = call.batch();
        let (dirs, hidden, h_out) = (config.num_directions(), config.hidden_size, config.h_out());
        let out_size = dirs * h_out;
        let projecting = config.proj_size > 0;

        let mut h_n = try_filled_vec("h_n", numel(&[config.num_cells(), batch, h_out]), T::zero())?;
        let mut c_n = try_filled_vec(
            "c_n",
            numel(&[config.num_cells(), batch, hidden]),
            T::zero(),
        )?;
        for layer in 0..config.num_layers {
            let in_size = config.layer_input_size(layer);
            let LayerTapeMut {
                input: layer_input,
                output: layer_output,
                mut cells,
            } = tape.layer_mut(layer).ok_or_else(|| tape_error("layer"))?;
            for (dir, rec) in cells.iter_mut().enumerate() {
                let cell = self
                    .weights
                    .cell(layer, dir)
                    .ok_or_else(|| tape_error("cell"))?;
                let index = layer * dirs + dir;
                for b in 0..batch {
                    let hs = (index * batch + b) * h_out;
                    let cs = (index * batch + b) * hidden;
                    let mut h = call
                        .h0()
                        .map_or(vec![T::zero(); h_out], |h0| h0[hs..hs + h_out].to_vec());
                    let mut c = call
                        .c0()
                        .map_or(vec![T::zero(); hidden], |c0| c0[cs..cs + hidden].to_vec());
                    let len = call.length(b).unwrap_or(0); // b < B: always Some
                    let steps: Box<dyn Iterator<Item = usize>> = if dir == 0 {
                        Box::new(0..len)
                    } else {
                        Box::new((0..len).rev())
                    };
                    for t in steps {
                        let row = t * batch + b;
                        let (unit, gate) = (row * hidden, row * 4 * hidden);
                        let x = &layer_input[row * in_size..(row + 1) * in_size];
                        cell_step_recorded(config, cell, x, &mut h, &mut c, |k, v| {
                            let [i, f, g, o, c_new, tanh_c] = v;
                            for (n, a) in [i, f, g, o].into_iter().enumerate() {
                                rec.gates[gate + n * hidden + k] = narrow(a);
                            }
                            rec.c[unit + k] = narrow(c_new);
                            rec.tanh_c[unit + k] = narrow(tanh_c);
                            if projecting {
                                rec.h_cell[unit + k] = narrow(o * tanh_c);
                            }
                        });
                        let o_start = row * out_size + dir * h_out;
                        layer_output[o_start..o_start + h_out].copy_from_slice(&h);
                    }
                    h_n[hs..hs + h_out].copy_from_slice(&h);
                    c_n[cs..cs + hidden].copy_from_slice(&c);
                }
            }
        }
        tape.complete();
        let last = config.num_layers - 1; // ≥ 0: the config has at least one layer
        let output = tape
            .layer(last)
            .ok_or_else(|| tape_error("output"))?
            .output
            .to_vec();
        call.finish(output, h_n, c_n)
    }

    /// The gradients of a loss with respect to the input, the initial state and every
    /// parameter, from the `tape` of this engine's last [`forward_train`](Self::forward_train)
    /// and the loss's gradients with respect to its results (validated against the call).
    ///
    /// See the module documentation for the equations; `grad_h0`/`grad_c0` are returned even
    /// when the call had no initial state (the gradient with respect to the zero state).
    pub fn backward(
        &self,
        tape: &TrainingTape<T>,
        grads: &GradOutputs<'_, T>,
    ) -> Result<LstmGradients<T>> {
        let config = self.weights.config();
        tape.ensure_filled_for(config)?;
        let upstream = tape.canonical_grads(grads)?;
        let (seq_len, batch) = (tape.seq_len(), tape.batch());
        let (dirs, hidden, h_out) = (config.num_directions(), config.hidden_size, config.h_out());
        let out_size = dirs * h_out;

        let mut grad_h0 =
            try_filled_vec("grad_h0", numel(&[config.num_cells(), batch, h_out]), 0.0)?;
        let mut grad_c0 =
            try_filled_vec("grad_c0", numel(&[config.num_cells(), batch, hidden]), 0.0)?;
        let mut params = Vec::with_capacity(config.num_cells());
        for cell in self.weights.cells() {
            params.push(CellGrads::zeros_like(cell)?);
        }
        // The gradient of the current layer's output, [T, B, D·H_out]: the upstream gradient
        // for the top layer, then each layer's input gradient for the layer below.
        let mut d_out: Vec<f64> = upstream.output.iter().map(|&v| wide(v)).collect();

        for layer in (0..config.num_layers).rev() {
            let rec = tape.layer(layer).ok_or_else(|| tape_error("layer"))?;
            let in_size = config.layer_input_size(layer);
            let mut d_in = try_filled_vec("grad_input", numel(&[seq_len, batch, in_size]), 0.0)?;
            for dir in 0..dirs {
                let index = layer * dirs + dir;
                let (Some(weights), Some(cell_tape), Some(acc)) = (
                    self.weights.cell(layer, dir),
                    rec.cells.get(dir),
                    params.get_mut(index),
                ) else {
                    return Err(tape_error("cell"));
                };
                let cell = CellBackward {
                    weights,
                    tape: cell_tape,
                    input: rec.input,
                    output: rec.output,
                    h0: tape.h0(),
                    c0: tape.c0(),
                    batch,
                    dir,
                    index,
                    in_size,
                    hidden,
                    h_out,
                    out_size,
                };
                for b in 0..batch {
                    let hs = (index * batch + b) * h_out;
                    let cs = (index * batch + b) * hidden;
                    let start = |g: &Option<Vec<T>>, at: usize, n: usize| -> Vec<f64> {
                        g.as_ref().map_or(vec![0.0; n], |g| {
                            g[at..at + n].iter().map(|&v| wide(v)).collect()
                        })
                    };
                    let mut dh = start(&upstream.h_n, hs, h_out);
                    let mut dc = start(&upstream.c_n, cs, hidden);
                    let len = tape.length(b).unwrap_or(0); // b < B: always Some
                    cell.sequence(b, len, &d_out, &mut d_in, acc, &mut dh, &mut dc);
                    grad_h0[hs..hs + h_out].copy_from_slice(&dh);
                    grad_c0[cs..cs + hidden].copy_from_slice(&dc);
                }
            }
            d_out = d_in;
        }

        let to_t = |v: &[f64]| v.iter().map(|&x| narrow(x)).collect::<Vec<T>>();
        tape.finish_gradients(
            to_t(&d_out),
            to_t(&grad_h0),
            to_t(&grad_c0),
            params.iter().map(CellGrads::narrow).collect(),
        )
    }
}

/// What the backward of one (layer, direction) cell reads.
struct CellBackward<'a, T> {
    weights: &'a CellWeights<T>,
    tape: &'a CellTape<'a, T>,
    /// The layer's input `[T, B, I_k]` and output `[T, B, D·H_out]`.
    input: &'a [T],
    output: &'a [T],
    /// `[L·D, B, H_out]`, `[L·D, B, H]`.
    h0: &'a [T],
    c0: &'a [T],
    batch: usize,
    dir: usize,
    index: usize,
    in_size: usize,
    hidden: usize,
    h_out: usize,
    out_size: usize,
}

impl<T: Float> CellBackward<'_, T> {
    /// Back-propagates sequence `b` of length `len` through this cell: reads the layer
    /// output's gradient `d_out`, adds to the layer input's gradient `d_in` and to the
    /// parameter gradients `acc`; `dh`, `dc` come in as dL/dh_n, dL/dc_n and leave as dL/dh0,
    /// dL/dc0.
    #[allow(clippy::too_many_arguments)]
    fn sequence(
        &self,
        b: usize,
        len: usize,
        d_out: &[f64],
        d_in: &mut [f64],
        acc: &mut CellGrads,
        dh: &mut [f64],
        dc: &mut [f64],
    ) {
        let (hidden, h_out, in_size) = (self.hidden, self.h_out, self.in_size);
        let g4 = 4 * hidden;
        let mut dh_cell = vec![0.0f64; hidden];
        let mut dz = vec![0.0f64; g4];
        for step in 0..len {
            // The reverse of the forward's order; `prev` is the step the forward took before
            // `t` (None at the first, whose previous state is (h0, c0)).
            let (t, prev) = if self.dir == 0 {
                let t = len - 1 - step;
                (t, t.checked_sub(1))
            } else {
                (step, (step + 1 < len).then_some(step + 1))
            };
            let row = t * self.batch + b;
            let prev_row = prev.map(|p| p * self.batch + b);

            // The output at t and the recurrence both read h_t.
            let y = &d_out[row * self.out_size + self.dir * h_out..][..h_out];
            for (d, &g) in dh.iter_mut().zip(y) {
                *d += g;
            }

            // Through the projection h_t = W_hr h_cell.
            match (&self.weights.w_hr, self.tape.h_cell, &mut acc.w_hr) {
                (Some(w_hr), Some(h_cell), Some(g_hr)) => {
                    let h_cell = &h_cell[row * hidden..(row + 1) * hidden];
                    dh_cell.fill(0.0);
                    for (p, &d) in dh.iter().enumerate() {
                        let w_row = &w_hr[p * hidden..(p + 1) * hidden];
                        let g_row = &mut g_hr[p * hidden..(p + 1) * hidden];
                        for k in 0..hidden {
                            g_row[k] += d * wide(h_cell[k]);
                            dh_cell[k] += wide(w_row[k]) * d;
                        }
                    }
                }
                _ => dh_cell.copy_from_slice(dh),
            }

            // Through the cell and the gates, to the pre-activations dz (rows i, f, g, o).
            let gates = &self.tape.gates[row * g4..(row + 1) * g4];
            let tanh_c = &self.tape.tanh_c[row * hidden..(row + 1) * hidden];
            let cs = (self.index * self.batch + b) * hidden;
            let c_prev = match prev_row {
                Some(p) => &self.tape.c[p * hidden..(p + 1) * hidden],
                None => &self.c0[cs..cs + hidden],
            };
            for k in 0..hidden {
                let i = wide(gates[k]);
                let f = wide(gates[hidden + k]);
                let g = wide(gates[2 * hidden + k]);
                let o = wide(gates[3 * hidden + k]);
                let tc = wide(tanh_c[k]);
                dc[k] += dh_cell[k] * o * (1.0 - tc * tc);
                dz[k] = dc[k] * g * i * (1.0 - i);
                dz[hidden + k] = dc[k] * wide(c_prev[k]) * f * (1.0 - f);
                dz[2 * hidden + k] = dc[k] * i * (1.0 - g * g);
                dz[3 * hidden + k] = dh_cell[k] * tc * o * (1.0 - o);
                dc[k] *= f;
            }

            if let Some(bias) = &mut acc.bias {
                for (g, &d) in bias.iter_mut().zip(&dz) {
                    *g += d;
                }
            }

            // W_ih and the layer input.
            let x = &self.input[row * in_size..(row + 1) * in_size];
            let dx = &mut d_in[row * in_size..(row + 1) * in_size];
            for (r, &d) in dz.iter().enumerate() {
                let w_row = &self.weights.w_ih[r * in_size..(r + 1) * in_size];
                let g_row = &mut acc.w_ih[r * in_size..(r + 1) * in_size];
                for j in 0..in_size {
                    g_row[j] += d * wide(x[j]);
                    dx[j] += wide(w_row[j]) * d;
                }
            }

            // W_hh and the previous hidden state, whose gradient is carried on.
            let hs = (self.index * self.batch + b) * h_out;
            let h_prev = match prev_row {
                Some(p) => &self.output[p * self.out_size + self.dir * h_out..][..h_out],
                None => &self.h0[hs..hs + h_out],
            };
            dh.fill(0.0);
            for (r, &d) in dz.iter().enumerate() {
                let w_row = &self.weights.w_hh[r * h_out..(r + 1) * h_out];
                let g_row = &mut acc.w_hh[r * h_out..(r + 1) * h_out];
                for j in 0..h_out {
                    g_row[j] += d * wide(h_prev[j]);
                    dh[j] += wide(w_row[j]) * d;
                }
            }
        }
    }
}

impl<T: Float + Default> LstmBackward<T> for NaiveEngine<T> {
    fn forward_train(
        &self,
        input: &Tensor<T>,
        state: Option<&LstmState<T>>,
        lengths: Option<&[usize]>,
        tape: &mut TrainingTape<T>,
    ) -> Result<LstmOutput<T>> {
        NaiveEngine::forward_train(self, input, state, lengths, tape)
    }

    fn backward(
        &self,
        tape: &TrainingTape<T>,
        grads: &GradOutputs<'_, T>,
    ) -> Result<LstmGradients<T>> {
        NaiveEngine::backward(self, tape, grads)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use lstm_core::{LstmConfig, LstmEngine, LstmWeights, Operand, ParamKind, SplitMix64};

    fn data(n: usize, seed: u64, scale: f64) -> Vec<f64> {
        let mut rng = SplitMix64::new(seed);
        (0..n).map(|_| scale * rng.next_signed_unit()).collect()
    }

    fn tensor(shape: &[usize], seed: u64, scale: f64) -> Tensor<f64> {
        Tensor::new(shape.to_vec(), data(shape.iter().product(), seed, scale)).unwrap()
    }

    /// One call of a test: model, input, state, lengths and upstream gradients.
    struct Case {
        engine: NaiveEngine<f64>,
        x: Tensor<f64>,
        state: Option<LstmState<f64>>,
        lengths: Option<Vec<usize>>,
        gy: Tensor<f64>,
        ghn: Option<Tensor<f64>>,
        gcn: Option<Tensor<f64>>,
    }

    /// A case for `config` with `t` steps and `b` sequences (`None`: unbatched).
    fn case(
        config: LstmConfig,
        t: usize,
        b: Option<usize>,
        state: bool,
        lengths: Option<Vec<usize>>,
        final_grads: bool,
        seed: u64,
    ) -> Case {
        let weights = LstmWeights::random_uniform(config.clone(), seed, 0.7).unwrap();
        let engine = NaiveEngine::new(weights).unwrap();
        let i = config.input_size;
        let x_shape = match b {
            None => vec![t, i],
            Some(b) if config.batch_first => vec![b, t, i],
            Some(b) => vec![t, b, i],
        };
        let x = tensor(&x_shape, seed + 1, 1.0);
        let s = |n: usize| match b {
            Some(b) => vec![config.num_cells(), b, n],
            None => vec![config.num_cells(), n],
        };
        let state = state.then(|| LstmState {
            h: tensor(&s(config.h_out()), seed + 2, 0.5),
            c: tensor(&s(config.hidden_size), seed + 3, 0.5),
        });
        let out = engine
            .forward(&x, state.as_ref(), lengths.as_deref())
            .unwrap();
        Case {
            gy: tensor(out.output.shape(), seed + 4, 1.0),
            ghn: final_grads.then(|| tensor(out.h_n.shape(), seed + 5, 1.0)),
            gcn: final_grads.then(|| tensor(out.c_n.shape(), seed + 6, 1.0)),
            engine,
            x,
            state,
            lengths,
        }
    }

    impl Case {
        fn grads(&self) -> GradOutputs<'_, f64> {
            GradOutputs {
                grad_output: &self.gy,
                grad_h_n: self.ghn.as_ref(),
                grad_c_n: self.gcn.as_ref(),
            }
        }

        /// L = Σ gy·output + Σ ghn·h_n + Σ gcn·c_n, whose gradients the backward computes.
        fn loss(
            &self,
            engine: &NaiveEngine<f64>,
            x: &Tensor<f64>,
            s: Option<&LstmState<f64>>,
        ) -> f64 {
            let out = engine.forward(x, s, self.lengths.as_deref()).unwrap();
            let dot = |a: &Tensor<f64>, b: Option<&Tensor<f64>>| {
                b.map_or(0.0, |b| {
                    a.data().iter().zip(b.data()).map(|(x, y)| x * y).sum()
                })
            };
            dot(&out.output, Some(&self.gy))
                + dot(&out.h_n, self.ghn.as_ref())
                + dot(&out.c_n, self.gcn.as_ref())
        }

        fn backward(&self) -> LstmGradients<f64> {
            let mut tape = TrainingTape::new();
            self.engine
                .forward_train(
                    &self.x,
                    self.state.as_ref(),
                    self.lengths.as_deref(),
                    &mut tape,
                )
                .unwrap();
            self.engine.backward(&tape, &self.grads()).unwrap()
        }
    }

    const EPS: f64 = 1e-5;

    fn check(what: &str, analytic: f64, numeric: f64) {
        let err = (analytic - numeric).abs();
        assert!(
            err <= 1e-7 * (1.0 + numeric.abs()),
            "{what}: backward gives {analytic}, finite differences {numeric} (error {err:e})"
        );
    }

    /// Central differences of the loss in every input, state and parameter element against
    /// the backward's gradients.
    fn finite_difference_check(c: &Case) {
        let grads = c.backward();
        let state = c.state.as_ref();
        let central = |f: &dyn Fn(f64) -> f64| (f(EPS) - f(-EPS)) / (2.0 * EPS);

        for e in 0..c.x.len() {
            let numeric = central(&|d| {
                let mut x = c.x.clone();
                x.data_mut()[e] += d;
                c.loss(&c.engine, &x, state)
            });
            check(
                &format!("grad_input[{e}]"),
                grads.grad_input.data()[e],
                numeric,
            );
        }

        // The initial state: the given one, or the zero state when none was given.
        let zero_state = || {
            let batch = (c.x.rank() == 3)
                .then(|| c.x.shape()[if c.engine.config().batch_first { 0 } else { 1 }]);
            LstmState::zeros(c.engine.config(), batch).unwrap()
        };
        let s0 = state.cloned().unwrap_or_else(zero_state);
        for (which, grad) in [(0, &grads.grad_h0), (1, &grads.grad_c0)] {
            for e in 0..grad.len() {
                let numeric = central(&|d| {
                    let mut s = s0.clone();
                    let t = if which == 0 { &mut s.h } else { &mut s.c };
                    t.data_mut()[e] += d;
                    c.loss(&c.engine, &c.x, Some(&s))
                });
                check(&format!("grad state {which}[{e}]"), grad.data()[e], numeric);
            }
        }

        let config = c.engine.config().clone();
        let weights = c.engine.weights();
        for (index, cell) in weights.cells().iter().enumerate() {
            let (layer, dir) = (
                index / config.num_directions(),
                index % config.num_directions(),
            );
            for kind in ParamKind::ALL {
                let Some(values) = cell.get(kind) else {
                    assert!(grads.cell(layer, dir).unwrap().get(kind).is_none());
                    continue;
                };
                let analytic = grads.cell(layer, dir).unwrap().get(kind).unwrap();
                assert_eq!(analytic.len(), values.len());
                for e in 0..values.len() {
                    let numeric = central(&|d| {
                        let mut cells = weights.cells().to_vec();
                        let target = &mut cells[index];
                        let v = match kind {
                            ParamKind::WeightIh => &mut target.w_ih,
                            ParamKind::WeightHh => &mut target.w_hh,
                            ParamKind::BiasIh => target.b_ih.as_mut().unwrap(),
                            ParamKind::BiasHh => target.b_hh.as_mut().unwrap(),
                            ParamKind::WeightHr => target.w_hr.as_mut().unwrap(),
                        };
                        v[e] += d;
                        let e2 = NaiveEngine::new(LstmWeights::new(config.clone(), cells).unwrap())
                            .unwrap();
                        c.loss(&e2, &c.x, state)
                    });
                    check(
                        &format!("{}[{e}]", kind.name(layer, dir == 1)),
                        analytic[e],
                        numeric,
                    );
                }
            }
        }
    }

    #[test]
    fn finite_differences_basic() {
        let c = case(LstmConfig::new(3, 4), 4, Some(2), false, None, false, 1);
        finite_difference_check(&c);
    }

    #[test]
    fn finite_differences_no_bias_state_final_grads() {
        let c = case(
            LstmConfig::new(2, 3).with_bias(false),
            5,
            Some(2),
            true,
            None,
            true,
            2,
        );
        finite_difference_check(&c);
    }

    #[test]
    fn finite_differences_projection_layers() {
        let config = LstmConfig::new(3, 4).with_proj_size(2).with_num_layers(3);
        finite_difference_check(&case(config, 4, Some(2), true, None, true, 3));
    }

    #[test]
    fn finite_differences_bidirectional_projection_two_layers() {
        let config = LstmConfig::new(2, 3)
            .with_bidirectional(true)
            .with_proj_size(2)
            .with_num_layers(2);
        finite_difference_check(&case(config, 4, Some(2), true, None, true, 4));
    }

    #[test]
    fn finite_differences_lengths_batch_first_bidirectional() {
        let config = LstmConfig::new(2, 3)
            .with_bidirectional(true)
            .with_num_layers(2)
            .with_batch_first(true);
        // Unsorted, with 1 and T; the output has T steps.
        let c = case(
            config.clone(),
            5,
            Some(3),
            true,
            Some(vec![3, 5, 1]),
            true,
            5,
        );
        finite_difference_check(&c);
        // Every length < T: the output has max(lengths) = 4 steps.
        let c = case(config, 5, Some(3), false, Some(vec![2, 4, 1]), true, 6);
        assert_eq!(c.gy.shape(), &[3, 4, 6]);
        finite_difference_check(&c);
    }

    #[test]
    fn finite_differences_lengths_projection_unidirectional() {
        let config = LstmConfig::new(3, 3).with_proj_size(1);
        finite_difference_check(&case(
            config,
            4,
            Some(3),
            true,
            Some(vec![4, 1, 2]),
            true,
            7,
        ));
    }

    #[test]
    fn finite_differences_unbatched() {
        let config = LstmConfig::new(2, 3)
            .with_bidirectional(true)
            .with_num_layers(2);
        finite_difference_check(&case(config.clone(), 4, None, true, None, true, 8));
        finite_difference_check(&case(
            config.with_batch_first(true),
            3,
            None,
            false,
            None,
            false,
            9,
        ));
    }

    /// forward_train runs the very step function of forward: equal bits, for f64 and f32.
    #[test]
    fn forward_train_equals_forward_exactly() {
        let configs = [
            (LstmConfig::new(3, 5), Some(vec![4, 2, 6])),
            (
                LstmConfig::new(3, 5).with_bias(false).with_num_layers(2),
                None,
            ),
            (
                LstmConfig::new(4, 5)
                    .with_bidirectional(true)
                    .with_proj_size(3)
                    .with_num_layers(2)
                    .with_batch_first(true),
                Some(vec![2, 6, 1]),
            ),
        ];
        let mut tape64 = TrainingTape::new();
        let mut tape32 = TrainingTape::new();
        for (seed, (config, lengths)) in configs.into_iter().enumerate() {
            let c = case(
                config.clone(),
                6,
                Some(3),
                true,
                lengths.clone(),
                false,
                20 + seed as u64,
            );
            let want = c
                .engine
                .forward(&c.x, c.state.as_ref(), lengths.as_deref())
                .unwrap();
            let got = c
                .engine
                .forward_train(&c.x, c.state.as_ref(), lengths.as_deref(), &mut tape64)
                .unwrap();
            assert_eq!(got, want);

            let e32 = NaiveEngine::new(c.engine.weights().cast::<f32>()).unwrap();
            let to32 = |t: &Tensor<f64>| t.map(|&v| v as f32);
            let x = to32(&c.x);
            let s = c.state.as_ref().map(|s| LstmState {
                h: to32(&s.h),
                c: to32(&s.c),
            });
            let want = e32.forward(&x, s.as_ref(), lengths.as_deref()).unwrap();
            let got = e32
                .forward_train(&x, s.as_ref(), lengths.as_deref(), &mut tape32)
                .unwrap();
            assert_eq!(got, want);
        }
    }

    /// Padded steps: zero input gradient, and the output gradient there is ignored.
    #[test]
    fn padded_steps_get_zero_gradient() {
        let config = LstmConfig::new(2, 3)
            .with_bidirectional(true)
            .with_num_layers(2);
        let mut c = case(config, 5, Some(3), true, Some(vec![5, 2, 3]), true, 30);
        let base = c.backward();
        for b in 0..3 {
            let len = c.lengths.as_ref().unwrap()[b];
            for t in len..5 {
                let gx = &base.grad_input.data()[(t * 3 + b) * 2..(t * 3 + b + 1) * 2];
                assert!(gx.iter().all(|&v| v == 0.0), "step {t} of {b}: {gx:?}");
            }
        }
        // Change the output gradient at padded steps only: nothing changes.
        for t in 2..5 {
            c.gy.data_mut()[(t * 3 + 1) * 6..(t * 3 + 2) * 6].fill(1e6);
        }
        assert_eq!(c.backward(), base);
    }

    #[test]
    fn biases_share_a_gradient_and_tapes_are_reusable() {
        let config = LstmConfig::new(3, 4).with_num_layers(2);
        let big = case(config.clone(), 7, Some(4), true, None, true, 40);
        let small = case(config, 2, Some(1), false, None, false, 41);
        let mut tape = TrainingTape::new();
        for c in [&big, &small, &big] {
            c.engine
                .forward_train(&c.x, c.state.as_ref(), c.lengths.as_deref(), &mut tape)
                .unwrap();
            let g = c.engine.backward(&tape, &c.grads()).unwrap();
            assert_eq!(g, c.backward(), "a reused tape gives a fresh tape's result");
            for cell in g.params().cells() {
                assert_eq!(cell.b_ih, cell.b_hh);
            }
        }
    }

    #[test]
    fn unbatched_equals_a_batch_of_one() {
        let config = LstmConfig::new(2, 3)
            .with_bidirectional(true)
            .with_proj_size(2);
        let c = case(config, 4, None, true, None, true, 50);
        let g = c.backward();
        let batched = |t: &Tensor<f64>| {
            let s = t.shape();
            t.clone().reshape([s[0], 1, s[1]]).unwrap()
        };
        let x = batched(&c.x);
        let s = c.state.as_ref().map(|s| LstmState {
            h: batched(&s.h),
            c: batched(&s.c),
        });
        let (gy, ghn, gcn) = (
            batched(&c.gy),
            batched(c.ghn.as_ref().unwrap()),
            batched(c.gcn.as_ref().unwrap()),
        );
        let mut tape = TrainingTape::new();
        c.engine
            .forward_train(&x, s.as_ref(), None, &mut tape)
            .unwrap();
        let gb = c
            .engine
            .backward(&tape, &GradOutputs::new(&gy).with_h_n(&ghn).with_c_n(&gcn))
            .unwrap();
        assert_eq!(gb.grad_input.data(), g.grad_input.data());
        assert_eq!(gb.grad_h0.data(), g.grad_h0.data());
        assert_eq!(gb.grad_c0.shape(), &[2, 1, 3]);
        assert_eq!(gb.params(), g.params());
    }

    #[test]
    fn errors_are_typed() {
        let c = case(LstmConfig::new(2, 3), 4, Some(2), false, None, true, 60);
        let empty = TrainingTape::new();
        assert!(matches!(
            c.engine.backward(&empty, &c.grads()),
            Err(LstmError::TapeMismatch { .. })
        ));
        let mut tape = TrainingTape::new();
        c.engine.forward_train(&c.x, None, None, &mut tape).unwrap();
        let other = NaiveEngine::new(LstmWeights::<f64>::random(LstmConfig::new(2, 4), 1).unwrap())
            .unwrap();
        assert!(matches!(
            other.backward(&tape, &c.grads()),
            Err(LstmError::TapeMismatch { .. })
        ));
        let bad = tensor(&[4, 2, 4], 1, 1.0);
        assert!(matches!(
            c.engine.backward(&tape, &GradOutputs::new(&bad)),
            Err(LstmError::ShapeMismatch { what, expected, found })
                if what == Operand::GradOutput.into() && expected == vec![4, 2, 3] && found == vec![4, 2, 4]
        ));
        let bad_hn = tensor(&[1, 3, 3], 1, 1.0);
        assert!(matches!(
            c.engine.backward(&tape, &GradOutputs::new(&c.gy).with_h_n(&bad_hn)),
            Err(LstmError::ShapeMismatch { what, .. }) if what == Operand::GradHN.into()
        ));
        // A recording begun but not completed (an engine failed midway) is refused.
        tape.begin(&SequenceBatch::new(c.engine.config(), &c.x, None, None).unwrap())
            .unwrap();
        assert!(
            c.engine.backward(&tape, &c.grads()).is_err(),
            "begun but not complete"
        );
    }

    /// Saturated gates and NaN inputs: finite where the forward is, NaN where it is NaN.
    #[test]
    fn saturation_stays_finite() {
        let config = LstmConfig::new(3, 4);
        let e =
            NaiveEngine::new(LstmWeights::<f32>::random_uniform(config, 1, 50.0).unwrap()).unwrap();
        let x = Tensor::new([20, 1, 3], vec![1e4f32; 60]).unwrap();
        let mut tape = TrainingTape::new();
        let out = e.forward_train(&x, None, None, &mut tape).unwrap();
        let gy = out.output.map(|_| 1.0f32);
        let g = e.backward(&tape, &GradOutputs::new(&gy)).unwrap();
        assert!(g.grad_input.data().iter().all(|v| v.is_finite()));
        assert!(g.params().cells()[0].w_hh.iter().all(|v| v.is_finite()));
    }
}
