//! One (layer, direction) pass as the workers of a team see it: the entry points the driver
//! loop (`engine/driver.rs`) calls, per worker, in time order.
//!
//! Worker `w` of `W` owns a contiguous range of gate tiles (hidden units) and of `W_hr` tiles
//! (projected units): it alone writes those columns of the input projection, `c`, `h`, the
//! tape and the outputs. Every worker reads all of the previous `h`; a barrier after each step
//! (and before the projection) orders the writes of one step before the reads of the next.
//! Each output element is computed by the same instructions whatever `W` is, so results are
//! bit-identical for every team size; with one worker this is the plain serial pass.
//!
//! This module is where the buffers shared by a team are written through raw pointers. What
//! makes it sound whatever safe code calls it:
//! - a [`DirectionPass`] is made from exclusive borrows of every buffer it writes, checked
//!   once against the shapes, and lives no longer than them;
//! - it hands out each worker index once ([`DirectionPass::lane`]), so column ranges are
//!   disjoint; every method checks its row and step arguments against those shapes;
//! - the barriers are inside [`Lane::step`], which also flips the `h` buffers: every worker
//!   has passed the same number of barriers as it has taken steps, so all agree on which
//!   buffer is read and which written between two barriers (a team that calls it unevenly
//!   waits forever at a barrier; it never races).

use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use lstm_core::grad::CellTapeMut;

use super::cell::{CellVariant, StepArgs, TapeArgs};
use super::gemm::GemmArgs;
use super::Kernels;
use crate::pack::PackedMatrix;
use crate::team::{SpinBarrier, TileQueue};

/// Rows of a row-major buffer of `[steps, batch, ld]` that one pass writes: of every step, the
/// rows `first .. first + count` of its batch. A layer's output is one window of the whole
/// batch; a forward split by rows ([`Split::Rows`](crate::Split::Rows)) cuts it into one
/// window per shard ([`split_rows`]).
#[derive(Debug)]
pub(crate) struct RowWindow<'a> {
    ptr: *mut f32,
    rows: usize,
    ld: usize,
    batch: usize,
    first: usize,
    count: usize,
    _buf: PhantomData<&'a mut [f32]>,
}

// SAFETY: a window is an exclusive borrow of its rows (see `split_rows`); moving it to
// another thread moves that borrow.
unsafe impl Send for RowWindow<'_> {}

/// `buf`, rows of `ld` floats, `batch` of them a step, as windows of the batch rows `ranges`
/// (sorted, disjoint: checked).
pub(crate) fn split_rows<'a>(
    buf: &'a mut [f32],
    ld: usize,
    batch: usize,
    ranges: &[Range<usize>],
) -> Vec<RowWindow<'a>> {
    assert!(
        ranges.windows(2).all(|w| w[0].end <= w[1].start)
            && ranges.last().is_none_or(|r| r.end <= batch),
        "overlapping row windows"
    );
    let whole = whole_rows(buf, ld, batch);
    ranges
        .iter()
        .map(|r| RowWindow {
            first: r.start,
            count: r.len(),
            _buf: PhantomData,
            ..whole
        })
        .collect()
}

/// `buf` as one window of all `batch` rows of every step (no allocation: the streaming
/// `step` makes one a call).
pub(crate) fn whole_rows(buf: &mut [f32], ld: usize, batch: usize) -> RowWindow<'_> {
    RowWindow {
        ptr: buf.as_mut_ptr(),
        rows: buf.len().checked_div(ld).unwrap_or(0),
        ld,
        batch,
        first: 0,
        count: batch,
        _buf: PhantomData,
    }
}

/// Columns `col0 .. col0 + width` of a [`RowWindow`]: one direction's half of a layer's
/// output, written by that direction's pass while the other writes its own half.
#[derive(Debug)]
pub(crate) struct ColumnBand<'a> {
    rows: RowWindow<'a>,
    col0: usize,
    width: usize,
}

/// `window` cut into `count <= 2` bands of `width` columns each, the band `d` at columns
/// `d·width ..`; `None` past `count`.
pub(crate) fn split_columns(
    window: RowWindow<'_>,
    width: usize,
    count: usize,
) -> [Option<ColumnBand<'_>>; 2] {
    assert!(
        count <= 2 && count * width <= window.ld,
        "bands exceed the row"
    );
    let band = |d: usize| {
        (d < count).then_some(ColumnBand {
            rows: RowWindow {
                _buf: PhantomData,
                ..window
            },
            col0: d * width,
            width,
        })
    };
    [band(0), band(1)]
}

/// The weights of one cell as the pass reads them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PassWeights<'a> {
    pub(crate) w_ih: &'a PackedMatrix,
    pub(crate) w_hh: &'a PackedMatrix,
    /// `b_ih + b_hh` in gate-tile order (`gp` floats).
    pub(crate) bias: &'a [f32],
    pub(crate) w_hr: Option<&'a PackedMatrix>,
    pub(crate) variant: CellVariant,
    /// ONNX peephole weights in gate-tile order (`gp` floats, as the bias), when the variant
    /// reads them.
    pub(crate) peephole: Option<&'a [f32]>,
}

/// The sizes of one pass.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PassDims {
    pub(crate) seq_len: usize,
    pub(crate) batch: usize,
    pub(crate) in_size: usize,
    pub(crate) hidden: usize,
    pub(crate) h_out: usize,
    /// `H` padded to whole vectors: the row stride of `c` and of `o ⊙ tanh(c)`.
    pub(crate) hp: usize,
    /// `4·hp`: the row stride of the input projection.
    pub(crate) gp: usize,
    /// Row stride of the recurrent `h` buffers.
    pub(crate) ldh: usize,
    /// Steps of input projection computed per chunk.
    pub(crate) steps: usize,
}

/// The buffers one pass reads and writes (the initial state already in `h` and `c`).
#[derive(Debug)]
pub(crate) struct PassBuffers<'a> {
    /// The layer's input, `[T, input_batch, in_size]`, of which the pass reads rows
    /// `input_first ..` of each step (`B` of them).
    pub(crate) input: &'a [f32],
    pub(crate) input_batch: usize,
    pub(crate) input_first: usize,
    /// This direction's columns of the layer's output `[T, ·, D·H_out]`: the `B` rows of its
    /// window.
    pub(crate) output: ColumnBand<'a>,
    /// The output row of each sorted row (the caller's order), or `None` to write sorted.
    pub(crate) output_rows: Option<&'a [usize]>,
    /// Write the output past the caches ([`copy_streaming`](super::cell::copy_streaming)):
    /// it is the caller's, large, and not read again by this forward.
    pub(crate) stream_output: bool,
    /// Final state, `[B, H_out]` and `[B, H]` (sorted order).
    pub(crate) h_n: &'a mut [f32],
    pub(crate) c_n: &'a mut [f32],
    /// Scratch: `[steps·B, gp]`, two `[B, ldh]`, `[B, hp]` (when projecting) and `[B, hp]`.
    pub(crate) xproj: &'a mut [f32],
    pub(crate) h: [&'a mut [f32]; 2],
    pub(crate) h_cell: &'a mut [f32],
    pub(crate) c: &'a mut [f32],
}

/// What a pass records of each step: nothing (inference) or the training tape.
pub(crate) trait PassRecord: Sync {
    /// Runs the step kernel `args` for step `t`.
    ///
    /// # Safety
    /// `args` is valid for the kernels; `t` is a step of the pass, and the rows and tiles of
    /// `args` are rows of its batch and tiles of its cell.
    unsafe fn fused_step(&self, kernels: &Kernels, args: &StepArgs, t: usize);
}

/// Records nothing: the inference pass.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NoTape;

impl PassRecord for NoTape {
    #[inline]
    unsafe fn fused_step(&self, kernels: &Kernels, args: &StepArgs, _t: usize) {
        // SAFETY: caller contract.
        unsafe { (kernels.fused_step)(args) }
    }
}

/// Records a cell's tape: every step's gates, `c`, `tanh(c)` (and `o ⊙ tanh(c)` when
/// projecting), each sorted row into its caller's row.
#[derive(Debug)]
pub(crate) struct TapeRecorder<'a> {
    hidden: usize,
    batch: usize,
    rows: *const usize,
    gates: *mut f32,
    cell: *mut f32,
    tanh_c: *mut f32,
    h_cell: *mut f32,
    _tape: PhantomData<&'a mut [f32]>,
}

// SAFETY: the recorder is an exclusive borrow of the tape; workers write disjoint units of it
// (see the module docs).
unsafe impl Sync for TapeRecorder<'_> {}

impl<'a> TapeRecorder<'a> {
    /// Records into `tape` (`seq_len` steps of `batch` rows), sorted row `i` into row
    /// `rows[i]` (a permutation of `0..batch`), or row `i` without `rows`.
    pub(crate) fn new(
        tape: &'a mut CellTapeMut<'_, f32>,
        rows: Option<&'a [usize]>,
        seq_len: usize,
        batch: usize,
        hidden: usize,
        projecting: bool,
    ) -> Self {
        let len = seq_len * batch * hidden;
        assert!(tape.gates.len() >= 4 * len && tape.c.len() >= len && tape.tanh_c.len() >= len);
        assert!(
            !projecting || tape.h_cell.len() >= len,
            "tape without h_cell"
        );
        if let Some(r) = rows {
            assert!(
                r.len() >= batch && r.iter().all(|&q| q < batch),
                "bad row table"
            );
        }
        TapeRecorder {
            hidden,
            batch,
            rows: rows.map_or(std::ptr::null(), <[usize]>::as_ptr),
            gates: tape.gates.as_mut_ptr(),
            cell: tape.c.as_mut_ptr(),
            tanh_c: tape.tanh_c.as_mut_ptr(),
            h_cell: if projecting {
                tape.h_cell.as_mut_ptr()
            } else {
                std::ptr::null_mut()
            },
            _tape: PhantomData,
        }
    }
}

impl PassRecord for TapeRecorder<'_> {
    #[inline]
    unsafe fn fused_step(&self, kernels: &Kernels, args: &StepArgs, t: usize) {
        let (h1, step) = (self.hidden, t * self.batch);
        let h_cell = if self.h_cell.is_null() {
            self.h_cell
        } else {
            self.h_cell.wrapping_add(step * h1)
        };
        let tape = TapeArgs {
            hidden: h1,
            tape_rows: self.rows,
            gates: self.gates.wrapping_add(step * 4 * h1),
            cell: self.cell.wrapping_add(step * h1),
            tanh_c: self.tanh_c.wrapping_add(step * h1),
            h_cell,
        };
        // SAFETY: t < seq_len and rows below the batch (caller contract) name tape rows inside
        // the tape checked in `new`; the table maps them to rows below the batch.
        unsafe { (kernels.fused_step_recorded)(args, &tape) }
    }
}

/// A raw view of a buffer the workers write in disjoint columns.
#[derive(Clone, Copy, Debug)]
struct Shared(*mut f32);

/// One (layer, direction) pass, shared by the workers of a team (see the module docs).
#[derive(Debug)]
pub(crate) struct DirectionPass<'a, R> {
    kernels: Kernels,
    weights: PassWeights<'a>,
    d: PassDims,
    input: &'a [f32],
    input_batch: usize,
    input_first: usize,
    output: ColumnBand<'a>,
    output_rows: Option<&'a [usize]>,
    stream_output: bool,
    h_n: Shared,
    c_n: Shared,
    xproj: Shared,
    h: [Shared; 2],
    h_cell: Shared,
    c: Shared,
    record: R,
    /// From a zero initial state the first step's `h · W_hhᵀ` is exactly zero: skipped (a
    /// sixth of the recurrent work of a 6-step window, half of a single step).
    h_is_zero: bool,
    workers: usize,
    /// The team's shared tiles of a step, when workers take over each other's tiles (see
    /// [`TileQueue`]); `None` on one thread, for batches under a register block of rows, and
    /// when each worker's own share of `W_hh` is what keeps it in L2.
    queue: Option<TileQueue>,
    next_worker: AtomicUsize,
    barrier: SpinBarrier,
    _bufs: PhantomData<&'a mut [f32]>,
}

// SAFETY: the raw views are only written through `Lane`s, which write disjoint columns and
// order every cross-worker read after the write it depends on with the barrier.
unsafe impl<R: Sync> Sync for DirectionPass<'_, R> {}

impl<'a, R: PassRecord> DirectionPass<'a, R> {
    /// A pass over `bufs` for `workers` workers, its sizes checked.
    pub(crate) fn new(
        kernels: Kernels,
        weights: PassWeights<'a>,
        d: PassDims,
        bufs: PassBuffers<'a>,
        record: R,
        h_is_zero: bool,
        workers: usize,
    ) -> Self {
        let n = kernels.lanes;
        let tiles = weights.w_hh.tiles;
        assert!(tiles * n == d.hp && d.gp == 4 * d.hp && weights.w_ih.tiles == tiles);
        for (w, k) in [(weights.w_ih, d.in_size), (weights.w_hh, d.h_out)] {
            assert!(w.lanes == n && w.k == k && w.precision() == kernels.precision);
            assert!(w.len_bytes() >= tiles * w.tile_bytes());
        }
        assert!(weights.bias.len() >= d.gp && d.h_out <= d.ldh && d.hidden <= d.hp);
        if let CellVariant::Onnx(cell) = weights.variant {
            assert!(
                !cell.peepholes || weights.peephole.is_some_and(|p| p.len() >= d.gp),
                "peepholes missing"
            );
        }
        match weights.w_hr {
            Some(p) => {
                assert!(p.lanes == n && p.tiles * 4 * n <= d.ldh && p.k == d.hidden);
                assert!(p.precision() == kernels.precision);
                assert!(p.len_bytes() >= p.tiles * p.tile_bytes());
                assert!(bufs.h_cell.len() >= d.batch * d.hp);
            }
            None => assert!(d.ldh == d.hp && d.h_out == d.hidden),
        }
        assert!(
            bufs.input_first + d.batch <= bufs.input_batch
                && bufs.input.len() >= d.seq_len * bufs.input_batch * d.in_size,
            "input rows outside the input"
        );
        let (out, window) = (&bufs.output, &bufs.output.rows);
        assert!(out.width >= d.h_out && out.col0 + out.width <= window.ld);
        assert!(
            window.count == d.batch
                && window.first + window.count <= window.batch
                && window.rows >= d.seq_len * window.batch,
            "output rows outside the output"
        );
        if let Some(r) = bufs.output_rows {
            assert!(
                r.len() >= d.batch && r.iter().all(|&q| q < d.batch),
                "bad row table"
            );
        }
        assert!(bufs.h_n.len() >= d.batch * d.h_out && bufs.c_n.len() >= d.batch * d.hidden);
        assert!(bufs.xproj.len() >= d.steps * d.batch * d.gp && d.steps > 0);
        assert!(bufs.h.iter().all(|h| h.len() >= d.batch * d.ldh));
        assert!(bufs.c.len() >= d.batch * d.hp);
        let workers = workers.max(1);
        // Taking over another worker's tile means reading its weights from wherever they
        // are: worth it when every core can hold all of W_hh in its L2, or when none can hold
        // even its share (they stream from L3 either way), but not when the split is what
        // makes each share fit. And a tile must be a register block of rows or more: a tile
        // of a batch-1 stream is ~0.1 µs, not worth an atomic operation.
        let w_hh_bytes = weights.w_hh.len_bytes();
        let share_fits = w_hh_bytes / workers <= crate::CORE_L2_BYTES;
        let steals = workers > 1
            && d.batch >= kernels.row_block
            && (w_hh_bytes < crate::CORE_L2_BYTES || !share_fits);
        let queue = if steals {
            let homes: Vec<_> = (0..workers).map(|w| share(tiles, w, workers)).collect();
            TileQueue::new(&homes)
        } else {
            None
        };
        DirectionPass {
            kernels,
            weights,
            d,
            input: bufs.input,
            input_batch: bufs.input_batch,
            input_first: bufs.input_first,
            output: bufs.output,
            output_rows: bufs.output_rows,
            stream_output: bufs.stream_output,
            h_n: Shared(bufs.h_n.as_mut_ptr()),
            c_n: Shared(bufs.c_n.as_mut_ptr()),
            xproj: Shared(bufs.xproj.as_mut_ptr()),
            h: bufs.h.map(|h| Shared(h.as_mut_ptr())),
            h_cell: Shared(bufs.h_cell.as_mut_ptr()),
            c: Shared(bufs.c.as_mut_ptr()),
            record,
            h_is_zero,
            workers,
            queue,
            next_worker: AtomicUsize::new(0),
            barrier: SpinBarrier::new(workers),
            _bufs: PhantomData,
        }
    }

    /// The sizes of the pass.
    pub(crate) fn dims(&self) -> PassDims {
        self.d
    }

    /// The next worker's share of the pass, or `None` once every worker has one.
    pub(crate) fn lane(&self) -> Option<Lane<'_, 'a, R>> {
        let w = self.next_worker.fetch_add(1, Ordering::Relaxed);
        if w >= self.workers {
            return None;
        }
        let (d, n) = (self.d, self.kernels.lanes);
        let tiles = share(self.weights.w_hh.tiles, w, self.workers);
        let units = (tiles.0 * n, (tiles.1 * n).min(d.hidden));
        let proj = self
            .weights
            .w_hr
            .map_or((0, 0), |p| share(p.tiles, w, self.workers));
        let h_cols = match self.weights.w_hr {
            Some(_) => (proj.0 * 4 * n, (proj.1 * 4 * n).min(d.h_out)),
            None => units,
        };
        Some(Lane {
            pass: self,
            worker: w,
            tiles,
            units,
            proj,
            h_cols,
            cur: 0,
            chunk: 0..0,
            h_is_zero: self.h_is_zero,
        })
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

/// One worker's share of a [`DirectionPass`]: its gate tiles, projected tiles and columns.
#[derive(Debug)]
pub(crate) struct Lane<'p, 'a, R> {
    pass: &'p DirectionPass<'a, R>,
    /// This worker's index in the team.
    worker: usize,
    /// Gate tiles `t0..t1`, their units, projected tiles and the columns of `h` this worker
    /// writes.
    tiles: (usize, usize),
    units: (usize, usize),
    proj: (usize, usize),
    h_cols: (usize, usize),
    /// Which `h` buffer holds `h_{t-1}`.
    cur: usize,
    /// The steps whose input projection is in the scratch.
    chunk: Range<usize>,
    h_is_zero: bool,
}

impl<R: PassRecord> Lane<'_, '_, R> {
    /// Computes this worker's columns of the input projection of steps `first..first + len`.
    ///
    /// No barrier follows, even when workers take over each other's tiles: a worker offers its
    /// tiles of a step ([`TileQueue::reset`], a release) only after it projected their
    /// columns, and a worker that takes one acquires that offer.
    pub(crate) fn project(&mut self, first: usize, len: usize) {
        let (p, d, n) = (self.pass, self.pass.d, self.pass.kernels.lanes);
        assert!(
            len <= d.steps && first + len <= d.seq_len,
            "chunk outside the pass"
        );
        self.chunk = first..first + len;
        let (t0, t1) = self.tiles;
        if t1 == t0 || len == 0 {
            return;
        }
        let w = p.weights;
        // The chunk's rows are one run of the input when the pass reads every row of it, one
        // run a step otherwise (a shard of the batch).
        let (runs, run_rows) = if p.input_batch == d.batch {
            (1, len * d.batch)
        } else {
            (len, d.batch)
        };
        for s in 0..runs {
            let gemm = GemmArgs {
                rows: run_rows,
                a: p.input[((first + s) * p.input_batch + p.input_first) * d.in_size..].as_ptr(),
                lda: d.in_size,
                k: d.in_size,
                b: w.w_ih.tile_ptr(t0),
                tiles: t1 - t0,
                bias: w.bias[t0 * 4 * n..].as_ptr(),
                c: p.xproj.0.wrapping_add(s * d.batch * d.gp + t0 * 4 * n),
                ldc: d.gp,
            };
            // SAFETY: the kernels match this CPU (Backend::kernels checked it); `input` holds
            // T·input_batch rows of in_size floats, first + len <= T and input_first + B <=
            // input_batch, so the run's rows are inside it (one run: input_first = 0 and
            // len·B rows from step `first`); tiles t0..t1 of W_ih (k = in_size) and of the
            // bias exist; `xproj` holds `steps · B` rows of gp floats, len <= steps, and run
            // s writes its rows s·B..; this worker alone writes these columns (`new` checked
            // every size).
            unsafe { (p.kernels.gemm)(&gemm) };
        }
    }

    /// Copies rows `rows` of `h` (sequences that ended at the previous step) into `h_n`.
    pub(crate) fn retire(&mut self, rows: Range<usize>) {
        let (p, d) = (self.pass, self.pass.d);
        assert!(rows.end <= d.batch, "rows outside the batch");
        if rows.is_empty() {
            return;
        }
        // SAFETY: rows < B of h_n ([B, h_out]) and of `cur` ([B, ldh]); this worker's
        // columns, which nobody else writes, of a `cur` last written before the last barrier.
        unsafe {
            copy_cols(
                p.h_n.0.add(rows.start * d.h_out),
                d.h_out,
                p.h[self.cur].0.add(rows.start * d.ldh),
                d.ldh,
                rows.len(),
                self.h_cols,
            );
        }
    }

    /// Step `t` (inside the projected chunk) for the first `rows` rows: the fused step (and
    /// its record), the projection, the barriers, and this worker's columns of the output.
    pub(crate) fn step(&mut self, t: usize, rows: usize) {
        let (p, d, n) = (self.pass, self.pass.d, self.pass.kernels.lanes);
        assert!(
            self.chunk.contains(&t) && rows <= d.batch,
            "step outside the chunk"
        );
        let (t0, t1) = self.tiles;
        let (cur, next) = (p.h[self.cur].0, p.h[1 - self.cur].0);
        let h_dst = if p.weights.w_hr.is_some() {
            p.h_cell.0
        } else {
            next
        };
        let queue = p.queue.as_ref();
        if let Some(q) = queue {
            // After the last step's barrier (its claims are over) and after this worker
            // projected its tiles' columns: the release the workers that take them acquire.
            q.reset(self.worker);
        }
        if (t1 > t0 || queue.is_some()) && rows > 0 {
            let args = StepArgs {
                variant: p.weights.variant,
                rows,
                h: cur,
                ldh: d.ldh,
                k: if self.h_is_zero { 0 } else { d.h_out },
                w: p.weights.w_hh.tile_ptr(0),
                tiles: p.weights.w_hh.tiles,
                mine: (t0, t1),
                queue: queue.map_or(std::ptr::null(), |q| q as *const TileQueue),
                worker: self.worker,
                xproj: p
                    .xproj
                    .0
                    .wrapping_add((t - self.chunk.start) * d.batch * d.gp),
                ldx: d.gp,
                c: p.c.0,
                ldc: d.hp,
                h_out: h_dst,
                ldo: d.hp,
                peephole: p.weights.peephole.map_or(std::ptr::null(), <[f32]>::as_ptr),
            };
            // SAFETY: kernels match this CPU; `cur` and the destination are distinct buffers
            // of B rows (strides ldh >= h_out and hp); all `tiles` tiles of W_hh (k = h_out),
            // of the projected step and of c exist, and t0..t1 and the queue's ranges lie
            // below it (`share`); rows <= B, t < T. The columns of a tile are written by the
            // one worker that has it: its own `t0..t1` without a queue (disjoint shares), or
            // the one that claimed it from the queue (each tile once). Every worker finished
            // writing `cur` before the last barrier; a tile claimed from another worker's range
            // was offered by it after it projected its columns (see `project`).
            unsafe { p.record.fused_step(&p.kernels, &args, t) };
        }
        self.h_is_zero = false;
        if let Some(w_hr) = p.weights.w_hr {
            self.wait(); // all of o ⊙ tanh(c') is written
            let (p0, p1) = self.proj;
            if p1 > p0 && rows > 0 {
                let proj = GemmArgs {
                    rows,
                    a: p.h_cell.0,
                    lda: d.hp,
                    k: d.hidden,
                    b: w_hr.tile_ptr(p0),
                    tiles: p1 - p0,
                    bias: std::ptr::null(),
                    c: next.wrapping_add(p0 * 4 * n),
                    ldc: d.ldh,
                };
                // SAFETY: kernels match this CPU; h_cell holds B rows of hp >= hidden floats,
                // complete after the barrier; W_hr is packed with k = hidden; `next` holds B
                // rows of ldh >= w_hr's columns; this worker alone writes these columns.
                unsafe { (p.kernels.gemm)(&proj) };
            }
        }
        self.wait(); // `next` is complete, and nobody reads `cur` any more
        self.cur = 1 - self.cur;
        self.emit(t, rows);
    }

    /// This worker's share of the rows below `rows` of the output of step `t`, all of their
    /// columns. By rows, not by this worker's columns: the output's rows need not start on a
    /// cache line, so two workers writing the two halves of each row would share a line in
    /// every row, where row ranges share at most one. (In profiles of a 2-thread bf16
    /// batch-mid forward the column-wise copy took 2.7-7% from run to run; the row-wise one
    /// 2.2%; the forward's time moved within this VM's noise.)
    fn emit(&self, t: usize, rows: usize) {
        let (p, d) = (self.pass, self.pass.d);
        let (out, window) = (&p.output, &p.output.rows);
        let (i0, i1) = share(rows, self.worker, p.workers);
        let src = p.h[self.cur].0;
        for i in i0..i1 {
            let row = t * window.batch + window.first + p.output_rows.map_or(i, |r| r[i]);
            // SAFETY: row is in the window of step t < T (the mapped row is below B, the
            // window's count), inside the buffer's rows; h_out <= the band's width; i < rows
            // <= B rows of `cur` at stride ldh >= h_out. Every worker finished writing `cur`
            // before the barrier this step just passed, and none writes it again before the
            // next one, which this worker reaches only after this copy; the output rows of
            // `i0..i1` are this worker's alone (disjoint shares), and the window's rows this
            // pass's alone (disjoint windows, `split_rows`).
            unsafe {
                let (from, to) = (
                    src.add(i * d.ldh),
                    window.ptr.add(row * window.ld + out.col0),
                );
                if p.stream_output {
                    (p.kernels.copy_streaming)(from, to, d.h_out);
                } else {
                    std::ptr::copy_nonoverlapping(from, to, d.h_out);
                }
            }
        }
        if p.stream_output {
            // SAFETY: the kernels match this CPU. The fence orders this step's streaming
            // stores before the barriers and the end of the pass that publish the output.
            unsafe { (p.kernels.fence_streaming)() };
        }
    }

    /// Writes this worker's columns of the final state: `h` of the first `running` rows (the
    /// others were retired), `c` of every row.
    pub(crate) fn finish(self, running: usize) {
        let (p, d) = (self.pass, self.pass.d);
        assert!(running <= d.batch, "rows outside the batch");
        // SAFETY: B rows of h_n/c_n and of `cur`/c; this worker's columns.
        unsafe {
            copy_cols(
                p.h_n.0,
                d.h_out,
                p.h[self.cur].0,
                d.ldh,
                running,
                self.h_cols,
            );
            copy_cols(p.c_n.0, d.hidden, p.c.0, d.hp, d.batch, self.units);
        }
    }

    /// The team's barrier (nothing to wait for alone).
    fn wait(&self) {
        if self.pass.workers > 1 {
            self.pass.barrier.wait();
        }
    }
}
