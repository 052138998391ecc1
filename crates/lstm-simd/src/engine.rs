//! [`SimdEngine`]: packs the weights once, then drives the kernels over layers, directions,
//! chunks of time steps and the active rows of each step.
//!
//! One forward call, per (layer, direction):
//! 1. the input projection of a chunk of time steps, `X_chunk · W_ihᵀ + b_ih + b_hh`, one
//!    [`gemm`](crate::kernels::gemm) over all `steps · B` rows (hoisted out of the recurrence);
//! 2. for each step of the chunk, one [`fused_step`](crate::kernels::fused_step) over the
//!    sequences still running (with lengths, the batch is sorted longest first, so those are a
//!    prefix of the rows), then the `W_hr` projection when `proj_size > 0`.
//!
//! All scratch lives in a [`Workspace`] sized before the time loop starts; the loop itself
//! never allocates.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

// The training forward and the backward pass (a child module: it reads the packed cells).
#[path = "backward.rs"]
mod backward;

use lstm_core::tensor::{checked_numel, try_filled_vec};
use lstm_core::{
    check_step, BatchOutput, LstmConfig, LstmEngine, LstmError, LstmState, LstmWeights, Result,
    SequenceBatch,
};

use crate::backend::Backend;
use crate::kernels::{GemmArgs, Kernels, StepArgs};
use crate::pack::{
    pack_gate_vector, pack_gate_weights, pack_plain, padded_hidden, AlignedBuf, PackedMatrix,
};

/// Rows of input projection computed ahead of the recurrence, at most: the projected chunk
/// (`rows · 4H` floats) stays in cache until its steps consume it.
const CHUNK_BYTES: usize = 2 << 20;

/// One (layer, direction) cell, packed for the engine's backend.
#[derive(Clone, Debug)]
struct PackedCell {
    w_ih: PackedMatrix,
    w_hh: PackedMatrix,
    /// `b_ih + b_hh` in gate-tile order (zeros without bias).
    bias: AlignedBuf,
    w_hr: Option<PackedMatrix>,
}

/// Sizes shared by every cell.
#[derive(Clone, Copy, Debug)]
struct Dims {
    hidden: usize,
    h_out: usize,
    /// Hidden size padded to whole vectors: the row stride of `c` and of `o ⊙ tanh(c)`.
    hp: usize,
    /// `4 · hp`: the row stride of the input projection.
    gp: usize,
    /// Row stride of the recurrent `h` buffers (`hp`, or `P` padded to whole tiles).
    ldh: usize,
    dirs: usize,
    out_size: usize,
}

/// Reusable scratch of one call: sized before the time loop, reused across calls.
#[derive(Debug, Default)]
pub(crate) struct Workspace {
    xproj: AlignedBuf,
    h: [AlignedBuf; 2],
    h_cell: AlignedBuf,
    c: AlignedBuf,
    /// Intermediate layer outputs `[T, B, D·H_out]` (ping-pong), and the step input.
    layers: [Vec<f32>; 2],
    /// The input (and `h0`, `c0`) with the batch sorted longest first, when lengths need it.
    x_sorted: Vec<f32>,
    h0_sorted: Vec<f32>,
    c0_sorted: Vec<f32>,
}

/// The SIMD engine: PyTorch's `nn.LSTM` forward on packed weights and fused kernels.
///
/// ```
/// use lstm_core::{LstmConfig, LstmEngine, LstmWeights, Tensor};
/// use lstm_simd::{Backend, SimdEngine};
///
/// let weights = LstmWeights::<f32>::random(LstmConfig::new(3, 20).with_num_layers(2), 1)?;
/// let engine = SimdEngine::new(&weights)?; // the best backend of this CPU
/// let out = engine.forward(&Tensor::new([7, 2, 3], vec![0.5; 42])?, None, None)?;
/// assert_eq!(out.output.shape(), &[7, 2, 20]);
/// let portable = SimdEngine::with_backend(&weights, Backend::Portable)?;
/// assert_eq!(portable.backend(), Backend::Portable);
/// # Ok::<(), lstm_core::LstmError>(())
/// ```
#[derive(Debug)]
pub struct SimdEngine {
    config: LstmConfig,
    backend: Backend,
    kernels: Kernels,
    dims: Dims,
    cells: Vec<PackedCell>,
    pool: Mutex<Vec<Workspace>>,
    /// The backward pass's packings and scratch, made on the first training call.
    train: std::sync::OnceLock<backward::TrainState>,
}

impl SimdEngine {
    /// Packs `weights` for the best backend this CPU supports ([`Backend::detect`]).
    pub fn new(weights: &LstmWeights<f32>) -> Result<Self> {
        Self::with_backend(weights, Backend::detect())
    }

    /// Packs `weights` for `backend`; fails when this CPU lacks its instructions, and for a
    /// config with ONNX-only cell options (not in the fused recurrence yet; the naive engine
    /// runs them).
    pub fn with_backend(weights: &LstmWeights<f32>, backend: Backend) -> Result<Self> {
        let config = weights.config().clone();
        config.validate()?;
        if let Some(options) = config.onnx_only_options() {
            return Err(LstmError::Unsupported(format!(
                "the simd and parallel engines do not run {options} yet; use the naive engine"
            )));
        }
        let kernels = backend.kernels()?;
        let lanes = kernels.lanes;
        let (hidden, h_out) = (config.hidden_size, config.h_out());
        let hp = padded_hidden(hidden, lanes);
        let mut cells = Vec::with_capacity(config.num_cells());
        let mut ldh = hp;
        for layer in 0..config.num_layers {
            for dir in 0..config.num_directions() {
                let cell = weights
                    .cell(layer, dir)
                    .ok_or_else(|| LstmError::MissingTensor {
                        name: format!("cell (layer {layer}, direction {dir})"),
                    })?;
                let in_size = config.layer_input_size(layer);
                let w_ih = pack_gate_weights("weight_ih", &cell.w_ih, hidden, in_size, lanes)?;
                let w_hh = pack_gate_weights("weight_hh", &cell.w_hh, hidden, h_out, lanes)?;
                // b_ih + b_hh, summed once here: one rounding, as PyTorch's fused paths do.
                let bias_sum: Vec<f32> = match (&cell.b_ih, &cell.b_hh) {
                    (Some(a), Some(b)) => a.iter().zip(b).map(|(x, y)| x + y).collect(),
                    _ => vec![0.0; 4 * hidden],
                };
                let bias = pack_gate_vector(&bias_sum, hidden, lanes)?;
                let w_hr = match &cell.w_hr {
                    Some(w) => {
                        let p = pack_plain("weight_hr", w, config.proj_size, hidden, lanes)?;
                        ldh = p.cols();
                        Some(p)
                    }
                    None => None,
                };
                cells.push(PackedCell {
                    w_ih,
                    w_hh,
                    bias,
                    w_hr,
                });
            }
        }
        let dims = Dims {
            hidden,
            h_out,
            hp,
            gp: 4 * hp,
            ldh,
            dirs: config.num_directions(),
            out_size: config.output_size(),
        };
        Ok(SimdEngine {
            config,
            backend,
            kernels,
            dims,
            cells,
            pool: Mutex::new(Vec::new()),
            train: std::sync::OnceLock::new(),
        })
    }

    /// The instruction-set path this engine runs.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn take_workspace(&self) -> Workspace {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn return_workspace(&self, ws: Workspace) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 16 {
            pool.push(ws);
        }
    }

    /// Steps of input projection computed per chunk for a batch of `batch` rows.
    fn chunk_steps(&self, batch: usize, seq_len: usize) -> usize {
        let rows = CHUNK_BYTES / (4 * self.dims.gp);
        (rows / batch.max(1)).clamp(1, seq_len.max(1))
    }

    /// Sizes the per-direction scratch for `batch` rows and `steps` projected steps.
    fn prepare(&self, ws: &mut Workspace, batch: usize, steps: usize) -> Result<()> {
        let d = &self.dims;
        ws.xproj
            .ensure("input projection", numel(&[steps, batch, d.gp]))?;
        for h in &mut ws.h {
            h.ensure("h", numel(&[batch, d.ldh]))?;
        }
        ws.c.ensure("c", numel(&[batch, d.hp]))?;
        if self.config.proj_size > 0 {
            ws.h_cell.ensure("h", numel(&[batch, d.hp]))?;
        }
        Ok(())
    }
}

/// The element count of `dims`; an overflow becomes `usize::MAX`, which the allocators refuse
/// with a typed error.
fn numel(dims: &[usize]) -> usize {
    checked_numel(dims).unwrap_or(usize::MAX)
}

/// Grows `v` to `len` floats (zeros), with a typed error when the allocation fails.
fn ensure_vec(v: &mut Vec<f32>, what: &str, len: usize) -> Result<()> {
    if v.len() < len {
        *v = try_filled_vec(what, len, 0.0)?;
    }
    Ok(())
}

/// Copies `rows` rows of `width` floats between two strided buffers.
fn copy_rows(dst: &mut [f32], ld_dst: usize, src: &[f32], ld_src: usize, rows: usize, w: usize) {
    for r in 0..rows {
        dst[r * ld_dst..r * ld_dst + w].copy_from_slice(&src[r * ld_src..r * ld_src + w]);
    }
}

/// The state and output of one (layer, direction) pass.
struct DirectionIo<'a> {
    /// The layer's input, `[T, B, in_size]`.
    input: &'a [f32],
    in_size: usize,
    /// The layer's output, `[T, B, D·H_out]`; this direction writes its half (raw, because
    /// the two directions of a layer may write their halves at the same time).
    output: *mut f32,
    dir: usize,
    /// `[B, H_out]` and `[B, H]` initial state, or zeros.
    h0: Option<&'a [f32]>,
    c0: Option<&'a [f32]>,
    /// `[B, H_out]` and `[B, H]` final state.
    h_n: &'a mut [f32],
    c_n: &'a mut [f32],
}

/// How a [`WorkerTeam`] shares a forward call (see [`SimdEngine::forward_batch_split`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Split {
    /// Each step's gate tiles (hidden units) are divided among the workers, who meet at a
    /// barrier after every step.
    Hidden,
    /// The two directions of each bidirectional layer run at the same time on two workers,
    /// with no synchronisation inside the layer (unidirectional layers fall back to `Hidden`).
    Directions,
}

impl SimdEngine {
    /// Writes one (layer, direction)'s initial state into `ws` and returns the pass over the
    /// whole sequence, ready to run on one thread or on the workers of a team.
    ///
    /// `active[t]` is the number of sequences still running at step `t` (a prefix of the
    /// rows: the batch is sorted longest first).
    fn direction_job<'a>(
        &'a self,
        cell: &'a PackedCell,
        io: DirectionIo<'a>,
        active: &'a [usize],
        batch: usize,
        ws: &'a mut Workspace,
    ) -> DirectionJob<'a> {
        let d = self.dims;
        // Initial state in both h buffers: a row that joins late (reverse direction with
        // lengths) finds its h0 whichever buffer is current when it does.
        let Workspace {
            xproj,
            h,
            h_cell,
            c,
            ..
        } = ws;
        let [h_a, h_b] = h;
        for buf in [&mut *h_a, &mut *h_b] {
            let s = buf.as_mut_slice();
            s.fill(0.0);
            if let Some(h0) = io.h0 {
                copy_rows(s, d.ldh, h0, d.h_out, batch, d.h_out);
            }
        }
        let cs = c.as_mut_slice();
        cs.fill(0.0);
        if let Some(c0) = io.c0 {
            copy_rows(cs, d.hp, c0, d.hidden, batch, d.hidden);
        }
        DirectionJob {
            kernels: self.kernels,
            d,
            cell,
            input: io.input,
            in_size: io.in_size,
            active,
            batch,
            steps: self.chunk_steps(batch, active.len()),
            dir: io.dir,
            h_is_zero: io.h0.is_none(),
            xp: xproj.as_mut_slice().as_mut_ptr(),
            h_a: h_a.as_mut_slice().as_mut_ptr(),
            h_b: h_b.as_mut_slice().as_mut_ptr(),
            hc: h_cell.as_mut_slice().as_mut_ptr(),
            c: cs.as_mut_ptr(),
            output: io.output,
            h_n: io.h_n.as_mut_ptr(),
            c_n: io.c_n.as_mut_ptr(),
        }
    }

    /// Runs one (layer, direction) over the whole sequence, on this thread or split over the
    /// hidden units of a team.
    fn run_direction(
        &self,
        cell: &PackedCell,
        io: DirectionIo<'_>,
        active: &[usize],
        batch: usize,
        ws: &mut Workspace,
        team: Option<&dyn WorkerTeam>,
    ) {
        let job = self.direction_job(cell, io, active, batch, ws);
        match team {
            Some(team) if team.size() > 1 => {
                let barrier = SpinBarrier::new(team.size());
                let workers = team.size();
                // SAFETY: every worker gets a distinct index below `workers` and calls the
                // barrier as often as the others (identical control flow); see DirectionJob.
                team.run(&|w| unsafe { job.run(w, workers, &|| barrier.wait()) });
            }
            // SAFETY: one worker owns every column.
            _ => unsafe { job.run(0, 1, &|| {}) },
        }
    }
}

/// A group of workers that run one job together: the parallel runner implements it on a
/// thread pool it owns, and [`SimdEngine::forward_batch_split`] splits each step's hidden
/// units across it.
pub trait WorkerTeam: Sync {
    /// The number of workers.
    fn size(&self) -> usize;
    /// Runs `job(w)` once for every worker `w` in `0..size()`, all concurrently (each job waits
    /// for the others at every step), and returns when all have returned.
    fn run(&self, job: &(dyn Fn(usize) + Sync));
}

/// A barrier for a fixed number of threads that spins briefly, then yields: a step of a
/// stream takes microseconds, far less than a sleep and wake-up.
#[derive(Debug)]
pub struct SpinBarrier {
    arrived: AtomicUsize,
    generation: AtomicUsize,
    parties: usize,
}

impl SpinBarrier {
    /// A barrier for `parties` threads.
    pub fn new(parties: usize) -> Self {
        SpinBarrier {
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            parties: parties.max(1),
        }
    }

    /// Blocks until all parties have called `wait` (for this generation). Memory written by
    /// any party before its `wait` is visible to every party after.
    pub fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            if spins < 2_000 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Worker `w`'s share of `n` items: `[n·w/workers, n·(w+1)/workers)`.
fn share(n: usize, w: usize, workers: usize) -> (usize, usize) {
    (n * w / workers, n * (w + 1) / workers)
}

/// Copies columns `c0..c1` of `rows` rows between two strided buffers.
///
/// # Safety
/// Both buffers hold `rows` rows at their strides with at least `c1` columns; the regions do
/// not overlap, and no other thread writes them meanwhile.
unsafe fn copy_cols(
    dst: *mut f32,
    ld_dst: usize,
    src: *const f32,
    ld_src: usize,
    rows: usize,
    (c0, c1): (usize, usize),
) {
    if c1 <= c0 {
        return;
    }
    for r in 0..rows {
        // SAFETY: row r < rows and columns c0..c1 are inside both buffers (caller contract).
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.add(r * ld_src + c0),
                dst.add(r * ld_dst + c0),
                c1 - c0,
            );
        }
    }
}

/// One (layer, direction) pass, as raw pointers so that the workers of a team can share it.
///
/// Worker `w` of `W` owns a contiguous range of gate tiles (hidden units) and of `W_hr` tiles
/// (projected units): it alone writes those columns of the input projection, `c`, `h` and the
/// outputs. Every worker reads all of the previous `h`; a barrier after each step (and before
/// the projection) orders the writes of one step before the reads of the next. Each output
/// element is computed by the same instructions whatever `W` is, so results are bit-identical
/// for every team size.
struct DirectionJob<'a> {
    kernels: Kernels,
    d: Dims,
    cell: &'a PackedCell,
    input: &'a [f32],
    in_size: usize,
    active: &'a [usize],
    batch: usize,
    steps: usize,
    dir: usize,
    h_is_zero: bool,
    xp: *mut f32,
    h_a: *mut f32,
    h_b: *mut f32,
    hc: *mut f32,
    c: *mut f32,
    output: *mut f32,
    h_n: *mut f32,
    c_n: *mut f32,
}

// SAFETY: the pointers are only dereferenced in `run`, where workers write disjoint column
// ranges and barriers order every cross-worker read after the write it depends on.
unsafe impl Sync for DirectionJob<'_> {}

impl DirectionJob<'_> {
    /// Worker `w`'s part of the pass.
    ///
    /// # Safety
    /// `w < workers`; all `workers` workers run concurrently with distinct `w` and the same
    /// `barrier` (a no-op only when `workers == 1`); the buffers are sized as the engine's
    /// `prepare` sizes them for `batch` rows and `steps` projected steps.
    unsafe fn run(&self, w: usize, workers: usize, barrier: &dyn Fn()) {
        let (d, cell) = (self.d, self.cell);
        let n_lanes = self.kernels.lanes;
        let seq_len = self.active.len();
        let reverse = self.dir == 1;
        let (batch, in_size) = (self.batch, self.in_size);
        // Owned columns: gate tiles (t0..t1), their units, projected tiles and their columns.
        let (t0, t1) = share(cell.w_hh.tiles, w, workers);
        let units = (t0 * n_lanes, (t1 * n_lanes).min(d.hidden));
        let (p0, p1) = cell
            .w_hr
            .as_ref()
            .map_or((0, 0), |p| share(p.tiles, w, workers));
        let h_cols = if cell.w_hr.is_some() {
            (p0 * 4 * n_lanes, (p1 * 4 * n_lanes).min(d.h_out))
        } else {
            units
        };
        let (mut cur, mut next) = (self.h_a, self.h_b);
        let out_off = self.dir * d.h_out;
        let mut running = batch; // rows still running before this step (forward direction)
                                 // From a zero initial state the first step's h · W_hhᵀ is exactly zero: skip it (a
                                 // sixth of the recurrent work of a 6-step window, half of a single step).
        let mut h_is_zero = self.h_is_zero;

        let mut chunk_start = 0;
        while chunk_start < seq_len {
            let chunk_len = self.steps.min(seq_len - chunk_start);
            // Forward: steps chunk_start.. ; reverse: the same chunks from the end.
            let first = if reverse {
                seq_len - chunk_start - chunk_len
            } else {
                chunk_start
            };
            if t1 > t0 {
                let gemm = GemmArgs {
                    rows: chunk_len * batch,
                    a: self.input[first * batch * in_size..].as_ptr(),
                    lda: in_size,
                    k: in_size,
                    // Offsets of tile t0 < tiles: inside the packed W_ih, the bias (tiles·4N
                    // floats) and a row of the projection (gp = tiles·4N floats).
                    b: cell.w_ih.as_ptr().wrapping_add(t0 * in_size * 4 * n_lanes),
                    tiles: t1 - t0,
                    bias: cell.bias.as_slice().as_ptr().wrapping_add(t0 * 4 * n_lanes),
                    c: self.xp.wrapping_add(t0 * 4 * n_lanes),
                    ldc: d.gp,
                };
                // SAFETY: the kernels match this CPU (Backend::kernels checked it); `input`
                // holds T·B rows of in_size floats and first + chunk_len <= T; tiles t0..t1 of
                // W_ih (k = in_size) and the bias exist; `xproj` holds `steps · B` rows of gp
                // floats and chunk_len <= steps; this worker alone writes these columns.
                unsafe { (self.kernels.gemm)(&gemm) };
            }

            for i in 0..chunk_len {
                let t = if reverse {
                    first + chunk_len - 1 - i
                } else {
                    first + i
                };
                let n = self.active[t];
                if !reverse && n < running {
                    // Rows n..running ended at the previous step: their h is final.
                    // SAFETY: rows n..running < B of h_n ([B, h_out]) and of `cur` ([B, ldh]);
                    // this worker's columns.
                    unsafe {
                        copy_cols(
                            self.h_n.add(n * d.h_out),
                            d.h_out,
                            cur.add(n * d.ldh),
                            d.ldh,
                            running - n,
                            h_cols,
                        );
                    }
                    running = n;
                }
                if n == 0 {
                    continue;
                }
                let h_dst = if cell.w_hr.is_some() { self.hc } else { next };
                if t1 > t0 {
                    // t0 < tiles and t - first < chunk_len keep every offset inside W_hh, the
                    // projected chunk, c and the destination.
                    let step = StepArgs {
                        rows: n,
                        h: cur,
                        ldh: d.ldh,
                        k: if h_is_zero { 0 } else { d.h_out },
                        w: cell.w_hh.as_ptr().wrapping_add(t0 * d.h_out * 4 * n_lanes),
                        tiles: t1 - t0,
                        xproj: self
                            .xp
                            .wrapping_add((t - first) * batch * d.gp + t0 * 4 * n_lanes),
                        ldx: d.gp,
                        c: self.c.wrapping_add(t0 * n_lanes),
                        ldc: d.hp,
                        h_out: h_dst.wrapping_add(t0 * n_lanes),
                        ldo: d.hp,
                    };
                    // SAFETY: kernels match this CPU; `cur` and the destination are distinct
                    // buffers of B rows (strides ldh >= h_out and hp); the tiles t0..t1 of
                    // W_hh (k = h_out), of the projected step and of c exist; n <= B; this
                    // worker alone writes these columns and every worker finished writing
                    // `cur` before the last barrier.
                    unsafe { (self.kernels.fused_step)(&step) };
                }
                h_is_zero = false;
                if let Some(w_hr) = &cell.w_hr {
                    barrier(); // all of o ⊙ tanh(c') is written
                    if p1 > p0 {
                        // p0 < tiles of W_hr and of a row of `next`.
                        let proj = GemmArgs {
                            rows: n,
                            a: self.hc,
                            lda: d.hp,
                            k: d.hidden,
                            b: w_hr.as_ptr().wrapping_add(p0 * d.hidden * 4 * n_lanes),
                            tiles: p1 - p0,
                            bias: std::ptr::null(),
                            c: next.wrapping_add(p0 * 4 * n_lanes),
                            ldc: d.ldh,
                        };
                        // SAFETY: kernels match this CPU; h_cell holds B rows of hp >= hidden
                        // floats; W_hr is packed with k = hidden; `next` holds B rows of
                        // ldh = w_hr.cols() floats; this worker alone writes these columns.
                        unsafe { (self.kernels.gemm)(&proj) };
                    }
                }
                if workers > 1 {
                    barrier(); // `next` is complete, and nobody reads `cur` any more
                }
                std::mem::swap(&mut cur, &mut next);
                // SAFETY: rows < n <= B of the output row block of step t (out_size columns,
                // this direction's half at out_off) and of `cur`; this worker's columns.
                unsafe {
                    copy_cols(
                        self.output.add(t * batch * d.out_size + out_off),
                        d.out_size,
                        cur,
                        d.ldh,
                        n,
                        h_cols,
                    );
                }
            }
            chunk_start += chunk_len;
        }
        // Rows still running at the end (all of them, in the reverse direction).
        let last = if reverse { batch } else { running };
        // SAFETY: B rows of h_n/c_n and of `cur`/c; this worker's columns.
        unsafe {
            copy_cols(self.h_n, d.h_out, cur, d.ldh, last, h_cols);
            copy_cols(self.c_n, d.hidden, self.c, d.hp, batch, units);
        }
    }
}

/// The batch order for lengths: longest first (stable), and per step the number of rows
/// still running.
struct BatchPlan {
    /// `order[i]`: the caller's row at sorted position `i`; `None` when already sorted.
    order: Option<Vec<usize>>,
    active: Vec<usize>,
}

impl BatchPlan {
    fn new(call: &SequenceBatch<'_, f32>) -> Self {
        let (seq_len, batch) = (call.seq_len(), call.batch());
        let Some(lengths) = call.lengths() else {
            return BatchPlan {
                order: None,
                active: vec![batch; seq_len],
            };
        };
        let mut order: Vec<usize> = (0..batch).collect();
        order.sort_by_key(|&b| std::cmp::Reverse(lengths[b]));
        let active = (0..seq_len)
            .map(|t| lengths.iter().filter(|&&len| len > t).count())
            .collect();
        let identity = order.iter().enumerate().all(|(i, &b)| i == b);
        BatchPlan {
            order: (!identity).then_some(order),
            active,
        }
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

/// The inverse of [`gather_rows`], in place through a copy.
fn scatter_rows(data: &mut [f32], order: &[usize], groups: usize, width: usize) -> Result<()> {
    let sorted = {
        let mut v = try_filled_vec("output", data.len(), 0.0f32)?;
        v.copy_from_slice(data);
        v
    };
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

impl LstmEngine<f32> for SimdEngine {
    fn config(&self) -> &LstmConfig {
        &self.config
    }

    fn name(&self) -> &'static str {
        "simd"
    }

    fn forward_batch(&self, call: &SequenceBatch<'_, f32>) -> Result<BatchOutput<f32>> {
        self.forward_batch_with(call, None, Split::Hidden)
    }

    fn step(&self, x_t: &[f32], state: &mut LstmState<f32>, output: &mut [f32]) -> Result<()> {
        let batch = check_step(&self.config, x_t, state, output)?;
        if batch == 0 {
            return Ok(());
        }
        let mut ws = self.take_workspace();
        let result = self.step_with(&mut ws, x_t, state, output, batch);
        self.return_workspace(ws);
        result
    }
}

impl SimdEngine {
    /// [`LstmEngine::forward_batch`] shared by the workers of `team` (the parallel runner):
    ///
    /// - [`Split::Hidden`]: every step's hidden units are divided among the workers; each
    ///   keeps its slice of `W_ih` and `W_hh` in its own core's cache, and they meet at a
    ///   barrier once per step (twice with a projection);
    /// - [`Split::Directions`]: the two directions of each bidirectional layer run at once on
    ///   two workers (unidirectional layers use the hidden split).
    ///
    /// Bit-identical to the one-thread result for every team size and split.
    pub fn forward_batch_split(
        &self,
        call: &SequenceBatch<'_, f32>,
        team: &dyn WorkerTeam,
        split: Split,
    ) -> Result<BatchOutput<f32>> {
        self.forward_batch_with(call, Some(team), split)
    }

    fn forward_batch_with(
        &self,
        call: &SequenceBatch<'_, f32>,
        team: Option<&dyn WorkerTeam>,
        split: Split,
    ) -> Result<BatchOutput<f32>> {
        call.ensure_config(&self.config)?;
        let d = self.dims;
        let (seq_len, batch) = (call.seq_len(), call.batch());
        let cells = self.config.num_cells();
        let mut output = try_filled_vec("output", numel(&[seq_len, batch, d.out_size]), 0.0)?;
        let mut h_n = try_filled_vec("h_n", numel(&[cells, batch, d.h_out]), 0.0)?;
        let mut c_n = try_filled_vec("c_n", numel(&[cells, batch, d.hidden]), 0.0)?;
        if batch == 0 {
            return Ok(BatchOutput { output, h_n, c_n });
        }
        let plan = BatchPlan::new(call);
        let mut ws = self.take_workspace();
        let result = self.forward_into(
            call,
            &plan,
            &mut ws,
            &mut output,
            &mut h_n,
            &mut c_n,
            team,
            split,
        );
        self.return_workspace(ws);
        result?;
        if let Some(order) = &plan.order {
            scatter_rows(&mut output, order, seq_len, d.out_size)?;
            scatter_rows(&mut h_n, order, cells, d.h_out)?;
            scatter_rows(&mut c_n, order, cells, d.hidden)?;
        }
        Ok(BatchOutput { output, h_n, c_n })
    }

    /// The layers of a forward call, in sorted-batch order, into `output`, `h_n`, `c_n`.
    #[allow(clippy::too_many_arguments)] // the call, its plan, scratch, three outputs, a team
    fn forward_into(
        &self,
        call: &SequenceBatch<'_, f32>,
        plan: &BatchPlan,
        ws: &mut Workspace,
        output: &mut [f32],
        h_n: &mut [f32],
        c_n: &mut [f32],
        team: Option<&dyn WorkerTeam>,
        split: Split,
    ) -> Result<()> {
        let d = self.dims;
        let (seq_len, batch) = (call.seq_len(), call.batch());
        let cells = self.config.num_cells();
        self.prepare(ws, batch, self.chunk_steps(batch, seq_len))?;
        let layer_len = numel(&[seq_len, batch, d.out_size]);
        if self.config.num_layers > 1 {
            for buf in &mut ws.layers {
                ensure_vec(buf, "layer output", layer_len)?;
            }
        }

        // With unsorted lengths, run the batch sorted longest first.
        let (mut x, mut h0, mut c0) = (call.x(), call.h0(), call.c0());
        let mut x_sorted = std::mem::take(&mut ws.x_sorted);
        let mut h0_sorted = std::mem::take(&mut ws.h0_sorted);
        let mut c0_sorted = std::mem::take(&mut ws.c0_sorted);
        if let Some(order) = &plan.order {
            let in_size = self.config.input_size;
            ensure_vec(&mut x_sorted, "input", call.x().len())?;
            gather_rows(&mut x_sorted, call.x(), order, seq_len, in_size);
            x = &x_sorted[..call.x().len()];
            if let (Some(h), Some(c)) = (call.h0(), call.c0()) {
                ensure_vec(&mut h0_sorted, "h0", h.len())?;
                ensure_vec(&mut c0_sorted, "c0", c.len())?;
                gather_rows(&mut h0_sorted, h, order, cells, d.h_out);
                gather_rows(&mut c0_sorted, c, order, cells, d.hidden);
                h0 = Some(&h0_sorted[..h.len()]);
                c0 = Some(&c0_sorted[..c.len()]);
            }
        }

        let mut layers = std::mem::take(&mut ws.layers);
        for layer in 0..self.config.num_layers {
            let in_size = self.config.layer_input_size(layer);
            let last = layer + 1 == self.config.num_layers;
            let [even, odd] = &mut layers;
            let (prev, cur) = if layer.is_multiple_of(2) {
                (&*odd, even)
            } else {
                (&*even, odd)
            };
            let input: &[f32] = if layer == 0 { x } else { &prev[..layer_len] };
            let out: &mut [f32] = if last { output } else { &mut cur[..layer_len] };
            if !last && call.lengths().is_some() {
                out.fill(0.0); // padded steps of intermediate layers read as zeros
            }
            let out_ptr = out.as_mut_ptr();
            let cells_of_layer = layer * d.dirs..(layer + 1) * d.dirs;
            let (mut h_rest, mut c_rest) = (
                &mut h_n
                    [cells_of_layer.start * batch * d.h_out..cells_of_layer.end * batch * d.h_out],
                &mut c_n[cells_of_layer.start * batch * d.hidden
                    ..cells_of_layer.end * batch * d.hidden],
            );
            let mut ios = Vec::with_capacity(d.dirs);
            for dir in 0..d.dirs {
                let idx = layer * d.dirs + dir;
                let (h_dir, h_tail) = std::mem::take(&mut h_rest).split_at_mut(batch * d.h_out);
                let (c_dir, c_tail) = std::mem::take(&mut c_rest).split_at_mut(batch * d.hidden);
                (h_rest, c_rest) = (h_tail, c_tail);
                ios.push(DirectionIo {
                    input,
                    in_size,
                    output: out_ptr,
                    dir,
                    h0: h0.map(|h| &h[idx * batch * d.h_out..(idx + 1) * batch * d.h_out]),
                    c0: c0.map(|c| &c[idx * batch * d.hidden..(idx + 1) * batch * d.hidden]),
                    h_n: h_dir,
                    c_n: c_dir,
                });
            }
            match team {
                Some(team) if split == Split::Directions && d.dirs == 2 && team.size() >= 2 => {
                    // Both directions at once, each on its own worker and workspace.
                    let mut second = self.take_workspace();
                    let prepared =
                        self.prepare(&mut second, batch, self.chunk_steps(batch, seq_len));
                    if let Err(e) = prepared {
                        self.return_workspace(second);
                        return Err(e);
                    }
                    let mut ios = ios.into_iter();
                    if let (Some(fwd), Some(rev)) = (ios.next(), ios.next()) {
                        let first = self.direction_job(
                            &self.cells[layer * 2],
                            fwd,
                            &plan.active,
                            batch,
                            ws,
                        );
                        let other = self.direction_job(
                            &self.cells[layer * 2 + 1],
                            rev,
                            &plan.active,
                            batch,
                            &mut second,
                        );
                        // Each job runs on one worker as its only worker (no barrier needed);
                        // the two write disjoint memory: their own workspaces, their own halves
                        // of the output's columns (dir·H_out) and their own cells of h_n, c_n.
                        team.run(&|w| match w {
                            // SAFETY: see above; worker 0 of 1 owns every column of `first`.
                            0 => unsafe { first.run(0, 1, &|| {}) },
                            // SAFETY: see above; worker 0 of 1 owns every column of `other`.
                            1 => unsafe { other.run(0, 1, &|| {}) },
                            _ => {}
                        });
                    }
                    self.return_workspace(second);
                }
                _ => {
                    for (dir, io) in ios.into_iter().enumerate() {
                        let idx = layer * d.dirs + dir;
                        self.run_direction(&self.cells[idx], io, &plan.active, batch, ws, team);
                    }
                }
            }
        }
        ws.layers = layers;
        ws.x_sorted = x_sorted;
        ws.h0_sorted = h0_sorted;
        ws.c0_sorted = c0_sorted;
        Ok(())
    }

    /// One streaming step of every layer (unidirectional; shapes checked by the caller).
    fn step_with(
        &self,
        ws: &mut Workspace,
        x_t: &[f32],
        state: &mut LstmState<f32>,
        output: &mut [f32],
        batch: usize,
    ) -> Result<()> {
        let d = self.dims;
        self.prepare(ws, batch, 1)?;
        for buf in &mut ws.layers {
            ensure_vec(buf, "layer output", numel(&[batch, d.h_out]))?;
        }
        let mut h0 = std::mem::take(&mut ws.h0_sorted);
        let mut c0 = std::mem::take(&mut ws.c0_sorted);
        ensure_vec(&mut h0, "h", numel(&[batch, d.h_out]))?;
        ensure_vec(&mut c0, "c", numel(&[batch, d.hidden]))?;
        let mut layers = std::mem::take(&mut ws.layers);
        for layer in 0..self.config.num_layers {
            let in_size = self.config.layer_input_size(layer);
            let [even, odd] = &mut layers;
            let (prev, cur) = if layer.is_multiple_of(2) {
                (&*odd, even)
            } else {
                (&*even, odd)
            };
            let input: &[f32] = if layer == 0 {
                x_t
            } else {
                &prev[..batch * d.h_out]
            };
            let (hs, cs) = (layer * batch * d.h_out, layer * batch * d.hidden);
            let h_n = &mut state.h.data_mut()[hs..hs + batch * d.h_out];
            let c_n = &mut state.c.data_mut()[cs..cs + batch * d.hidden];
            // The state is read and written: stage the old one in reused buffers.
            h0[..h_n.len()].copy_from_slice(h_n);
            c0[..c_n.len()].copy_from_slice(c_n);
            let io = DirectionIo {
                input,
                in_size,
                output: cur[..batch * d.h_out].as_mut_ptr(),
                dir: 0,
                h0: Some(&h0[..h_n.len()]),
                c0: Some(&c0[..c_n.len()]),
                h_n,
                c_n,
            };
            self.run_direction(&self.cells[layer], io, &[batch], batch, ws, None);
        }
        let last = (self.config.num_layers + 1) % 2;
        output.copy_from_slice(&layers[last][..batch * d.h_out]);
        ws.layers = layers;
        ws.h0_sorted = h0;
        ws.c0_sorted = c0;
        Ok(())
    }
}
