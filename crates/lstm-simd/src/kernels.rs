//! The two kernels of the engine, written once over [`Lanes`]:
//!
//! - [`gemm`]: `C = A · B + bias` for a packed `B` (the hoisted input projection, and the
//!   `W_hr` projection of each step);
//! - [`fused_step`]: the recurrent step `gates = xproj + h · W_hhᵀ`, the four nonlinearities
//!   and the cell update, tile by tile, with the gates never leaving registers.
//!
//! Both walk a [`PackedMatrix`](crate::pack::PackedMatrix): column tiles of `4·N` floats, each
//! stored `k`-major so the kernel streams it contiguously. A tile is one *gate tile* of `W_hh`
//! or `W_ih` (the `i, f, g, o` rows of `N` hidden units), or `4·N` plain output columns of
//! `W_hr`. Rows of `A` (batch rows, or time·batch rows) are register-blocked `MR` at a time, so
//! each weight vector loaded feeds `MR` fused multiply-adds.
//!
//! Every function here is `#[inline(always)]` and is instantiated inside one backend's
//! `#[target_feature]` entry point (`portable.rs`, `x86_64/avx2.rs`, `x86_64/avx512.rs`).

use crate::lanes::{sigmoid, tanh, Lanes};

/// Splits rows `start..end` into `ceil(n / MR)` register blocks of as equal sizes as possible
/// (each at most `MR`) as `(first_row, rows)` pairs. Equal blocks keep every block
/// compute-bound: a block of one or two rows would stream its weight tile from L2 for too few
/// FMAs.
#[inline(always)]
pub(crate) fn row_blocks<const MR: usize>(
    start: usize,
    end: usize,
) -> impl Iterator<Item = (usize, usize)> {
    let n = end.saturating_sub(start);
    let blocks = n.div_ceil(MR);
    let (base, extra) = match n.checked_div(blocks) {
        Some(base) => (base, n - base * blocks),
        None => (0, 0),
    };
    (0..blocks).map(move |b| {
        // Blocks before `b` hold `base` rows each, plus one for each of the first `extra`.
        let first = start + b * base + b.min(extra);
        (first, base + usize::from(b < extra))
    })
}

/// Calls a kernel generic over its row count with `rows` (1..=6) as a constant.
macro_rules! with_rows {
    ($rows:expr, |$r:ident| $call:expr) => {
        match $rows {
            6 => {
                const $r: usize = 6;
                $call
            }
            5 => {
                const $r: usize = 5;
                $call
            }
            4 => {
                const $r: usize = 4;
                $call
            }
            3 => {
                const $r: usize = 3;
                $call
            }
            2 => {
                const $r: usize = 2;
                $call
            }
            _ => {
                const $r: usize = 1;
                $call
            }
        }
    };
}
pub(crate) use with_rows;

/// Arguments of [`gemm`]: `C[r, 0..tiles·4N] = bias + A[r, 0..k] · B` for `r < rows`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GemmArgs {
    pub(crate) rows: usize,
    /// Row `r` of `A` starts at `a + r·lda` and holds `k` floats.
    pub(crate) a: *const f32,
    pub(crate) lda: usize,
    pub(crate) k: usize,
    /// Packed `B`: `tiles` tiles of `k · 4N` floats.
    pub(crate) b: *const f32,
    pub(crate) tiles: usize,
    /// `tiles · 4N` floats, or null for no bias.
    pub(crate) bias: *const f32,
    /// Row `r` of `C` starts at `c + r·ldc` and has room for `tiles · 4N` floats.
    pub(crate) c: *mut f32,
    pub(crate) ldc: usize,
}

/// Arguments of [`fused_step`] for `rows` batch rows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StepArgs {
    pub(crate) rows: usize,
    /// Previous hidden state: row `r` at `h + r·ldh`, `k` floats (`H_out`).
    pub(crate) h: *const f32,
    pub(crate) ldh: usize,
    pub(crate) k: usize,
    /// Packed `W_hh`: `tiles` gate tiles of `k · 4N` floats.
    pub(crate) w: *const f32,
    pub(crate) tiles: usize,
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
}

/// `acc[r][v] += Σ_k a[r·lda + k] · b[k·4N + v·N ..]` over one packed tile.
///
/// # Safety
/// `V`'s instruction set is available; `a` has `MR` rows of `k` readable floats at stride
/// `lda`; `b` has `k · 4N` readable floats.
#[inline(always)]
pub(crate) unsafe fn accumulate<V: Lanes, const MR: usize>(
    acc: &mut [[V; 4]; MR],
    a: *const f32,
    lda: usize,
    k: usize,
    b: *const f32,
) {
    let n = V::N;
    for kk in 0..k {
        // SAFETY: kk < k, so the four vectors lie in the tile's `k · 4N` floats and the scalars
        // in the rows' `k` floats (caller contract); the ISA is available (caller contract).
        unsafe {
            let wp = b.add(kk * 4 * n);
            let w0 = V::load(wp);
            let w1 = V::load(wp.add(n));
            let w2 = V::load(wp.add(2 * n));
            let w3 = V::load(wp.add(3 * n));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let x = V::splat(*a.add(r * lda + kk));
                acc_r[0] = x.mul_add(w0, acc_r[0]);
                acc_r[1] = x.mul_add(w1, acc_r[1]);
                acc_r[2] = x.mul_add(w2, acc_r[2]);
                acc_r[3] = x.mul_add(w3, acc_r[3]);
            }
        }
    }
}

/// `MR` rows of one tile of [`gemm`].
///
/// # Safety
/// As [`gemm`], for rows `0..MR` starting at `a`/`c` and the tile starting at `b`/`bias`.
#[inline(always)]
unsafe fn gemm_block<V: Lanes, const MR: usize>(
    a: *const f32,
    lda: usize,
    k: usize,
    b: *const f32,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
) {
    let n = V::N;
    // SAFETY: the ISA is available and every pointer covers its rows/tile (caller contract);
    // `bias`, when not null, holds the tile's 4N floats.
    unsafe {
        let init = if bias.is_null() {
            [V::splat(0.0); 4]
        } else {
            [
                V::load(bias),
                V::load(bias.add(n)),
                V::load(bias.add(2 * n)),
                V::load(bias.add(3 * n)),
            ]
        };
        let mut acc = [init; MR];
        accumulate::<V, MR>(&mut acc, a, lda, k, b);
        for (r, acc_r) in acc.iter().enumerate() {
            let cr = c.add(r * ldc);
            for (v, &x) in acc_r.iter().enumerate() {
                x.store(cr.add(v * n));
            }
        }
    }
}

/// Rows per cache block of `A` in [`gemm`]: `A`'s block (`MC·k` floats) stays in L2 while every
/// tile of `B` passes over it.
const GEMM_BLOCK_BYTES: usize = 256 * 1024;

/// `C = bias + A · B` over a packed `B` (see [`GemmArgs`]).
///
/// Loop order: blocks of `MC` rows of `A` (L2-resident), then tiles of `B` (each `k · 4N` floats,
/// streamed once per row block), then `MR` rows in registers.
///
/// # Safety
/// `V`'s instruction set is available and `args` describes valid, non-overlapping memory as
/// documented on [`GemmArgs`].
#[inline(always)]
pub(crate) unsafe fn gemm<V: Lanes, const MR: usize>(args: &GemmArgs) {
    let n = V::N;
    let tile_len = args.k * 4 * n;
    let mc = (GEMM_BLOCK_BYTES / (4 * args.k.max(1))).max(MR) / MR * MR;
    let mut r0 = 0;
    while r0 < args.rows {
        let r_end = (r0 + mc).min(args.rows);
        for t in 0..args.tiles {
            // SAFETY: t < tiles and r < rows keep every offset inside the buffers described by
            // `args` (caller contract).
            unsafe {
                let b = args.b.add(t * tile_len);
                let bias = if args.bias.is_null() {
                    args.bias
                } else {
                    args.bias.add(t * 4 * n)
                };
                for (r, rows) in row_blocks::<MR>(r0, r_end) {
                    with_rows!(rows, |R| gemm_block::<V, R>(
                        args.a.add(r * args.lda),
                        args.lda,
                        args.k,
                        b,
                        bias,
                        args.c.add(r * args.ldc + t * 4 * n),
                        args.ldc
                    ))
                }
            }
        }
        r0 = r_end;
    }
}

/// `MR` rows of one gate tile of [`fused_step`].
///
/// # Safety
/// As [`fused_step`], for rows `0..MR` at the given row pointers and tile `t`.
#[inline(always)]
unsafe fn step_block<V: Lanes, const MR: usize>(args: &StepArgs, row: usize, t: usize) {
    let n = V::N;
    // SAFETY: row + MR <= rows and t < tiles (caller), so every offset stays inside the buffers
    // `args` describes; the ISA is available (caller contract).
    unsafe {
        let mut acc = [[V::splat(0.0); 4]; MR];
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let xp = args.xproj.add((row + r) * args.ldx + t * 4 * n);
            for (v, a) in acc_r.iter_mut().enumerate() {
                *a = V::load(xp.add(v * n));
            }
        }
        accumulate::<V, MR>(
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
            // c' = f ⊙ c + i ⊙ g; a decaying cell is flushed to zero before it turns subnormal.
            let c_new = f.mul_add(V::load(cp), i.mul(g)).flush_subnormal();
            c_new.store(cp);
            let h_new = o.mul(tanh(c_new)).flush_subnormal();
            h_new.store(args.h_out.add((row + r) * args.ldo + t * n));
        }
    }
}

/// One fused recurrent step for `args.rows` batch rows (see [`StepArgs`]).
///
/// For each gate tile (the i, f, g, o rows of `N` hidden units), `MR` rows at a time: the
/// accumulators start from the input projection, take `h · W_hhᵀ`, and go straight through the
/// activations into the cell update, so the `4H` gate pre-activations are never stored.
///
/// # Safety
/// `V`'s instruction set is available and `args` describes valid memory as documented on
/// [`StepArgs`]; `h_out` does not overlap `h`, `xproj` or `c`.
#[inline(always)]
pub(crate) unsafe fn fused_step<V: Lanes, const MR: usize>(args: &StepArgs) {
    for t in 0..args.tiles {
        for (r, rows) in row_blocks::<MR>(0, args.rows) {
            // SAFETY: r + rows <= args.rows and t < tiles, as step_block requires.
            unsafe { with_rows!(rows, |R| step_block::<V, R>(args, r, t)) }
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

/// One backend's kernels, chosen once when an engine is built.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kernels {
    /// Lanes per vector (`N`): the packing unit.
    pub(crate) lanes: usize,
    pub(crate) gemm: unsafe fn(&GemmArgs),
    pub(crate) fused_step: unsafe fn(&StepArgs),
    pub(crate) sigmoid: unsafe fn(&[f32], &mut [f32]),
    pub(crate) tanh: unsafe fn(&[f32], &mut [f32]),
}

/// Defines a backend's `#[target_feature]` entry points and its [`Kernels`] table.
macro_rules! backend_kernels {
    ($lanes:ty, $mr:expr $(, #[$attr:meta])*) => {
        $(#[$attr])*
        unsafe fn gemm_entry(args: &$crate::kernels::GemmArgs) {
            // SAFETY: this table is only handed out for a host with the features enabled above
            // (Backend::kernels checks); `args` validity is the caller's contract.
            unsafe { $crate::kernels::gemm::<$lanes, { $mr }>(args) }
        }

        $(#[$attr])*
        unsafe fn fused_step_entry(args: &$crate::kernels::StepArgs) {
            // SAFETY: as in gemm_entry.
            unsafe { $crate::kernels::fused_step::<$lanes, { $mr }>(args) }
        }

        $(#[$attr])*
        unsafe fn sigmoid_entry(x: &[f32], out: &mut [f32]) {
            // SAFETY: as in gemm_entry.
            unsafe { $crate::kernels::map_slice::<$lanes>(x, out, $crate::kernels::sigmoid_lanes) }
        }

        $(#[$attr])*
        unsafe fn tanh_entry(x: &[f32], out: &mut [f32]) {
            // SAFETY: as in gemm_entry.
            unsafe { $crate::kernels::map_slice::<$lanes>(x, out, $crate::kernels::tanh_lanes) }
        }

        /// This backend's kernels. Calling them is only sound on a host with its features.
        pub(crate) const KERNELS: $crate::kernels::Kernels = $crate::kernels::Kernels {
            lanes: <$lanes as $crate::lanes::Lanes>::N,
            gemm: gemm_entry,
            fused_step: fused_step_entry,
            sigmoid: sigmoid_entry,
            tanh: tanh_entry,
        };
    };
}
pub(crate) use backend_kernels;
