//! The training forward, [`SimdEngine::forward_train`]: the forward of
//! [`LstmEngine::forward`](lstm_core::LstmEngine::forward), through the same driver
//! (`driver.rs`), packed weights, input-projection GEMM and batch order (longest sequence
//! first), whose step kernel also records the gates, `c_t` and `tanh(c_t)` of every row into
//! the tape (in the caller's batch order, through a row table). Its results are
//! [`forward`](lstm_core::LstmEngine::forward)'s, bit for bit.
//!
//! And what the backward (`backward.rs`) adds to the engine: [`TrainState`], the weights packed
//! for the backward (`W_hh` and `W_hr` transposed, the stacked `W_ih`), made from the forward's
//! packed weights on the first training call and kept, and the sizes of its layouts ([`Geo`]).

use std::sync::Mutex;

use lstm_core::grad::LayerTapeMut;
use lstm_core::tensor::try_filled_vec;
use lstm_core::{
    LstmError, LstmOutput, LstmState, Precision, Result, SequenceBatch, Tensor, TrainingTape,
};

use super::batch_order::{gather_rows, unsort, BatchOrder};
use super::driver::LayerIo;
use super::workspace::{grow, numel, BackwardScratch, Workspace};
use super::{PackedCell, SimdEngine};
use crate::kernels::{whole_rows, TapeRecorder};
use crate::pack::{pack_plain, padded_hidden, PackedMatrix};
use crate::team::{Split, WorkerTeam};

/// What the backward adds to the engine: weights packed for it, and its scratch.
#[derive(Debug)]
pub(super) struct TrainState {
    /// Per cell: `W_hh` as the `B` of `dh_rec = dG · W_hh` (`k` = `4·H_p` in gate-tile order,
    /// columns `H_out`), and `W_hr` as the `B` of `dh_cell = dh · W_hr` (`k` = `P`, columns `H`).
    pub(super) cells: Vec<BackwardCell>,
    /// Per layer: the directions' `W_ih` stacked along `k` (`D·4·H_p`), as the `B` of
    /// `dX = dG · W_ih`; columns: the input features (layer 0), or the layer below's output
    /// features in the padded layout of the gradient buffers (`d·H_out,p + u`).
    pub(super) layers: Vec<PackedMatrix>,
    pool: Mutex<Vec<BackwardScratch>>,
}

/// One cell's weights packed for the backward.
#[derive(Debug)]
pub(super) struct BackwardCell {
    pub(super) w_hh: PackedMatrix,
    pub(super) w_hr: Option<PackedMatrix>,
}

/// `len` rounded up to a multiple of `m`.
pub(super) fn round_up(len: usize, m: usize) -> usize {
    len.div_ceil(m) * m
}

/// Sizes of one engine's cells in the training path's layouts.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geo {
    /// Lanes per vector.
    pub(super) n: usize,
    pub(super) input: usize,
    pub(super) hidden: usize,
    pub(super) h_out: usize,
    pub(super) proj: usize,
    pub(super) dirs: usize,
    /// `D·H_out`: a layer's output features.
    pub(super) out_size: usize,
    /// `H` rounded up to `n`; `gp = 4·hp`, the width of one direction's `dG`.
    pub(super) hp: usize,
    pub(super) gp: usize,
    /// `H_out` rounded up to `n`: the width of one direction in the gradient buffers.
    pub(super) hpo: usize,
    /// Row stride of the gradient of a layer's output (`D·hpo` rounded up to `4n`).
    pub(super) ldd: usize,
    /// Row stride of `dh_rec` and of `dh` with a projection (`H_out` rounded up to `4n`).
    pub(super) ld_rec: usize,
    /// Row stride of `dh_cell` (`H` rounded up to `4n`).
    pub(super) ld_hc: usize,
    /// Row stride of `dG`: `D·gp`.
    pub(super) ldg: usize,
}

impl Geo {
    pub(super) fn of(engine: &SimdEngine) -> Self {
        let config = &engine.config;
        let n = engine.kernels.lanes;
        let d = engine.dims;
        let hpo = padded_hidden(d.h_out, n);
        Geo {
            n,
            input: config.input_size,
            hidden: d.hidden,
            h_out: d.h_out,
            proj: config.proj_size,
            dirs: d.dirs,
            out_size: d.out_size,
            hp: d.hp,
            gp: d.gp,
            hpo,
            ldd: round_up(d.dirs * hpo, 4 * n),
            ld_rec: round_up(d.h_out, 4 * n),
            ld_hc: round_up(d.hidden, 4 * n),
            ldg: d.dirs * d.gp,
        }
    }

    /// The column of gate `gate`, unit `unit` in the gate-tile layout of `dG`.
    pub(super) fn col(&self, gate: usize, unit: usize) -> usize {
        (unit / self.n) * 4 * self.n + gate * self.n + unit % self.n
    }
}

impl TrainState {
    /// Repacks the engine's weights for the backward (once per engine).
    fn new(engine: &SimdEngine) -> Result<Self> {
        let g = Geo::of(engine);
        let n = g.n;
        let width = 4 * n;
        let config = &engine.config;
        let missing = |what: &str| LstmError::MissingTensor {
            name: format!("packed {what}"),
        };
        let mut cells = Vec::with_capacity(engine.cells.len());
        for cell in &engine.cells {
            // Packed W_hh: tile t, run j (input h_j), column jj → element (t·H_out + j)·4N + jj,
            // which is W_hh[row of gate-tile column t·4N + jj, j]. Transposed: M[j][t·4N + jj].
            let packed = cell.w_hh.as_f32().ok_or_else(|| missing("f32 weight_hh"))?;
            let mut m = try_filled_vec("weight_hh (backward)", numel(&[g.h_out, g.gp]), 0.0)?;
            for j in 0..g.h_out {
                for kk in 0..g.gp {
                    let (t, jj) = (kk / width, kk % width);
                    m[j * g.gp + kk] = *packed
                        .get((t * g.h_out + j) * width + jj)
                        .ok_or_else(|| missing("weight_hh"))?;
                }
            }
            let w_hh = pack_plain("weight_hh (backward)", &m, g.h_out, g.gp, n, Precision::F32)?;
            let w_hr = match &cell.w_hr {
                Some(p) => {
                    // Packed W_hr: tile t, run j, column jj → W_hr[t·4N + jj, j]; M[j][p] =
                    // W_hr[p, j].
                    let packed = p.as_f32().ok_or_else(|| missing("f32 weight_hr"))?;
                    let mut m =
                        try_filled_vec("weight_hr (backward)", numel(&[g.hidden, g.proj]), 0.0)?;
                    for j in 0..g.hidden {
                        for q in 0..g.proj {
                            m[j * g.proj + q] = *packed
                                .get(((q / width) * g.hidden + j) * width + q % width)
                                .ok_or_else(|| missing("weight_hr"))?;
                        }
                    }
                    Some(pack_plain(
                        "weight_hr (backward)",
                        &m,
                        g.hidden,
                        g.proj,
                        n,
                        Precision::F32,
                    )?)
                }
                None => None,
            };
            cells.push(BackwardCell { w_hh, w_hr });
        }
        let mut layers = Vec::with_capacity(config.num_layers);
        for layer in 0..config.num_layers {
            let in_size = config.layer_input_size(layer);
            // Columns of dX: input features, or (layer > 0) the padded per-direction layout.
            let cols = if layer == 0 { in_size } else { g.dirs * g.hpo };
            let feature = |c: usize| -> Option<usize> {
                if layer == 0 {
                    Some(c)
                } else {
                    let (d, u) = (c / g.hpo, c % g.hpo);
                    (u < g.h_out).then_some(d * g.h_out + u)
                }
            };
            let k = g.ldg;
            let mut m = try_filled_vec("weight_ih (backward)", numel(&[cols, k]), 0.0)?;
            for dir in 0..g.dirs {
                let cell: &PackedCell = engine
                    .cells
                    .get(layer * g.dirs + dir)
                    .ok_or_else(|| missing("cell"))?;
                let packed = cell.w_ih.as_f32().ok_or_else(|| missing("f32 weight_ih"))?;
                for c in 0..cols {
                    let Some(j) = feature(c) else { continue };
                    for kk in 0..g.gp {
                        let (t, jj) = (kk / width, kk % width);
                        m[c * k + dir * g.gp + kk] = *packed
                            .get((t * in_size + j) * width + jj)
                            .ok_or_else(|| missing("weight_ih"))?;
                    }
                }
            }
            layers.push(pack_plain(
                "weight_ih (backward)",
                &m,
                cols,
                k,
                n,
                Precision::F32,
            )?);
        }
        Ok(TrainState {
            cells,
            layers,
            pool: Mutex::new(Vec::new()),
        })
    }

    pub(super) fn take(&self) -> BackwardScratch {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    pub(super) fn give(&self, ws: BackwardScratch) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 4 {
            pool.push(ws);
        }
    }
}

/// An inconsistency the checks before make impossible; an error, never a panic.
pub(super) fn internal(what: &str) -> LstmError {
    LstmError::Internal(format!("the training tape has no {what} for this model"))
}

impl SimdEngine {
    /// Training runs in f32 only: a reduced-precision engine refuses it with
    /// [`LstmError::Unsupported`] (its weights are rounded, so its gradients would be those of
    /// other weights; train in f32 and build a bf16 engine from the trained weights).
    fn ensure_trainable(&self) -> Result<()> {
        match self.precision {
            Precision::F32 => Ok(()),
            p => Err(LstmError::Unsupported(format!(
                "training with {p} weights; build the training engine with precision f32"
            ))),
        }
    }

    /// The backward's packings, made on first use.
    pub(super) fn train_state(&self) -> Result<&TrainState> {
        self.ensure_trainable()?;
        refuse_onnx_options(&self.config)?;
        if let Some(state) = self.train.get() {
            return Ok(state);
        }
        let state = TrainState::new(self)?;
        // A thread that raced us set an identical state; either is fine.
        let _ = self.train.set(state);
        self.train.get().ok_or_else(|| internal("training state"))
    }

    /// The forward pass, exactly as [`LstmEngine::forward`](lstm_core::LstmEngine::forward)
    /// computes it (the same driver and kernel body, so the same bits), recording in `tape`
    /// what [`backward`](Self::backward) reads.
    pub fn forward_train(
        &self,
        input: &Tensor<f32>,
        state: Option<&LstmState<f32>>,
        lengths: Option<&[usize]>,
        tape: &mut TrainingTape<f32>,
    ) -> Result<LstmOutput<f32>> {
        self.forward_train_with(input, (state, lengths), tape, None, Split::Hidden)
    }

    /// [`forward_train`](Self::forward_train) shared by the workers of `team`, split as
    /// [`forward_batch_split`](Self::forward_batch_split) splits a forward (the same driver):
    /// bit-identical to the one-thread result for every team size and split.
    pub fn forward_train_split(
        &self,
        input: &Tensor<f32>,
        (state, lengths): (Option<&LstmState<f32>>, Option<&[usize]>),
        tape: &mut TrainingTape<f32>,
        team: &dyn WorkerTeam,
        split: Split,
    ) -> Result<LstmOutput<f32>> {
        self.forward_train_with(input, (state, lengths), tape, Some(team), split)
    }

    fn forward_train_with(
        &self,
        input: &Tensor<f32>,
        (state, lengths): (Option<&LstmState<f32>>, Option<&[usize]>),
        tape: &mut TrainingTape<f32>,
        team: Option<&dyn WorkerTeam>,
        split: Split,
    ) -> Result<LstmOutput<f32>> {
        self.ensure_trainable()?;
        let config = &self.config;
        refuse_onnx_options(config)?;
        let call = SequenceBatch::new(config, input, state, lengths)?;
        call.ensure_config(config)?;
        tape.begin(&call)?;
        let (seq_len, batch) = (call.seq_len(), call.batch());
        let d = self.dims;
        let cells = config.num_cells();
        let mut h_n = try_filled_vec("h_n", numel(&[cells, batch, d.h_out]), 0.0)?;
        let mut c_n = try_filled_vec("c_n", numel(&[cells, batch, d.hidden]), 0.0)?;
        if batch > 0 && seq_len > 0 {
            self.train_state()?;
            let order = BatchOrder::new(seq_len, batch, call.lengths());
            let mut ws = self.take_workspace();
            let outputs = (&mut h_n[..], &mut c_n[..]);
            let result =
                self.forward_train_into(&call, &order, &mut ws, tape, outputs, (team, split));
            self.return_workspace(ws);
            result?;
            if let Some(order) = &order.order {
                unsort(&mut h_n, order, cells, d.h_out)?;
                unsort(&mut c_n, order, cells, d.hidden)?;
            }
        }
        tape.complete();
        let output = tape
            .layer(config.num_layers - 1)
            .ok_or_else(|| internal("output"))?
            .output
            .to_vec();
        call.finish(output, h_n, c_n)
    }

    /// The layers of the training forward: each layer's input from the tape in sorted order,
    /// its output and records into the tape in the caller's order, the final state sorted.
    fn forward_train_into(
        &self,
        call: &SequenceBatch<'_, f32>,
        order: &BatchOrder,
        ws: &mut Workspace,
        tape: &mut TrainingTape<f32>,
        (h_n, c_n): (&mut [f32], &mut [f32]),
        (team, split): (Option<&dyn WorkerTeam>, Split),
    ) -> Result<()> {
        let d = self.dims;
        let (seq_len, batch) = (call.seq_len(), call.batch());
        let cells = self.config.num_cells();
        self.prepare(ws, batch, self.chunk_steps(batch, seq_len))?;
        let mut x_sorted = std::mem::take(&mut ws.x_sorted);
        let mut h0_sorted = std::mem::take(&mut ws.h0_sorted);
        let mut c0_sorted = std::mem::take(&mut ws.c0_sorted);
        let result = (|| {
            let (mut h0, mut c0) = (call.h0(), call.c0());
            if let (Some(order), Some(h), Some(c)) = (&order.order, h0, c0) {
                let hs = grow(&mut h0_sorted, "h0", h.len())?;
                gather_rows(hs, h, order, cells, d.h_out);
                let cs = grow(&mut c0_sorted, "c0", c.len())?;
                gather_rows(cs, c, order, cells, d.hidden);
                (h0, c0) = (Some(&*hs), Some(&*cs));
            }
            let projecting = self.config.proj_size > 0;
            for layer in 0..self.config.num_layers {
                let in_size = self.config.layer_input_size(layer);
                let LayerTapeMut {
                    input,
                    output,
                    cells: mut recs,
                } = tape.layer_mut(layer).ok_or_else(|| internal("layer"))?;
                let x: &[f32] = match &order.order {
                    Some(o) => {
                        let xs = grow(&mut x_sorted, "input", input.len())?;
                        gather_rows(xs, input, o, seq_len, in_size);
                        xs
                    }
                    None => input,
                };
                let (hs, cs) = (
                    layer * d.dirs * batch * d.h_out,
                    layer * d.dirs * batch * d.hidden,
                );
                let (hl, cl) = (d.dirs * batch * d.h_out, d.dirs * batch * d.hidden);
                let (Some(h_n), Some(c_n)) = (h_n.get_mut(hs..hs + hl), c_n.get_mut(cs..cs + cl))
                else {
                    return Err(internal("cell"));
                };
                if recs.len() != d.dirs {
                    return Err(internal("cell"));
                }
                let io = LayerIo {
                    input: x,
                    input_batch: batch,
                    input_first: 0,
                    in_size,
                    output: whole_rows(output, d.out_size, batch),
                    output_rows: order.table(),
                    stream_output: false,
                    active: &order.active,
                    first_row: 0,
                    batch,
                    h0: h0.map(|h| &h[hs..hs + hl]),
                    c0: c0.map(|c| &c[cs..cs + cl]),
                    h_n,
                    c_n,
                };
                let records = recs.iter_mut().map(|rec| {
                    TapeRecorder::new(rec, order.table(), seq_len, batch, d.hidden, projecting)
                });
                self.run_layer(layer, io, records, ws, team, split)?;
            }
            Ok(())
        })();
        ws.x_sorted = x_sorted;
        ws.h0_sorted = h0_sorted;
        ws.c0_sorted = c0_sorted;
        result
    }
}

/// The backward is PyTorch's cell's only: training a config with ONNX's cell options (which
/// the forward runs) is refused, naming them, before any tape is written or read.
pub(super) fn refuse_onnx_options(config: &lstm_core::LstmConfig) -> Result<()> {
    match config.onnx_only_options() {
        Some(options) => Err(lstm_core::LstmError::Unsupported(format!(
            "training with {options}: the simd and parallel engines run ONNX's cell options \
             forward only (inference and step); the backward is PyTorch's cell's"
        ))),
        None => Ok(()),
    }
}
