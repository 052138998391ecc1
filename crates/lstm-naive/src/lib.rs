//! The reference engine of `lstm-kernels`: `torch.nn.LSTM`'s equations, loop by loop.
//!
//! [`NaiveEngine`] is written to be read, not to be fast. It is generic over
//! [`num_traits::Float`]: weights, states and outputs are held in `T`, and each time step is
//! evaluated in f64 from their exact values, with one rounding to `T` per new state element.
//! `NaiveEngine<f64>` is therefore the f64 oracle every fast engine is checked against, and
//! `NaiveEngine<f32>` the most accurate f32 LSTM possible (its only errors are the roundings of
//! the state it carries), the yardstick for f32 engines.
//!
//! For one (layer, direction) cell and one time step, with gate rows in PyTorch's order
//! i, f, g, o:
//!
//! ```text
//! i = σ(W_ii x + b_ii + W_hi h + b_hi)     f = σ(W_if x + b_if + W_hf h + b_hf)
//! g = tanh(W_ig x + b_ig + W_hg h + b_hg)  o = σ(W_io x + b_io + W_ho h + b_ho)
//! c' = f ⊙ c + i ⊙ g                       h' = o ⊙ tanh(c')   (h' = W_hr h' when proj_size > 0)
//! ```
//!
//! The ONNX-only cell options of [`LstmConfig`] are defined here too, per the ONNX `LSTM`
//! operator: peepholes (`i = σ(… + P_i ⊙ c)`, `f = σ(… + P_f ⊙ c)`, `o = σ(… + P_o ⊙ c')`),
//! `clip` (each gate pre-activation, peephole term included, clamped to `[-clip, clip]`),
//! `input_forget` (`f = 1 − i`) and a reverse-only direction. The backward refuses them
//! ([`LstmError::Unsupported`](lstm_core::LstmError::Unsupported)).
//!
//! Training: [`NaiveEngine::forward_train`] records the forward in a
//! [`TrainingTape`](lstm_core::TrainingTape) and [`NaiveEngine::backward`] returns the gradients
//! of every input and parameter (BPTT, the textbook equations, also evaluated in f64).
//!
//! ```
//! use lstm_core::{LstmConfig, LstmEngine, LstmWeights, Tensor};
//! use lstm_naive::NaiveEngine;
//!
//! let config = LstmConfig::new(3, 4).with_bidirectional(true);
//! let engine = NaiveEngine::new(LstmWeights::<f64>::random(config, 7)?)?;
//! let x = Tensor::new([5, 2, 3], vec![0.25; 30])?; // [T, B, I]
//! let out = engine.forward(&x, None, None)?;
//! assert_eq!(out.output.shape(), &[5, 2, 8]); // [T, B, 2 * H]
//! assert_eq!(out.h_n.shape(), &[2, 2, 4]);    // [L * D, B, H]
//! # Ok::<(), lstm_core::LstmError>(())
//! ```
#![forbid(unsafe_code)]

use lstm_core::tensor::{checked_numel, try_filled_vec};
use lstm_core::{
    check_step, BatchOutput, CellWeights, LstmConfig, LstmEngine, LstmState, LstmWeights, Result,
    SequenceBatch,
};
use num_traits::Float;

/// The reference LSTM engine, generic over the float type.
#[derive(Clone, Debug)]
pub struct NaiveEngine<T> {
    weights: LstmWeights<T>,
}

impl<T: Float> NaiveEngine<T> {
    /// Builds the engine over `weights` (already validated against their config).
    pub fn new(weights: LstmWeights<T>) -> Result<Self> {
        weights.config().validate()?;
        Ok(NaiveEngine { weights })
    }

    /// The weights the engine runs.
    pub fn weights(&self) -> &LstmWeights<T> {
        &self.weights
    }
}

/// The logistic function `1 / (1 + e^{-x})`; saturates cleanly to 0 and 1, NaN stays NaN.
pub fn sigmoid<T: Float>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

/// Widens a value to f64 (exact for f32, f16-derived and f64 values).
fn wide<T: Float>(v: T) -> f64 {
    v.to_f64().unwrap_or(f64::NAN)
}

/// Rounds an f64 result to `T` (once).
fn narrow<T: Float>(v: f64) -> T {
    T::from(v).unwrap_or_else(T::nan)
}

/// `Σ_j a[j]·b[j]` in f64, left to right: each product of two f32 values is exact in f64.
fn dot<T: Float>(a: &[T], b: &[T]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| wide(x) * wide(y)).sum()
}

/// One time step of one (layer, direction) cell: reads `x` (`I_k`) and the state `h`
/// (`H_out`), `c` (`H`); overwrites `h` and `c` with the new state.
///
/// The step is evaluated in f64 from the exact f64 values of its `T` inputs, and each new state
/// element is rounded to `T` once. For `T = f64` this is the plain f64 evaluation, the oracle.
/// For `T = f32` it is the most accurate f32 LSTM there is: its only errors are the roundings
/// of the state it carries from step to step. Why not plain f32 arithmetic: with saturated
/// gates an LSTM is badly conditioned, and the independent f32 roundings of the dot products
/// and activations can land further from PyTorch's float64 than 4× PyTorch's own f32 error
/// (measured: 0.35% of random saturating cases through `lstm run`). A reference must sit closer
/// to the truth than any engine it judges.
fn cell_step<T: Float>(
    config: &LstmConfig,
    cell: &CellWeights<T>,
    peephole: Option<&[T]>,
    x: &[T],
    h: &mut [T],
    c: &mut [T],
) {
    cell_step_recorded(config, cell, peephole, x, h, c, |_, _| {});
}

/// [`cell_step`], which also hands each unit's f64 values to `record` as
/// `(k, [i, f, g, o, c', tanh(c')])`: the training forward keeps them for the backward. One
/// body for both, so that `forward_train` computes exactly what `forward` does.
///
/// `peephole` (`[3H]`, rows i, f, o) and the config's `clip` and `input_forget` are ONNX's
/// cell options; `None`/unset they leave PyTorch's equations unchanged.
fn cell_step_recorded<T: Float>(
    config: &LstmConfig,
    cell: &CellWeights<T>,
    peephole: Option<&[T]>,
    x: &[T],
    h: &mut [T],
    c: &mut [T],
    mut record: impl FnMut(usize, [f64; 6]),
) {
    let hidden = config.hidden_size;
    let (in_size, h_out) = (x.len(), h.len());

    // gates[r] = W_ih[r]·x + b_ih[r] + W_hh[r]·h + b_hh[r], rows in the order i, f, g, o.
    let gates: Vec<f64> = (0..4 * hidden)
        .map(|r| {
            let bias = |b: &Option<Vec<T>>| b.as_ref().map_or(0.0, |b| wide(b[r]));
            bias(&cell.b_ih)
                + dot(&cell.w_ih[r * in_size..(r + 1) * in_size], x)
                + bias(&cell.b_hh)
                + dot(&cell.w_hh[r * h_out..(r + 1) * h_out], h)
        })
        .collect();

    // ONNX: the pre-activation, peephole term included, clamped to [-clip, clip].
    let clip = |z: f64| match config.clip {
        Some(limit) => z.clamp(-f64::from(limit), f64::from(limit)),
        None => z,
    };
    let peep = |gate: usize, k: usize, cell_value: f64| {
        peephole.map_or(0.0, |p| wide(p[gate * hidden + k]) * cell_value)
    };
    let mut h_cell = vec![0.0f64; hidden]; // o ⊙ tanh(c'), before any projection
    for k in 0..hidden {
        let c_prev = wide(c[k]);
        let i = sigmoid(clip(gates[k] + peep(0, k, c_prev)));
        let f = if config.input_forget {
            1.0 - i
        } else {
            sigmoid(clip(gates[hidden + k] + peep(1, k, c_prev)))
        };
        let g = clip(gates[2 * hidden + k]).tanh();
        let c_new = f * c_prev + i * g;
        let o = sigmoid(clip(gates[3 * hidden + k] + peep(2, k, c_new)));
        let tanh_c = c_new.tanh();
        h_cell[k] = o * tanh_c;
        c[k] = narrow(c_new);
        record(k, [i, f, g, o, c_new, tanh_c]);
    }

    match &cell.w_hr {
        // h' = W_hr (o ⊙ tanh(c')), W_hr: [P, H].
        Some(w_hr) => {
            for (p, h_p) in h.iter_mut().enumerate() {
                let row = &w_hr[p * hidden..(p + 1) * hidden];
                *h_p = narrow(row.iter().zip(&h_cell).map(|(&w, &v)| wide(w) * v).sum());
            }
        }
        None => {
            for (h_k, &v) in h.iter_mut().zip(&h_cell) {
                *h_k = narrow(v);
            }
        }
    }
}

/// The element count of `dims`; an overflow becomes `usize::MAX`, which `try_filled_vec`
/// refuses with an allocation error.
fn numel(dims: &[usize]) -> usize {
    checked_numel(dims).unwrap_or(usize::MAX)
}

impl<T: Float + Default> LstmEngine<T> for NaiveEngine<T> {
    fn config(&self) -> &LstmConfig {
        self.weights.config()
    }

    fn name(&self) -> &'static str {
        "naive"
    }

    fn forward_batch(&self, call: &SequenceBatch<'_, T>) -> Result<BatchOutput<T>> {
        let config = self.weights.config();
        call.ensure_config(config)?;
        let (seq_len, batch) = (call.seq_len(), call.batch());
        let (dirs, hidden, h_out) = (config.num_directions(), config.hidden_size, config.h_out());
        let out_size = dirs * h_out;

        let mut h_n = try_filled_vec("h_n", numel(&[config.num_cells(), batch, h_out]), T::zero())?;
        let mut c_n = try_filled_vec(
            "c_n",
            numel(&[config.num_cells(), batch, hidden]),
            T::zero(),
        )?;
        // The input of the current layer, [T, B, I_k]; layer k+1 reads layer k's output.
        let mut layer_input: Vec<T> = call.x().to_vec();

        for layer in 0..config.num_layers {
            let in_size = config.layer_input_size(layer);
            let mut layer_output =
                try_filled_vec("output", numel(&[seq_len, batch, out_size]), T::zero())?;
            for dir in 0..dirs {
                let Some(cell) = self.weights.cell(layer, dir) else {
                    continue; // unreachable: the weights were validated against the config
                };
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

                    // A sequence of length `len` occupies steps 0..len; the reverse direction
                    // starts at its own last valid step. Steps past `len` stay 0 in the output.
                    let len = call.length(b).unwrap_or(0); // b < B: always Some
                    let steps: Box<dyn Iterator<Item = usize>> = if config.reads_backwards(dir) {
                        Box::new((0..len).rev())
                    } else {
                        Box::new(0..len)
                    };
                    let peephole = self.weights.peephole(layer, dir);
                    for t in steps {
                        let x_start = (t * batch + b) * in_size;
                        cell_step(
                            config,
                            cell,
                            peephole,
                            &layer_input[x_start..x_start + in_size],
                            &mut h,
                            &mut c,
                        );
                        let o_start = (t * batch + b) * out_size + dir * h_out;
                        layer_output[o_start..o_start + h_out].copy_from_slice(&h);
                    }
                    h_n[hs..hs + h_out].copy_from_slice(&h);
                    c_n[cs..cs + hidden].copy_from_slice(&c);
                }
            }
            layer_input = layer_output;
        }

        Ok(BatchOutput {
            output: layer_input,
            h_n,
            c_n,
        })
    }

    fn step(&self, x_t: &[T], state: &mut LstmState<T>, output: &mut [T]) -> Result<()> {
        let config = self.weights.config();
        let batch = check_step(config, x_t, state, output)?;
        let (hidden, h_out) = (config.hidden_size, config.h_out());
        let mut layer_input = x_t.to_vec();
        for layer in 0..config.num_layers {
            let Some(cell) = self.weights.cell(layer, 0) else {
                continue; // unreachable: the weights were validated against the config
            };
            let in_size = config.layer_input_size(layer);
            let mut next_input = vec![T::zero(); batch * h_out];
            for b in 0..batch {
                let hs = (layer * batch + b) * h_out;
                let cs = (layer * batch + b) * hidden;
                // h and c are two tensors of the state: disjoint borrows, updated in place.
                let h = &mut state.h.data_mut()[hs..hs + h_out];
                let c = &mut state.c.data_mut()[cs..cs + hidden];
                cell_step(
                    config,
                    cell,
                    self.weights.peephole(layer, 0),
                    &layer_input[b * in_size..(b + 1) * in_size],
                    h,
                    c,
                );
                next_input[b * h_out..(b + 1) * h_out].copy_from_slice(h);
            }
            layer_input = next_input;
        }
        output.copy_from_slice(&layer_input);
        Ok(())
    }
}

mod backward;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use lstm_core::{Direction, Tensor};

    fn engine(config: LstmConfig, seed: u64) -> NaiveEngine<f64> {
        NaiveEngine::new(LstmWeights::random_uniform(config, seed, 0.6).unwrap()).unwrap()
    }

    fn data(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = lstm_core::SplitMix64::new(seed);
        (0..n).map(|_| rng.next_signed_unit()).collect()
    }

    /// With every weight and bias 0: i = f = o = ½, g = 0, so c' = c/2 and h' = tanh(c')/2,
    /// exactly, whatever the input.
    #[test]
    fn zero_weights_halve_the_cell() {
        let config = LstmConfig::new(2, 3);
        let zeros = LstmWeights::random_uniform(config.clone(), 0, 0.0).unwrap();
        let e = NaiveEngine::new(zeros).unwrap();
        let x = Tensor::new([2, 1, 2], vec![5.0, -3.0, 1.0, 2.0]).unwrap();
        let state = LstmState {
            h: Tensor::new([1, 1, 3], vec![9.0, 9.0, 9.0]).unwrap(),
            c: Tensor::new([1, 1, 3], vec![4.0, -8.0, 0.0]).unwrap(),
        };
        let out = e.forward(&x, Some(&state), None).unwrap();
        assert_eq!(out.c_n.data(), &[1.0, -2.0, 0.0]);
        let h: Vec<f64> = [1.0f64, -2.0, 0.0].iter().map(|c| 0.5 * c.tanh()).collect();
        assert_eq!(out.h_n.data(), h.as_slice());
        assert_eq!(&out.output.data()[3..], h.as_slice());
    }

    /// One step of a 1-unit cell, computed by hand.
    #[test]
    fn one_unit_by_hand() {
        let config = LstmConfig::new(1, 1);
        let cell = CellWeights {
            w_ih: vec![0.5, -1.0, 2.0, 0.25],
            w_hh: vec![1.0, 0.5, -0.5, 2.0],
            b_ih: Some(vec![0.1, 0.2, 0.3, 0.4]),
            b_hh: Some(vec![-0.1, 0.0, 0.1, -0.2]),
            w_hr: None,
        };
        let e = NaiveEngine::new(LstmWeights::new(config, vec![cell]).unwrap()).unwrap();
        let (x, h, c) = (0.8f64, -0.3f64, 0.6f64);
        let s = |v: f64| 1.0 / (1.0 + (-v).exp());
        let i = s(0.5 * x + 0.1 + 1.0 * h - 0.1);
        let f = s(-x + 0.2 + 0.5 * h);
        let g = (2.0 * x + 0.3 - 0.5 * h + 0.1).tanh();
        let o = s(0.25 * x + 0.4 + 2.0 * h - 0.2);
        let c1 = f * c + i * g;
        let h1 = o * c1.tanh();
        let mut state = LstmState {
            h: Tensor::new([1, 1], vec![h]).unwrap(),
            c: Tensor::new([1, 1], vec![c]).unwrap(),
        };
        let mut out = [f64::NAN];
        e.step(&[x], &mut state, &mut out).unwrap();
        assert!((c1 - state.c.data()[0]).abs() < 1e-15);
        assert!((h1 - out[0]).abs() < 1e-15);
        assert_eq!(out[0], state.h.data()[0]);
    }

    /// One step of a 1-unit cell with ONNX's peepholes, clip and coupled gates, by hand.
    #[test]
    fn onnx_cell_options_by_hand() {
        let cell = CellWeights {
            w_ih: vec![0.5, -1.0, 2.0, 0.25],
            w_hh: vec![1.0, 0.5, -0.5, 2.0],
            b_ih: Some(vec![0.1, 0.2, 0.3, 0.4]),
            b_hh: Some(vec![-0.1, 0.0, 0.1, -0.2]),
            w_hr: None,
        };
        let (x, h, c) = (0.8f64, -0.3f64, 0.6f64);
        let s = |v: f64| 1.0 / (1.0 + (-v).exp());
        let (p_i, p_f, p_o) = (0.7, -0.4, 1.5);
        let z_i = 0.5 * x + 1.0 * h;
        let z_f = -x + 0.2 + 0.5 * h;
        let z_g = 2.0 * x + 0.4 - 0.5 * h;
        let z_o = 0.25 * x + 0.2 + 2.0 * h;
        for (clip, input_forget) in [(None, false), (Some(0.3f32), false), (None, true)] {
            let cl = |z: f64| clip.map_or(z, |l| z.clamp(-f64::from(l), f64::from(l)));
            let i = s(cl(z_i + p_i * c));
            let f = if input_forget {
                1.0 - i
            } else {
                s(cl(z_f + p_f * c))
            };
            let c1 = f * c + i * cl(z_g).tanh();
            let h1 = s(cl(z_o + p_o * c1)) * c1.tanh();
            let config = LstmConfig::new(1, 1)
                .with_peepholes(true)
                .with_clip(clip)
                .with_input_forget(input_forget);
            let w =
                LstmWeights::with_peepholes(config, vec![cell.clone()], vec![vec![p_i, p_f, p_o]])
                    .unwrap();
            let e = NaiveEngine::new(w).unwrap();
            let mut state = LstmState {
                h: Tensor::new([1, 1], vec![h]).unwrap(),
                c: Tensor::new([1, 1], vec![c]).unwrap(),
            };
            let mut out = [f64::NAN];
            e.step(&[x], &mut state, &mut out).unwrap();
            assert!(
                (c1 - state.c.data()[0]).abs() < 1e-15,
                "{clip:?} {input_forget}"
            );
            assert!((h1 - out[0]).abs() < 1e-15, "{clip:?} {input_forget}");
        }
    }

    /// A reverse-only LSTM is the reverse half of a bidirectional one; it cannot stream and
    /// cannot train.
    #[test]
    fn reverse_only_is_the_reverse_half() {
        let bi = engine(LstmConfig::new(2, 3).with_bidirectional(true), 6);
        let rev_cfg = LstmConfig::new(2, 3).with_direction(lstm_core::Direction::Reverse);
        let rev = NaiveEngine::new(
            LstmWeights::new(
                rev_cfg.clone(),
                vec![bi.weights().cell(0, 1).unwrap().clone()],
            )
            .unwrap(),
        )
        .unwrap();
        let (t, b) = (5, 2);
        let x = Tensor::new([t, b, 2], data(t * b * 2, 4)).unwrap();
        let lengths = [5, 3];
        let want = bi.forward(&x, None, Some(&lengths)).unwrap();
        let got = rev.forward(&x, None, Some(&lengths)).unwrap();
        for row in 0..t * b {
            assert_eq!(
                &got.output.data()[row * 3..row * 3 + 3],
                &want.output.data()[row * 6 + 3..row * 6 + 6]
            );
        }
        assert_eq!(got.h_n.data(), &want.h_n.data()[6..]);
        let mut state = LstmState::zeros(&rev_cfg, Some(1)).unwrap();
        assert!(matches!(
            rev.step(&[0.0; 2], &mut state, &mut [0.0; 3]),
            Err(lstm_core::LstmError::Unsupported(_))
        ));
        let mut tape = lstm_core::TrainingTape::new();
        assert!(matches!(
            rev.forward_train(&x, None, None, &mut tape),
            Err(lstm_core::LstmError::Unsupported(_))
        ));
    }

    /// Exact identities of the ONNX options over random configs: zero peepholes and a clip
    /// no pre-activation reaches change nothing; with input_forget the forget rows are unused;
    /// a reverse-only LSTM equals the forward one on the time-reversed input (full lengths).
    /// And the f32 engine stays within a few ULPs of the f64 one with every option on.
    #[test]
    fn onnx_option_identities() {
        for seed in 0..12u64 {
            let (i, h, t, b) = (1 + seed as usize % 4, 1 + seed as usize % 5, 3, 2);
            let dir = [
                Direction::Forward,
                Direction::Reverse,
                Direction::Bidirectional,
            ][seed as usize % 3];
            let base = LstmConfig::new(i, h)
                .with_num_layers(1 + seed as usize % 2)
                .with_direction(dir);
            let plain = engine(base.clone(), seed);
            let x = Tensor::new([t, b, i], data(t * b * i, seed + 100)).unwrap();
            let want = plain.forward(&x, None, Some(&[3, 2])).unwrap();
            let with = |config: LstmConfig, peep: f64| {
                let w = plain.weights();
                let p = vec![
                    vec![peep; 3 * h];
                    if config.peepholes {
                        config.num_cells()
                    } else {
                        0
                    }
                ];
                NaiveEngine::new(
                    LstmWeights::with_peepholes(config, w.cells().to_vec(), p).unwrap(),
                )
                .unwrap()
            };
            let zero_peep = with(base.clone().with_peepholes(true), 0.0);
            assert_eq!(zero_peep.forward(&x, None, Some(&[3, 2])).unwrap(), want);
            let wide_clip = with(base.clone().with_clip(Some(1e30)), 0.0);
            assert_eq!(wide_clip.forward(&x, None, Some(&[3, 2])).unwrap(), want);
            // input_forget: the forget rows do not matter.
            let coupled = with(base.clone().with_input_forget(true), 0.0);
            let mut cells = coupled.weights().cells().to_vec();
            for c in &mut cells {
                let n = c.w_ih.len() / 4;
                c.w_ih[n..2 * n].iter_mut().for_each(|v| *v = 7.0);
                c.b_ih.as_mut().unwrap()[h..2 * h]
                    .iter_mut()
                    .for_each(|v| *v = -3.0);
            }
            let changed = NaiveEngine::new(
                LstmWeights::new(coupled.weights().config().clone(), cells).unwrap(),
            )
            .unwrap();
            assert_eq!(
                changed.forward(&x, None, None).unwrap(),
                coupled.forward(&x, None, None).unwrap()
            );
            // f32 against f64 with every option on.
            let all = base
                .clone()
                .with_peepholes(true)
                .with_clip(Some(0.8))
                .with_input_forget(true);
            let w64 = LstmWeights::<f64>::random_uniform(all, seed, 0.9).unwrap();
            let w32 = w64.cast::<f32>();
            let e64 = NaiveEngine::new(w32.cast::<f64>()).unwrap();
            let e32 = NaiveEngine::new(w32).unwrap();
            let x32 = Tensor::new([t, b, i], x.data().iter().map(|&v| v as f32).collect()).unwrap();
            let x64 = Tensor::new(
                [t, b, i],
                x32.data().iter().map(|&v| f64::from(v)).collect(),
            )
            .unwrap();
            let (a, r) = (
                e32.forward(&x32, None, None).unwrap(),
                e64.forward(&x64, None, None).unwrap(),
            );
            for (&g, &w) in a.output.data().iter().zip(r.output.data()) {
                assert!(
                    (f64::from(g) - w).abs() <= 1e-6 + 1e-5 * w.abs(),
                    "{seed}: {g} {w}"
                );
            }
        }
        // Reverse-only = forward on the reversed sequence.
        let fwd = engine(LstmConfig::new(2, 3), 3);
        let rev = NaiveEngine::new(
            LstmWeights::new(
                LstmConfig::new(2, 3).with_direction(Direction::Reverse),
                fwd.weights().cells().to_vec(),
            )
            .unwrap(),
        )
        .unwrap();
        let x = Tensor::new([4, 2], data(8, 5)).unwrap();
        let xr: Vec<f64> = (0..4)
            .rev()
            .flat_map(|s| x.data()[s * 2..s * 2 + 2].to_vec())
            .collect();
        let a = rev.forward(&x, None, None).unwrap();
        let b = fwd
            .forward(&Tensor::new([4, 2], xr).unwrap(), None, None)
            .unwrap();
        assert_eq!(a.h_n, b.h_n);
        for s in 0..4 {
            assert_eq!(
                &a.output.data()[s * 3..s * 3 + 3],
                &b.output.data()[(3 - s) * 3..(4 - s) * 3]
            );
        }
    }

    #[test]
    fn projection_applies_w_hr() {
        let config = LstmConfig::new(2, 3).with_proj_size(2);
        let e = engine(config, 3);
        let x = Tensor::new([1, 1, 2], vec![0.3, -0.7]).unwrap();
        let out = e.forward(&x, None, None).unwrap();
        // From the zero state the recurrent term vanishes, so an unprojected cell with the same
        // W_ih and biases gives o ⊙ tanh(c') before the projection.
        let projected = e.weights().cells()[0].clone();
        let plain = CellWeights {
            w_hh: vec![0.0; 36],
            w_hr: None,
            ..projected.clone()
        };
        let (mut h_cell, mut c) = (vec![0.0; 3], vec![0.0; 3]);
        cell_step(
            &LstmConfig::new(2, 3),
            &plain,
            None,
            &[0.3, -0.7],
            &mut h_cell,
            &mut c,
        );
        let w_hr = projected.w_hr.unwrap();
        for p in 0..2 {
            let want: f64 = (0..3).map(|k| w_hr[p * 3 + k] * h_cell[k]).sum();
            assert!((out.output.data()[p] - want).abs() < 1e-15);
        }
        assert_eq!(out.c_n.data(), c.as_slice());
    }

    #[test]
    fn step_by_step_equals_forward() {
        let config = LstmConfig::new(3, 5).with_num_layers(3).with_proj_size(2);
        let e = engine(config.clone(), 11);
        let (t, b) = (6, 2);
        let x = Tensor::new([t, b, 3], data(t * b * 3, 1)).unwrap();
        let full = e.forward(&x, None, None).unwrap();
        let mut state = LstmState::zeros(&config, Some(b)).unwrap();
        let mut out = vec![0.0; b * 2];
        for step in 0..t {
            e.step(
                &x.data()[step * b * 3..(step + 1) * b * 3],
                &mut state,
                &mut out,
            )
            .unwrap();
            assert_eq!(
                out.as_slice(),
                &full.output.data()[step * b * 2..(step + 1) * b * 2]
            );
        }
        assert_eq!(state.h, full.h_n);
        assert_eq!(state.c, full.c_n);
    }

    #[test]
    fn reverse_direction_reads_backwards() {
        let config = LstmConfig::new(2, 3).with_bidirectional(true);
        let e = engine(config.clone(), 5);
        let t = 4;
        let x = Tensor::new([t, 2], data(t * 2, 2)).unwrap();
        let out = e.forward(&x, None, None).unwrap();
        // A unidirectional engine holding the reverse weights, fed the reversed sequence.
        let rev_cell = e.weights().cell(0, 1).unwrap().clone();
        let uni =
            NaiveEngine::new(LstmWeights::new(LstmConfig::new(2, 3), vec![rev_cell]).unwrap())
                .unwrap();
        let reversed: Vec<f64> = (0..t)
            .rev()
            .flat_map(|s| x.data()[s * 2..s * 2 + 2].to_vec())
            .collect();
        let r = uni
            .forward(&Tensor::new([t, 2], reversed).unwrap(), None, None)
            .unwrap();
        for s in 0..t {
            assert_eq!(
                &out.output.data()[s * 6 + 3..s * 6 + 6],
                &r.output.data()[(t - 1 - s) * 3..(t - s) * 3]
            );
        }
        assert_eq!(&out.h_n.data()[3..], r.h_n.data());
    }

    #[test]
    fn lengths_equal_truncated_sequences() {
        let config = LstmConfig::new(2, 3)
            .with_num_layers(2)
            .with_bidirectional(true);
        let e = engine(config.clone(), 8);
        let (t, b) = (5, 3);
        let x = Tensor::new([t, b, 2], data(t * b * 2, 3)).unwrap();
        let lengths = [3, 5, 1];
        let out = e.forward(&x, None, Some(&lengths)).unwrap();
        let out_size = 6;
        for (seq, &len) in lengths.iter().enumerate() {
            let xs: Vec<f64> = (0..len)
                .flat_map(|s| x.data()[(s * b + seq) * 2..(s * b + seq) * 2 + 2].to_vec())
                .collect();
            let one = e
                .forward(&Tensor::new([len, 2], xs).unwrap(), None, None)
                .unwrap();
            for s in 0..t {
                let got =
                    &out.output.data()[(s * b + seq) * out_size..(s * b + seq + 1) * out_size];
                if s < len {
                    assert_eq!(got, &one.output.data()[s * out_size..(s + 1) * out_size]);
                } else {
                    assert!(
                        got.iter().all(|&v| v == 0.0),
                        "padded step {s} of sequence {seq}"
                    );
                }
            }
            for cell in 0..4 {
                assert_eq!(
                    &out.h_n.data()[(cell * b + seq) * 3..(cell * b + seq + 1) * 3],
                    &one.h_n.data()[cell * 3..cell * 3 + 3]
                );
                assert_eq!(
                    &out.c_n.data()[(cell * b + seq) * 3..(cell * b + seq + 1) * 3],
                    &one.c_n.data()[cell * 3..cell * 3 + 3]
                );
            }
        }
    }

    #[test]
    fn batch_first_is_the_transposed_layout() {
        let config = LstmConfig::new(2, 4).with_bidirectional(true);
        let e = engine(config.clone(), 4);
        let ebf = NaiveEngine::new({
            let mut w = e.weights().clone();
            w.set_call_options(true, 0.0).unwrap();
            w
        })
        .unwrap();
        let x = Tensor::new([3, 2, 2], data(12, 9)).unwrap();
        let a = e.forward(&x, None, Some(&[3, 2])).unwrap();
        let b = ebf
            .forward(&x.swap_leading_axes().unwrap(), None, Some(&[3, 2]))
            .unwrap();
        assert_eq!(b.output, a.output.swap_leading_axes().unwrap());
        assert_eq!((a.h_n, a.c_n), (b.h_n, b.c_n));
    }

    #[test]
    fn no_bias_and_saturation_stay_finite() {
        let config = LstmConfig::new(3, 4).with_bias(false);
        let e =
            NaiveEngine::new(LstmWeights::<f32>::random_uniform(config, 1, 50.0).unwrap()).unwrap();
        let x = Tensor::new([20, 1, 3], vec![1e4f32; 60]).unwrap();
        let out = e.forward(&x, None, None).unwrap();
        assert!(out
            .output
            .data()
            .iter()
            .all(|v| v.is_finite() && v.abs() <= 1.0));
        let nan = Tensor::new([1, 1, 3], vec![f32::NAN; 3]).unwrap();
        assert!(e
            .forward(&nan, None, None)
            .unwrap()
            .output
            .data()
            .iter()
            .all(|v| v.is_nan()));
    }
}
