//! The SIMD engine's backward pass, [`SimdEngine::backward`] (backpropagation through time),
//! and [`LstmBackward<f32>`] with the training forward of `train.rs`.
//!
//! Per layer from the top, per direction, in the sorted batch order (the rows still running at
//! a step are a prefix, as in the forward):
//!
//! 1. per step, in the reverse of the forward's order: `dh = dy_t + dh_rec` (through the
//!    projection `dh_cell = dh · W_hr` when `proj_size > 0`); the gate derivatives on lanes
//!    ([`Kernels::gate_backward`]) give the pre-activation gradients `dG_t` and carry `dc`
//!    through `f`; then `dh_rec = dG_t · W_hh`, one GEMM over the active rows with `W_hh`
//!    packed a second time for it;
//! 2. once per cell, over all `T·B` rows at once: `dW_ihᵀ = Xᵀ · dG`, `dW_hhᵀ = H_prevᵀ · dG`,
//!    `dW_hrᵀ = H_cellᵀ · dH` ([`Kernels::gemm_tn`], `dG` read in place), and `db` (shared by
//!    `bias_ih` and `bias_hh`) as column sums of `dG`;
//! 3. once per layer: `dX = [dG_fwd | dG_rev] · [W_ih_fwd; W_ih_rev]`, one GEMM whose result is
//!    the gradient of the layer below's output (or of the input).
//!
//! Every reduction has a fixed order, so results do not depend on timing. The per-step loops
//! never allocate: all scratch is sized before them in a reused [`BackwardScratch`].
//!
//! Memory: the tape (`TrainingTape::required_elements`), plus the backward's scratch, in f32
//! per `T·B` row: `D·4·H_p` (`dG`, `H_p` = `H` rounded up to the lane count) `+ 2·D·H_out,p`
//! (the gradients of two layers' outputs) `+ H_out` (the previous hidden states of one cell)
//! `[+ P_p` with a projection`]`, plus copies of a layer's input and output with unsorted
//! lengths.

use std::sync::Mutex;

use lstm_core::grad::{CanonicalGrads, CellTape, LayerTape};
use lstm_core::tensor::try_filled_vec;
use lstm_core::{
    CellWeights, GradOutputs, LstmBackward, LstmGradients, LstmOutput, LstmState, Result, Tensor,
    TrainingTape,
};

use super::batch_order::{gather_rows, BatchOrder};
use super::train::{internal, round_up, BackwardCell, Geo, TrainState};
use super::workspace::{grow, numel, BackwardScratch};
use super::SimdEngine;
use crate::kernels::{gemm_tn_scratch, CellVariant, GateBackward, Gemm, GemmTn, Kernels};
use crate::pack::PackedMatrix;
use crate::team::WorkerTeam;

/// Rows summed together before they join a bias gradient: a two-level sum, so the rounding
/// grows with `64 + T·B/64` rather than with `T·B`.
const BIAS_CHUNK: usize = 64;

/// Where the backward writes (caller's batch order, PyTorch layouts).
struct BackwardOut<'a> {
    /// The workers to share the work with, if any.
    team: Option<&'a dyn WorkerTeam>,
    grad_input: &'a mut [f32],
    grad_h0: &'a mut [f32],
    grad_c0: &'a mut [f32],
    params: &'a mut [CellWeights<f32>],
}

impl SimdEngine {
    /// The gradients of a loss with respect to the input, the initial state and every
    /// parameter, from the `tape` of this engine's last
    /// [`forward_train`](Self::forward_train) and the loss's gradients with respect to its
    /// results (validated against the call). See the module documentation of `lstm-core`'s
    /// `grad` for the conventions (`grad_h0`/`grad_c0` always returned, padded steps zero).
    pub fn backward(
        &self,
        tape: &TrainingTape<f32>,
        grads: &GradOutputs<'_, f32>,
    ) -> Result<LstmGradients<f32>> {
        self.backward_with(tape, grads, None)
    }

    /// [`backward`](Self::backward) on the workers of `team` (the parallel runner): each
    /// cell's backward through time in batch shards (every sequence's BPTT is independent of
    /// the others'), the weight gradients split by their rows (each element still one sum
    /// over all `T·B` rows in the same order) and the input gradient by its rows. Bit-identical
    /// to [`backward`](Self::backward) for every team size.
    pub fn backward_split(
        &self,
        tape: &TrainingTape<f32>,
        grads: &GradOutputs<'_, f32>,
        team: &dyn WorkerTeam,
    ) -> Result<LstmGradients<f32>> {
        self.backward_with(tape, grads, Some(team))
    }

    fn backward_with(
        &self,
        tape: &TrainingTape<f32>,
        grads: &GradOutputs<'_, f32>,
        team: Option<&dyn WorkerTeam>,
    ) -> Result<LstmGradients<f32>> {
        let config = &self.config;
        super::train::refuse_onnx_options(config)?;
        tape.ensure_filled_for(config)?;
        let upstream = tape.canonical_grads(grads)?;
        let (seq_len, batch) = (tape.seq_len(), tape.batch());
        let g = Geo::of(self);
        let cells = config.num_cells();
        let mut grad_h0 = try_filled_vec("grad_h0", numel(&[cells, batch, g.h_out]), 0.0)?;
        let mut grad_c0 = try_filled_vec("grad_c0", numel(&[cells, batch, g.hidden]), 0.0)?;
        let mut grad_input = try_filled_vec("grad_input", numel(&[seq_len, batch, g.input]), 0.0)?;
        let mut params = self.zero_params(g)?;
        if batch > 0 && seq_len > 0 {
            let ts = self.train_state()?;
            let lens: Vec<usize> = (0..batch)
                .map(|b| tape.length(b).unwrap_or(seq_len))
                .collect();
            let order = BatchOrder::new(seq_len, batch, Some(&lens));
            let mut ws = ts.take();
            let mut out = BackwardOut {
                team,
                grad_input: &mut grad_input,
                grad_h0: &mut grad_h0,
                grad_c0: &mut grad_c0,
                params: &mut params,
            };
            let result = self.backward_into(ts, tape, &upstream, &order, &mut ws, &mut out);
            ts.give(ws);
            result?;
        }
        tape.finish_gradients(grad_input, grad_h0, grad_c0, params)
    }

    /// Zeroed parameter gradients of every cell, in PyTorch's layouts.
    fn zero_params(&self, g: Geo) -> Result<Vec<CellWeights<f32>>> {
        let config = &self.config;
        let zeros = |what: &str, n: usize| try_filled_vec(what, n, 0.0f32);
        let mut params = Vec::with_capacity(config.num_cells());
        for layer in 0..config.num_layers {
            let in_size = config.layer_input_size(layer);
            for _ in 0..g.dirs {
                params.push(CellWeights {
                    w_ih: zeros("grad weight_ih", numel(&[4 * g.hidden, in_size]))?,
                    w_hh: zeros("grad weight_hh", numel(&[4 * g.hidden, g.h_out]))?,
                    b_ih: config
                        .bias
                        .then(|| zeros("grad bias", 4 * g.hidden))
                        .transpose()?,
                    b_hh: config
                        .bias
                        .then(|| zeros("grad bias", 4 * g.hidden))
                        .transpose()?,
                    w_hr: (g.proj > 0)
                        .then(|| zeros("grad weight_hr", numel(&[g.proj, g.hidden])))
                        .transpose()?,
                });
            }
        }
        Ok(params)
    }

    /// Every layer from the top: the gradient of its output `d_out` (sorted, padded
    /// per-direction layout) becomes the gradient of its input, which feeds the layer below.
    fn backward_into(
        &self,
        ts: &TrainState,
        tape: &TrainingTape<f32>,
        upstream: &CanonicalGrads<f32>,
        order: &BatchOrder,
        ws: &mut BackwardScratch,
        out: &mut BackwardOut<'_>,
    ) -> Result<()> {
        let g = Geo::of(self);
        let (seq_len, batch) = (tape.seq_len(), order.batch());
        let rows = seq_len * batch;
        let ld0 = ts.layers.first().map_or(0, PackedMatrix::cols);
        let ld_max = g.ldd.max(ld0);
        let mut d_out = std::mem::take(&mut ws.d_out);
        let mut d_in = std::mem::take(&mut ws.d_in);
        let result = (|| {
            grow(&mut d_out, "output gradient", numel(&[rows, ld_max]))?;
            grow(&mut d_in, "output gradient", numel(&[rows, ld_max]))?;
            // The upstream gradient, sorted, in the padded per-direction layout.
            let d = &mut d_out[..rows * g.ldd];
            d.fill(0.0);
            for t in 0..seq_len {
                for i in 0..batch {
                    let src = (t * batch + order.orig(i)) * g.out_size;
                    let dst = (t * batch + i) * g.ldd;
                    for dir in 0..g.dirs {
                        d[dst + dir * g.hpo..dst + dir * g.hpo + g.h_out].copy_from_slice(
                            &upstream.output[src + dir * g.h_out..src + (dir + 1) * g.h_out],
                        );
                    }
                }
            }
            let mut ld_cur = g.ldd;
            for layer in (0..self.config.num_layers).rev() {
                let rec = tape.layer(layer).ok_or_else(|| internal("layer"))?;
                let layer_io = LayerGrads {
                    d_out: &d_out[..rows * ld_cur],
                    ld_out: ld_cur,
                    d_in: &mut d_in,
                };
                self.backward_layer(ts, tape, &rec, layer, upstream, order, ws, layer_io, out)?;
                std::mem::swap(&mut d_out, &mut d_in);
                ld_cur = ts.layers.get(layer).map_or(0, PackedMatrix::cols);
            }
            // Layer 0's dX is the input gradient: back to the caller's order.
            for t in 0..seq_len {
                for i in 0..batch {
                    let src = (t * batch + i) * ld_cur;
                    let dst = (t * batch + order.orig(i)) * g.input;
                    out.grad_input[dst..dst + g.input].copy_from_slice(&d_out[src..src + g.input]);
                }
            }
            Ok(())
        })();
        ws.d_out = d_out;
        ws.d_in = d_in;
        result
    }

    /// One layer: each direction's backward through time into `dG`, then the gradient of the
    /// layer's input, `dX = [dG_fwd | dG_rev] · [W_ih_fwd; W_ih_rev]`, into `io.d_in`.
    #[allow(clippy::too_many_arguments)] // the tape and its layer, the order, scratch, results
    fn backward_layer(
        &self,
        ts: &TrainState,
        tape: &TrainingTape<f32>,
        rec: &LayerTape<'_, f32>,
        layer: usize,
        upstream: &CanonicalGrads<f32>,
        order: &BatchOrder,
        ws: &mut BackwardScratch,
        io: LayerGrads<'_>,
        out: &mut BackwardOut<'_>,
    ) -> Result<()> {
        let g = Geo::of(self);
        let (seq_len, batch) = (tape.seq_len(), order.batch());
        let rows = seq_len * batch;
        let in_size = self.config.layer_input_size(layer);
        let mut x_sorted = std::mem::take(&mut ws.x_sorted);
        let mut out_sorted = std::mem::take(&mut ws.out_sorted);
        let mut dg = std::mem::take(&mut ws.dg);
        let result = (|| {
            let (x, y): (&[f32], &[f32]) = match &order.order {
                Some(o) => {
                    let xs = grow(&mut x_sorted, "input", rec.input.len())?;
                    gather_rows(xs, rec.input, o, seq_len, in_size);
                    let ys = grow(&mut out_sorted, "output", rec.output.len())?;
                    gather_rows(ys, rec.output, o, seq_len, g.out_size);
                    (xs, ys)
                }
                None => (rec.input, rec.output),
            };
            let dg = grow(&mut dg, "gate gradients", numel(&[rows, g.ldg]))?;
            if order.active.iter().any(|&n| n < batch) {
                dg.fill(0.0); // rows of finished sequences stay zero
            }
            for dir in 0..g.dirs {
                let idx = layer * g.dirs + dir;
                let (Some(cell_tape), Some(bw)) = (rec.cells.get(dir), ts.cells.get(idx)) else {
                    return Err(internal("cell"));
                };
                let cb = CellBackward {
                    team: out.team,
                    kernels: self.kernels,
                    variant: self
                        .cells
                        .get(idx)
                        .map_or(CellVariant::Standard, |c| c.variant),
                    bw,
                    g,
                    order,
                    tape,
                    cell_tape,
                    x,
                    y,
                    in_size,
                    seq_len,
                    batch,
                    dir,
                    idx,
                };
                cb.through_time(ws, upstream, (io.d_out, io.ld_out), dg, out)?;
                let param = out.params.get_mut(idx).ok_or_else(|| internal("cell"))?;
                cb.weight_grads(ws, dg, param)?;
            }
            // dX = [dG_fwd | dG_rev] · [W_ih_fwd; W_ih_rev], by rows.
            let stack = ts.layers.get(layer).ok_or_else(|| internal("layer"))?;
            let workers = out.team.map_or(1, |t| t.size());
            let parts = split_even(rows, workers, self.kernels.row_block);
            let jobs: Vec<_> = parts
                .iter()
                .cloned()
                .zip(cut_rows(io.d_in, stack.cols(), &parts))
                .collect();
            let dg: &[f32] = dg;
            run_parts(out.team, jobs, |(r, d_in)| {
                self.kernels.gemm(Gemm {
                    rows: r.len(),
                    a: &dg[r.start * g.ldg..],
                    lda: g.ldg,
                    k: g.ldg,
                    b: stack,
                    bias: None,
                    c: d_in,
                    ldc: stack.cols(),
                });
            });
            Ok(())
        })();
        ws.x_sorted = x_sorted;
        ws.out_sorted = out_sorted;
        ws.dg = dg;
        result
    }
}

/// The gradient flowing into a layer's output, and where the gradient of its input goes.
struct LayerGrads<'a> {
    /// `[T·B, ld_out]`, sorted, each direction's `H_out` columns at `dir·H_out,p`.
    d_out: &'a [f32],
    ld_out: usize,
    /// `[T·B, cols of the layer's stacked W_ih]`.
    d_in: &'a mut [f32],
}

/// The backward of one (layer, direction) cell.
struct CellBackward<'a> {
    team: Option<&'a dyn WorkerTeam>,
    kernels: Kernels,
    variant: CellVariant,
    bw: &'a BackwardCell,
    g: Geo,
    order: &'a BatchOrder,
    tape: &'a TrainingTape<f32>,
    cell_tape: &'a CellTape<'a, f32>,
    /// The layer's input and output, sorted: `[T, B, in_size]`, `[T, B, D·H_out]`.
    x: &'a [f32],
    y: &'a [f32],
    in_size: usize,
    seq_len: usize,
    batch: usize,
    dir: usize,
    idx: usize,
}

impl CellBackward<'_> {
    /// The batch shards of the backward through time: one per worker, each at least a
    /// register block of rows.
    fn shards(&self) -> Vec<std::ops::Range<usize>> {
        let workers = self.team.map_or(1, |t| t.size());
        split_even(self.batch, workers, self.kernels.row_block)
    }

    /// The slice of row `i` (sorted) of this cell in a `[L·D, B, w]` state tensor.
    fn state_row(&self, i: usize, w: usize) -> std::ops::Range<usize> {
        let s = (self.idx * self.batch + self.order.orig(i)) * w;
        s..s + w
    }

    /// Back-propagates through every step of the cell: `dG` into its columns of `dg`
    /// (`[T·B, ldg]`), the initial state's gradients into `out`.
    fn through_time(
        &self,
        ws: &mut BackwardScratch,
        upstream: &CanonicalGrads<f32>,
        d_out: (&[f32], usize),
        dg: &mut [f32],
        out: &mut BackwardOut<'_>,
    ) -> Result<()> {
        let (g, batch) = (self.g, self.batch);
        let rows = self.seq_len * batch;
        // Sorted initial states (c0 padded to hp) and the carried gradients, which start as
        // dL/dh_n, dL/dc_n: a row keeps them until its last step (the backward's first) comes.
        let c0_pad = grow(&mut ws.c0_pad, "c0", numel(&[batch, g.hp]))?;
        c0_pad.fill(0.0);
        let h0 = grow(&mut ws.h0_cell, "h0", numel(&[batch, g.h_out]))?;
        let dh_rec = grow(&mut ws.dh_rec, "h gradient", numel(&[batch, g.ld_rec]))?;
        dh_rec.fill(0.0);
        let dc = grow(&mut ws.dc, "c gradient", numel(&[batch, g.hp]))?;
        dc.fill(0.0);
        for i in 0..batch {
            let (c, h) = (self.state_row(i, g.hidden), self.state_row(i, g.h_out));
            c0_pad[i * g.hp..i * g.hp + g.hidden].copy_from_slice(&self.tape.c0()[c.clone()]);
            h0[i * g.h_out..(i + 1) * g.h_out].copy_from_slice(&self.tape.h0()[h.clone()]);
            if let Some(gh) = &upstream.h_n {
                dh_rec[i * g.ld_rec..i * g.ld_rec + g.h_out].copy_from_slice(&gh[h]);
            }
            if let Some(gc) = &upstream.c_n {
                dc[i * g.hp..i * g.hp + g.hidden].copy_from_slice(&gc[c]);
            }
        }
        let dh_cell = grow(&mut ws.dh_cell, "h gradient", numel(&[batch, g.ld_hc]))?;
        let dh_all = match self.bw.w_hr {
            Some(_) => {
                let d = grow(&mut ws.dh_all, "h gradient", numel(&[rows, g.ld_rec]))?;
                d.fill(0.0);
                d
            }
            None => &mut [][..],
        };
        let shards = self.shards();
        let views = shard_views(
            &shards,
            (batch, self.seq_len),
            (&*c0_pad, g.hp),
            (&mut *dh_rec, g.ld_rec),
            (&mut *dc, g.hp),
            (&mut *dh_cell, g.ld_hc),
            (dg, g.ldg),
            (dh_all, g.ld_rec),
        );
        run_parts(self.team, views, |mut view| {
            for step in 0..self.seq_len {
                let t = if self.dir == 1 {
                    step
                } else {
                    self.seq_len - 1 - step
                };
                self.step(t, d_out, &mut view);
            }
        });
        // dL/dh0, dL/dc0: what the carried gradients hold after each row's first step.
        for i in 0..batch {
            let (c, h) = (self.state_row(i, g.hidden), self.state_row(i, g.h_out));
            out.grad_h0[h].copy_from_slice(&dh_rec[i * g.ld_rec..][..g.h_out]);
            out.grad_c0[c].copy_from_slice(&dc[i * g.hp..][..g.hidden]);
        }
        Ok(())
    }

    /// Step `t` of BPTT for the rows of one shard: `dh` (through the projection), `dG_t` and
    /// the carried `dc`, then `dh_rec = dG_t · W_hh`. Every row's arithmetic is the same
    /// whatever the shards, so the result does not depend on how the batch is cut.
    fn step(&self, t: usize, (d_out, ld_out): (&[f32], usize), s: &mut ShardGrads<'_>) {
        let (g, order, batch, seq_len) = (self.g, self.order, self.batch, self.seq_len);
        let b0 = s.rows.start;
        let running = order.active[t];
        let n = running.saturating_sub(b0).min(s.rows.len());
        if n == 0 {
            return;
        }
        let (h4, h1) = (4 * g.hidden, g.hidden);
        let dy = (t * batch + b0) * ld_out + self.dir * g.hpo;
        let dg_t = &mut s.dg[t][self.dir * g.gp..];
        let ((dh, ldh), dh2): (Strided<'_>, Option<Strided<'_>>) = match &self.bw.w_hr {
            Some(w_hr) => {
                // dh = dy + dh_rec, kept for dW_hr; dh_cell = dh · W_hr.
                let dh_t = &mut *s.dh_all[t];
                for i in 0..n {
                    let row = &mut dh_t[i * g.ld_rec..][..g.proj];
                    let y = &d_out[dy + i * ld_out..][..g.proj];
                    let r = &s.dh_rec[i * g.ld_rec..][..g.proj];
                    for ((d, &a), &b) in row.iter_mut().zip(y).zip(r) {
                        *d = a + b;
                    }
                }
                self.kernels.gemm(Gemm {
                    rows: n,
                    a: dh_t,
                    lda: g.ld_rec,
                    k: g.proj,
                    b: w_hr,
                    bias: None,
                    c: s.dh_cell,
                    ldc: g.ld_hc,
                });
                ((&*s.dh_cell, g.ld_hc), None)
            }
            None => ((&d_out[dy..], ld_out), Some((&*s.dh_rec, g.ld_rec))),
        };
        // c_{t-1}: the tape's step before t in the forward's order for the rows that had one,
        // c0 for the rest (rows at their first step).
        let (prev_running, prev_t) = if self.dir == 1 {
            match t + 1 < seq_len {
                true => (order.active[t + 1].min(running), t + 1),
                false => (0, t),
            }
        } else {
            match t.checked_sub(1) {
                Some(p) => (running, p),
                None => (0, t),
            }
        };
        // The tape is in the caller's row order: through the row table, or from row b0.
        let (tape_rows, first) = match order.table() {
            Some(table) => (Some(&table[b0..]), 0),
            None => (None, b0),
        };
        let tape = self.cell_tape;
        self.kernels.gate_backward(GateBackward {
            variant: self.variant,
            rows: n,
            tiles: g.hp / g.n,
            hidden: g.hidden,
            tape_rows,
            gates: &tape.gates[(t * batch + first) * h4..],
            tanh_c: &tape.tanh_c[(t * batch + first) * h1..],
            c_prev: &tape.c[(prev_t * batch + first) * h1..],
            prev_rows: prev_running.saturating_sub(b0).min(n),
            c0: s.c0_pad,
            ldc0: g.hp,
            dh,
            ldh,
            dh2,
            dc: s.dc,
            ldc: g.hp,
            dg: dg_t,
            ldg: g.ldg,
        });
        self.kernels.gemm(Gemm {
            rows: n,
            a: &s.dg[t][self.dir * g.gp..],
            lda: g.ldg,
            k: g.gp,
            b: &self.bw.w_hh,
            bias: None,
            c: s.dh_rec,
            ldc: g.ld_rec,
        });
    }

    /// The weight and bias gradients of the cell, over all `T·B` rows: `dW = dGᵀ · Y`
    /// (`Y` = `X`, `H_prev`; rows of `dW` in gate-tile order), `db` = column sums of `dG`,
    /// `dW_hr = dHᵀ · H_cell`.
    fn weight_grads(
        &self,
        ws: &mut BackwardScratch,
        dg: &[f32],
        param: &mut CellWeights<f32>,
    ) -> Result<()> {
        let g = self.g;
        let rows = self.seq_len * self.batch;
        let BackwardScratch {
            h0_cell,
            h_prev,
            tn_pack,
            gw_ih,
            gw_hh,
            gw_hr,
            db,
            db_part,
            hc_sorted,
            dh_all,
            ..
        } = ws;
        let h_prev = self.previous_hidden(h0_cell, h_prev)?;
        let pack = tn_pack;
        let width = 4 * g.n;
        let dg_cell = &dg[self.dir * g.gp..];
        let ld_x = round_up(self.in_size, width);
        let gw_ih = grow(gw_ih, "grad weight_ih", numel(&[g.gp, ld_x]))?;
        self.tn(dg_cell, g.ldg, g.gp, (self.x, self.in_size), gw_ih, pack)?;
        let ld_h = round_up(g.h_out, width);
        let gw_hh = grow(gw_hh, "grad weight_hh", numel(&[g.gp, ld_h]))?;
        self.tn(dg_cell, g.ldg, g.gp, (h_prev, g.h_out), gw_hh, pack)?;
        for gate in 0..4 {
            for u in 0..g.hidden {
                let col = g.col(gate, u);
                let r = gate * g.hidden + u;
                param.w_ih[r * self.in_size..][..self.in_size]
                    .copy_from_slice(&gw_ih[col * ld_x..][..self.in_size]);
                param.w_hh[r * g.h_out..][..g.h_out]
                    .copy_from_slice(&gw_hh[col * ld_h..][..g.h_out]);
            }
        }
        if let (Some(b_ih), Some(b_hh)) = (&mut param.b_ih, &mut param.b_hh) {
            let db = grow(db, "grad bias", g.gp)?;
            let part = grow(db_part, "grad bias", g.gp)?;
            db.fill(0.0);
            for start in (0..rows).step_by(BIAS_CHUNK) {
                part.fill(0.0);
                for r in start..(start + BIAS_CHUNK).min(rows) {
                    for (p, &v) in part.iter_mut().zip(&dg_cell[r * g.ldg..][..g.gp]) {
                        *p += v;
                    }
                }
                for (d, &p) in db.iter_mut().zip(part.iter()) {
                    *d += p;
                }
            }
            for gate in 0..4 {
                for u in 0..g.hidden {
                    let v = db[g.col(gate, u)];
                    b_ih[gate * g.hidden + u] = v;
                    b_hh[gate * g.hidden + u] = v;
                }
            }
        }
        if let (Some(w_hr), Some(h_cell)) = (&mut param.w_hr, self.cell_tape.h_cell) {
            let hc: &[f32] = match &self.order.order {
                Some(order) => {
                    let s = grow(hc_sorted, "hidden states", h_cell.len())?;
                    gather_rows(s, h_cell, order, self.seq_len, g.hidden);
                    s
                }
                None => h_cell,
            };
            let ld_c = round_up(g.hidden, width);
            let gw_hr = grow(gw_hr, "grad weight_hr", numel(&[g.proj, ld_c]))?;
            self.tn(dh_all, g.ld_rec, g.proj, (hc, g.hidden), gw_hr, pack)?;
            for q in 0..g.proj {
                w_hr[q * g.hidden..][..g.hidden].copy_from_slice(&gw_hr[q * ld_c..][..g.hidden]);
            }
        }
        Ok(())
    }

    /// `h_{t-1}` of every row (sorted), `[T·B, H_out]`: the layer output of the forward's
    /// previous step, or `h0` at each row's first step.
    fn previous_hidden<'w>(&self, h0: &[f32], h_prev: &'w mut Vec<f32>) -> Result<&'w [f32]> {
        let (g, batch, order) = (self.g, self.batch, self.order);
        let h_prev = grow(
            h_prev,
            "previous hidden states",
            numel(&[self.seq_len, batch, g.h_out]),
        )?;
        let y_off = self.dir * g.h_out;
        for t in 0..self.seq_len {
            for i in 0..batch {
                let dst = &mut h_prev[(t * batch + i) * g.h_out..][..g.h_out];
                let prev = if self.dir == 1 {
                    (t + 1 < order.lengths[i]).then_some(t + 1)
                } else {
                    t.checked_sub(1)
                };
                match prev {
                    Some(p) => dst.copy_from_slice(
                        &self.y[(p * batch + i) * g.out_size + y_off..][..g.h_out],
                    ),
                    None => dst.copy_from_slice(&h0[i * g.h_out..][..g.h_out]),
                }
            }
        }
        Ok(h_prev)
    }

    /// `C = Aᵀ · B` over all `T·B` rows: `A` is `[T·B, lda]` (its first `a_rows` columns), `B`
    /// is `[T·B, cols]`, `C` is `[a_rows, cols rounded up to 4N]`.
    fn tn(
        &self,
        a: &[f32],
        lda: usize,
        a_rows: usize,
        (b, cols): (&[f32], usize),
        c: &mut [f32],
        packs: &mut Vec<Vec<f32>>,
    ) -> Result<()> {
        c.fill(0.0);
        let ldc = round_up(cols, 4 * self.g.n);
        // Split by the rows of C: each element is still one sum over all T·B rows, in order.
        let workers = self.team.map_or(1, |t| t.size());
        let parts = split_even(a_rows, workers, self.kernels.row_block);
        if packs.len() < parts.len() {
            packs.resize_with(parts.len(), Vec::new);
        }
        for (p, r) in packs.iter_mut().zip(&parts) {
            grow(p, "GEMM panels", gemm_tn_scratch(r.len(), self.g.n))?;
        }
        let jobs: Vec<_> = parts
            .iter()
            .cloned()
            .zip(cut_rows(c, ldc, &parts))
            .zip(packs.iter_mut())
            .collect();
        run_parts(self.team, jobs, |((r, c), pack)| {
            self.kernels.gemm_tn(GemmTn {
                rows: r.len(),
                k: self.seq_len * self.batch,
                a: &a[r.start..],
                lda,
                b,
                ldb: cols,
                cols,
                c,
                ldc,
                pack,
            });
        });
        Ok(())
    }
}

/// Rows of a buffer and their stride.
type Strided<'a> = (&'a [f32], usize);

/// One shard's rows (`rows`, of the sorted batch) of the buffers the backward through time
/// writes: the carried gradients and their scratch (`[rows, ld]` each), and per step `t` its
/// rows of `dG_t` and, with a projection, of `dh_t`.
struct ShardGrads<'a> {
    rows: std::ops::Range<usize>,
    /// The initial cell state, rows padded to `hp`.
    c0_pad: &'a [f32],
    /// `dL/dh_{t-1}` through `W_hh` and `dL/dc_{t-1}`.
    dh_rec: &'a mut [f32],
    dc: &'a mut [f32],
    /// With a projection: `dh · W_hr` of the step.
    dh_cell: &'a mut [f32],
    dg: Vec<&'a mut [f32]>,
    dh_all: Vec<&'a mut [f32]>,
}

/// The first `rows.end` rows of a `[_, ld]` buffer cut at each shard's rows.
fn cut_rows<'a>(
    buf: &'a mut [f32],
    ld: usize,
    shards: &[std::ops::Range<usize>],
) -> Vec<&'a mut [f32]> {
    let mut rest = buf;
    let mut parts = Vec::with_capacity(shards.len());
    for r in shards {
        let len = (r.len() * ld).min(rest.len());
        let (part, tail) = std::mem::take(&mut rest).split_at_mut(len);
        parts.push(part);
        rest = tail;
    }
    parts
}

/// Each shard's view of the backward's buffers (`(buffer, row stride)` pairs; `dg` and
/// `dh_all` are `[T, B, ld]`, the others `[B, ld]`).
#[allow(clippy::too_many_arguments)] // one argument per buffer
fn shard_views<'a>(
    shards: &[std::ops::Range<usize>],
    (batch, seq_len): (usize, usize),
    (c0_pad, ld_c0): (&'a [f32], usize),
    (dh_rec, ld_rec): (&'a mut [f32], usize),
    (dc, ld_c): (&'a mut [f32], usize),
    (dh_cell, ld_hc): (&'a mut [f32], usize),
    (dg, ldg): (&'a mut [f32], usize),
    (dh_all, ld_all): (&'a mut [f32], usize),
) -> Vec<ShardGrads<'a>> {
    let mut views: Vec<ShardGrads<'a>> = shards
        .iter()
        .zip(cut_rows(dh_rec, ld_rec, shards))
        .zip(cut_rows(dc, ld_c, shards))
        .zip(cut_rows(dh_cell, ld_hc, shards))
        .map(|(((r, dh_rec), dc), dh_cell)| ShardGrads {
            rows: r.clone(),
            c0_pad: &c0_pad[(r.start * ld_c0).min(c0_pad.len())..],
            dh_rec,
            dc,
            dh_cell,
            dg: Vec::with_capacity(seq_len),
            dh_all: Vec::with_capacity(seq_len),
        })
        .collect();
    for step in dg.chunks_mut((batch * ldg).max(1)).take(seq_len) {
        for (v, part) in views.iter_mut().zip(cut_rows(step, ldg, shards)) {
            v.dg.push(part);
        }
    }
    for step in dh_all.chunks_mut((batch * ld_all).max(1)).take(seq_len) {
        for (v, part) in views.iter_mut().zip(cut_rows(step, ld_all, shards)) {
            v.dh_all.push(part);
        }
    }
    views
}

/// Runs `f` on every part: on the workers of `team`, one part each, or in order on this
/// thread. The parts write disjoint memory and each is computed the same way wherever it runs.
fn run_parts<P: Send>(team: Option<&dyn WorkerTeam>, parts: Vec<P>, f: impl Fn(P) + Sync) {
    match team {
        Some(team) if parts.len() > 1 && team.size() > 1 => {
            let slots: Vec<Mutex<Option<P>>> =
                parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
            let take = |w: usize| {
                slots
                    .get(w)
                    .and_then(|s| s.lock().unwrap_or_else(|e| e.into_inner()).take())
            };
            team.run(&|w| {
                if let Some(p) = take(w) {
                    f(p);
                }
            });
            // A team smaller than promised leaves parts behind: run them here.
            for w in 0..slots.len() {
                if let Some(p) = take(w) {
                    f(p);
                }
            }
        }
        _ => parts.into_iter().for_each(f),
    }
}

/// `n` items cut into at most `parts` ranges of nearly equal size, each at least `min` long
/// (one range when `n < 2·min`).
fn split_even(n: usize, parts: usize, min: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.min(n / min.max(1)).max(1);
    (0..parts)
        .map(|p| n * p / parts..n * (p + 1) / parts)
        .collect()
}

impl LstmBackward<f32> for SimdEngine {
    fn forward_train(
        &self,
        input: &Tensor<f32>,
        state: Option<&LstmState<f32>>,
        lengths: Option<&[usize]>,
        tape: &mut TrainingTape<f32>,
    ) -> Result<LstmOutput<f32>> {
        SimdEngine::forward_train(self, input, state, lengths, tape)
    }

    fn backward(
        &self,
        tape: &TrainingTape<f32>,
        grads: &GradOutputs<'_, f32>,
    ) -> Result<LstmGradients<f32>> {
        SimdEngine::backward(self, tape, grads)
    }
}
