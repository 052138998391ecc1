//! Portable backend on `wide::f32x8`: whatever instructions the build targets (two SSE
//! registers per vector on a default x86-64 build, NEON on aarch64), register-blocked 2 rows.
//!
//! Without a guaranteed FMA, `mul_add` may be a multiply then an add (two roundings); the
//! accuracy tests hold this backend to the same tolerance as the others.

use wide::f32x8;

use crate::lanes::Lanes;

/// 8 f32 lanes on `wide`; valid on every host.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable(f32x8);

impl Lanes for Portable {
    const N: usize = 8;

    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Portable(f32x8::splat(v))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: 8 floats readable at p (caller contract); read_unaligned needs no alignment.
        unsafe { Portable(f32x8::from(p.cast::<[f32; 8]>().read_unaligned())) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: 8 floats writable at p (caller contract).
        unsafe { p.cast::<[f32; 8]>().write_unaligned(self.0.to_array()) }
    }
    #[inline(always)]
    unsafe fn store_streaming(self, p: *mut f32) {
        // SAFETY: 8 floats writable at p (caller contract).
        unsafe { self.store(p) }
    }
    #[inline(always)]
    fn fence_streaming(self) {}
    #[inline(always)]
    fn constant(self, v: f32) -> Self {
        Portable(f32x8::splat(v))
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Portable(self.0 + o.0)
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        Portable(self.0 - o.0)
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        Portable(self.0 * o.0)
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        Portable(self.0 / o.0)
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        Portable(self.0.mul_add(a.0, b.0))
    }
    #[inline(always)]
    fn abs(self) -> Self {
        Portable(self.0.abs())
    }
    #[inline(always)]
    fn clamp(self, lo: f32, hi: f32) -> Self {
        let nan = self.0.is_nan();
        let c = self.0.max(f32x8::splat(lo)).min(f32x8::splat(hi));
        Portable(nan.select(self.0, c))
    }
    #[inline(always)]
    fn round(self) -> Self {
        Portable(self.0.round())
    }
    #[inline(always)]
    fn pow2i(self) -> Self {
        let n = self.0.to_array();
        Portable(f32x8::from(n.map(|v| {
            // v is an integer in [-126, 127] (caller contract); NaN lanes give garbage that the
            // NaN polynomial swallows.
            f32::from_bits(((v as i32).wrapping_add(127) as u32) << 23)
        })))
    }
    #[inline(always)]
    fn copysign(self, sign: Self) -> Self {
        let mask = f32x8::splat(-0.0);
        Portable((self.0 & !mask) | (sign.0 & mask))
    }
    #[inline(always)]
    fn select_lt(self, bound: f32, a: Self, b: Self) -> Self {
        Portable(self.0.simd_lt(f32x8::splat(bound)).select(a.0, b.0))
    }
    #[inline(always)]
    fn flush_subnormal(self) -> Self {
        let tiny = self.0.abs().simd_lt(f32x8::splat(f32::MIN_POSITIVE));
        Portable(tiny.select(f32x8::splat(0.0) & self.0, self.0))
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u32, high: bool) -> Self {
        // SAFETY: 8 u32s readable at p (caller contract).
        let pairs = unsafe { p.cast::<[u32; 8]>().read_unaligned() };
        Portable(f32x8::from(pairs.map(|w| {
            f32::from_bits(if high { w & 0xffff_0000 } else { w << 16 })
        })))
    }
    #[inline(always)]
    unsafe fn load_i8(p: *const u32, byte: usize) -> Self {
        // SAFETY: 8 u32s readable at p (caller contract).
        let quads = unsafe { p.cast::<[u32; 8]>().read_unaligned() };
        Portable(f32x8::from(
            quads.map(|w| f32::from(w.to_le_bytes()[byte] as i8)),
        ))
    }
}
