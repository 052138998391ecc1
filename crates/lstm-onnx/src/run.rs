//! Running a loaded ONNX LSTM with ONNX's semantics: its layouts, `sequence_lens` (0 allowed),
//! and its output shapes.

use lstm_core::{pad_to_total_length, LstmEngine, LstmError, LstmState, Operand, Result, Tensor};

use crate::OnnxLstm;

/// The outputs of an ONNX `LSTM` node (of the last node, for a chain), in ONNX's layout.
#[derive(Clone, Debug, PartialEq)]
pub struct OnnxOutputs {
    /// `Y`: `[T, D, B, H]` (`[B, T, D, H]` with layout 1); zero past each sequence's length.
    pub y: Tensor<f32>,
    /// `Y_h`: `[L·D, B, H]` (`[B, L·D, H]` with layout 1); L = 1 for one node. Zero for a
    /// sequence of length 0 (as ONNX Runtime gives).
    pub y_h: Tensor<f32>,
    /// `Y_c`: as `Y_h`.
    pub y_c: Tensor<f32>,
}

/// `[a, b, rest]` → `[b, a, rest]`.
fn swap01(t: &Tensor<f32>) -> Result<Tensor<f32>> {
    t.swap_leading_axes()
}

impl OnnxLstm {
    /// Runs the model with `engine` (built over [`weights`](Self::weights)) on `x` (`[T, B, I]`,
    /// `[B, T, I]` with layout 1), as ONNX Runtime runs the node.
    ///
    /// - `state`: `(initial_h, initial_c)` in ONNX's layout (`[L·D, B, H]`, or `[B, L·D, H]`
    ///   with layout 1); when `None`, the graph's constant ones, else zeros.
    /// - `sequence_lens`: one per sequence, each in `0..=T`; when `None`, the graph's
    ///   constant one, else T for all. A sequence of length 0 gives zeros in `Y`, `Y_h`, `Y_c`.
    pub fn run(
        &self,
        engine: &dyn LstmEngine<f32>,
        x: &Tensor<f32>,
        state: Option<(&Tensor<f32>, &Tensor<f32>)>,
        sequence_lens: Option<&[i64]>,
    ) -> Result<OnnxOutputs> {
        let config = self.weights.config();
        if engine.config() != config {
            return Err(LstmError::InvalidArgument {
                what: "engine",
                reason: "was not built over this model's weights".to_string(),
            });
        }
        let [a, b, _] = *x.shape() else {
            return Err(LstmError::RankMismatch {
                what: Operand::Input.into(),
                expected: if config.batch_first {
                    "a 3-D array [batch_size, seq_length, input_size] (layout 1)".to_string()
                } else {
                    "a 3-D array [seq_length, batch_size, input_size]".to_string()
                },
                found: x.rank(),
                shape: x.shape().to_vec(),
            });
        };
        let (seq_len, batch) = if config.batch_first { (b, a) } else { (a, b) };
        let state = state.or_else(|| self.initial_state());
        let state = match state {
            Some((h, c)) if config.batch_first => Some(LstmState {
                h: swap01(h).map_err(|e| rename(e, Operand::H0))?,
                c: swap01(c).map_err(|e| rename(e, Operand::C0))?,
            }),
            Some((h, c)) => Some(LstmState {
                h: h.clone(),
                c: c.clone(),
            }),
            None => None,
        };
        let lens: Vec<usize> = match sequence_lens.or(self.sequence_lens.as_deref()) {
            None => vec![seq_len; batch],
            Some(l) => {
                if l.len() != batch {
                    return Err(LstmError::LengthCount {
                        expected: batch,
                        found: l.len(),
                    });
                }
                l.iter()
                    .enumerate()
                    .map(|(s, &n)| {
                        usize::try_from(n).ok().filter(|&n| n <= seq_len).ok_or(
                            LstmError::LengthOutOfRange {
                                sequence: s,
                                length: n,
                                max: Some(seq_len),
                            },
                        )
                    })
                    .collect::<Result<_>>()?
            }
        };
        // Length 0: run one step (the engines need at least one) and zero the results.
        let run_lens: Vec<usize> = lens.iter().map(|&n| n.max(1)).collect();
        let all_full = run_lens.iter().all(|&n| n == seq_len);
        let out = engine.forward(
            x,
            state.as_ref(),
            if all_full || batch == 0 {
                None
            } else {
                Some(&run_lens)
            },
        )?;
        let output = pad_to_total_length(out.output, seq_len, config.batch_first)?;
        let (dirs, hidden) = (config.num_directions(), config.hidden_size);
        let (_, mut y) = output.into_parts(); // [T, B, D·H] or [B, T, D·H]
        let (_, mut h_n) = out.h_n.into_parts(); // [L·D, B, H]
        let (_, mut c_n) = out.c_n.into_parts();
        for (s, _) in lens.iter().enumerate().filter(|(_, &n)| n == 0) {
            for t in 0..seq_len {
                let row = if config.batch_first {
                    s * seq_len + t
                } else {
                    t * batch + s
                };
                y[row * dirs * hidden..(row + 1) * dirs * hidden].fill(0.0);
            }
            for cell in 0..config.num_cells() {
                let at = (cell * batch + s) * hidden;
                h_n[at..at + hidden].fill(0.0);
                c_n[at..at + hidden].fill(0.0);
            }
        }
        let cells = config.num_cells();
        let y = if config.batch_first {
            Tensor::new([batch, seq_len, dirs, hidden], y)?
        } else {
            // [T, B, D, H] → [T, D, B, H]
            let mut out = vec![0.0f32; y.len()];
            for t in 0..seq_len {
                for s in 0..batch {
                    for d in 0..dirs {
                        let src = ((t * batch + s) * dirs + d) * hidden;
                        let dst = ((t * dirs + d) * batch + s) * hidden;
                        out[dst..dst + hidden].copy_from_slice(&y[src..src + hidden]);
                    }
                }
            }
            Tensor::new([seq_len, dirs, batch, hidden], out)?
        };
        let h_n = Tensor::new([cells, batch, hidden], h_n)?;
        let c_n = Tensor::new([cells, batch, hidden], c_n)?;
        let (y_h, y_c) = if config.batch_first {
            (swap01(&h_n)?, swap01(&c_n)?)
        } else {
            (h_n, c_n)
        };
        Ok(OnnxOutputs { y, y_h, y_c })
    }
}

fn rename(e: LstmError, what: Operand) -> LstmError {
    match e {
        LstmError::RankMismatch { found, shape, .. } => LstmError::RankMismatch {
            what: what.into(),
            expected: "a 3-D array [batch_size, num_directions, hidden_size] (layout 1)"
                .to_string(),
            found,
            shape,
        },
        other => other,
    }
}
