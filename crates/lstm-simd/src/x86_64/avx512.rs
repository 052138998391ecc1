//! AVX-512F backend: 16 lanes in a `__m512`, register-blocked 6 rows × 4 vectors (24 of the 32
//! zmm registers hold accumulators).

use core::arch::x86_64::*;

use crate::lanes::Lanes;

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
}
