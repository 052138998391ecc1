//! The kernels of the training path, written once over [`Lanes`] like those of
//! [`kernels`](crate::kernels):
//!
//! - [`train_step`]: the fused recurrent step of the forward
//!   ([`fused_step`](crate::kernels::fused_step), the same arithmetic, so the same bits) that
//!   also records the post-activation gates `i, f, g, o`, `c_t`, `tanh(c_t)` and, when
//!   projecting, `o ⊙ tanh(c_t)` into a [`TrainingTape`](lstm_core::TrainingTape);
//! - [`gate_backward`]: one step of BPTT through the cell, elementwise: from `dL/dh` and the
//!   carried `dL/dc` to the gate pre-activation gradients `dG` (gate-tile layout) and the
//!   `dL/dc` carried to the previous step;
//! - [`gemm_tn`]: `C += Aᵀ · B` over a long reduction (all `T·B` rows of a call): the weight
//!   gradients `dWᵀ = Yᵀ · dG`, with `dG` read in place (row-major, any row stride).
//!
//! The recurrent `dh_{t-1} = dG_t · W_hh`, the projection's `dh_cell = dh · W_hr` and the
//! input gradient `dX = dG · W_ih` are plain [`gemm`](crate::kernels::gemm)s on weights packed
//! for the backward (see `backward.rs`).
//!
//! Every function here is `#[inline(always)]` and is instantiated inside one backend's
//! `#[target_feature]` entry point by [`train_backend!`].

use crate::kernels::{row_blocks, with_rows};
use crate::lanes::{sigmoid, tanh, Lanes};

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

/// Arguments of [`train_step`]: those of [`StepArgs`](crate::kernels::StepArgs), plus where
/// the step's records go.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TrainStepArgs {
    pub(crate) rows: usize,
    /// Previous hidden state: row `r` at `h + r·ldh`, `k` floats.
    pub(crate) h: *const f32,
    pub(crate) ldh: usize,
    pub(crate) k: usize,
    /// Packed `W_hh` (gate tiles of `k · 4N` floats).
    pub(crate) w: *const f32,
    pub(crate) tiles: usize,
    /// Input projection of the step (biases included), gate-tile order, row stride `ldx`.
    pub(crate) xproj: *const f32,
    pub(crate) ldx: usize,
    /// Cell state, updated in place, row stride `ldc`, `tiles · N` floats a row.
    pub(crate) c: *mut f32,
    pub(crate) ldc: usize,
    /// New `o ⊙ tanh(c')`, row stride `ldo`; must not overlap `h`.
    pub(crate) h_out: *mut f32,
    pub(crate) ldo: usize,
    /// The true hidden size `H` (the tape's row unit; the last tile may be partial).
    pub(crate) hidden: usize,
    /// Tape row of each kernel row (`rows` entries), or null for the identity.
    pub(crate) tape_rows: *const usize,
    /// The step's tape records: gates (row `q` at `gates + q·4H`, `i, f, g, o` blocks of `H`),
    /// cell states, their tanh (row `q` at `+ q·H`), and `o ⊙ tanh(c)` (null unless projecting).
    pub(crate) gates: *mut f32,
    pub(crate) cell: *mut f32,
    pub(crate) tanh_c: *mut f32,
    pub(crate) h_cell: *mut f32,
}

/// `MR` rows of one gate tile of [`train_step`].
///
/// # Safety
/// As [`train_step`], for rows `row..row + MR` and tile `t`.
#[inline(always)]
unsafe fn train_step_block<V: Lanes, const MR: usize>(args: &TrainStepArgs, row: usize, t: usize) {
    let n = V::N;
    let hidden = args.hidden;
    let unit = t * n;
    let valid = hidden.saturating_sub(unit).min(n);
    // SAFETY: row + MR <= rows and t < tiles (caller), so every offset stays inside the buffers
    // `args` describes; tape rows hold `hidden` (gates: 4·hidden) floats and `unit + valid <=
    // hidden`; the ISA is available (caller contract).
    unsafe {
        let mut acc = [[V::splat(0.0); 4]; MR];
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let xp = args.xproj.add((row + r) * args.ldx + t * 4 * n);
            for (v, a) in acc_r.iter_mut().enumerate() {
                *a = V::load(xp.add(v * n));
            }
        }
        crate::kernels::accumulate::<V, MR>(
            &mut acc,
            args.h.add(row * args.ldh),
            args.ldh,
            args.k,
            args.w.add(t * args.k * 4 * n),
        );
        for (r, acc_r) in acc.iter().enumerate() {
            let i = sigmoid(acc_r[0]);
            let f = sigmoid(acc_r[1]);
            let g = tanh(acc_r[2]);
            let o = sigmoid(acc_r[3]);
            let cp = args.c.add((row + r) * args.ldc + t * n);
            // Exactly the forward's arithmetic (kernels::step_block).
            let c_new = f.mul_add(V::load(cp), i.mul(g)).flush_subnormal();
            c_new.store(cp);
            let tc = tanh(c_new);
            let h_new = o.mul(tc).flush_subnormal();
            h_new.store(args.h_out.add((row + r) * args.ldo + t * n));

            let q = tape_row(args.tape_rows, row + r);
            if valid == 0 {
                continue;
            }
            let gp = args.gates.add(q * 4 * hidden + unit);
            for (v, x) in [i, f, g, o].into_iter().enumerate() {
                store_part(x, gp.add(v * hidden), valid);
            }
            store_part(c_new, args.cell.add(q * hidden + unit), valid);
            store_part(tc, args.tanh_c.add(q * hidden + unit), valid);
            if !args.h_cell.is_null() {
                store_part(h_new, args.h_cell.add(q * hidden + unit), valid);
            }
        }
    }
}

/// One recurrent step of the training forward for `args.rows` rows: [`fused_step`]'s result,
/// and the step's tape records.
///
/// [`fused_step`]: crate::kernels::fused_step
///
/// # Safety
/// `V`'s instruction set is available; `args` describes valid memory as documented on
/// [`TrainStepArgs`]; the tape rows named by `tape_rows` are distinct and in bounds; `h_out`
/// does not overlap `h`, `xproj` or `c`.
#[inline(always)]
pub(crate) unsafe fn train_step<V: Lanes, const MR: usize>(args: &TrainStepArgs) {
    for t in 0..args.tiles {
        for (r, rows) in row_blocks::<MR>(0, args.rows) {
            // SAFETY: r + rows <= args.rows and t < tiles, as train_step_block requires.
            unsafe { with_rows!(rows, |R| train_step_block::<V, R>(args, r, t)) }
        }
    }
}

/// Arguments of [`gate_backward`], for `rows` active rows of one step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GateBackwardArgs {
    pub(crate) rows: usize,
    /// `hp / N`: tiles of `N` hidden units.
    pub(crate) tiles: usize,
    /// The true hidden size `H` (the tape's row unit).
    pub(crate) hidden: usize,
    /// Tape row of each kernel row, or null for the identity (as [`TrainStepArgs`]).
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

/// Arguments of [`gemm_tn`]: `C[r, j] += Σ_kk A[kk, r] · B[kk, j]` for `r < rows`, `kk < k`,
/// `j < cols` (and `C[r, j] += 0` for `j` up to the next multiple of `4N`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct GemmTnArgs {
    pub(crate) rows: usize,
    pub(crate) k: usize,
    /// `A[kk, r]` at `a + kk·lda + r`.
    pub(crate) a: *const f32,
    pub(crate) lda: usize,
    /// `B[kk, j]` at `b + kk·ldb + j`, `cols` columns (`ldb >= cols`).
    pub(crate) b: *const f32,
    pub(crate) ldb: usize,
    pub(crate) cols: usize,
    /// `C[r, j]` at `c + r·ldc + j` for `j < cols` rounded up to `4N`, accumulated into.
    pub(crate) c: *mut f32,
    pub(crate) ldc: usize,
    /// Scratch for the packed panels: [`gemm_tn_scratch`]`(rows)` floats.
    pub(crate) pack: *mut f32,
}

/// Bytes of `B` (`kc` rows of one tile of `4N` columns) kept hot in L1 while every row block of
/// `A` passes over it.
const TN_PANEL_BYTES: usize = 32 * 1024;

/// Reduction rows per panel of [`gemm_tn`] for `lanes`-wide vectors.
fn tn_kc(lanes: usize) -> usize {
    (TN_PANEL_BYTES / (16 * lanes.max(1))).max(16)
}

/// Floats of scratch [`gemm_tn`] needs for `rows` rows of `C` with `lanes`-wide vectors.
pub(crate) fn gemm_tn_scratch(rows: usize, lanes: usize) -> usize {
    tn_kc(lanes) * (rows + 4 * lanes)
}

/// `MR` rows of one tile of [`gemm_tn`] over a packed panel: `a` holds `kn` runs of `MR`
/// floats (`A[kk, r..r + MR]`), `b` holds `kn` runs of `4N` floats.
///
/// # Safety
/// `V`'s instruction set is available; the panels hold what is described; `c` has `MR` rows of
/// `4N` floats at stride `ldc`.
#[inline(always)]
unsafe fn gemm_tn_block<V: Lanes, const MR: usize>(
    a: *const f32,
    b: *const f32,
    kn: usize,
    c: *mut f32,
    ldc: usize,
) {
    let n = V::N;
    // SAFETY: every offset stays inside the panels and C rows (caller contract).
    unsafe {
        let mut acc = [[V::splat(0.0); 4]; MR];
        for (m, acc_m) in acc.iter_mut().enumerate() {
            let cp = c.add(m * ldc);
            for (v, x) in acc_m.iter_mut().enumerate() {
                *x = V::load(cp.add(v * n));
            }
        }
        for kk in 0..kn {
            let bp = b.add(kk * 4 * n);
            let w0 = V::load(bp);
            let w1 = V::load(bp.add(n));
            let w2 = V::load(bp.add(2 * n));
            let w3 = V::load(bp.add(3 * n));
            let ap = a.add(kk * MR);
            for (m, acc_m) in acc.iter_mut().enumerate() {
                let x = V::splat(*ap.add(m));
                acc_m[0] = x.mul_add(w0, acc_m[0]);
                acc_m[1] = x.mul_add(w1, acc_m[1]);
                acc_m[2] = x.mul_add(w2, acc_m[2]);
                acc_m[3] = x.mul_add(w3, acc_m[3]);
            }
        }
        for (m, acc_m) in acc.iter().enumerate() {
            let cp = c.add(m * ldc);
            for (v, &x) in acc_m.iter().enumerate() {
                x.store(cp.add(v * n));
            }
        }
    }
}

/// `C += Aᵀ · B` (see [`GemmTnArgs`]): the weight gradients, reduced over every `T·B` row.
///
/// Loop order: panels of `kc` reduction rows; per panel, `A` is packed once (each register
/// block's rows interleaved, `kc · MR` contiguous floats) and, per tile of `4N` columns, `B`'s
/// `kc × 4N` panel (contiguous and zero past `cols`, so it stays in L1 whatever `B`'s row
/// stride: a stride of 4 KiB would map every row to the same cache set); then `MR` rows of `C`
/// in registers. Each element of `C` is a sum
/// in a fixed order (panel by panel, row by row within a panel), whatever the sizes:
/// deterministic.
///
/// # Safety
/// `V`'s instruction set is available and `args` describes valid memory as documented on
/// [`GemmTnArgs`]; `C` and the scratch overlap nothing else.
#[inline(always)]
pub(crate) unsafe fn gemm_tn<V: Lanes, const MR: usize>(args: &GemmTnArgs) {
    let n = V::N;
    let kc = tn_kc(n);
    let width = 4 * n;
    let mut k0 = 0;
    while k0 < args.k {
        let kn = kc.min(args.k - k0);
        // SAFETY: rows of A are read at k0 + kk < k and r + m < rows; the packed A takes
        // kc·rows floats of the scratch (block at r·kc, kn·R floats), the B panel the next
        // kc·4N; B is read below `cols` and C written below tiles·4N (caller contract).
        unsafe {
            for (r, rows) in row_blocks::<MR>(0, args.rows) {
                let dst = args.pack.add(r * kc);
                for kk in 0..kn {
                    let src = args.a.add((k0 + kk) * args.lda + r);
                    for m in 0..rows {
                        *dst.add(kk * rows + m) = *src.add(m);
                    }
                }
            }
            let panel = args.pack.add(args.rows * kc);
            for t in 0..args.cols.div_ceil(width) {
                let valid = (args.cols - t * width).min(width);
                for kk in 0..kn {
                    let src = args.b.add((k0 + kk) * args.ldb + t * width);
                    let dst = panel.add(kk * width);
                    if valid == width {
                        for v in 0..4 {
                            V::load(src.add(v * n)).store(dst.add(v * n));
                        }
                    } else {
                        std::ptr::copy_nonoverlapping(src, dst, valid);
                        std::ptr::write_bytes(dst.add(valid), 0, width - valid);
                    }
                }
                for (r, rows) in row_blocks::<MR>(0, args.rows) {
                    with_rows!(rows, |R| gemm_tn_block::<V, R>(
                        args.pack.add(r * kc),
                        panel,
                        kn,
                        args.c.add(r * args.ldc + t * width),
                        args.ldc
                    ))
                }
            }
        }
        k0 += kn;
    }
}

/// One backend's training kernels, chosen with its [`Kernels`](crate::kernels::Kernels).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TrainKernels {
    pub(crate) train_step: unsafe fn(&TrainStepArgs),
    pub(crate) gate_backward: unsafe fn(&GateBackwardArgs),
    pub(crate) gemm_tn: unsafe fn(&GemmTnArgs),
}

/// Defines a backend's `#[target_feature]` training entry points and its [`TrainKernels`]
/// table (as `backend_kernels!` does for the forward).
macro_rules! train_backend {
    ($lanes:ty, $mr:expr $(, #[$attr:meta])*) => {
        $(#[$attr])*
        unsafe fn train_step_entry(args: &$crate::train_kernels::TrainStepArgs) {
            // SAFETY: this table is only handed out for a host with the features enabled above
            // (train_kernels() checks through Backend::kernels); `args` validity is the
            // caller's contract.
            unsafe { $crate::train_kernels::train_step::<$lanes, { $mr }>(args) }
        }

        $(#[$attr])*
        unsafe fn gate_backward_entry(args: &$crate::train_kernels::GateBackwardArgs) {
            // SAFETY: as in train_step_entry.
            unsafe { $crate::train_kernels::gate_backward::<$lanes>(args) }
        }

        $(#[$attr])*
        unsafe fn gemm_tn_entry(args: &$crate::train_kernels::GemmTnArgs) {
            // SAFETY: as in train_step_entry.
            unsafe { $crate::train_kernels::gemm_tn::<$lanes, { $mr }>(args) }
        }

        /// This backend's training kernels. Calling them is only sound on a host with its
        /// features.
        pub(crate) const TRAIN_KERNELS: $crate::train_kernels::TrainKernels =
            $crate::train_kernels::TrainKernels {
                train_step: train_step_entry,
                gate_backward: gate_backward_entry,
                gemm_tn: gemm_tn_entry,
            };
    };
}

mod portable {
    train_backend!(crate::portable::Portable, 2);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    train_backend!(crate::x86_64::avx2::F32x8, 3, #[target_feature(enable = "avx2,fma")]);
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    train_backend!(crate::x86_64::avx512::F32x16, 6, #[target_feature(enable = "avx512f")]);
}

/// The training kernels of `backend`, or an error when this CPU lacks its instructions (the
/// check [`Backend::kernels`](crate::Backend) makes, which is what makes calling them sound).
pub(crate) fn train_kernels(backend: crate::Backend) -> lstm_core::Result<TrainKernels> {
    backend.kernels()?;
    Ok(match backend {
        crate::Backend::Portable => portable::TRAIN_KERNELS,
        #[cfg(target_arch = "x86_64")]
        crate::Backend::Avx2 => avx2::TRAIN_KERNELS,
        #[cfg(target_arch = "x86_64")]
        crate::Backend::Avx512 => avx512::TRAIN_KERNELS,
        #[cfg(not(target_arch = "x86_64"))]
        _ => portable::TRAIN_KERNELS,
    })
}
