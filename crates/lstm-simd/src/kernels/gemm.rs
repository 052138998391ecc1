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

use std::marker::PhantomData;
use std::mem::MaybeUninit;

use super::{group_rows, row_blocks, with_rows};
use crate::lanes::{DotBf16, DotI8, Lanes, RUN_WORDS};
use crate::pack::INT8_HEADER_WORDS;

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
/// - [`Bf16DotPanel`]: the same pairs into `vdpbf16ps`, with the rows rounded to bf16 too;
/// - [`Int8Panel`]: int8 quads (`k .. k + 4` in one `u32`) with a scale per column, widened
///   to f32 and scaled in registers, multiplied by the f32 rows;
/// - [`Int8DotPanel`]: the same quads into `vpdpbusd`, with each row quantized to 8 bits
///   under its own scale, the exact integer sums scaled back to f32 once per tile.
///
/// A kernel first hands the rows it multiplies to [`stage`](Self::stage), once per call (or
/// per group of [`stage_rows`](Self::stage_rows) rows), and then every weight tile reads the
/// staged [`Rows`](Self::Rows): a panel that needs its rows in another form (bf16 pairs)
/// converts each row once there, not once per tile (a layer of `4H = 2048` columns has 32
/// tiles).
pub(crate) trait Panel<V: Lanes> {
    /// Where [`stage`](Self::stage) keeps converted rows: a stack buffer, or nothing for the
    /// panels that read the f32 rows in place.
    type Stage;
    /// A view of staged rows, moved to a later row by [`StagedRows::skip`].
    type Rows: StagedRows;

    /// An empty stage.
    fn new_stage() -> Self::Stage;

    /// Rows of reduction length `k` one stage holds (`usize::MAX` when rows are read in
    /// place). A caller stages at most this many rows at a time when it is at least its
    /// register block; below that the panel converts rows tile by tile instead.
    fn stage_rows(k: usize) -> usize;

    /// `rows` rows of `k` floats at `a` (stride `lda`) as [`accumulate`](Self::accumulate)
    /// reads them, converted into `stage` when they fit. The caller then reads them in the
    /// register blocks of `row_blocks::<MR>(0, rows)` (the stage may lay each block out for
    /// its `accumulate::<MR>`).
    ///
    /// # Safety
    /// `V`'s instruction set (and the panel's) is available; `a` has `rows` rows of `k`
    /// readable floats at stride `lda`, unchanged while the returned view is used.
    unsafe fn stage<const MR: usize>(
        stage: &mut Self::Stage,
        a: *const f32,
        lda: usize,
        rows: usize,
        k: usize,
    ) -> Self::Rows;

    /// Bytes of one packed tile of reduction length `k`.
    fn tile_bytes(k: usize) -> usize;

    /// `acc[r][v] += Σ_kk a[r, kk] · B[kk, v·N ..]` over one packed tile at `b`, for the
    /// first `MR` rows of `a`.
    ///
    /// # Safety
    /// `V`'s instruction set (and the panel's, for [`Bf16DotPanel`]) is available; `a` is the
    /// start of one register block of `MR` rows of this `k`, as staged (its stage alive and
    /// unchanged); `b`
    /// has [`tile_bytes(k)`](Self::tile_bytes) readable bytes, 4-byte aligned.
    unsafe fn accumulate<const MR: usize>(
        acc: &mut [[V; 4]; MR],
        a: Self::Rows,
        k: usize,
        b: *const u8,
    );
}

/// A view of staged rows.
pub(crate) trait StagedRows: Copy {
    /// The view from row `r` on.
    ///
    /// # Safety
    /// `r` is below the rows staged.
    unsafe fn skip(self, r: usize) -> Self;
}

/// f32 rows read in place: row `r` at `ptr + r·ld`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct F32Rows {
    ptr: *const f32,
    ld: usize,
}

impl StagedRows for F32Rows {
    #[inline(always)]
    unsafe fn skip(self, r: usize) -> Self {
        // SAFETY: r is below the staged rows (caller contract).
        let ptr = unsafe { self.ptr.add(r * self.ld) };
        F32Rows { ptr, ld: self.ld }
    }
}

/// Rows for a [`DotPanel`]: encoded once (bf16 pairs, or int8 quads with a scale per row),
/// or, when they did not fit the stage (`words` null), the f32 rows, encoded tile by tile.
///
/// The words are laid out as GEMMs pack `A`, a run of [`RUN_WORDS`] words at a time: the
/// register block of `n` rows that starts at row `first` occupies `n · ld_words` words from
/// `words + first · ld_words` (`ld_words` a multiple of the run), where word `p` of its row
/// `r` lies at `(p / RUN_WORDS) · RUN_WORDS · n + r · RUN_WORDS + p % RUN_WORDS`. The kernel
/// reads every row's word through one pointer (a row pointer each would take six registers
/// the loop needs), and the encoder writes each run of a row with one store (interleaving word
/// by word took a scatter, 1-2% of a bf16 forward). Row `r`'s scale is at `scales + r`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DotRows {
    f32: F32Rows,
    words: *const u32,
    ld_words: usize,
    scales: *const f32,
}

impl StagedRows for DotRows {
    #[inline(always)]
    unsafe fn skip(self, r: usize) -> Self {
        // SAFETY: r is below the staged rows (caller contract); the encoded rows are only
        // offset when they exist.
        unsafe {
            let staged = !self.words.is_null();
            DotRows {
                f32: self.f32.skip(r),
                words: if staged {
                    self.words.add(r * self.ld_words)
                } else {
                    self.words
                },
                ld_words: self.ld_words,
                scales: if staged {
                    self.scales.add(r)
                } else {
                    self.scales
                },
            }
        }
    }
}

/// f32 weights (see [`Panel`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct F32Panel;

/// bf16 weights widened to f32 (see [`Panel`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bf16Panel;

/// int8 weights (a scale per column) widened to f32 (see [`Panel`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Int8Panel;

/// Weights and rows both encoded, multiplied by a dot-product instruction (see [`Panel`] and
/// [`DotOperand`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct DotPanel<E>(PhantomData<E>);

/// bf16 weights and rows in `vdpbf16ps`.
pub(crate) type Bf16DotPanel = DotPanel<Bf16Pairs>;

/// int8 weights and rows in `vpdpbusd`.
pub(crate) type Int8DotPanel = DotPanel<U8Quads>;

/// The staging of the panels that read f32 rows in place.
macro_rules! f32_rows_in_place {
    () => {
        type Stage = ();
        type Rows = F32Rows;

        #[inline(always)]
        fn new_stage() {}

        #[inline(always)]
        fn stage_rows(_k: usize) -> usize {
            usize::MAX
        }

        #[inline(always)]
        unsafe fn stage<const MR: usize>(
            _: &mut (),
            a: *const f32,
            lda: usize,
            _rows: usize,
            _k: usize,
        ) -> F32Rows {
            F32Rows { ptr: a, ld: lda }
        }
    };
}

/// How a panel that multiplies f32 rows reads run `kk` of a tile: four vectors of f32
/// weights (a trait rather than a closure so that it inlines into each backend's
/// `#[target_feature]` entry point).
trait F32Run<V: Lanes> {
    /// The four weight vectors of run `kk` of the tile at `b`, as f32.
    ///
    /// # Safety
    /// `V`'s instruction set is available; run `kk` lies inside the tile.
    unsafe fn run(b: *const u8, kk: usize) -> [V; 4];
}

impl<V: Lanes> F32Run<V> for F32Panel {
    #[inline(always)]
    unsafe fn run(b: *const u8, kk: usize) -> [V; 4] {
        let n = V::N;
        // SAFETY: run kk holds 4N floats inside the tile (caller contract).
        unsafe {
            let wp = b.cast::<f32>().add(kk * 4 * n);
            [
                V::load(wp),
                V::load(wp.add(n)),
                V::load(wp.add(2 * n)),
                V::load(wp.add(3 * n)),
            ]
        }
    }
}

impl<V: Lanes> F32Run<V> for Bf16Panel {
    #[inline(always)]
    unsafe fn run(b: *const u8, kk: usize) -> [V; 4] {
        let n = V::N;
        // SAFETY: pair run kk / 2 < k.div_ceil(2) holds 4N pairs inside the tile (caller
        // contract).
        unsafe {
            let (wp, high) = (b.cast::<u32>().add(kk / 2 * 4 * n), kk % 2 == 1);
            [
                V::load_bf16(wp, high),
                V::load_bf16(wp.add(n), high),
                V::load_bf16(wp.add(2 * n), high),
                V::load_bf16(wp.add(3 * n), high),
            ]
        }
    }
}

/// `acc[r] += Σ_kk a[r, kk] · W[kk]` over one tile at `b` for the first `MR` rows of `a`,
/// the weights read by `W`: the loop of every panel that multiplies f32 rows, written once.
///
/// # Safety
/// `V`'s instruction set is available; `a` has `MR` rows of `k` readable floats; the tile at
/// `b` has `k` runs.
#[inline(always)]
unsafe fn fma_rows<V: Lanes, const MR: usize, W: F32Run<V>>(
    acc: &mut [[V; 4]; MR],
    a: F32Rows,
    k: usize,
    b: *const u8,
) {
    for kk in 0..k {
        // SAFETY: kk < k: run kk is in the tile and float kk in each of the MR rows (caller
        // contract).
        unsafe {
            let [w0, w1, w2, w3] = W::run(b, kk);
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let x = V::splat(*a.ptr.add(r * a.ld + kk));
                acc_r[0] = x.mul_add(w0, acc_r[0]);
                acc_r[1] = x.mul_add(w1, acc_r[1]);
                acc_r[2] = x.mul_add(w2, acc_r[2]);
                acc_r[3] = x.mul_add(w3, acc_r[3]);
            }
        }
    }
}

impl<V: Lanes> Panel<V> for F32Panel {
    f32_rows_in_place!();

    #[inline(always)]
    fn tile_bytes(k: usize) -> usize {
        k * 4 * V::N * 4
    }

    #[inline(always)]
    unsafe fn accumulate<const MR: usize>(
        acc: &mut [[V; 4]; MR],
        a: F32Rows,
        k: usize,
        b: *const u8,
    ) {
        // SAFETY: the caller's contract is fma_rows'.
        unsafe { fma_rows::<V, MR, Self>(acc, a, k, b) }
    }
}

impl<V: Lanes> Panel<V> for Bf16Panel {
    f32_rows_in_place!();

    #[inline(always)]
    fn tile_bytes(k: usize) -> usize {
        k.div_ceil(2) * 4 * V::N * 4
    }

    #[inline(always)]
    unsafe fn accumulate<const MR: usize>(
        acc: &mut [[V; 4]; MR],
        a: F32Rows,
        k: usize,
        b: *const u8,
    ) {
        // SAFETY: the caller's contract is fma_rows'.
        unsafe { fma_rows::<V, MR, Self>(acc, a, k, b) }
    }
}

impl<V: Lanes> F32Run<V> for Int8Panel {
    #[inline(always)]
    unsafe fn run(b: *const u8, kk: usize) -> [V; 4] {
        let (n, b) = (V::N, b.cast::<u32>());
        // SAFETY: the tile starts with the header (the scales are its first 4N words) and
        // quad run kk / 4 < k.div_ceil(4) holds 4N quads after it (caller contract).
        unsafe {
            let quads = b.add((INT8_HEADER_WORDS + kk / 4) * 4 * n);
            let scales = b.cast::<f32>();
            let byte = kk % 4;
            [
                V::load_i8(quads, byte).mul(V::load(scales)),
                V::load_i8(quads.add(n), byte).mul(V::load(scales.add(n))),
                V::load_i8(quads.add(2 * n), byte).mul(V::load(scales.add(2 * n))),
                V::load_i8(quads.add(3 * n), byte).mul(V::load(scales.add(3 * n))),
            ]
        }
    }
}

impl<V: Lanes> Panel<V> for Int8Panel {
    f32_rows_in_place!();

    #[inline(always)]
    fn tile_bytes(k: usize) -> usize {
        (INT8_HEADER_WORDS + k.div_ceil(4)) * 4 * V::N * 4
    }

    #[inline(always)]
    unsafe fn accumulate<const MR: usize>(
        acc: &mut [[V; 4]; MR],
        a: F32Rows,
        k: usize,
        b: *const u8,
    ) {
        // SAFETY: the caller's contract is fma_rows'.
        unsafe { fma_rows::<V, MR, Self>(acc, a, k, b) }
    }
}

/// The operands of a [`DotPanel`]: how a row is encoded into 32-bit words, which
/// instruction multiplies a row's word by the weights' words, and how its sums reach the f32
/// accumulators.
pub(crate) trait DotOperand<V: Lanes> {
    /// Row elements per word.
    const PER_WORD: usize;
    /// Words of a tile's header per column, before its runs.
    const HEADER_WORDS: usize;
    /// Whether a row is encoded under a scale of its own ([`row_scale`](Self::row_scale)).
    const SCALED: bool;
    /// `N` words.
    type Words: Copy;
    /// `N` sums of products.
    type Sums: Copy;

    /// The sums a tile starts from, given the accumulator they end in.
    ///
    /// # Safety
    /// The CPU has the operands' instructions.
    unsafe fn start(acc: V) -> Self::Sums;

    /// `N` words at `p` (a run of the weights).
    ///
    /// # Safety
    /// As [`start`](Self::start); `N` words readable at `p`.
    unsafe fn load_run(p: *const u32) -> Self::Words;

    /// The word at `p` in every lane.
    ///
    /// # Safety
    /// As [`start`](Self::start); one word readable at `p`.
    unsafe fn splat_word(p: *const u32) -> Self::Words;

    /// `sums` plus the products of the row's word `x` by the weights' words `w`.
    ///
    /// # Safety
    /// As [`start`](Self::start).
    unsafe fn dot(sums: Self::Sums, x: Self::Words, w: Self::Words) -> Self::Sums;

    /// The scale a row of `len` floats at `src` is encoded under (only when `SCALED`).
    ///
    /// # Safety
    /// `len` floats readable at `src`.
    unsafe fn row_scale(src: *const f32, len: usize) -> f32;

    /// Encodes `len` floats at `src` under `scale`, in runs of [`RUN_WORDS`]: word `p` to
    /// `dst + (p / RUN_WORDS)·run_stride + p % RUN_WORDS`.
    ///
    /// # Safety
    /// As [`start`](Self::start); `len` floats readable at `src`, and those words writable for
    /// `p < len.div_ceil(PER_WORD)`.
    unsafe fn encode(src: *const f32, len: usize, scale: f32, dst: *mut u32, run_stride: usize);

    /// The accumulator `acc` of vector `v` of a tile after its `sums`, for a row encoded
    /// under `scale`; `tile` is the tile's first word (its header).
    ///
    /// # Safety
    /// As [`start`](Self::start); the tile's header is readable.
    unsafe fn finish(acc: V, sums: Self::Sums, tile: *const u32, v: usize, scale: f32) -> V;
}

/// bf16 pairs (see [`DotOperand`]): the rows rounded to bf16, `vdpbf16ps` adding straight to
/// the f32 accumulators.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bf16Pairs;

impl<V: DotBf16> DotOperand<V> for Bf16Pairs {
    const PER_WORD: usize = 2;
    const HEADER_WORDS: usize = 0;
    const SCALED: bool = false;
    type Words = V::Pairs;
    type Sums = V;

    #[inline(always)]
    unsafe fn start(acc: V) -> V {
        acc
    }
    #[inline(always)]
    unsafe fn load_run(p: *const u32) -> V::Pairs {
        // SAFETY: caller contract.
        unsafe { V::load_pairs(p) }
    }
    #[inline(always)]
    unsafe fn splat_word(p: *const u32) -> V::Pairs {
        // SAFETY: caller contract.
        unsafe { V::splat_pair(p) }
    }
    #[inline(always)]
    unsafe fn dot(sums: V, x: V::Pairs, w: V::Pairs) -> V {
        // SAFETY: caller contract.
        unsafe { sums.dot_pairs(x, w) }
    }
    #[inline(always)]
    unsafe fn row_scale(_src: *const f32, _len: usize) -> f32 {
        1.0
    }
    #[inline(always)]
    unsafe fn encode(src: *const f32, len: usize, _scale: f32, dst: *mut u32, run_stride: usize) {
        // SAFETY: caller contract.
        unsafe { V::round_pairs(src, len, dst, run_stride) }
    }
    #[inline(always)]
    unsafe fn finish(_acc: V, sums: V, _tile: *const u32, _v: usize, _scale: f32) -> V {
        sums
    }
}

/// int8 quads (see [`DotOperand`]): each row quantized to `u8` (offset by 128) under a scale
/// of its own, `vpdpbusd` summing exactly in i32; per tile, the offset's share (in the tile
/// header) is taken off and the sum scaled by the row's and the column's scales into the f32
/// accumulator.
#[derive(Clone, Copy, Debug)]
pub(crate) struct U8Quads;

impl<V: DotI8> DotOperand<V> for U8Quads {
    const PER_WORD: usize = 4;
    const HEADER_WORDS: usize = INT8_HEADER_WORDS;
    const SCALED: bool = true;
    type Words = V::Quads;
    type Sums = V::Ints;

    #[inline(always)]
    unsafe fn start(_acc: V) -> V::Ints {
        // SAFETY: caller contract.
        unsafe { V::zero_ints() }
    }
    #[inline(always)]
    unsafe fn load_run(p: *const u32) -> V::Quads {
        // SAFETY: caller contract.
        unsafe { V::load_quads(p) }
    }
    #[inline(always)]
    unsafe fn splat_word(p: *const u32) -> V::Quads {
        // SAFETY: caller contract.
        unsafe { V::splat_quad(p) }
    }
    #[inline(always)]
    unsafe fn dot(sums: V::Ints, x: V::Quads, w: V::Quads) -> V::Ints {
        // SAFETY: caller contract.
        unsafe { V::dot_quads(sums, x, w) }
    }
    #[inline(always)]
    unsafe fn row_scale(src: *const f32, len: usize) -> f32 {
        // SAFETY: caller contract.
        unsafe { V::i8_scale(src, len) }
    }
    #[inline(always)]
    unsafe fn encode(src: *const f32, len: usize, scale: f32, dst: *mut u32, run_stride: usize) {
        // A zero or NaN scale quantizes everything to 0 (128): the products are 0, scaled by
        // the scale (NaN stays NaN).
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        // SAFETY: caller contract.
        unsafe { V::quantize_quads(src, len, inv, dst, run_stride) }
    }
    #[inline(always)]
    unsafe fn finish(acc: V, sums: V::Ints, tile: *const u32, v: usize, scale: f32) -> V {
        let (n, width) = (V::N, 4 * V::N);
        // SAFETY: the header holds the column scales (4N words) then the offset corrections
        // (4N words) (caller contract).
        unsafe {
            let column_scale = V::load(tile.add(v * n).cast());
            let offset = V::load_ints(tile.add(width + v * n));
            V::sub_to_f32(sums, offset).mul_add(column_scale.mul(V::splat(scale)), acc)
        }
    }
}

/// Words one [`DotPanel`] stage holds: 64 KiB of stack (a 6-row block of `k = 5440` bf16,
/// 32 rows of `k = 1024`), small next to any thread's stack and inside L2.
const STAGE_WORDS: usize = 16 * 1024;

/// Rows one [`DotPanel`] stage holds at most (their scales: 4 KiB).
const STAGE_ROWS: usize = 1024;

/// Words of each row encoded at a time when rows do not fit the stage (a 6-row block: 6 KiB
/// of stack, in L1 while the tile's runs stream past); whole runs.
const DOT_CHUNK_WORDS: usize = 256;
const _: () = assert!(DOT_CHUNK_WORDS.is_multiple_of(RUN_WORDS));

/// The scratch of a [`DotPanel`]: encoded rows and their scales.
pub(crate) struct DotStage {
    words: [MaybeUninit<u32>; STAGE_WORDS],
    scales: [MaybeUninit<f32>; STAGE_ROWS],
}

/// `sums[r] += Σ_p rows[p·MR + r] · B[p]` for `count` words of `MR` interleaved rows against
/// the runs of `4N` words at `b`: the inner loop of every [`DotPanel`].
///
/// # Safety
/// The CPU has `E`'s instructions; `count · MR` words are readable at `rows`, and `count`
/// runs of `4N` words at `b`.
#[inline(always)]
unsafe fn dot_rows<V: Lanes, E: DotOperand<V>, const MR: usize>(
    sums: &mut [[E::Sums; 4]; MR],
    rows: *const u32,
    count: usize,
    b: *const u32,
) {
    let n = V::N;
    // A copy whose address never escapes: `rows` may point into the caller's stack, and
    // without the copy LLVM cannot tell it apart from `sums` and stores every sum back after
    // each product.
    let mut local = *sums;
    let mut p0 = 0;
    while p0 < count {
        // One run of the MR rows: word p0 + q of row r at RUN_WORDS·r + q from `xs`.
        // SAFETY: p0 < count is a multiple of RUN_WORDS, so the run starts at p0 · MR
        // (the `DotRows` layout), inside `rows` (caller contract).
        let xs = unsafe { rows.add(p0 * MR) };
        for q in 0..RUN_WORDS.min(count - p0) {
            // SAFETY: p0 + q < count keeps the weights' run inside `b` and the words inside
            // `rows` (caller contract).
            unsafe {
                let wp = b.add((p0 + q) * 4 * n);
                let w0 = E::load_run(wp);
                let w1 = E::load_run(wp.add(n));
                let w2 = E::load_run(wp.add(2 * n));
                let w3 = E::load_run(wp.add(3 * n));
                for (r, sums_r) in local.iter_mut().enumerate() {
                    let x = E::splat_word(xs.add(r * RUN_WORDS + q));
                    sums_r[0] = E::dot(sums_r[0], x, w0);
                    sums_r[1] = E::dot(sums_r[1], x, w1);
                    sums_r[2] = E::dot(sums_r[2], x, w2);
                    sums_r[3] = E::dot(sums_r[3], x, w3);
                }
            }
        }
        p0 += RUN_WORDS;
    }
    *sums = local;
}

impl<V: Lanes, E: DotOperand<V>> Panel<V> for DotPanel<E> {
    type Stage = DotStage;
    type Rows = DotRows;

    #[inline(always)]
    fn new_stage() -> DotStage {
        DotStage {
            words: [MaybeUninit::uninit(); STAGE_WORDS],
            scales: [MaybeUninit::uninit(); STAGE_ROWS],
        }
    }

    #[inline(always)]
    fn stage_rows(k: usize) -> usize {
        let ld_words = k.div_ceil(E::PER_WORD).next_multiple_of(RUN_WORDS);
        (STAGE_WORDS / ld_words.max(1)).min(STAGE_ROWS)
    }

    #[inline(always)]
    unsafe fn stage<const MR: usize>(
        stage: &mut DotStage,
        a: *const f32,
        lda: usize,
        rows: usize,
        k: usize,
    ) -> DotRows {
        let f32 = F32Rows { ptr: a, ld: lda };
        let ld_words = k.div_ceil(E::PER_WORD).next_multiple_of(RUN_WORDS);
        if rows > <Self as Panel<V>>::stage_rows(k) {
            return DotRows {
                f32,
                words: std::ptr::null(),
                ld_words,
                scales: std::ptr::null(),
            };
        }
        let (dst, scales) = (
            stage.words.as_mut_ptr().cast::<u32>(),
            stage.scales.as_mut_ptr().cast::<f32>(),
        );
        for (first, n) in row_blocks::<MR>(0, rows) {
            for r in 0..n {
                // SAFETY: the block's n · ld_words words start at first · ld_words and end
                // within rows · ld_words <= STAGE_WORDS; rows <= STAGE_ROWS scales; row
                // first + r holds k floats (caller contract).
                unsafe {
                    let src = a.add((first + r) * lda);
                    let scale = if E::SCALED { E::row_scale(src, k) } else { 1.0 };
                    *scales.add(first + r) = scale;
                    E::encode(
                        src,
                        k,
                        scale,
                        dst.add(first * ld_words + r * RUN_WORDS),
                        RUN_WORDS * n,
                    );
                }
            }
        }
        DotRows {
            f32,
            words: dst,
            ld_words,
            scales,
        }
    }

    #[inline(always)]
    fn tile_bytes(k: usize) -> usize {
        (E::HEADER_WORDS + k.div_ceil(E::PER_WORD)) * 4 * V::N * 4
    }

    #[inline(always)]
    unsafe fn accumulate<const MR: usize>(
        acc: &mut [[V; 4]; MR],
        a: DotRows,
        k: usize,
        b: *const u8,
    ) {
        if k == 0 {
            // No products (a first step from a zero state passes k = 0 with tiles packed for
            // the true k: `b` is not this tile's header then, and must not be read).
            return;
        }
        let (n, tile) = (V::N, b.cast::<u32>());
        let words = k.div_ceil(E::PER_WORD);
        let staged = !a.words.is_null();
        // Plain loops, not `array::map`: a closure is compiled without the entry point's
        // target features, and its intrinsics would become calls.
        // SAFETY: the ISA is available (caller contract).
        let mut sums = [[unsafe { E::start(acc[0][0]) }; 4]; MR];
        let mut scales = [1.0f32; MR];
        for r in 0..MR {
            for v in 0..4 {
                // SAFETY: as above.
                sums[r][v] = unsafe { E::start(acc[r][v]) };
            }
            if E::SCALED {
                // SAFETY: staged, the stage holds the block's MR scales from `a.scales`;
                // otherwise each of the MR rows holds k floats (caller contract).
                scales[r] = unsafe {
                    if staged {
                        *a.scales.add(r)
                    } else {
                        E::row_scale(a.f32.ptr.add(r * a.f32.ld), k)
                    }
                };
            }
        }
        // Rows staged: one run over every word. Rows too long for the stage: encoded a chunk
        // at a time, for this tile, into `chunk` (uninitialised: `encode` writes the
        // `count · MR` words read). One call site of `dot_rows`, so the hot loop exists once.
        let mut chunk = [[MaybeUninit::<u32>::uninit(); DOT_CHUNK_WORDS]; MR];
        // SAFETY: the tile's runs follow its header (caller contract).
        let runs = unsafe { tile.add(E::HEADER_WORDS * 4 * n) };
        let mut p0 = 0;
        while p0 < words {
            // SAFETY: staged, the block holds MR interleaved rows of `words` words; otherwise
            // floats PER_WORD·p0 .. + len <= k of each row are read and `count` words of each
            // written (len.div_ceil(PER_WORD) == count, interleaved inside count · MR), then
            // read back; runs p0 + p < words lie inside the tile (caller contract).
            unsafe {
                let (rows, count) = if staged {
                    (a.words, words)
                } else {
                    let count = DOT_CHUNK_WORDS.min(words - p0);
                    let first = E::PER_WORD * p0;
                    let len = (E::PER_WORD * count).min(k - first);
                    let dst = chunk.as_mut_ptr().cast::<u32>();
                    for (r, &scale) in scales.iter().enumerate() {
                        let src = a.f32.ptr.add(r * a.f32.ld + first);
                        E::encode(src, len, scale, dst.add(r * RUN_WORDS), RUN_WORDS * MR);
                    }
                    (dst.cast_const(), count)
                };
                dot_rows::<V, E, MR>(&mut sums, rows, count, runs.add(p0 * 4 * n));
                p0 += count;
            }
        }
        for ((acc_r, sums_r), &scale) in acc.iter_mut().zip(&sums).zip(&scales) {
            for (v, (x, &s)) in acc_r.iter_mut().zip(sums_r).enumerate() {
                // SAFETY: the tile's header (caller contract).
                *x = unsafe { E::finish(*x, s, tile, v, scale) };
            }
        }
    }
}

/// `MR` rows of one tile of [`gemm`].
///
/// # Safety
/// As [`gemm`], for the first `MR` rows of `a` (staged) and `c`, and the tile at `b`/`bias`.
#[inline(always)]
unsafe fn gemm_block<V: Lanes, const MR: usize, P: Panel<V>>(
    a: P::Rows,
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
        P::accumulate::<MR>(&mut acc, a, k, b);
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
/// Loop order: blocks of `MC` rows of `A` (L2-resident, and staged for the panel once: at
/// most [`Panel::stage_rows`] rows), then tiles of `B` (each `k · 4N` floats, streamed once per
/// row block), then `MR` rows in registers.
///
/// # Safety
/// `V`'s instruction set is available and `args` describes valid, non-overlapping memory as
/// documented on [`GemmArgs`].
#[inline(always)]
pub(crate) unsafe fn gemm<V: Lanes, const MR: usize, P: Panel<V>>(args: &GemmArgs) {
    let n = V::N;
    let tile_len = P::tile_bytes(args.k);
    let mut cap = (GEMM_BLOCK_BYTES / (4 * args.k.max(1))).max(MR);
    if P::stage_rows(args.k) >= MR {
        cap = cap.min(P::stage_rows(args.k));
    }
    let mc = group_rows::<MR>(args.rows, cap);
    let mut stage = P::new_stage();
    let mut r0 = 0;
    while r0 < args.rows {
        let r_end = (r0 + mc).min(args.rows);
        // SAFETY: rows r0..r_end of A hold k floats each (caller contract) and are not written
        // while the view is used.
        let block = unsafe {
            P::stage::<MR>(
                &mut stage,
                args.a.add(r0 * args.lda),
                args.lda,
                r_end - r0,
                args.k,
            )
        };
        for t in 0..args.tiles {
            // SAFETY: t < tiles and r < rows keep every offset inside the buffers described by
            // `args` (caller contract); r - r0 is below the rows staged.
            unsafe {
                let b = args.b.add(t * tile_len);
                let bias = if args.bias.is_null() {
                    args.bias
                } else {
                    args.bias.add(t * 4 * n)
                };
                for (r, rows) in row_blocks::<MR>(r0, r_end) {
                    with_rows!(rows, |R| gemm_block::<V, R, P>(
                        block.skip(r - r0),
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
