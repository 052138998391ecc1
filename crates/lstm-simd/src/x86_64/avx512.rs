//! AVX-512F backend: 16 lanes in a `__m512`, register-blocked 6 rows × 4 vectors (24 of the 32
//! zmm registers hold accumulators).

use core::arch::x86_64::*;

use crate::lanes::{DotBf16, DotI8, Lanes};

/// 16 f32 lanes; a value exists only on a host with AVX-512F (see [`Lanes`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct F32x16(__m512);

// SAFETY (for every `unsafe` block in this impl): a `F32x16` is only created by `splat` or
// `load`, whose callers guarantee AVX-512F, so holding `self` proves the instructions exist.
impl Lanes for F32x16 {
    const N: usize = 16;

    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        // SAFETY: AVX-512F available (caller contract).
        unsafe { F32x16(_mm512_set1_ps(v)) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: AVX-512F available and 16 floats readable at p (caller contract).
        unsafe { F32x16(_mm512_loadu_ps(p)) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: self proves AVX-512F; 16 floats writable at p (caller contract).
        unsafe { _mm512_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    unsafe fn store_streaming(self, p: *mut f32) {
        // SAFETY: self proves AVX-512F; 16 floats writable at p, aligned to 64 bytes (caller
        // contract).
        unsafe { _mm512_stream_ps(p, self.0) }
    }
    #[inline(always)]
    fn fence_streaming(self) {
        // SAFETY: SSE is part of x86_64.
        unsafe { _mm_sfence() }
    }
    #[inline(always)]
    fn constant(self, v: f32) -> Self {
        // SAFETY: self proves AVX-512F.
        unsafe { F32x16(_mm512_set1_ps(v)) }
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        // SAFETY: self proves AVX-512F.
        unsafe { F32x16(_mm512_add_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        // SAFETY: self proves AVX-512F.
        unsafe { F32x16(_mm512_sub_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        // SAFETY: self proves AVX-512F.
        unsafe { F32x16(_mm512_mul_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        // SAFETY: self proves AVX-512F.
        unsafe { F32x16(_mm512_div_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        // SAFETY: self proves AVX-512F (FMA is part of AVX-512F).
        unsafe { F32x16(_mm512_fmadd_ps(self.0, a.0, b.0)) }
    }
    #[inline(always)]
    fn abs(self) -> Self {
        // SAFETY: self proves AVX-512F.
        unsafe { F32x16(_mm512_abs_ps(self.0)) }
    }
    #[inline(always)]
    fn clamp(self, lo: f32, hi: f32) -> Self {
        // max/min return their second operand when either is NaN: x goes second, so a NaN
        // lane survives both.
        // SAFETY: self proves AVX-512F.
        unsafe {
            let x = _mm512_max_ps(_mm512_set1_ps(lo), self.0);
            F32x16(_mm512_min_ps(_mm512_set1_ps(hi), x))
        }
    }
    #[inline(always)]
    fn round(self) -> Self {
        // SAFETY: self proves AVX-512F.
        unsafe {
            F32x16(_mm512_roundscale_ps::<
                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
            >(self.0))
        }
    }
    #[inline(always)]
    fn pow2i(self) -> Self {
        // SAFETY: self proves AVX-512F.
        unsafe {
            let n = _mm512_cvtps_epi32(self.0);
            let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(n, _mm512_set1_epi32(127)));
            F32x16(_mm512_castsi512_ps(bits))
        }
    }
    #[inline(always)]
    fn copysign(self, sign: Self) -> Self {
        // SAFETY: self proves AVX-512F.
        unsafe {
            let mask = _mm512_set1_epi32(i32::MIN);
            let mag = _mm512_andnot_si512(mask, _mm512_castps_si512(self.0));
            let s = _mm512_and_si512(mask, _mm512_castps_si512(sign.0));
            F32x16(_mm512_castsi512_ps(_mm512_or_si512(mag, s)))
        }
    }
    #[inline(always)]
    fn scale_pow2(self, n: Self) -> Self {
        // SAFETY: self proves AVX-512F.
        unsafe { F32x16(_mm512_scalef_ps(self.0, n.0)) }
    }
    #[inline(always)]
    fn select_lt(self, bound: f32, a: Self, b: Self) -> Self {
        // SAFETY: self proves AVX-512F.
        unsafe {
            let m = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, _mm512_set1_ps(bound));
            F32x16(_mm512_mask_blend_ps(m, b.0, a.0))
        }
    }
    #[inline(always)]
    fn flush_subnormal(self) -> Self {
        // Keep lanes with |x| >= MIN_POSITIVE, or NaN (unordered compare), or exact zero.
        // SAFETY: self proves AVX-512F.
        unsafe {
            let a = _mm512_abs_ps(self.0);
            let keep = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(a, _mm512_set1_ps(f32::MIN_POSITIVE));
            F32x16(_mm512_maskz_mov_ps(keep, self.0))
        }
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u32, high: bool) -> Self {
        // SAFETY: AVX-512F available and 16 u32s readable at p (caller contract).
        unsafe {
            let w = _mm512_loadu_si512(p.cast());
            let bits = if high {
                _mm512_and_si512(w, _mm512_set1_epi32(0xffff_0000_u32 as i32))
            } else {
                _mm512_slli_epi32::<16>(w)
            };
            F32x16(_mm512_castsi512_ps(bits))
        }
    }
    #[inline(always)]
    unsafe fn load_i8(p: *const u32, byte: usize) -> Self {
        // SAFETY: AVX-512F available and 16 u32s readable at p (caller contract).
        unsafe {
            let w = _mm512_loadu_si512(p.cast());
            // Byte `byte` to the top, then an arithmetic shift sign-extends it.
            let top = _mm512_sllv_epi32(w, _mm512_set1_epi32((24 - 8 * byte) as i32));
            F32x16(_mm512_cvtepi32_ps(_mm512_srai_epi32::<24>(top)))
        }
    }
}

// SAFETY (for every `unsafe` block in this impl): the methods' callers guarantee AVX512-BF16
// (the `avx512bf16` backend's table is handed out only where it is detected) besides AVX-512F.
impl DotBf16 for F32x16 {
    type Pairs = __m512bh;

    #[inline(always)]
    unsafe fn load_pairs(p: *const u32) -> __m512bh {
        // SAFETY: 16 u32s readable at p (caller contract); __m512bh and __m512i are both 64
        // bytes of plain bits.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p.cast())) }
    }
    #[inline(always)]
    unsafe fn splat_pair(p: *const u32) -> __m512bh {
        // SAFETY: one u32 readable at p (caller contract); as in load_pairs.
        unsafe {
            std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                p.cast::<i32>().read_unaligned(),
            ))
        }
    }
    #[inline(always)]
    unsafe fn dot_pairs(self, a: __m512bh, b: __m512bh) -> Self {
        // SAFETY: AVX512-BF16 available (caller contract).
        unsafe { F32x16(_mm512_dpbf16_ps(self.0, a, b)) }
    }
    #[inline(always)]
    unsafe fn round_pairs(src: *const f32, len: usize, dst: *mut u32, run_stride: usize) {
        // 32 floats make the 16 pairs of one run (RUN_WORDS), stored at once.
        const _: () = assert!(crate::lanes::RUN_WORDS == 16);
        let mut j = 0;
        // SAFETY: every load reads floats below len (the tail's masked loads touch only the
        // lanes they keep), every store writes the pairs below len.div_ceil(2) of run j / 32
        // (caller contract); AVX512-BF16 and AVX-512F available (caller contract).
        unsafe {
            while j < len {
                let rest = len - j;
                let (lo, hi) = if rest >= 32 {
                    (
                        _mm512_loadu_ps(src.add(j)),
                        _mm512_loadu_ps(src.add(j + 16)),
                    )
                } else {
                    // The last partial chunk: missing floats read as 0, so an odd `len` ends
                    // with a zero high half, and its pairs go out with a masked store.
                    let keep = |n: usize| -> __mmask16 { ((1u32 << n.min(16)) - 1) as __mmask16 };
                    (
                        _mm512_maskz_loadu_ps(keep(rest), src.add(j)),
                        _mm512_maskz_loadu_ps(keep(rest.saturating_sub(16)), src.add(j + 16)),
                    )
                };
                // Element i < 16 of the result is lo[i], element 16 + i is hi[i]: the bf16s in
                // order, so u32 q holds floats 2q (low half) and 2q + 1.
                let pairs = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
                let run = dst.add(j / 32 * run_stride);
                if rest >= 32 {
                    _mm512_storeu_si512(run.cast(), pairs);
                } else {
                    let words = rest.div_ceil(2);
                    let keep = ((1u32 << words) - 1) as __mmask16;
                    _mm512_mask_storeu_epi32(run.cast(), keep, pairs);
                }
                j += 32;
            }
        }
    }
}

// SAFETY (for every `unsafe` block in this impl): the methods' callers guarantee AVX512-VNNI
// (the `avx512vnni` backend's table is handed out only where it is detected) besides
// AVX-512F.
impl DotI8 for F32x16 {
    type Quads = __m512i;
    type Ints = __m512i;

    #[inline(always)]
    unsafe fn load_quads(p: *const u32) -> __m512i {
        // SAFETY: 16 u32s readable at p (caller contract).
        unsafe { _mm512_loadu_si512(p.cast()) }
    }
    #[inline(always)]
    unsafe fn splat_quad(p: *const u32) -> __m512i {
        // SAFETY: one u32 readable at p (caller contract).
        unsafe { _mm512_set1_epi32(p.cast::<i32>().read_unaligned()) }
    }
    #[inline(always)]
    unsafe fn zero_ints() -> __m512i {
        // SAFETY: AVX-512F available (caller contract).
        unsafe { _mm512_setzero_si512() }
    }
    #[inline(always)]
    unsafe fn load_ints(p: *const u32) -> __m512i {
        // SAFETY: 16 u32s readable at p (caller contract).
        unsafe { _mm512_loadu_si512(p.cast()) }
    }
    #[inline(always)]
    unsafe fn dot_quads(acc: __m512i, u: __m512i, s: __m512i) -> __m512i {
        // SAFETY: AVX512-VNNI available (caller contract).
        unsafe { _mm512_dpbusd_epi32(acc, u, s) }
    }
    #[inline(always)]
    unsafe fn sub_to_f32(a: __m512i, b: __m512i) -> Self {
        // SAFETY: AVX-512F available (caller contract).
        unsafe { F32x16(_mm512_cvtepi32_ps(_mm512_sub_epi32(a, b))) }
    }
    #[inline(always)]
    unsafe fn i8_scale(src: *const f32, len: usize) -> f32 {
        // SAFETY: every load reads floats below len (the tail's masked load touches only the
        // lanes it keeps) (caller contract); AVX-512F available (caller contract).
        unsafe {
            let zero = _mm512_setzero_ps();
            let (mut max, mut poison) = (zero, zero);
            let mut j = 0;
            while j < len {
                let keep = ((1u32 << (len - j).min(16)) - 1) as __mmask16;
                let x = _mm512_maskz_loadu_ps(keep, src.add(j));
                max = _mm512_max_ps(max, _mm512_abs_ps(x));
                // x · 0 is ±0 for a finite x, NaN for a NaN or an infinity.
                poison = _mm512_add_ps(poison, _mm512_mul_ps(x, zero));
                j += 16;
            }
            if _mm512_reduce_add_ps(poison) != 0.0 {
                return f32::NAN;
            }
            _mm512_reduce_max_ps(max) / 127.0
        }
    }
    #[inline(always)]
    unsafe fn quantize_quads(
        src: *const f32,
        len: usize,
        inv_scale: f32,
        dst: *mut u32,
        run_stride: usize,
    ) {
        // 16 floats make 4 quads, inside one run of 16 (RUN_WORDS).
        const _: () = assert!(crate::lanes::RUN_WORDS == 16);
        // SAFETY: every load reads floats below len (the tail's masked load touches only the
        // lanes it keeps), every store writes quads below len.div_ceil(4), in their runs
        // (caller contract); AVX-512F available (caller contract).
        unsafe {
            let inv = _mm512_set1_ps(inv_scale);
            let (lo, hi, zero) = (
                _mm512_set1_epi32(-127),
                _mm512_set1_epi32(127),
                _mm512_set1_epi32(128),
            );
            let mut j = 0;
            while j < len {
                let rest = len - j;
                let keep = ((1u32 << rest.min(16)) - 1) as __mmask16;
                let x = _mm512_maskz_loadu_ps(keep, src.add(j));
                // Rounded to nearest even (MXCSR's default), clamped, offset to unsigned; a
                // NaN converts to i32::MIN and clamps to -127 (its row's scale is NaN anyway).
                let q = _mm512_cvtps_epi32(_mm512_mul_ps(x, inv));
                let q = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(q, lo), hi), zero);
                // Lanes past `len` hold 128, a zero.
                let q = _mm512_mask_mov_epi32(zero, keep, q);
                let bytes: [u32; 4] = std::mem::transmute(_mm512_cvtepi32_epi8(q));
                let run = dst.add(j / 64 * run_stride + j / 4 % 16);
                for (w, &quad) in bytes.iter().enumerate().take(rest.div_ceil(4)) {
                    *run.add(w) = quad;
                }
                j += 16;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The row encodings against their scalar definitions in lstm-core, bit for bit, on every
    /// tail length and on non-finite rows.
    #[test]
    fn int8_row_scale_and_quads_match_lstm_core() {
        if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni")) {
            return;
        }
        let mut rng = lstm_core::SplitMix64::new(5);
        for len in [1usize, 3, 4, 5, 15, 16, 17, 33, 64, 100] {
            let mut row: Vec<f32> = (0..len)
                .map(|_| rng.next_signed_unit() as f32 * 3.0)
                .collect();
            let scale = lstm_core::precision::i8_scale(&row);
            // SAFETY: AVX-512F and VNNI detected above; `row` holds len floats, `quads`
            // len.div_ceil(4) words.
            let (got, quads) = unsafe {
                let got = <F32x16 as DotI8>::i8_scale(row.as_ptr(), len);
                let mut quads = vec![0u32; len.div_ceil(4)];
                F32x16::quantize_quads(
                    row.as_ptr(),
                    len,
                    1.0 / scale,
                    quads.as_mut_ptr(),
                    crate::lanes::RUN_WORDS,
                );
                (got, quads)
            };
            assert_eq!(got.to_bits(), scale.to_bits(), "len {len}");
            for (kk, &x) in row.iter().enumerate() {
                let byte = quads[kk / 4].to_le_bytes()[kk % 4];
                let want = lstm_core::precision::quantize_i8(x, scale);
                // The kernel multiplies by 1/scale where lstm-core divides: one step apart at
                // most, at a tie.
                assert!(
                    (i32::from(byte) - 128 - i32::from(want)).abs() <= 1,
                    "{x} {scale}"
                );
            }
            for pad in len..len.div_ceil(4) * 4 {
                assert_eq!(quads[pad / 4].to_le_bytes()[pad % 4], 128, "len {len}");
            }
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                row[len / 2] = bad;
                // SAFETY: as above.
                let got = unsafe { <F32x16 as DotI8>::i8_scale(row.as_ptr(), len) };
                assert!(got.is_nan(), "len {len}: {bad}");
            }
        }
    }
}
