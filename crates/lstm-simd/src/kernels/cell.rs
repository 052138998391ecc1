//! The cell kernels, written once over [`Lanes`]:
//!
//! - [`fused_step`]: the recurrent step `gates = xproj + h · W_hhᵀ`, the four nonlinearities
//!   and the cell update, tile by tile, with the gates never leaving registers. Whether the
//!   step records what the backward needs is its type parameter `R`: [`NoRecord`] for
//!   inference (the recording compiles to nothing), [`TapeArgs`] for the training forward,
//!   which also writes the post-activation gates `i, f, g, o`, `c_t`, `tanh(c_t)` and, when
//!   projecting, `o ⊙ tanh(c_t)` into a [`TrainingTape`](lstm_core::TrainingTape). One body,
//!   so the training forward computes the forward's bits.
//! - [`gate_backward`]: one step of BPTT through the cell, elementwise: from `dL/dh` and the
//!   carried `dL/dc` to the gate pre-activation gradients `dG` (gate-tile layout) and the
//!   `dL/dc` carried to the previous step.
//!
//! The gate math of a cell variant lives in [`cell_update`] (forward) and in
//! [`gate_backward`] (its derivative), both selected by [`CellVariant`].

use super::gemm::{Panel, StagedRows};
use super::{group_rows, row_blocks, with_rows};
use crate::lanes::{sigmoid, tanh, Activations, Lanes};
use crate::team::TileQueue;

/// The cell's gate math: PyTorch's cell, or ONNX's with its options (peepholes, a clip of the
/// pre-activations, coupled input and forget gates `f = 1 - i`). Matched in [`cell_update`]
/// and in [`gate_backward`], and nowhere else in the kernels.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) enum CellVariant {
    /// `i, f, o = σ(z)`, `g = tanh(z)`, `c' = f ⊙ c + i ⊙ g`, `h = o ⊙ tanh(c')`.
    #[default]
    Standard,
    /// ONNX's `LSTM` operator: `i = σ(clip(z_i + P_i ⊙ c))`, `f = σ(clip(z_f + P_f ⊙ c))` (or
    /// `1 − i`), `g = tanh(clip(z_g))`, `c' = f ⊙ c + i ⊙ g`, `o = σ(clip(z_o + P_o ⊙ c'))`,
    /// `h = o ⊙ tanh(c')`. The forward runs it; the backward refuses it before any kernel.
    Onnx(OnnxCell),
}

/// The options of [`CellVariant::Onnx`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct OnnxCell {
    /// Pre-activations (peephole term included) are clamped to `[-clip, clip]`.
    pub(crate) clip: Option<f32>,
    /// `f = 1 − i`: the forget rows of the weights are not read.
    pub(crate) input_forget: bool,
    /// The step reads peephole weights ([`StepArgs::peephole`]).
    pub(crate) peepholes: bool,
}

/// What one row of one tile of a step computes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CellValues<V> {
    /// The post-activation gates `i, f, g, o`.
    pub(crate) gates: [V; 4],
    pub(crate) c: V,
    pub(crate) tanh_c: V,
    pub(crate) h: V,
}

/// The gate nonlinearities (`A`'s) and the cell update of one row of `N` units, from the four
/// gate pre-activations `z`, the previous cell state and, for [`CellVariant::Onnx`] with
/// peepholes, the peephole weights `P_i, P_f, P_o` of these units (ignored otherwise).
#[inline(always)]
pub(crate) fn cell_update<V: Lanes, A: Activations>(
    variant: CellVariant,
    z: [V; 4],
    c_prev: V,
    peephole: [V; 3],
) -> CellValues<V> {
    match variant {
        CellVariant::Standard => {
            let i = A::sigmoid(z[0]);
            let f = A::sigmoid(z[1]);
            let g = A::tanh(z[2]);
            let o = A::sigmoid(z[3]);
            // c' = f ⊙ c + i ⊙ g; a decaying cell is flushed to zero before it turns subnormal.
            let c = f.mul_add(c_prev, i.mul(g)).flush_subnormal();
            let tanh_c = A::tanh(c);
            let h = o.mul(tanh_c).flush_subnormal();
            CellValues {
                gates: [i, f, g, o],
                c,
                tanh_c,
                h,
            }
        }
        CellVariant::Onnx(cell) => {
            let clip = |x: V| cell.clip.map_or(x, |l| x.clamp(-l, l));
            // z + P ⊙ c (one rounding with FMA), or z without peepholes.
            let peep = |z: V, p: V, c: V| if cell.peepholes { p.mul_add(c, z) } else { z };
            let i = A::sigmoid(clip(peep(z[0], peephole[0], c_prev)));
            let f = if cell.input_forget {
                i.constant(1.0).sub(i)
            } else {
                A::sigmoid(clip(peep(z[1], peephole[1], c_prev)))
            };
            let g = A::tanh(clip(z[2]));
            let c = f.mul_add(c_prev, i.mul(g)).flush_subnormal();
            let o = A::sigmoid(clip(peep(z[3], peephole[2], c)));
            let tanh_c = A::tanh(c);
            let h = o.mul(tanh_c).flush_subnormal();
            CellValues {
                gates: [i, f, g, o],
                c,
                tanh_c,
                h,
            }
        }
    }
}

/// Arguments of [`fused_step`] for `rows` batch rows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StepArgs {
    pub(crate) variant: CellVariant,
    pub(crate) rows: usize,
    /// Previous hidden state: row `r` at `h + r·ldh`, `k` floats (`H_out`).
    pub(crate) h: *const f32,
    pub(crate) ldh: usize,
    pub(crate) k: usize,
    /// Packed `W_hh`: `tiles` gate tiles of `P::tile_bytes(k)` bytes (the kernel's
    /// [`Panel`]), from tile 0 of the layer; every pointer below starts at tile 0 too.
    pub(crate) w: *const u8,
    /// The tiles that exist at these pointers.
    pub(crate) tiles: usize,
    /// The tiles this call computes, `mine.0 .. mine.1`, unless it shares them through
    /// `queue`.
    pub(crate) mine: (usize, usize),
    /// A team's [`TileQueue`] of this step, or null: the call then computes the tiles it claims
    /// from it as worker `worker` (when its rows are staged in one group; else `mine`).
    pub(crate) queue: *const TileQueue,
    pub(crate) worker: usize,
    /// Input projection of this step (biases included), gate-tile order: row `r` at
    /// `xproj + r·ldx`, `tiles · 4N` floats.
    pub(crate) xproj: *const f32,
    pub(crate) ldx: usize,
    /// Cell state, updated in place: row `r` at `c + r·ldc`, `tiles · N` floats.
    pub(crate) c: *mut f32,
    pub(crate) ldc: usize,
    /// New `o ⊙ tanh(c')`: row `r` at `h_out + r·ldo`, `tiles · N` floats. Must not overlap `h`.
    pub(crate) h_out: *mut f32,
    pub(crate) ldo: usize,
    /// Peephole weights in gate-tile order (`P_i | P_f | 0 | P_o`, `tiles · 4N` floats, as
    /// the bias), read only by a [`CellVariant::Onnx`] with peepholes; may be null otherwise.
    pub(crate) peephole: *const f32,
}

/// What a step records of each row and tile it computes.
pub(crate) trait StepRecord {
    /// Records kernel row `row`, tile `tile` (units `tile·N ..`).
    ///
    /// # Safety
    /// `row` and `tile` are inside the step the recorder was made for.
    unsafe fn record<V: Lanes>(&self, row: usize, tile: usize, values: &CellValues<V>);
}

/// Records nothing: the inference step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NoRecord;

impl StepRecord for NoRecord {
    #[inline(always)]
    unsafe fn record<V: Lanes>(&self, _row: usize, _tile: usize, _values: &CellValues<V>) {}
}

/// Where a training step's records go: one step's rows of a cell's tape.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TapeArgs {
    /// The true hidden size `H` (the tape's row unit; the last tile may be partial).
    pub(crate) hidden: usize,
    /// Tape row of each kernel row, or null for the identity.
    pub(crate) tape_rows: *const usize,
    /// The step's gates (row `q` at `gates + q·4H`, `i, f, g, o` blocks of `H`), cell states,
    /// their tanh (row `q` at `+ q·H`), and `o ⊙ tanh(c)` (null unless projecting).
    pub(crate) gates: *mut f32,
    pub(crate) cell: *mut f32,
    pub(crate) tanh_c: *mut f32,
    pub(crate) h_cell: *mut f32,
}

impl StepRecord for TapeArgs {
    #[inline(always)]
    unsafe fn record<V: Lanes>(&self, row: usize, tile: usize, values: &CellValues<V>) {
        let (n, hidden) = (V::N, self.hidden);
        let unit = tile * n;
        let valid = hidden.saturating_sub(unit).min(n);
        if valid == 0 {
            return;
        }
        // SAFETY: the tape rows named by the table (or the identity) hold `hidden` (gates:
        // 4·hidden) floats and `unit + valid <= hidden` (caller contract).
        unsafe {
            let q = tape_row(self.tape_rows, row);
            let gp = self.gates.add(q * 4 * hidden + unit);
            for (v, &x) in values.gates.iter().enumerate() {
                store_part(x, gp.add(v * hidden), valid);
            }
            store_part(values.c, self.cell.add(q * hidden + unit), valid);
            store_part(values.tanh_c, self.tanh_c.add(q * hidden + unit), valid);
            if !self.h_cell.is_null() {
                store_part(values.h, self.h_cell.add(q * hidden + unit), valid);
            }
        }
    }
}

/// Loads the first `valid` floats at `p` into a vector whose other lanes are 0 (the last tile
/// of an unpadded tape row).
///
/// # Safety
/// `V`'s instruction set is available; `valid <= V::N` floats are readable at `p`.
#[inline(always)]
unsafe fn load_part<V: Lanes>(p: *const f32, valid: usize) -> V {
    // SAFETY: the caller guarantees the ISA and `valid` readable floats; the vector is loaded
    // from a local buffer of 16 >= N floats.
    unsafe {
        if valid >= V::N {
            return V::load(p);
        }
        let mut buf = [0.0f32; 16];
        std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), valid);
        V::load(buf.as_ptr())
    }
}

/// Stores the first `valid` lanes of `v` at `p`.
///
/// # Safety
/// `valid <= V::N` floats are writable at `p` (`v` proves the instruction set).
#[inline(always)]
unsafe fn store_part<V: Lanes>(v: V, p: *mut f32, valid: usize) {
    // SAFETY: as documented; the full vector goes to a local buffer of 16 >= N floats first.
    unsafe {
        if valid >= V::N {
            v.store(p);
            return;
        }
        let mut buf = [0.0f32; 16];
        v.store(buf.as_mut_ptr());
        std::ptr::copy_nonoverlapping(buf.as_ptr(), p, valid);
    }
}

/// The tape row of sorted row `r`: `rows[r]`, or `r` when `rows` is null.
///
/// # Safety
/// When not null, `rows` holds more than `r` entries.
#[inline(always)]
unsafe fn tape_row(rows: *const usize, r: usize) -> usize {
    if rows.is_null() {
        r
    } else {
        // SAFETY: caller contract.
        unsafe { *rows.add(r) }
    }
}

/// `MR` rows of one gate tile of [`fused_step`].
///
/// # Safety
/// As [`fused_step`], for rows `row..row + MR` and tile `t`; `h` is `args.h` from row `row`
/// on, staged.
#[inline(always)]
unsafe fn step_block<V: Lanes, const MR: usize, R: StepRecord, P: Panel<V>, A: Activations>(
    args: &StepArgs,
    variant: CellVariant,
    record: &R,
    h: P::Rows,
    row: usize,
    t: usize,
) {
    let n = V::N;
    // SAFETY: row + MR <= rows and t < tiles (caller), so every offset stays inside the buffers
    // `args` and `record` describe; the ISA is available (caller contract).
    unsafe {
        let mut acc = [[V::splat(0.0); 4]; MR];
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let xp = args.xproj.add((row + r) * args.ldx + t * 4 * n);
            for (v, a) in acc_r.iter_mut().enumerate() {
                *a = V::load(xp.add(v * n));
            }
        }
        P::accumulate::<MR>(&mut acc, h, args.k, args.w.add(t * P::tile_bytes(args.k)));
        let peephole = match variant {
            CellVariant::Onnx(OnnxCell {
                peepholes: true, ..
            }) => {
                let p = args.peephole.add(t * 4 * n);
                [V::load(p), V::load(p.add(n)), V::load(p.add(3 * n))]
            }
            _ => [V::splat(0.0); 3],
        };
        for (r, &z) in acc.iter().enumerate() {
            let cp = args.c.add((row + r) * args.ldc + t * n);
            let values = cell_update::<V, A>(variant, z, V::load(cp), peephole);
            values.c.store(cp);
            values.h.store(args.h_out.add((row + r) * args.ldo + t * n));
            record.record(row + r, t, &values);
        }
    }
}

/// One fused recurrent step for `args.rows` batch rows (see [`StepArgs`]), recording through
/// `record`.
///
/// For each gate tile (the i, f, g, o rows of `N` hidden units), `MR` rows at a time: the
/// accumulators start from the input projection, take `h · W_hhᵀ`, and go straight through the
/// activations into the cell update, so the `4H` gate pre-activations are never stored.
///
/// # Safety
/// `V`'s instruction set is available; `args` describes valid memory as documented on
/// [`StepArgs`] (`h_out` does not overlap `h`, `xproj` or `c`), and `record` accepts every row
/// below `args.rows` and tile below `args.tiles`. `args.mine` lies below `args.tiles`; a
/// non-null `args.queue` is valid for the call, with every range below `args.tiles`; no other
/// thread computes, meanwhile, a tile of `mine` (without a queue) or of the queue.
#[inline(always)]
pub(crate) unsafe fn fused_step<
    V: Lanes,
    const MR: usize,
    R: StepRecord,
    P: Panel<V>,
    A: Activations,
>(
    args: &StepArgs,
    record: &R,
) {
    // The variant is matched once per step, not per row: each arm hands the tile loop a
    // variant the compiler sees, so PyTorch's cell compiles to the code it had before ONNX's.
    // SAFETY: caller contract.
    unsafe {
        match args.variant {
            CellVariant::Standard => {
                step_tiles::<V, MR, R, P, A>(args, CellVariant::Standard, record)
            }
            onnx @ CellVariant::Onnx(_) => step_tiles::<V, MR, R, P, A>(args, onnx, record),
        }
    }
}

/// The tiles and register blocks of [`fused_step`] for `variant` (`args.variant`).
///
/// # Safety
/// As [`fused_step`].
#[inline(always)]
unsafe fn step_tiles<V: Lanes, const MR: usize, R: StepRecord, P: Panel<V>, A: Activations>(
    args: &StepArgs,
    variant: CellVariant,
    record: &R,
) {
    // Rows are staged (encoded once per step for a dot-product panel: rounded to bf16, or
    // quantized to 8 bits) a group at a time; each group's weight tiles stream once.
    let group = group_rows::<MR>(args.rows, P::stage_rows(args.k));
    // Tiles are claimed from the team's queue only when one staging pass covers every row: a
    // worker must have staged the rows of whatever tile it takes.
    // SAFETY: a non-null queue is valid for the call (caller contract).
    let queue = unsafe { args.queue.as_ref() }.filter(|_| group >= args.rows);
    let mut stage = P::new_stage();
    let mut g0 = 0;
    while g0 < args.rows {
        let g1 = args.rows.min(g0.saturating_add(group));
        // SAFETY: rows g0..g1 of `h` hold k floats and nobody writes them during the step
        // (caller contract).
        let h = unsafe {
            P::stage::<MR>(
                &mut stage,
                args.h.add(g0 * args.ldh),
                args.ldh,
                g1 - g0,
                args.k,
            )
        };
        let mut mine = args.mine.0..args.mine.1;
        let mut next_tile = || match queue {
            Some(q) => q.claim(args.worker),
            None => mine.next(),
        };
        while let Some(t) = next_tile() {
            assert!(t < args.tiles, "a tile outside the cell"); // an engine bug, never UB
            for (r, rows) in row_blocks::<MR>(g0, g1) {
                // SAFETY: r + rows <= g1 <= args.rows; t < tiles, from `mine` or the queue,
                // and this call's alone (caller contract), as step_block requires; r - g0 is
                // below the rows staged.
                unsafe {
                    with_rows!(rows, |RB| step_block::<V, RB, R, P, A>(
                        args,
                        variant,
                        record,
                        h.skip(r - g0),
                        r,
                        t
                    ))
                }
            }
        }
        g0 = g1;
    }
}

/// Arguments of [`gate_backward`], for `rows` active rows of one step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GateBackwardArgs {
    pub(crate) variant: CellVariant,
    pub(crate) rows: usize,
    /// `hp / N`: tiles of `N` hidden units.
    pub(crate) tiles: usize,
    /// The true hidden size `H` (the tape's row unit).
    pub(crate) hidden: usize,
    /// Tape row of each kernel row, or null for the identity (as [`TapeArgs`]).
    pub(crate) tape_rows: *const usize,
    /// The step's tape: post-activation gates (row `q` at `+ q·4H`) and `tanh(c_t)` (`+ q·H`).
    pub(crate) gates: *const f32,
    pub(crate) tanh_c: *const f32,
    /// `c_{t-1}` for rows `< prev_rows`: the tape's cell states of the step the forward took
    /// before this one (row `q` at `+ q·H`; may be null when `prev_rows == 0`).
    pub(crate) c_prev: *const f32,
    pub(crate) prev_rows: usize,
    /// `c_{t-1}` for rows `>= prev_rows`: the initial cell state, row stride `ldc0`, padded.
    pub(crate) c0: *const f32,
    pub(crate) ldc0: usize,
    /// `dL/d(o ⊙ tanh c)` of the step: `dh` (row stride `ldh`), plus `dh2` (row stride
    /// `ldh2`) when not null; `tiles · N` floats a row, zero in the padding.
    pub(crate) dh: *const f32,
    pub(crate) ldh: usize,
    pub(crate) dh2: *const f32,
    pub(crate) ldh2: usize,
    /// `dL/dc_t` in, `dL/dc_{t-1}` out; row stride `ldc`, `tiles · N` floats a row.
    pub(crate) dc: *mut f32,
    pub(crate) ldc: usize,
    /// Out: `dL/d(pre-activations)` in gate-tile order (`tiles · 4N` floats a row), stride `ldg`.
    pub(crate) dg: *mut f32,
    pub(crate) ldg: usize,
}

/// One step of BPTT through the cell, per row and tile of `N` units:
///
/// ```text
/// dc  += dh ⊙ o ⊙ (1 − tanh²c)
/// dz_i = dc ⊙ g ⊙ i(1 − i)      dz_f = dc ⊙ c_{t−1} ⊙ f(1 − f)
/// dz_g = dc ⊙ i ⊙ (1 − g²)      dz_o = dh ⊙ tanh c ⊙ o(1 − o)
/// dc   = dc ⊙ f
/// ```
///
/// Lanes past `H` read the tape as 0, so their `dG` is 0 (the padding the GEMMs that follow
/// multiply by zero rows stays finite).
///
/// # Safety
/// `V`'s instruction set is available and `args` describes valid memory as documented on
/// [`GateBackwardArgs`].
#[inline(always)]
pub(crate) unsafe fn gate_backward<V: Lanes>(args: &GateBackwardArgs) {
    let n = V::N;
    let hidden = args.hidden;
    // ONNX's cell has no backward here: the engine refuses to train it (`train.rs`) before
    // any kernel runs, so only PyTorch's derivative is written.
    debug_assert_eq!(
        args.variant,
        CellVariant::Standard,
        "backward of ONNX's cell"
    );
    for r in 0..args.rows {
        // SAFETY: r < rows and t < tiles keep every offset inside the buffers `args` describes;
        // tape reads stop at `hidden` (load_part); the ISA is available (caller contract).
        unsafe {
            let q = tape_row(args.tape_rows, r);
            let gates = args.gates.add(q * 4 * hidden);
            let tanh_c = args.tanh_c.add(q * hidden);
            let from_tape = r < args.prev_rows;
            for t in 0..args.tiles {
                let unit = t * n;
                let valid = hidden.saturating_sub(unit).min(n);
                let i = load_part::<V>(gates.add(unit), valid);
                let f = load_part::<V>(gates.add(hidden + unit), valid);
                let g = load_part::<V>(gates.add(2 * hidden + unit), valid);
                let o = load_part::<V>(gates.add(3 * hidden + unit), valid);
                let tc = load_part::<V>(tanh_c.add(unit), valid);
                let cp = if from_tape {
                    load_part::<V>(args.c_prev.add(q * hidden + unit), valid)
                } else {
                    V::load(args.c0.add(r * args.ldc0 + unit))
                };
                let mut dh = V::load(args.dh.add(r * args.ldh + unit));
                if !args.dh2.is_null() {
                    dh = dh.add(V::load(args.dh2.add(r * args.ldh2 + unit)));
                }
                let one = dh.constant(1.0);
                let dcp = args.dc.add(r * args.ldc + unit);
                let dc = dh.mul(o).mul_add(one.sub(tc.mul(tc)), V::load(dcp));
                let dzi = dc.mul(g).mul(i.mul(one.sub(i)));
                let dzf = dc.mul(cp).mul(f.mul(one.sub(f)));
                let dzg = dc.mul(i).mul(one.sub(g.mul(g)));
                let dzo = dh.mul(tc).mul(o.mul(one.sub(o)));
                dc.mul(f).store(dcp);
                let dg = args.dg.add(r * args.ldg + t * 4 * n);
                dzi.store(dg);
                dzf.store(dg.add(n));
                dzg.store(dg.add(2 * n));
                dzo.store(dg.add(3 * n));
            }
        }
    }
}

/// `out[j] = f(x[j])` for an activation `f`, whole vectors, then the tail through a padded
/// vector (for the exhaustive accuracy tests and the public slice functions).
///
/// # Safety
/// `V`'s instruction set is available.
#[inline(always)]
pub(crate) unsafe fn map_slice<V: Lanes>(x: &[f32], out: &mut [f32], f: impl Fn(V) -> V) {
    let n = V::N;
    let len = x.len().min(out.len());
    let mut j = 0;
    // SAFETY: j + n <= len for the vector loop; the tail goes through stack buffers of 16
    // floats (n <= 16); the ISA is available (caller contract).
    unsafe {
        while j + n <= len {
            f(V::load(x.as_ptr().add(j))).store(out.as_mut_ptr().add(j));
            j += n;
        }
        if j < len {
            let mut buf = [0.0f32; 16];
            buf[..len - j].copy_from_slice(&x[j..len]);
            let mut res = [0.0f32; 16];
            f(V::load(buf.as_ptr())).store(res.as_mut_ptr());
            out[j..len].copy_from_slice(&res[..len - j]);
        }
    }
}

/// Copies `len` floats from `src` to `dst`: the vectors that are whole and aligned in `dst`
/// with [`Lanes::store_streaming`], the head before them and the tail after them with plain
/// stores. For an output nobody reads again soon: its lines are not read for ownership first
/// and do not evict what the kernels keep in cache. The caller ends a series of copies with
/// [`fence_streaming`] before another thread may read `dst`.
///
/// # Safety
/// `V`'s instruction set is available; `len` floats readable at `src` and writable at `dst`
/// (aligned to `f32`), not overlapping.
#[inline(always)]
pub(crate) unsafe fn copy_streaming<V: Lanes>(src: *const f32, dst: *mut f32, len: usize) {
    let n = V::N;
    let misaligned = (dst as usize) % (4 * n);
    let head = if misaligned == 0 {
        0
    } else {
        ((4 * n - misaligned) / 4).min(len)
    };
    // SAFETY: every read and write is below `len` (caller contract); `dst + j` is aligned to
    // N floats in the vector loop (head floats skipped the misalignment); the ISA is available
    // (caller contract).
    unsafe {
        std::ptr::copy_nonoverlapping(src, dst, head);
        let mut j = head;
        while j + n <= len {
            V::load(src.add(j)).store_streaming(dst.add(j));
            j += n;
        }
        std::ptr::copy_nonoverlapping(src.add(j), dst.add(j), len - j);
    }
}

/// Orders this thread's [`copy_streaming`] stores before its later stores.
///
/// # Safety
/// `V`'s instruction set is available.
#[inline(always)]
pub(crate) unsafe fn fence_streaming<V: Lanes>() {
    // SAFETY: caller contract.
    unsafe { V::splat(0.0) }.fence_streaming();
}

/// The activations on lanes, for [`map_slice`].
#[inline(always)]
pub(crate) fn sigmoid_lanes<V: Lanes>(x: V) -> V {
    sigmoid(x)
}

/// See [`sigmoid_lanes`].
#[inline(always)]
pub(crate) fn tanh_lanes<V: Lanes>(x: V) -> V {
    tanh(x)
}
