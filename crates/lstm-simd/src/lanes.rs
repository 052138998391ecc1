//! The lane trait every kernel is written against, and the activations built on it.
//!
//! A [`Lanes`] value is one SIMD register of `N` f32 lanes: `wide::f32x8` on the portable
//! path, `__m256` under AVX2+FMA and `__m512` under AVX-512F. Kernels are generic over it and
//! marked `#[inline(always)]`, so each one is compiled once per backend *inside* that backend's
//! `#[target_feature]` entry point, with that backend's instructions.
//!
//! Soundness model (the one `pulp` and `memchr` use): a value of an ISA-specific lane type can
//! only be made by the `unsafe` constructors ([`Lanes::splat`], [`Lanes::load`]), whose contract
//! is that the CPU supports the ISA. Holding a value is therefore proof that its instructions
//! may run, which is why the arithmetic methods and [`Lanes::constant`] are safe.

/// One SIMD register of f32 lanes.
pub(crate) trait Lanes: Copy {
    /// Number of f32 lanes.
    const N: usize;

    /// All lanes set to `v`.
    ///
    /// # Safety
    /// The CPU supports this type's instruction set.
    unsafe fn splat(v: f32) -> Self;

    /// Loads `N` lanes from `p` (no alignment needed).
    ///
    /// # Safety
    /// The CPU supports this type's instruction set, and `p..p + N` is readable.
    unsafe fn load(p: *const f32) -> Self;

    /// Stores the `N` lanes to `p` (no alignment needed).
    ///
    /// # Safety
    /// `p..p + N` is writable (`self` already proves the instruction set).
    unsafe fn store(self, p: *mut f32);

    /// Stores the `N` lanes to `p` past the caches (a non-temporal store: no read of the line
    /// first), where the ISA has one; a plain store elsewhere.
    ///
    /// # Safety
    /// `p..p + N` is writable and `p` is aligned to `N` floats.
    unsafe fn store_streaming(self, p: *mut f32);

    /// Orders this thread's [`store_streaming`](Self::store_streaming) stores before its later
    /// stores (`sfence`); nothing where they are plain stores.
    fn fence_streaming(self);

    /// All lanes set to `v`; safe because `self` proves the instruction set.
    fn constant(self, v: f32) -> Self;
    /// Lane-wise `self + o`.
    fn add(self, o: Self) -> Self;
    /// Lane-wise `self - o`.
    fn sub(self, o: Self) -> Self;
    /// Lane-wise `self * o`.
    fn mul(self, o: Self) -> Self;
    /// Lane-wise `self / o`, correctly rounded (never a reciprocal approximation).
    fn div(self, o: Self) -> Self;
    /// Lane-wise `self * a + b`, fused (one rounding) on every backend that has FMA.
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// Lane-wise `|self|`.
    fn abs(self) -> Self;
    /// Clamps to `[lo, hi]`; a NaN lane stays NaN.
    fn clamp(self, lo: f32, hi: f32) -> Self;
    /// Rounds to the nearest integer (ties to even).
    fn round(self) -> Self;
    /// `2^self` for lanes holding integers in `[-126, 127]`.
    fn pow2i(self) -> Self;
    /// `self · 2^n` for lanes of `n` holding integers in `[-126, 127]` (exact while the result
    /// is a normal number): `vscalefps` where the ISA has it, which runs beside the products
    /// of a dot-product kernel, where a multiply by [`pow2i`](Self::pow2i) takes their pipe.
    fn scale_pow2(self, n: Self) -> Self {
        self.mul(n.pow2i())
    }
    /// `|self|` with the sign of `sign`.
    fn copysign(self, sign: Self) -> Self;
    /// Lane-wise `if self < bound { a } else { b }` (`b` where `self` is NaN).
    fn select_lt(self, bound: f32, a: Self, b: Self) -> Self;
    /// Replaces subnormal (and zero) lanes by +0; normal, infinite and NaN lanes pass.
    fn flush_subnormal(self) -> Self;

    /// Loads `N` packed bf16 pairs (`u32`: one bf16 in each half) from `p` and widens the low
    /// halves (`high == false`) or the high halves to f32 (exactly: a shift or a mask).
    ///
    /// # Safety
    /// The CPU supports this type's instruction set, and `N` `u32`s are readable at `p`.
    unsafe fn load_bf16(p: *const u32, high: bool) -> Self;

    /// Loads `N` packed quads of int8 (`u32`: four `i8`s, byte 0 lowest) from `p` and widens
    /// byte `byte` (0..4) of each to f32 (exactly).
    ///
    /// # Safety
    /// The CPU supports this type's instruction set, and `N` `u32`s are readable at `p`.
    unsafe fn load_i8(p: *const u32, byte: usize) -> Self;
}

/// Lanes with a bf16 dot product (`vdpbf16ps`): `N` f32 accumulators, each taking the sum of
/// the products of one pair of bf16s (exact in f32) per instruction.
pub(crate) trait DotBf16: Lanes {
    /// `N` pairs of bf16.
    type Pairs: Copy;

    /// Loads `N` pairs from `p`.
    ///
    /// # Safety
    /// The CPU supports this type's instruction set and its bf16 dot product; `N` `u32`s are
    /// readable at `p`.
    unsafe fn load_pairs(p: *const u32) -> Self::Pairs;

    /// The pair at `p` in every lane.
    ///
    /// # Safety
    /// As [`load_pairs`](Self::load_pairs), one `u32` readable at `p`.
    unsafe fn splat_pair(p: *const u32) -> Self::Pairs;

    /// `self + a.lo·b.lo + a.hi·b.hi` per lane (f32 accumulation; bf16 subnormals read as 0).
    ///
    /// # Safety
    /// The CPU supports the bf16 dot product (`self` proves only the base instruction set).
    unsafe fn dot_pairs(self, a: Self::Pairs, b: Self::Pairs) -> Self;

    /// Rounds `len` floats at `src` to bf16 ([`bf16_bits`](lstm_core::precision::bf16_bits)'s
    /// rounding) into `len.div_ceil(2)` pairs (a zero after the last float when `len` is odd),
    /// in runs of [`RUN_WORDS`]: pair `q` to `dst + (q / RUN_WORDS)·run_stride + q % RUN_WORDS`.
    ///
    /// # Safety
    /// As [`load_pairs`](Self::load_pairs); `len` floats readable at `src`, and those `u32`s
    /// writable.
    unsafe fn round_pairs(src: *const f32, len: usize, dst: *mut u32, run_stride: usize);
}

/// Lanes with an 8-bit dot product (`vpdpbusd`): `N` i32 accumulators, each taking the sum of
/// the products of one quad of `u8` by one quad of `i8` (exact in i32) per instruction.
pub(crate) trait DotI8: Lanes {
    /// `N` quads of bytes.
    type Quads: Copy;
    /// `N` i32 accumulators.
    type Ints: Copy;

    /// Loads `N` quads from `p`.
    ///
    /// # Safety
    /// The CPU supports this type's instruction set and its 8-bit dot product; `N` `u32`s are
    /// readable at `p`.
    unsafe fn load_quads(p: *const u32) -> Self::Quads;

    /// The quad at `p` in every lane.
    ///
    /// # Safety
    /// As [`load_quads`](Self::load_quads), one `u32` readable at `p`.
    unsafe fn splat_quad(p: *const u32) -> Self::Quads;

    /// `N` zero accumulators.
    ///
    /// # Safety
    /// As [`load_quads`](Self::load_quads), nothing read.
    unsafe fn zero_ints() -> Self::Ints;

    /// Loads `N` i32s from `p`.
    ///
    /// # Safety
    /// As [`load_quads`](Self::load_quads).
    unsafe fn load_ints(p: *const u32) -> Self::Ints;

    /// `acc + Σ_b u[b]·s[b]` per lane: `u` the unsigned quads, `s` the signed ones (no
    /// saturation).
    ///
    /// # Safety
    /// The CPU supports the 8-bit dot product.
    unsafe fn dot_quads(acc: Self::Ints, u: Self::Quads, s: Self::Quads) -> Self::Ints;

    /// `(a - b)` per lane, converted to f32 (rounded to nearest beyond 2^24).
    ///
    /// # Safety
    /// As [`dot_quads`](Self::dot_quads).
    unsafe fn sub_to_f32(a: Self::Ints, b: Self::Ints) -> Self;

    /// [`i8_scale`](lstm_core::precision::i8_scale) of the `len` floats at `src`, bit for
    /// bit: `max |x| / 127`, NaN when one is NaN or infinite.
    ///
    /// # Safety
    /// As [`load_quads`](Self::load_quads); `len` floats readable at `src`.
    unsafe fn i8_scale(src: *const f32, len: usize) -> f32;

    /// Quantizes `len` floats at `src` to unsigned bytes `clamp(round(x·inv_scale), ±127) +
    /// 128` (ties to even), four to a `u32` in order (byte 0 first), the last quad padded with
    /// 128 (a zero), in runs of [`RUN_WORDS`]: quad `q` goes to
    /// `dst + (q / RUN_WORDS)·run_stride + q % RUN_WORDS`.
    ///
    /// # Safety
    /// As [`load_quads`](Self::load_quads); `len` floats readable at `src`, and those `u32`s
    /// writable for `q < len.div_ceil(4)`.
    unsafe fn quantize_quads(
        src: *const f32,
        len: usize,
        inv_scale: f32,
        dst: *mut u32,
        run_stride: usize,
    );
}

/// The words of an encoded row ([`DotBf16::round_pairs`], [`DotI8::quantize_quads`]) are
/// written in runs of this many, one AVX-512 register: a stage interleaves its rows run by run
/// (see `DotRows`), so that each run is one contiguous store.
pub(crate) const RUN_WORDS: usize = 16;

/// `ln 2` split into a part exact in f32 and the rest (Cody-Waite), as Cephes' `expf`.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// The argument range of [`exp`]: the result stays a normal f32 (no subnormals, no overflow).
pub(crate) const EXP_MIN: f32 = -87.0;
pub(crate) const EXP_MAX: f32 = 88.0;

/// `e^x`, Cephes `expf`: range reduction `x = n·ln2 + r`, `|r| <= ln2/2`, a degree-6
/// polynomial, then scaling by `2^n`. The argument is clamped to `[EXP_MIN, EXP_MAX]`, so the
/// result is always a normal number (see docs/numerics.md on subnormals). NaN in, NaN out.
#[inline(always)]
#[allow(clippy::excessive_precision)] // Cephes' coefficients as published
pub(crate) fn exp<V: Lanes>(x: V) -> V {
    let x = x.clamp(EXP_MIN, EXP_MAX);
    let n = x.mul(x.constant(std::f32::consts::LOG2_E)).round();
    let r = n.mul_add(x.constant(-LN2_HI), x);
    let r = n.mul_add(x.constant(-LN2_LO), r);
    let mut p = x.constant(1.987_569_1e-4);
    p = p.mul_add(r, x.constant(1.398_199_9e-3));
    p = p.mul_add(r, x.constant(8.333_452e-3));
    p = p.mul_add(r, x.constant(4.166_579_6e-2));
    p = p.mul_add(r, x.constant(1.666_666_5e-1));
    p = p.mul_add(r, x.constant(5.000_000_1e-1));
    let r2 = r.mul(r);
    let y = p.mul_add(r2, r).add(x.constant(1.0));
    y.mul(n.pow2i())
}

/// The lowest argument [`sigmoid`] evaluates: `σ(-87) ≈ 1.6e-38`, still a normal f32; below it
/// the true value is smaller than that, so clamping costs at most 1.6e-38 absolute.
pub(crate) const SIGMOID_MIN: f32 = -87.0;

/// `σ(x) = 1 / (1 + e^{-x})` with a true division (a reciprocal approximation such as `rcpps`
/// costs 3e-4 of accuracy). Saturates to exactly 1 for large `x` and to a tiny normal number
/// for very negative `x`; NaN in, NaN out.
#[inline(always)]
pub(crate) fn sigmoid<V: Lanes>(x: V) -> V {
    let x = x.clamp(SIGMOID_MIN, f32::INFINITY);
    let one = x.constant(1.0);
    one.div(one.add(exp(x.mul(x.constant(-1.0)))))
}

/// Below this `|x|`, [`tanh`] uses its odd polynomial (accurate relative to tiny results);
/// above, `1 - 2/(e^{2|x|} + 1)`.
const TANH_POLY_MAX: f32 = 0.625;
/// `tanh(10) = 1 - 4e-9` rounds to 1 in f32 (as does tanh of anything beyond ~9.01); clamping
/// there keeps `e^{2|x|}` far from overflow and `2/(e^{2|x|}+1)` out of the subnormal range.
const TANH_SATURATE: f32 = 10.0;

/// `tanh(x)`: Cephes `tanhf`'s polynomial `x + x³·P(x²)` for `|x| < 0.625`, otherwise
/// `1 - 2/(e^{2|x|} + 1)` with the sign of `x` (a true division). Exactly ±1 beyond ±9.01;
/// NaN in, NaN out.
#[inline(always)]
#[allow(clippy::excessive_precision)] // Cephes' coefficients as published
pub(crate) fn tanh<V: Lanes>(x: V) -> V {
    let a = x.abs().clamp(0.0, TANH_SATURATE);
    let one = x.constant(1.0);
    let e = exp(a.add(a));
    let large = one.sub(x.constant(2.0).div(e.add(one)));
    let z = x.mul(x);
    let mut p = x.constant(-5.704_988_7e-3);
    p = p.mul_add(z, x.constant(2.063_908_9e-2));
    p = p.mul_add(z, x.constant(-5.373_971_6e-2));
    p = p.mul_add(z, x.constant(1.333_144_2e-1));
    p = p.mul_add(z, x.constant(-3.333_328_2e-1));
    let small = p.mul(z).mul_add(x, x);
    a.select_lt(TANH_POLY_MAX, small, large.copysign(x))
}

/// The gate nonlinearities a cell kernel evaluates, a property of the kernel table: the f32
/// kernels, and the reduced-precision ones that widen the weights (the f32 engine on rounded
/// weights, bit for bit), keep [`Precise`]; the dot-product kernels (`vdpbf16ps`,
/// `vpdpbusd`), which round every row and `h` too, take [`Fast`], whose error is four orders of
/// magnitude below what that rounding costs them.
pub(crate) trait Activations {
    /// `σ(x)`.
    fn sigmoid<V: Lanes>(x: V) -> V;
    /// `tanh(x)`.
    fn tanh<V: Lanes>(x: V) -> V;
}

/// [`sigmoid`] and [`tanh`]: Cephes' functions with true divisions, within 2 ulp.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Precise;

impl Activations for Precise {
    #[inline(always)]
    fn sigmoid<V: Lanes>(x: V) -> V {
        sigmoid(x)
    }
    #[inline(always)]
    fn tanh<V: Lanes>(x: V) -> V {
        tanh(x)
    }
}

/// `σ(x) = 1/(1 + 2^{-x·log₂e})` and `tanh(x) = 1 - 2/(1 + 2^{2x·log₂e})` over one short
/// [`exp2_fast`], with true divisions: over 40% fewer instructions than [`Precise`], which made
/// a bf16 step 6% faster (its epilogue was an eighth of its time); the degree-4 `2^f` and
/// `vscalefps` took 1-2% more. Errors, measured against f64 over every 1/1024 in [-20, 20]
/// (`fast_activations_accuracy`): σ within 6.9e-7 absolute (3.5e-6 relative), tanh within
/// 1.4e-6 absolute (no small-argument polynomial: near 0 the error is absolute, not relative),
/// three orders of magnitude below the 2⁻⁹ to which bf16 rounds every operand. Both saturate
/// exactly (±1, and σ to a normal number above 0); NaN in, NaN out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fast;

/// `log₂ e`.
const LOG2_E: f32 = std::f32::consts::LOG2_E;

impl Activations for Fast {
    #[inline(always)]
    fn sigmoid<V: Lanes>(x: V) -> V {
        let one = x.constant(1.0);
        one.div(one.add(exp2_fast(x.mul(x.constant(-LOG2_E)))))
    }
    #[inline(always)]
    fn tanh<V: Lanes>(x: V) -> V {
        let one = x.constant(1.0);
        let e = exp2_fast(x.mul(x.constant(2.0 * LOG2_E)));
        one.sub(x.constant(2.0).div(one.add(e)))
    }
}

/// `2^t` for `t` clamped to `[-126, 125]`: `2^n · p(t - n)` with `n = round(t)` and `p` a
/// degree-4 minimax fit of `2^f` on `[-1/2, 1/2]` (relative error 2.7e-6 evaluated in f32,
/// plus the rounding of `t` itself), scaled by [`Lanes::scale_pow2`]. Its instructions on the
/// multiply pipes (4 FMAs) are what a dot-product step pays for each activation; a degree-5
/// fit (1.8e-7) took two more for an error that the rounding of every operand to bf16
/// (2⁻⁹) or int8 buries. The clamp keeps the result normal and `1 + 2^t` finite, so
/// `1/(1 + 2^t)` is a normal number too. NaN in, NaN out.
#[inline(always)]
#[allow(clippy::excessive_precision)] // the fitted coefficients as printed
fn exp2_fast<V: Lanes>(t: V) -> V {
    let t = t.clamp(-126.0, 125.0);
    let n = t.round();
    let f = t.sub(n);
    let mut p = t.constant(9.570_068_7e-3);
    p = p.mul_add(f, t.constant(5.591_780_7e-2));
    p = p.mul_add(f, t.constant(2.402_474_4e-1));
    p = p.mul_add(f, t.constant(6.931_218_5e-1));
    p = p.mul_add(f, t.constant(9.999_992_8e-1));
    p.scale_pow2(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[max absolute, max relative error of σ, max absolute error of tanh]` of `A` on `V`
    /// against f64, over every 1/1024 in [-20, 20] and tiny and huge arguments.
    fn activation_errors<V: Lanes, A: Activations>(lanes: V) -> [f64; 3] {
        let mut xs: Vec<f32> = (-20 * 1024..=20 * 1024)
            .map(|i| i as f32 / 1024.0)
            .collect();
        xs.extend([
            1e-30, -1e-30, 1e-8, -3e-6, 0.0, -0.0, 87.5, -87.5, 300.0, -300.0,
        ]);
        let (mut sig_abs, mut sig, mut tanh) = (0.0f64, 0.0f64, 0.0f64);
        let mut out = [0.0f32; 16];
        let _proof_of_isa = lanes;
        for chunk in xs.chunks(V::N) {
            let mut buf = [0.0f32; 16];
            buf[..chunk.len()].copy_from_slice(chunk);
            // SAFETY: `lanes` proves the instruction set; `buf` and `out` hold 16 >= N floats.
            let x = unsafe { V::load(buf.as_ptr()) };
            for (which, f) in [(0, A::sigmoid(x)), (1, A::tanh(x))] {
                // SAFETY: as above.
                unsafe { f.store(out.as_mut_ptr()) };
                for (&x, &y) in chunk.iter().zip(&out) {
                    let x = f64::from(x);
                    if which == 0 {
                        let want = 1.0 / (1.0 + (-x).exp());
                        sig_abs = sig_abs.max((f64::from(y) - want).abs());
                        if want > 1e-37 {
                            sig = sig.max((f64::from(y) - want).abs() / want);
                        }
                        assert!(y.is_normal() && y <= 1.0, "σ({x}) = {y}");
                    } else {
                        tanh = tanh.max((f64::from(y) - x.tanh()).abs());
                        assert!(y.abs() <= 1.0, "tanh({x}) = {y}");
                    }
                }
            }
        }
        for (x, s, t) in [
            (f32::INFINITY, 1.0, 1.0),
            (50.0, 1.0, 1.0),
            (-50.0, f32::NAN, -1.0),
        ] {
            // SAFETY: as above.
            let v = unsafe { V::splat(x) };
            // SAFETY: as above.
            unsafe { A::tanh(v).store(out.as_mut_ptr()) };
            assert_eq!(out[0], t, "tanh({x})");
            // SAFETY: as above.
            unsafe { A::sigmoid(v).store(out.as_mut_ptr()) };
            assert!(s.is_nan() || out[0] == s, "σ({x}) = {}", out[0]);
        }
        // SAFETY: as above.
        let nan = unsafe { V::splat(f32::NAN) };
        for f in [A::sigmoid(nan), A::tanh(nan)] {
            // SAFETY: as above.
            unsafe { f.store(out.as_mut_ptr()) };
            assert!(out[0].is_nan());
        }
        [sig_abs, sig, tanh]
    }

    /// The bounds [`Fast`]'s docs state (and [`Precise`] within 2 ulp), on the portable lanes
    /// and on AVX-512 where the CPU has it.
    #[test]
    fn fast_activations_accuracy() {
        let check = |name: &str, [sa, sr, t]: [f64; 3], bounds: [f64; 3]| {
            eprintln!("{name}: σ abs {sa:.2e} rel {sr:.2e}, tanh abs {t:.2e}");
            assert!(sa < bounds[0] && sr < bounds[1] && t < bounds[2], "{name}");
        };
        // SAFETY: the portable lanes run on every CPU.
        let portable = unsafe { crate::portable::Portable::splat(0.0) };
        check(
            "portable Fast",
            activation_errors::<_, Fast>(portable),
            FAST_BOUNDS,
        );
        check(
            "portable Precise",
            activation_errors::<_, Precise>(portable),
            [1.2e-7, 2.4e-7, 1.2e-7],
        );
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F detected.
            let v = unsafe { crate::x86_64::avx512::F32x16::splat(0.0) };
            check("avx512 Fast", activation_errors::<_, Fast>(v), FAST_BOUNDS);
        }
    }

    /// What [`Fast`]'s docs promise: σ absolute, σ relative, tanh absolute.
    const FAST_BOUNDS: [f64; 3] = [8e-7, 4e-6, 1.6e-6];
}
