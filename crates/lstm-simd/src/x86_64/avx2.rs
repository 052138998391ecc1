//! AVX2+FMA backend: 8 lanes in a `__m256`, register-blocked 3 rows × 4 vectors (12 of the 16
//! ymm registers hold accumulators).

use core::arch::x86_64::*;

use crate::lanes::Lanes;

/// 8 f32 lanes; a value exists only on a host with AVX2 and FMA (see [`Lanes`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct F32x8(__m256);

// SAFETY (for every `unsafe` block in this impl): a `F32x8` is only created by `splat` or
// `load`, whose callers guarantee AVX2 and FMA, so holding `self` proves the instructions exist.
impl Lanes for F32x8 {
    const N: usize = 8;

    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        // SAFETY: AVX available (caller contract).
        unsafe { F32x8(_mm256_set1_ps(v)) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: AVX available and 8 floats readable at p (caller contract).
        unsafe { F32x8(_mm256_loadu_ps(p)) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: self proves AVX; 8 floats writable at p (caller contract).
        unsafe { _mm256_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    unsafe fn store_streaming(self, p: *mut f32) {
        // SAFETY: self proves AVX; 8 floats writable at p, aligned to 32 bytes (caller
        // contract).
        unsafe { _mm256_stream_ps(p, self.0) }
    }
    #[inline(always)]
    fn fence_streaming(self) {
        // SAFETY: SSE is part of x86_64.
        unsafe { _mm_sfence() }
    }
    #[inline(always)]
    fn constant(self, v: f32) -> Self {
        // SAFETY: self proves AVX.
        unsafe { F32x8(_mm256_set1_ps(v)) }
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        // SAFETY: self proves AVX.
        unsafe { F32x8(_mm256_add_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        // SAFETY: self proves AVX.
        unsafe { F32x8(_mm256_sub_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        // SAFETY: self proves AVX.
        unsafe { F32x8(_mm256_mul_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        // SAFETY: self proves AVX.
        unsafe { F32x8(_mm256_div_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        // SAFETY: self proves FMA.
        unsafe { F32x8(_mm256_fmadd_ps(self.0, a.0, b.0)) }
    }
    #[inline(always)]
    fn abs(self) -> Self {
        // SAFETY: self proves AVX.
        unsafe {
            let mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
            F32x8(_mm256_and_ps(self.0, mask))
        }
    }
    #[inline(always)]
    fn clamp(self, lo: f32, hi: f32) -> Self {
        // max/min return their second operand when either is NaN: x goes second, so a NaN
        // lane survives both.
        // SAFETY: self proves AVX.
        unsafe {
            let x = _mm256_max_ps(_mm256_set1_ps(lo), self.0);
            F32x8(_mm256_min_ps(_mm256_set1_ps(hi), x))
        }
    }
    #[inline(always)]
    fn round(self) -> Self {
        // SAFETY: self proves AVX.
        unsafe {
            F32x8(_mm256_round_ps::<
                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
            >(self.0))
        }
    }
    #[inline(always)]
    fn pow2i(self) -> Self {
        // SAFETY: self proves AVX2.
        unsafe {
            let n = _mm256_cvtps_epi32(self.0);
            let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(n, _mm256_set1_epi32(127)));
            F32x8(_mm256_castsi256_ps(bits))
        }
    }
    #[inline(always)]
    fn copysign(self, sign: Self) -> Self {
        // SAFETY: self proves AVX.
        unsafe {
            let mask = _mm256_set1_ps(-0.0);
            F32x8(_mm256_or_ps(
                _mm256_andnot_ps(mask, self.0),
                _mm256_and_ps(mask, sign.0),
            ))
        }
    }
    #[inline(always)]
    fn select_lt(self, bound: f32, a: Self, b: Self) -> Self {
        // SAFETY: self proves AVX.
        unsafe {
            let m = _mm256_cmp_ps::<_CMP_LT_OQ>(self.0, _mm256_set1_ps(bound));
            F32x8(_mm256_blendv_ps(b.0, a.0, m))
        }
    }
    #[inline(always)]
    fn flush_subnormal(self) -> Self {
        // Keep lanes with |x| >= MIN_POSITIVE, or NaN (unordered compare), or exact zero.
        // SAFETY: self proves AVX.
        unsafe {
            let a = self.abs().0;
            let keep = _mm256_cmp_ps::<_CMP_NLT_UQ>(a, _mm256_set1_ps(f32::MIN_POSITIVE));
            F32x8(_mm256_and_ps(self.0, keep))
        }
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u32, high: bool) -> Self {
        // SAFETY: AVX2 available and 8 u32s readable at p (caller contract).
        unsafe {
            let w = _mm256_loadu_si256(p.cast());
            let bits = if high {
                _mm256_and_si256(w, _mm256_set1_epi32(0xffff_0000_u32 as i32))
            } else {
                _mm256_slli_epi32::<16>(w)
            };
            F32x8(_mm256_castsi256_ps(bits))
        }
    }
    #[inline(always)]
    unsafe fn load_i8(p: *const u32, byte: usize) -> Self {
        // SAFETY: AVX2 available and 8 u32s readable at p (caller contract).
        unsafe {
            let w = _mm256_loadu_si256(p.cast());
            // Byte `byte` to the top, then an arithmetic shift sign-extends it.
            let top = _mm256_sllv_epi32(w, _mm256_set1_epi32((24 - 8 * byte) as i32));
            F32x8(_mm256_cvtepi32_ps(_mm256_srai_epi32::<24>(top)))
        }
    }
}
