//! The SIMD engine's training path: [`SimdEngine::forward_train`] (the forward, recording a
//! [`TrainingTape`]) and [`SimdEngine::backward`] (backpropagation through time), which
//! implement [`LstmBackward<f32>`].
//!
//! **Training forward.** The forward of [`LstmEngine::forward`](lstm_core::LstmEngine), with the
//! same packed weights, input-projection GEMM and batch order (longest sequence first), whose
//! recurrent step ([`train_step`](crate::train_kernels::train_step)) also writes the gates, `c_t`
//! and `tanh(c_t)` of every row into the tape (in the caller's batch order, through a row
//! table). Its results are [`forward`](lstm_core::LstmEngine::forward)'s, bit for bit.
//!
//! **Backward**, per layer from the top, per direction, in the sorted batch order (the rows
//! still running at a step are a prefix, as in the forward):
//!
//! 1. per step, in the reverse of the forward's order: `dh = dy_t + dh_rec` (through the
//!    projection `dh_cell = dh · W_hr` when `proj_size > 0`); the gate derivatives on lanes
//!    ([`gate_backward`](crate::train_kernels::gate_backward)) give the pre-activation gradients
//!    `dG_t` and carry `dc` through `f`; then `dh_rec = dG_t · W_hh`, one GEMM over the active
//!    rows with `W_hh` packed a second time for it;
//! 2. once per cell, over all `T·B` rows at once: `dW_ihᵀ = Xᵀ · dG`, `dW_hhᵀ = H_prevᵀ · dG`,
//!    `dW_hrᵀ = H_cellᵀ · dH` ([`gemm_tn`](crate::train_kernels::gemm_tn), `dG` read in place),
//!    and `db` (shared by `bias_ih` and `bias_hh`) as column sums of `dG`;
//! 3. once per layer: `dX = [dG_fwd | dG_rev] · [W_ih_fwd; W_ih_rev]`, one GEMM whose result is
//!    the gradient of the layer below's output (or of the input).
//!
//! The packings for the backward (`W_hh` and `W_hr` transposed, the stacked `W_ih`) are made
//! from the forward's packed weights on the first training call and kept. Every reduction has
//! a fixed order, so results do not depend on timing. The per-step loops never allocate: all
//! scratch is sized before them in a reused [`TrainWorkspace`].
//!
//! Memory: the tape (`TrainingTape::required_elements`), plus the backward's scratch, in f32
//! per `T·B` row: `D·4·H_p` (`dG`, `H_p` = `H` rounded up to the lane count) `+ 2·D·H_out,p`
//! (the gradients of two layers' outputs) `+ H_out` (the previous hidden states of one cell)
//! `[+ P_p` with a projection`]`, plus copies of a layer's input and output with unsorted
//! lengths.

use std::sync::Mutex;

use lstm_core::grad::{CanonicalGrads, CellTape, CellTapeMut, LayerTapeMut};
use lstm_core::tensor::{checked_numel, try_filled_vec};
use lstm_core::{
    CellWeights, GradOutputs, LstmBackward, LstmError, LstmGradients, LstmOutput, LstmState,
    Result, SequenceBatch, Tensor, TrainingTape,
};

use super::{PackedCell, SimdEngine};
use crate::kernels::GemmArgs;
use crate::pack::{pack_plain, padded_hidden, PackedMatrix};
use crate::train_kernels::{
    gemm_tn_scratch, train_kernels, GateBackwardArgs, GemmTnArgs, TrainKernels, TrainStepArgs,
};

/// Rows of input projection computed ahead of the recurrence, at most (as the forward).
const CHUNK_BYTES: usize = 2 << 20;

/// Rows summed together before they join a bias gradient: a two-level sum, so the rounding
/// grows with `64 + T·B/64` rather than with `T·B`.
const BIAS_CHUNK: usize = 64;

/// What the backward adds to the engine: weights packed for it, its kernels and scratch.
#[derive(Debug)]
pub(crate) struct TrainState {
    kernels: TrainKernels,
    /// Per cell: `W_hh` as the `B` of `dh_rec = dG · W_hh` (`k` = `4·H_p` in gate-tile order,
    /// columns `H_out`), and `W_hr` as the `B` of `dh_cell = dh · W_hr` (`k` = `P`, columns `H`).
    cells: Vec<BackwardCell>,
    /// Per layer: the directions' `W_ih` stacked along `k` (`D·4·H_p`), as the `B` of
    /// `dX = dG · W_ih`; columns: the input features (layer 0), or the layer below's output
    /// features in the padded layout of the gradient buffers (`d·H_out,p + u`).
    layers: Vec<PackedMatrix>,
    pool: Mutex<Vec<TrainWorkspace>>,
}

#[derive(Debug)]
struct BackwardCell {
    w_hh: PackedMatrix,
    w_hr: Option<PackedMatrix>,
}

/// Reusable scratch of the training path (sized before the per-step loops, reused across
/// calls).
#[derive(Debug, Default)]
struct TrainWorkspace {
    // Forward.
    xproj: Vec<f32>,
    h_a: Vec<f32>,
    h_b: Vec<f32>,
    h_cell: Vec<f32>,
    c: Vec<f32>,
    /// A layer's input (forward) or input and output (backward), in sorted batch order.
    x_sorted: Vec<f32>,
    out_sorted: Vec<f32>,
    h0_sorted: Vec<f32>,
    c0_sorted: Vec<f32>,
    // Backward.
    d_out: Vec<f32>,
    d_in: Vec<f32>,
    dg: Vec<f32>,
    dh_rec: Vec<f32>,
    dc: Vec<f32>,
    dh_cell: Vec<f32>,
    dh_all: Vec<f32>,
    c0_pad: Vec<f32>,
    h0_cell: Vec<f32>,
    h_prev: Vec<f32>,
    hc_sorted: Vec<f32>,
    gw_ih: Vec<f32>,
    gw_hh: Vec<f32>,
    gw_hr: Vec<f32>,
    db: Vec<f32>,
    db_part: Vec<f32>,
    /// Packed panels of the weight-gradient GEMMs.
    tn_pack: Vec<f32>,
}

/// The element count of `dims`; an overflow becomes `usize::MAX`, which allocation refuses.
fn numel(dims: &[usize]) -> usize {
    checked_numel(dims).unwrap_or(usize::MAX)
}

/// `v` grown to at least `len` floats (a typed error when that fails), its first `len` as a
/// slice. Contents are unspecified: callers fill what they read.
fn grow<'a>(v: &'a mut Vec<f32>, what: &str, len: usize) -> Result<&'a mut [f32]> {
    if v.len() < len {
        *v = try_filled_vec(what, len, 0.0)?;
    }
    Ok(&mut v[..len])
}

/// `len` rounded up to a multiple of `m`.
fn round_up(len: usize, m: usize) -> usize {
    len.div_ceil(m) * m
}

/// Sizes of one engine's cells in the training path's layouts.
#[derive(Clone, Copy, Debug)]
struct Geo {
    /// Lanes per vector.
    n: usize,
    input: usize,
    hidden: usize,
    h_out: usize,
    proj: usize,
    dirs: usize,
    /// `D·H_out`: a layer's output features.
    out_size: usize,
    /// `H` rounded up to `n`; `gp = 4·hp`, the width of one direction's `dG`.
    hp: usize,
    gp: usize,
    /// `H_out` rounded up to `n`: the width of one direction in the gradient buffers.
    hpo: usize,
    /// Row stride of the recurrent `h` buffers of the forward.
    ldh: usize,
    /// Row stride of the gradient of a layer's output (`D·hpo` rounded up to `4n`).
    ldd: usize,
    /// Row stride of `dh_rec` and of `dh` with a projection (`H_out` rounded up to `4n`).
    ld_rec: usize,
    /// Row stride of `dh_cell` (`H` rounded up to `4n`).
    ld_hc: usize,
    /// Row stride of `dG`: `D·gp`.
    ldg: usize,
}

impl Geo {
    fn of(engine: &SimdEngine) -> Self {
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
            ldh: d.ldh,
            ldd: round_up(d.dirs * hpo, 4 * n),
            ld_rec: round_up(d.h_out, 4 * n),
            ld_hc: round_up(d.hidden, 4 * n),
            ldg: d.dirs * d.gp,
        }
    }

    /// The column of gate `gate`, unit `unit` in the gate-tile layout of `dG`.
    fn col(&self, gate: usize, unit: usize) -> usize {
        (unit / self.n) * 4 * self.n + gate * self.n + unit % self.n
    }
}

impl TrainState {
    /// Repacks the engine's weights for the backward (once per engine).
    fn new(engine: &SimdEngine) -> Result<Self> {
        let kernels = train_kernels(engine.backend)?;
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
            let packed = cell.w_hh.as_slice();
            let mut m = try_filled_vec("weight_hh (backward)", numel(&[g.h_out, g.gp]), 0.0)?;
            for j in 0..g.h_out {
                for kk in 0..g.gp {
                    let (t, jj) = (kk / width, kk % width);
                    m[j * g.gp + kk] = *packed
                        .get((t * g.h_out + j) * width + jj)
                        .ok_or_else(|| missing("weight_hh"))?;
                }
            }
            let w_hh = pack_plain("weight_hh (backward)", &m, g.h_out, g.gp, n)?;
            let w_hr = match &cell.w_hr {
                Some(p) => {
                    // Packed W_hr: tile t, run j, column jj → W_hr[t·4N + jj, j]; M[j][p] =
                    // W_hr[p, j].
                    let packed = p.as_slice();
                    let mut m =
                        try_filled_vec("weight_hr (backward)", numel(&[g.hidden, g.proj]), 0.0)?;
                    for j in 0..g.hidden {
                        for q in 0..g.proj {
                            m[j * g.proj + q] = *packed
                                .get(((q / width) * g.hidden + j) * width + q % width)
                                .ok_or_else(|| missing("weight_hr"))?;
                        }
                    }
                    Some(pack_plain("weight_hr (backward)", &m, g.hidden, g.proj, n)?)
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
                let packed = cell.w_ih.as_slice();
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
            layers.push(pack_plain("weight_ih (backward)", &m, cols, k, n)?);
        }
        Ok(TrainState {
            kernels,
            cells,
            layers,
            pool: Mutex::new(Vec::new()),
        })
    }

    fn take(&self) -> TrainWorkspace {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn give(&self, ws: TrainWorkspace) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 4 {
            pool.push(ws);
        }
    }
}

/// The batch order of a call: longest sequence first (stable, as the forward), and per step
/// the number of rows still running.
#[derive(Debug)]
struct Plan {
    /// `order[i]`: the caller's row at sorted position `i`; `None` when already sorted.
    order: Option<Vec<usize>>,
    /// `active[t]`: rows running at step `t` (a prefix of the sorted rows).
    active: Vec<usize>,
    /// The sorted rows' lengths.
    lengths: Vec<usize>,
}

impl Plan {
    fn new(seq_len: usize, lengths: &[usize]) -> Self {
        let batch = lengths.len();
        let mut order: Vec<usize> = (0..batch).collect();
        order.sort_by_key(|&b| std::cmp::Reverse(lengths[b]));
        let active = (0..seq_len)
            .map(|t| lengths.iter().filter(|&&len| len > t).count())
            .collect();
        let sorted = order.iter().map(|&b| lengths[b]).collect();
        let identity = order.iter().enumerate().all(|(i, &b)| i == b);
        Plan {
            order: (!identity).then_some(order),
            active,
            lengths: sorted,
        }
    }

    /// The caller's row of sorted row `i`.
    fn orig(&self, i: usize) -> usize {
        self.order.as_ref().map_or(i, |o| o[i])
    }

    /// The row table the kernels take (null for the identity).
    fn table(&self) -> *const usize {
        self.order.as_ref().map_or(std::ptr::null(), |o| o.as_ptr())
    }
}

/// `dst[g, i, :] = src[g, order[i], :]` for `groups` groups of `order.len()` rows of `width`.
fn gather_rows(dst: &mut [f32], src: &[f32], order: &[usize], groups: usize, width: usize) {
    let b = order.len();
    for g in 0..groups {
        for (i, &from) in order.iter().enumerate() {
            let d = (g * b + i) * width;
            let s = (g * b + from) * width;
            dst[d..d + width].copy_from_slice(&src[s..s + width]);
        }
    }
}

/// `data` from sorted order back to the caller's: `data[g, order[i]] = sorted[g, i]`.
fn unsort(data: &mut [f32], order: &[usize], groups: usize, width: usize) -> Result<()> {
    let mut sorted = try_filled_vec("unsort", data.len(), 0.0f32)?;
    sorted.copy_from_slice(data);
    let b = order.len();
    for g in 0..groups {
        for (i, &to) in order.iter().enumerate() {
            let s = (g * b + i) * width;
            let d = (g * b + to) * width;
            data[d..d + width].copy_from_slice(&sorted[s..s + width]);
        }
    }
    Ok(())
}

/// Copies `rows` rows of `w` floats between two strided buffers.
fn copy_rows(dst: &mut [f32], ld_dst: usize, src: &[f32], ld_src: usize, rows: usize, w: usize) {
    for r in 0..rows {
        dst[r * ld_dst..r * ld_dst + w].copy_from_slice(&src[r * ld_src..r * ld_src + w]);
    }
}

/// An inconsistency the checks before make impossible; an error, never a panic.
fn internal(what: &str) -> LstmError {
    LstmError::Internal(format!("the training tape has no {what} for this model"))
}

/// One (layer, direction) pass of the training forward.
struct TrainIo<'a> {
    /// The layer's input in sorted order, `[T, B, in_size]`.
    input: &'a [f32],
    in_size: usize,
    /// The layer's output in the tape (caller's order), `[T, B, D·H_out]`.
    output: &'a mut [f32],
    dir: usize,
    /// Sorted initial state of this cell, `[B, H_out]`, `[B, H]`.
    h0: Option<&'a [f32]>,
    c0: Option<&'a [f32]>,
    /// Sorted final state of this cell.
    h_n: &'a mut [f32],
    c_n: &'a mut [f32],
}

impl SimdEngine {
    /// The backward's packings, made on first use.
    fn train_state(&self) -> Result<&TrainState> {
        if let Some(state) = self.train.get() {
            return Ok(state);
        }
        let state = TrainState::new(self)?;
        // A thread that raced us set an identical state; either is fine.
        let _ = self.train.set(state);
        self.train.get().ok_or_else(|| internal("training state"))
    }

    /// The forward pass, exactly as [`LstmEngine::forward`](lstm_core::LstmEngine::forward)
    /// computes it (the same kernels in the same order, so the same bits), recording in `tape`
    /// what [`backward`](Self::backward) reads.
    pub fn forward_train(
        &self,
        input: &Tensor<f32>,
        state: Option<&LstmState<f32>>,
        lengths: Option<&[usize]>,
        tape: &mut TrainingTape<f32>,
    ) -> Result<LstmOutput<f32>> {
        let config = &self.config;
        let call = SequenceBatch::new(config, input, state, lengths)?;
        call.ensure_config(config)?;
        tape.begin(&call)?;
        let (seq_len, batch) = (call.seq_len(), call.batch());
        let g = Geo::of(self);
        let cells = config.num_cells();
        let mut h_n = try_filled_vec("h_n", numel(&[cells, batch, g.h_out]), 0.0)?;
        let mut c_n = try_filled_vec("c_n", numel(&[cells, batch, g.hidden]), 0.0)?;
        if batch > 0 && seq_len > 0 {
            let ts = self.train_state()?;
            let lens: Vec<usize> = (0..batch)
                .map(|b| call.length(b).unwrap_or(seq_len))
                .collect();
            let plan = Plan::new(seq_len, &lens);
            let mut ws = ts.take();
            let result =
                self.forward_train_into(ts, &call, &plan, &mut ws, tape, &mut h_n, &mut c_n);
            ts.give(ws);
            result?;
            if let Some(order) = &plan.order {
                unsort(&mut h_n, order, cells, g.h_out)?;
                unsort(&mut c_n, order, cells, g.hidden)?;
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

    #[allow(clippy::too_many_arguments)]
    fn forward_train_into(
        &self,
        ts: &TrainState,
        call: &SequenceBatch<'_, f32>,
        plan: &Plan,
        ws: &mut TrainWorkspace,
        tape: &mut TrainingTape<f32>,
        h_n: &mut [f32],
        c_n: &mut [f32],
    ) -> Result<()> {
        let g = Geo::of(self);
        let (seq_len, batch) = (call.seq_len(), call.batch());
        let cells = self.config.num_cells();
        let (mut h0, mut c0) = (call.h0(), call.c0());
        let mut h0_sorted = std::mem::take(&mut ws.h0_sorted);
        let mut c0_sorted = std::mem::take(&mut ws.c0_sorted);
        let mut x_sorted = std::mem::take(&mut ws.x_sorted);
        if let (Some(order), Some(h), Some(c)) = (&plan.order, h0, c0) {
            let hs = grow(&mut h0_sorted, "h0", h.len())?;
            gather_rows(hs, h, order, cells, g.h_out);
            let cs = grow(&mut c0_sorted, "c0", c.len())?;
            gather_rows(cs, c, order, cells, g.hidden);
            h0 = Some(&h0_sorted[..h.len()]);
            c0 = Some(&c0_sorted[..c.len()]);
        }
        let mut result = Ok(());
        for layer in 0..self.config.num_layers {
            let in_size = self.config.layer_input_size(layer);
            let Some(LayerTapeMut {
                input,
                output,
                cells: mut recs,
            }) = tape.layer_mut(layer)
            else {
                result = Err(internal("layer"));
                break;
            };
            let x: &[f32] = match &plan.order {
                Some(order) => {
                    let xs = grow(&mut x_sorted, "input", input.len())?;
                    gather_rows(xs, input, order, seq_len, in_size);
                    xs
                }
                None => input,
            };
            for (dir, rec) in recs.iter_mut().enumerate() {
                let idx = layer * g.dirs + dir;
                let (hs, cs) = (idx * batch * g.h_out, idx * batch * g.hidden);
                let (Some(cell), Some(h_n), Some(c_n)) = (
                    self.cells.get(idx),
                    h_n.get_mut(hs..hs + batch * g.h_out),
                    c_n.get_mut(cs..cs + batch * g.hidden),
                ) else {
                    return Err(internal("cell"));
                };
                let io = TrainIo {
                    input: x,
                    in_size,
                    output: &mut *output,
                    dir,
                    h0: h0.map(|h| &h[hs..hs + batch * g.h_out]),
                    c0: c0.map(|c| &c[cs..cs + batch * g.hidden]),
                    h_n,
                    c_n,
                };
                self.train_direction(ts, cell, io, rec, plan, batch, ws)?;
            }
        }
        ws.h0_sorted = h0_sorted;
        ws.c0_sorted = c0_sorted;
        ws.x_sorted = x_sorted;
        result
    }

    /// One (layer, direction) of the training forward: the engine's `run_direction` with the
    /// recording step kernel.
    #[allow(clippy::too_many_arguments)]
    fn train_direction(
        &self,
        ts: &TrainState,
        cell: &PackedCell,
        io: TrainIo<'_>,
        rec: &mut CellTapeMut<'_, f32>,
        plan: &Plan,
        batch: usize,
        ws: &mut TrainWorkspace,
    ) -> Result<()> {
        let g = Geo::of(self);
        let seq_len = plan.active.len();
        let reverse = io.dir == 1;
        let steps = (CHUNK_BYTES / (4 * g.gp) / batch.max(1)).clamp(1, seq_len.max(1));
        let xp = grow(
            &mut ws.xproj,
            "input projection",
            numel(&[steps, batch, g.gp]),
        )?;
        let mut cur = grow(&mut ws.h_a, "h", numel(&[batch, g.ldh]))?;
        let mut next = grow(&mut ws.h_b, "h", numel(&[batch, g.ldh]))?;
        let cs = grow(&mut ws.c, "c", numel(&[batch, g.hp]))?;
        let hc = grow(&mut ws.h_cell, "h", numel(&[batch, g.hp]))?;
        for buf in [&mut *cur, &mut *next] {
            buf.fill(0.0);
            if let Some(h0) = io.h0 {
                copy_rows(buf, g.ldh, h0, g.h_out, batch, g.h_out);
            }
        }
        cs.fill(0.0);
        if let Some(c0) = io.c0 {
            copy_rows(cs, g.hp, c0, g.hidden, batch, g.hidden);
        }
        let projecting = cell.w_hr.is_some();
        let (h4, h1) = (4 * g.hidden, g.hidden);
        let out_off = io.dir * g.h_out;
        let mut running = batch;
        let mut h_is_zero = io.h0.is_none();

        let mut chunk_start = 0;
        while chunk_start < seq_len {
            let chunk_len = steps.min(seq_len - chunk_start);
            let first = if reverse {
                seq_len - chunk_start - chunk_len
            } else {
                chunk_start
            };
            let gemm = GemmArgs {
                rows: chunk_len * batch,
                a: io.input[first * batch * io.in_size..].as_ptr(),
                lda: io.in_size,
                k: io.in_size,
                b: cell.w_ih.as_ptr(),
                tiles: cell.w_ih.tiles,
                bias: cell.bias.as_slice().as_ptr(),
                c: xp.as_mut_ptr(),
                ldc: g.gp,
            };
            // SAFETY: the kernels match this CPU (Backend::kernels checked it at construction);
            // `input` holds T·B rows of in_size floats and first + chunk_len <= T; the packed
            // W_ih has k = in_size; `bias` has gp floats; `xproj` holds `steps · B` rows of gp
            // floats and chunk_len <= steps.
            unsafe { (self.kernels.gemm)(&gemm) };

            for i in 0..chunk_len {
                let t = if reverse {
                    first + chunk_len - 1 - i
                } else {
                    first + i
                };
                let n = plan.active[t];
                if !reverse && n < running {
                    // Rows n..running ended at the previous step: their h is final.
                    copy_rows(
                        &mut io.h_n[n * g.h_out..],
                        g.h_out,
                        &cur[n * g.ldh..],
                        g.ldh,
                        running - n,
                        g.h_out,
                    );
                    running = n;
                }
                if n == 0 {
                    continue;
                }
                let h_dst = if projecting {
                    hc.as_mut_ptr()
                } else {
                    next.as_mut_ptr()
                };
                let step = TrainStepArgs {
                    rows: n,
                    h: cur.as_ptr(),
                    ldh: g.ldh,
                    k: if h_is_zero { 0 } else { g.h_out },
                    w: cell.w_hh.as_ptr(),
                    tiles: cell.w_hh.tiles,
                    xproj: xp[(t - first) * batch * g.gp..].as_ptr(),
                    ldx: g.gp,
                    c: cs.as_mut_ptr(),
                    ldc: g.hp,
                    h_out: h_dst,
                    ldo: g.hp,
                    hidden: g.hidden,
                    tape_rows: plan.table(),
                    gates: rec.gates[t * batch * h4..].as_mut_ptr(),
                    cell: rec.c[t * batch * h1..].as_mut_ptr(),
                    tanh_c: rec.tanh_c[t * batch * h1..].as_mut_ptr(),
                    h_cell: if projecting {
                        rec.h_cell[t * batch * h1..].as_mut_ptr()
                    } else {
                        std::ptr::null_mut()
                    },
                };
                // SAFETY: training kernels match this CPU (train_kernels checked the backend);
                // `cur` and the destination are distinct buffers of B rows (stride ldh >= hp
                // >= h_out, resp. hp); W_hh is packed with k = h_out; the step's projected rows
                // are in the chunk; c holds B rows of hp floats; n <= B; the tape holds B rows
                // of 4H (H) floats at step t, and the row table (order, B distinct rows < B)
                // or the identity maps rows below n into them.
                unsafe { (ts.kernels.train_step)(&step) };
                h_is_zero = false;
                if let Some(w_hr) = &cell.w_hr {
                    let proj = GemmArgs {
                        rows: n,
                        a: hc.as_ptr(),
                        lda: g.hp,
                        k: g.hidden,
                        b: w_hr.as_ptr(),
                        tiles: w_hr.tiles,
                        bias: std::ptr::null(),
                        c: next.as_mut_ptr(),
                        ldc: g.ldh,
                    };
                    // SAFETY: kernels match this CPU; h_cell holds B rows of hp >= hidden
                    // floats; W_hr is packed with k = hidden; `next` holds B rows of
                    // ldh = w_hr.cols() floats.
                    unsafe { (self.kernels.gemm)(&proj) };
                }
                std::mem::swap(&mut cur, &mut next);
                for i in 0..n {
                    let o = (t * batch + plan.orig(i)) * g.out_size + out_off;
                    io.output[o..o + g.h_out].copy_from_slice(&cur[i * g.ldh..i * g.ldh + g.h_out]);
                }
            }
            chunk_start += chunk_len;
        }
        let last = if reverse { batch } else { running };
        copy_rows(io.h_n, g.h_out, cur, g.ldh, last, g.h_out);
        copy_rows(io.c_n, g.hidden, cs, g.hp, batch, g.hidden);
        Ok(())
    }

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
        let config = &self.config;
        tape.ensure_filled_for(config)?;
        let upstream = tape.canonical_grads(grads)?;
        let (seq_len, batch) = (tape.seq_len(), tape.batch());
        let g = Geo::of(self);
        let cells = config.num_cells();
        let mut grad_h0 = try_filled_vec("grad_h0", numel(&[cells, batch, g.h_out]), 0.0)?;
        let mut grad_c0 = try_filled_vec("grad_c0", numel(&[cells, batch, g.hidden]), 0.0)?;
        let mut grad_input = try_filled_vec("grad_input", numel(&[seq_len, batch, g.input]), 0.0)?;
        let mut params = Vec::with_capacity(cells);
        for layer in 0..config.num_layers {
            let in_size = config.layer_input_size(layer);
            for _ in 0..g.dirs {
                let zeros = |what: &str, n: usize| try_filled_vec(what, n, 0.0f32);
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
        if batch > 0 && seq_len > 0 {
            let ts = self.train_state()?;
            let lens: Vec<usize> = (0..batch)
                .map(|b| tape.length(b).unwrap_or(seq_len))
                .collect();
            let plan = Plan::new(seq_len, &lens);
            let mut ws = ts.take();
            let mut out = BackwardOut {
                grad_input: &mut grad_input,
                grad_h0: &mut grad_h0,
                grad_c0: &mut grad_c0,
                params: &mut params,
            };
            let result = self.backward_into(ts, tape, &upstream, &plan, &mut ws, &mut out);
            ts.give(ws);
            result?;
        }
        tape.finish_gradients(grad_input, grad_h0, grad_c0, params)
    }
}

/// Where the backward writes (caller's batch order, PyTorch layouts).
struct BackwardOut<'a> {
    grad_input: &'a mut [f32],
    grad_h0: &'a mut [f32],
    grad_c0: &'a mut [f32],
    params: &'a mut [CellWeights<f32>],
}

impl SimdEngine {
    fn backward_into(
        &self,
        ts: &TrainState,
        tape: &TrainingTape<f32>,
        upstream: &CanonicalGrads<f32>,
        plan: &Plan,
        ws: &mut TrainWorkspace,
        out: &mut BackwardOut<'_>,
    ) -> Result<()> {
        let g = Geo::of(self);
        let (seq_len, batch) = (tape.seq_len(), batch_of(plan));
        let rows = seq_len * batch;
        let ld0 = ts.layers.first().map_or(0, PackedMatrix::cols);
        let ld_max = g.ldd.max(ld0);
        let mut d_out = std::mem::take(&mut ws.d_out);
        let mut d_in = std::mem::take(&mut ws.d_in);
        grow(&mut d_out, "output gradient", numel(&[rows, ld_max]))?;
        grow(&mut d_in, "output gradient", numel(&[rows, ld_max]))?;

        // The upstream gradient, sorted, in the padded per-direction layout.
        {
            let d = &mut d_out[..rows * g.ldd];
            d.fill(0.0);
            for t in 0..seq_len {
                for i in 0..batch {
                    let src = (t * batch + plan.orig(i)) * g.out_size;
                    let dst = (t * batch + i) * g.ldd;
                    for dir in 0..g.dirs {
                        d[dst + dir * g.hpo..dst + dir * g.hpo + g.h_out].copy_from_slice(
                            &upstream.output[src + dir * g.h_out..src + (dir + 1) * g.h_out],
                        );
                    }
                }
            }
        }
        let mut ld_cur = g.ldd;
        let mut result = Ok(());
        for layer in (0..self.config.num_layers).rev() {
            let Some(rec) = tape.layer(layer) else {
                result = Err(internal("layer"));
                break;
            };
            let in_size = self.config.layer_input_size(layer);
            let mut x_sorted = std::mem::take(&mut ws.x_sorted);
            let mut out_sorted = std::mem::take(&mut ws.out_sorted);
            let mut dg = std::mem::take(&mut ws.dg);
            let r = (|| -> Result<()> {
                let (x, y): (&[f32], &[f32]) = match &plan.order {
                    Some(order) => {
                        let xs = grow(&mut x_sorted, "input", rec.input.len())?;
                        gather_rows(xs, rec.input, order, seq_len, in_size);
                        let ys = grow(&mut out_sorted, "output", rec.output.len())?;
                        gather_rows(ys, rec.output, order, seq_len, g.out_size);
                        (xs, ys)
                    }
                    None => (rec.input, rec.output),
                };
                let dg = grow(&mut dg, "gate gradients", numel(&[rows, g.ldg]))?;
                if plan.active.iter().any(|&n| n < batch) {
                    dg.fill(0.0); // rows of finished sequences stay zero
                }
                for dir in 0..g.dirs {
                    let idx = layer * g.dirs + dir;
                    let (Some(cell_tape), Some(bw), Some(param)) = (
                        rec.cells.get(dir),
                        ts.cells.get(idx),
                        out.params.get_mut(idx),
                    ) else {
                        return Err(internal("cell"));
                    };
                    let cb = CellBackward {
                        ts,
                        bw,
                        g,
                        plan,
                        tape,
                        cell_tape,
                        gemm: self.kernels.gemm,
                        x,
                        y,
                        in_size,
                        seq_len,
                        batch,
                        dir,
                        idx,
                    };
                    cb.run(
                        ws,
                        upstream,
                        &d_out[..rows * ld_cur],
                        ld_cur,
                        dg,
                        param,
                        (&mut *out.grad_h0, &mut *out.grad_c0),
                    )?;
                }
                // dX = [dG_fwd | dG_rev] · [W_ih_fwd; W_ih_rev], the layer below's d_out.
                let stack = ts.layers.get(layer).ok_or_else(|| internal("layer"))?;
                let dx = GemmArgs {
                    rows,
                    a: dg.as_ptr(),
                    lda: g.ldg,
                    k: g.ldg,
                    b: stack.as_ptr(),
                    tiles: stack.tiles,
                    bias: std::ptr::null(),
                    c: d_in.as_mut_ptr(),
                    ldc: stack.cols(),
                };
                // SAFETY: kernels match this CPU; dG holds T·B rows of ldg = k floats; the
                // stack is packed with k = ldg; d_in holds T·B rows of ld_max >= cols() floats.
                unsafe { (self.kernels.gemm)(&dx) };
                Ok(())
            })();
            ws.x_sorted = x_sorted;
            ws.out_sorted = out_sorted;
            ws.dg = dg;
            if let Err(e) = r {
                result = Err(e);
                break;
            }
            std::mem::swap(&mut d_out, &mut d_in);
            ld_cur = ts.layers.get(layer).map_or(0, PackedMatrix::cols);
        }
        if result.is_ok() {
            // Layer 0's dX is the input gradient: back to the caller's order.
            for t in 0..seq_len {
                for i in 0..batch {
                    let src = (t * batch + i) * ld_cur;
                    let dst = (t * batch + plan.orig(i)) * g.input;
                    out.grad_input[dst..dst + g.input].copy_from_slice(&d_out[src..src + g.input]);
                }
            }
        }
        ws.d_out = d_out;
        ws.d_in = d_in;
        result
    }
}

fn batch_of(plan: &Plan) -> usize {
    plan.lengths.len()
}

/// The backward of one (layer, direction) cell.
struct CellBackward<'a> {
    ts: &'a TrainState,
    bw: &'a BackwardCell,
    g: Geo,
    plan: &'a Plan,
    tape: &'a TrainingTape<f32>,
    cell_tape: &'a CellTape<'a, f32>,
    /// The forward's GEMM (the engine's kernels).
    gemm: unsafe fn(&GemmArgs),
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
    /// The slice of row `i` (sorted) of this cell in a `[L·D, B, w]` state tensor.
    fn state_row(&self, i: usize, w: usize) -> std::ops::Range<usize> {
        let s = (self.idx * self.batch + self.plan.orig(i)) * w;
        s..s + w
    }

    /// Back-propagates through every step of the cell: `dG` into its columns of `dg`
    /// (`[T·B, ldg]`), parameter gradients into `param`, state gradients into `out`.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        ws: &mut TrainWorkspace,
        upstream: &CanonicalGrads<f32>,
        d_out: &[f32],
        ld_out: usize,
        dg: &mut [f32],
        param: &mut CellWeights<f32>,
        (grad_h0, grad_c0): (&mut [f32], &mut [f32]),
    ) -> Result<()> {
        let (g, plan, batch, seq_len) = (self.g, self.plan, self.batch, self.seq_len);
        let kernels = self.ts.kernels;
        let rows = seq_len * batch;
        let reverse = self.dir == 1;
        let (h4, h1) = (4 * g.hidden, g.hidden);
        let tape = self.cell_tape;

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
        let dg_dir = self.dir * g.gp;
        let tiles = g.hp / g.n;

        for step in 0..seq_len {
            let t = if reverse { step } else { seq_len - 1 - step };
            let n = plan.active[t];
            if n == 0 {
                continue;
            }
            let dy = t * batch * ld_out + self.dir * g.hpo;
            let (dh, ldh, dh2, ldh2) = match &self.bw.w_hr {
                Some(w_hr) => {
                    // dh = dy + dh_rec, kept for dW_hr; dh_cell = dh · W_hr.
                    for i in 0..n {
                        let row = &mut dh_all[(t * batch + i) * g.ld_rec..][..g.proj];
                        let y = &d_out[dy + i * ld_out..][..g.proj];
                        let r = &dh_rec[i * g.ld_rec..][..g.proj];
                        for ((d, &a), &b) in row.iter_mut().zip(y).zip(r) {
                            *d = a + b;
                        }
                    }
                    let proj = GemmArgs {
                        rows: n,
                        a: dh_all[t * batch * g.ld_rec..].as_ptr(),
                        lda: g.ld_rec,
                        k: g.proj,
                        b: w_hr.as_ptr(),
                        tiles: w_hr.tiles,
                        bias: std::ptr::null(),
                        c: dh_cell.as_mut_ptr(),
                        ldc: g.ld_hc,
                    };
                    // SAFETY: kernels match this CPU; dh_all holds n rows of ld_rec >= P floats
                    // from step t on; W_hr (backward) is packed with k = P and ld_hc columns;
                    // dh_cell holds B >= n rows of ld_hc floats.
                    unsafe { (self.ts_kernels_gemm())(&proj) };
                    (dh_cell.as_ptr(), g.ld_hc, std::ptr::null(), 0)
                }
                None => (d_out[dy..].as_ptr(), ld_out, dh_rec.as_ptr(), g.ld_rec),
            };
            // c_{t-1}: the tape's step before t in the forward's order for the rows that had
            // one, c0 for the rest (rows at their first step).
            let (prev_rows, prev_t) = if reverse {
                match t + 1 < seq_len {
                    true => (plan.active[t + 1].min(n), t + 1),
                    false => (0, t),
                }
            } else {
                match t.checked_sub(1) {
                    Some(p) => (n, p),
                    None => (0, t),
                }
            };
            let args = GateBackwardArgs {
                rows: n,
                tiles,
                hidden: g.hidden,
                tape_rows: plan.table(),
                gates: tape.gates[t * batch * h4..].as_ptr(),
                tanh_c: tape.tanh_c[t * batch * h1..].as_ptr(),
                c_prev: tape.c[prev_t * batch * h1..].as_ptr(),
                prev_rows,
                c0: c0_pad.as_ptr(),
                ldc0: g.hp,
                dh,
                ldh,
                dh2,
                ldh2,
                dc: dc.as_mut_ptr(),
                ldc: g.hp,
                dg: dg[t * batch * g.ldg + dg_dir..].as_mut_ptr(),
                ldg: g.ldg,
            };
            // SAFETY: training kernels match this CPU; the tape holds B rows of 4H (H) floats
            // at steps t and prev_t, which the row table (distinct rows < B) or the identity
            // maps rows below n into; c0_pad, dc hold B rows of hp = tiles·N floats; dh (and
            // dh2) hold n rows of at least tiles·N floats at their strides (dy: this
            // direction's hpo >= hp columns of d_out; dh_cell: ld_hc >= hp; dh_rec: ld_rec
            // >= hp); dg holds n rows of gp floats from column dg_dir at stride ldg.
            unsafe { (kernels.gate_backward)(&args) };
            let rec = GemmArgs {
                rows: n,
                a: dg[t * batch * g.ldg + dg_dir..].as_ptr(),
                lda: g.ldg,
                k: g.gp,
                b: self.bw.w_hh.as_ptr(),
                tiles: self.bw.w_hh.tiles,
                bias: std::ptr::null(),
                c: dh_rec.as_mut_ptr(),
                ldc: g.ld_rec,
            };
            // SAFETY: kernels match this CPU; dG holds n rows of gp floats from dg_dir at
            // stride ldg; W_hh (backward) is packed with k = gp and ld_rec columns; dh_rec
            // holds B >= n rows of ld_rec floats and does not overlap dG.
            unsafe { (self.ts_kernels_gemm())(&rec) };
        }

        // dL/dh0, dL/dc0: what the carried gradients hold after each row's first step.
        for i in 0..batch {
            let (c, h) = (self.state_row(i, g.hidden), self.state_row(i, g.h_out));
            grad_h0[h].copy_from_slice(&dh_rec[i * g.ld_rec..][..g.h_out]);
            grad_c0[c].copy_from_slice(&dc[i * g.hp..][..g.hidden]);
        }

        // h_{t-1} of every row (sorted): the layer output of the forward's previous step, or
        // h0 at each row's first step.
        let h_prev = grow(
            &mut ws.h_prev,
            "previous hidden states",
            numel(&[rows, g.h_out]),
        )?;
        let y_off = self.dir * g.h_out;
        for t in 0..seq_len {
            for i in 0..batch {
                let dst = &mut h_prev[(t * batch + i) * g.h_out..][..g.h_out];
                let prev = if reverse {
                    (t + 1 < plan.lengths[i]).then_some(t + 1)
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

        // Weight gradients over all T·B rows: dW = dGᵀ · Y (Y = X, H_prev; rows of dW in
        // gate-tile order), dW_hr = dHᵀ · H_cell.
        let most_rows = g.gp.max(g.proj);
        let pack = grow(
            &mut ws.tn_pack,
            "GEMM panels",
            gemm_tn_scratch(most_rows, g.n),
        )?;
        let pack = pack.as_mut_ptr();
        let width = 4 * g.n;
        let tn = |a: &[f32], lda: usize, a_rows: usize, b: &[f32], cols: usize, c: &mut [f32]| {
            c.fill(0.0);
            let args = GemmTnArgs {
                rows: a_rows,
                k: rows,
                a: a.as_ptr(),
                lda,
                b: b.as_ptr(),
                ldb: cols,
                cols,
                c: c.as_mut_ptr(),
                ldc: round_up(cols, width),
                pack,
            };
            // SAFETY: training kernels match this CPU; `a` holds T·B rows of lda >= a_rows
            // floats, `b` T·B rows of `cols` floats; `c` holds a_rows rows of cols rounded up
            // to 4N floats and is a separate buffer; `pack` holds
            // gemm_tn_scratch(most_rows >= a_rows) floats of its own.
            unsafe { (kernels.gemm_tn)(&args) };
        };
        let dg_cell = &dg[dg_dir..];
        let ld_x = round_up(self.in_size, width);
        let gw_ih = grow(&mut ws.gw_ih, "grad weight_ih", numel(&[g.gp, ld_x]))?;
        tn(dg_cell, g.ldg, g.gp, self.x, self.in_size, gw_ih);
        let ld_h = round_up(g.h_out, width);
        let gw_hh = grow(&mut ws.gw_hh, "grad weight_hh", numel(&[g.gp, ld_h]))?;
        tn(dg_cell, g.ldg, g.gp, h_prev, g.h_out, gw_hh);
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
            let db = grow(&mut ws.db, "grad bias", g.gp)?;
            let part = grow(&mut ws.db_part, "grad bias", g.gp)?;
            db.fill(0.0);
            for start in (0..rows).step_by(BIAS_CHUNK) {
                part.fill(0.0);
                for r in start..(start + BIAS_CHUNK).min(rows) {
                    for (p, &v) in part.iter_mut().zip(&dg[r * g.ldg + dg_dir..][..g.gp]) {
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
        if let (Some(w_hr), Some(h_cell)) = (&mut param.w_hr, tape.h_cell) {
            let hc: &[f32] = match &plan.order {
                Some(order) => {
                    let s = grow(&mut ws.hc_sorted, "hidden states", h_cell.len())?;
                    gather_rows(s, h_cell, order, seq_len, g.hidden);
                    s
                }
                None => h_cell,
            };
            let ld_c = round_up(g.hidden, width);
            let gw_hr = grow(&mut ws.gw_hr, "grad weight_hr", numel(&[g.proj, ld_c]))?;
            tn(dh_all, g.ld_rec, g.proj, hc, g.hidden, gw_hr);
            for q in 0..g.proj {
                w_hr[q * g.hidden..][..g.hidden].copy_from_slice(&gw_hr[q * ld_c..][..g.hidden]);
            }
        }
        Ok(())
    }

    fn ts_kernels_gemm(&self) -> unsafe fn(&GemmArgs) {
        self.gemm
    }
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
