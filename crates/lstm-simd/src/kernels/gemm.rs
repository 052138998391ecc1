//! The matrix kernels, written once over [`Lanes`]:
//!
//! - [`gemm`]: `C = A · B + bias` for a packed `B` (the hoisted input projection, the `W_hr`
//!   projection of each step, and the backward's `dh = dG · W_hh`, `dX = dG · W_ih`);
//! - [`gemm_tn`]: `C += Aᵀ · B` over a long reduction (all `T·B` rows of a call): the weight
//!   gradients `dWᵀ = Yᵀ · dG`, with `dG` read in place (row-major, any row stride);
//! - [`Panel::accumulate`]: the register block both [`gemm`] and the fused step
//!   ([`cell`](super::cell)) are made of, once per weight precision.
//!
//! Both GEMMs walk a [`PackedMatrix`](crate::pack::PackedMatrix) (or, for `gemm_tn`, packed
//! panels): column tiles of `4·N` floats, each stored `k`-major so the kernel streams it
//! contiguously. Rows of `A` are register-blocked `MR` at a time, so each weight vector loaded
//! feeds `MR` fused multiply-adds.

use std::mem::MaybeUninit;

use super::{row_blocks, with_rows};
use crate::lanes::{DotBf16, Lanes};

/// Arguments of [`gemm`]: `C[r, 0..tiles·4N] = bias + A[r, 0..k] · B` for `r < rows`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GemmArgs {
    pub(crate) rows: usize,
    /// Row `r` of `A` starts at `a + r·lda` and holds `k` floats.
    pub(crate) a: *const f32,
    pub(crate) lda: usize,
    pub(crate) k: usize,
    /// Packed `B`: `tiles` tiles of `P::tile_bytes(k)` bytes (the kernel's [`Panel`]).
    pub(crate) b: *const u8,
    pub(crate) tiles: usize,
    /// `tiles · 4N` floats, or null for no bias.
    pub(crate) bias: *const f32,
    /// Row `r` of `C` starts at `c + r·ldc` and has room for `tiles · 4N` floats.
    pub(crate) c: *mut f32,
    pub(crate) ldc: usize,
}

/// How a kernel reads packed weights: the precision of the packing is this type parameter of
/// every kernel that multiplies by weights ([`gemm`], the fused step), and this is the only
/// place a weight is read.
///
/// - [`F32Panel`]: f32 weights, one run of `4N` floats per `k`;
/// - [`Bf16Panel`]: bf16 pairs (`k` and `k + 1` in one `u32`), widened to f32 in registers,
///   multiplied by the f32 rows (the bandwidth of bf16, the arithmetic of f32);
/// - [`Bf16DotPanel`]: the same pairs into `vdpbf16ps`, with the rows rounded to bf16 too.
pub(crate) trait Panel<V: Lanes> {
    /// Bytes of one packed tile of reduction length `k`.
    fn tile_bytes(k: usize) -> usize;

    /// `acc[r][v] += Σ_kk a[r·lda + kk] · B[kk, v·N ..]` over one packed tile at `b`.
    ///
    /// # Safety
    /// `V`'s instruction set (and the panel's, for [`Bf16DotPanel`]) is available; `a` has
    /// `MR` rows of `k` readable floats at stride `lda`; `b` has
    /// [`tile_bytes(k)`](Self::tile_bytes) readable bytes, 4-byte aligned.
    unsafe fn accumulate<const MR: usize>(
        acc: &mut [[V; 4]; MR],
        a: *const f32,
        lda: usize,
        k: usize,
        b: *const u8,
    );
}

/// f32 weights (see [`Panel`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct F32Panel;

/// bf16 weights widened to f32 (see [`Panel`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bf16Panel;

/// bf16 weights and rows in `vdpbf16ps` (see [`Panel`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bf16DotPanel;

impl<V: Lanes> Panel<V> for F32Panel {
    #[inline(always)]
    fn tile_bytes(k: usize) -> usize {
        k * 4 * V::N * 4
    }

    #[inline(always)]
    unsafe fn accumulate<const MR: usize>(
        acc: &mut [[V; 4]; MR],
        a: *const f32,
        lda: usize,
        k: usize,
        b: *const u8,
    ) {
        let (n, b) = (V::N, b.cast::<f32>());
        for kk in 0..k {
            // SAFETY: kk < k, so the four vectors lie in the tile's `k · 4N` floats and the
            // scalars in the rows' `k` floats; the ISA is available (caller contract).
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
}

impl<V: Lanes> Panel<V> for Bf16Panel {
    #[inline(always)]
    fn tile_bytes(k: usize) -> usize {
        k.div_ceil(2) * 4 * V::N * 4
    }

    #[inline(always)]
    unsafe fn accumulate<const MR: usize>(
        acc: &mut [[V; 4]; MR],
        a: *const f32,
        lda: usize,
        k: usize,
        b: *const u8,
    ) {
        let (n, b) = (V::N, b.cast::<u32>());
        for kk in 0..k {
            // SAFETY: run kk / 2 < k.div_ceil(2) holds `4N` pairs inside the tile; kk < k
            // keeps the scalars in the rows; the ISA is available (caller contract).
            unsafe {
                let (wp, high) = (b.add(kk / 2 * 4 * n), kk % 2 == 1);
                let w0 = V::load_bf16(wp, high);
                let w1 = V::load_bf16(wp.add(n), high);
                let w2 = V::load_bf16(wp.add(2 * n), high);
                let w3 = V::load_bf16(wp.add(3 * n), high);
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
}

/// Pairs of each row rounded to bf16 at a time by [`Bf16DotPanel`] (a 6-row block: 6 KiB of
/// stack, in L1 while the tile's runs stream past).
const DOT_CHUNK_PAIRS: usize = 256;

impl<V: DotBf16> Panel<V> for Bf16DotPanel {
    #[inline(always)]
    fn tile_bytes(k: usize) -> usize {
        k.div_ceil(2) * 4 * V::N * 4
    }

    #[inline(always)]
    unsafe fn accumulate<const MR: usize>(
        acc: &mut [[V; 4]; MR],
        a: *const f32,
        lda: usize,
        k: usize,
        b: *const u8,
    ) {
        let (n, b) = (V::N, b.cast::<u32>());
        let pairs = k.div_ceil(2);
        // Uninitialised: `round_pairs` writes the `count` pairs of each row read below (zeroing
        // 6 KiB per tile and row block would cost a tenth of the products).
        let mut rows = [[MaybeUninit::<u32>::uninit(); DOT_CHUNK_PAIRS]; MR];
        let mut p0 = 0;
        while p0 < pairs {
            let count = DOT_CHUNK_PAIRS.min(pairs - p0);
            // SAFETY: floats 2·p0 .. 2·p0 + len < k of each row are read, `count` pairs of its
            // chunk written (len.div_ceil(2) == count), and only those read back; runs p0 + p < pairs lie inside the tile; the ISA (bf16 dot
            // product included) is available (caller contract).
            unsafe {
                let len = (2 * count).min(k - 2 * p0);
                for (r, row) in rows.iter_mut().enumerate() {
                    V::round_pairs(a.add(r * lda + 2 * p0), len, row.as_mut_ptr().cast());
                }
                for p in 0..count {
                    let wp = b.add((p0 + p) * 4 * n);
                    let w0 = V::load_pairs(wp);
                    let w1 = V::load_pairs(wp.add(n));
                    let w2 = V::load_pairs(wp.add(2 * n));
                    let w3 = V::load_pairs(wp.add(3 * n));
                    for (row, acc_r) in rows.iter().zip(acc.iter_mut()) {
                        let x = V::splat_pair(row.as_ptr().add(p).cast());
                        acc_r[0] = acc_r[0].dot_pairs(x, w0);
                        acc_r[1] = acc_r[1].dot_pairs(x, w1);
                        acc_r[2] = acc_r[2].dot_pairs(x, w2);
                        acc_r[3] = acc_r[3].dot_pairs(x, w3);
                    }
                }
            }
            p0 += count;
        }
    }
}

/// `MR` rows of one tile of [`gemm`].
///
/// # Safety
/// As [`gemm`], for rows `0..MR` starting at `a`/`c` and the tile starting at `b`/`bias`.
#[inline(always)]
unsafe fn gemm_block<V: Lanes, const MR: usize, P: Panel<V>>(
    a: *const f32,
    lda: usize,
    k: usize,
    b: *const u8,
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
        P::accumulate::<MR>(&mut acc, a, lda, k, b);
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
pub(crate) unsafe fn gemm<V: Lanes, const MR: usize, P: Panel<V>>(args: &GemmArgs) {
    let n = V::N;
    let tile_len = P::tile_bytes(args.k);
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
                    with_rows!(rows, |R| gemm_block::<V, R, P>(
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
/// in registers. Each element of `C` is a sum in a fixed order (panel by panel, row by row
/// within a panel), whatever the sizes: deterministic.
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
