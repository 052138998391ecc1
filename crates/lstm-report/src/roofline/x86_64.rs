//! The x86-64 probes: AVX-512F, AVX2+FMA, AVX512-BF16 and AVX512-VNNI through `core::arch`,
//! behind safe entry points.
//!
//! The `#[target_feature]` kernels are `unsafe` to call; [`fma_kernel`], [`read_kernel`] and
//! [`dot_kernel`] hand out safe wrappers only for what the CPU supports, so the drivers in
//! `mod.rs` never write `unsafe`.
#![allow(unsafe_code)]

use core::arch::x86_64::*;
use std::hint::black_box;

use lstm::{Backend, Precision};

use super::{DotKernel, FmaKernel, Line, ReadKernel, FMA_CHAINS};

/// Defines `unsafe fn $name(iters: usize) -> f32`: `$chains` independent accumulators (of the
/// type of `$zero`), accumulator `k` starting at `$init(k)`, each updated `iters` times by
/// `$update(acc, a, b)` with the operands `$a`, `$b` (made opaque by `black_box`), then summed
/// with `$add` and reduced to one float by `$reduce` (kept alive, so no loop is removed). One
/// body for every throughput probe: only the instruction and its types differ.
macro_rules! chain_probe {
    (
        $(#[$doc:meta])*
        $name:ident, $features:literal, $chains:expr,
        acc: $zero:expr, init: $init:expr, operands: ($a:expr, $b:expr),
        update: $update:path, add: $add:path, reduce: $reduce:expr
    ) => {
        $(#[$doc])*
        ///
        /// # Safety
        #[doc = concat!("The CPU must support ", $features, ".")]
        #[target_feature(enable = $features)]
        unsafe fn $name(iters: usize) -> f32 {
            let (a, b) = ($a, $b);
            let mut c = [$zero; $chains];
            for (k, ck) in c.iter_mut().enumerate() {
                *ck = $init(k);
            }
            for _ in 0..iters {
                for ck in c.iter_mut() {
                    *ck = $update(*ck, a, b);
                }
            }
            let s = c.iter().fold($zero, |s, &v| $add(s, v));
            $reduce(s)
        }
    };
}

chain_probe!(
    /// `FMA_CHAINS` chains of `_mm512_fmadd_ps`, `iters` times.
    fma_avx512, "avx512f", FMA_CHAINS,
    acc: _mm512_setzero_ps(),
    init: |k| _mm512_set1_ps(k as f32),
    operands: (_mm512_set1_ps(black_box(0.999_999)), _mm512_set1_ps(black_box(1e-7))),
    update: _mm512_fmadd_ps, add: _mm512_add_ps, reduce: _mm512_reduce_add_ps
);

chain_probe!(
    /// `FMA_CHAINS` chains of `_mm256_fmadd_ps`, `iters` times.
    fma_avx2, "avx2,fma", FMA_CHAINS,
    acc: _mm256_setzero_ps(),
    init: |k| _mm256_set1_ps(k as f32),
    operands: (_mm256_set1_ps(black_box(0.999_999)), _mm256_set1_ps(black_box(1e-7))),
    update: _mm256_fmadd_ps, add: _mm256_add_ps, reduce: sum_ymm
);

/// The sum of the 8 lanes of `s`.
#[target_feature(enable = "avx")]
fn sum_ymm(s: __m256) -> f32 {
    let mut out = [0.0f32; 8];
    // SAFETY: `out` holds 8 floats; AVX is enabled on this function.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
    out.iter().sum()
}

/// Independent `vdpbf16ps` chains: its latency (5-6 cycles) on 2 pipes needs more than
/// `FMA_CHAINS`; 24 accumulators and 2 operands fit the 32 zmm registers.
const DOT_CHAINS: usize = 24;

chain_probe!(
    /// `DOT_CHAINS` chains of `_mm512_dpbf16_ps` (`vdpbf16ps`: 16 lanes, each adding 2 bf16
    /// products to an f32), `iters` times.
    dot_bf16, "avx512f,avx512bf16", DOT_CHAINS,
    acc: _mm512_setzero_ps(),
    init: |k| _mm512_set1_ps(k as f32),
    operands: (
        _mm512_cvtne2ps_pbh(_mm512_set1_ps(black_box(0.999)), _mm512_set1_ps(black_box(1e-3))),
        _mm512_cvtne2ps_pbh(_mm512_set1_ps(black_box(1e-4)), _mm512_set1_ps(black_box(-1e-4)))
    ),
    update: _mm512_dpbf16_ps, add: _mm512_add_ps, reduce: _mm512_reduce_add_ps
);

chain_probe!(
    /// `DOT_CHAINS` chains of `_mm512_dpbusd_epi32` (`vpdpbusd`: 16 i32 lanes, each adding 4
    /// products of an unsigned and a signed byte), `iters` times. Each iteration adds 4 to
    /// every lane: the driver's `FMA_ITERS` stay far inside i32 (where `vpdpbusd` wraps; the
    /// result is only kept alive, so wrapping would be harmless anyway).
    dot_int8, "avx512f,avx512vnni", DOT_CHAINS,
    acc: _mm512_setzero_si512(),
    init: |k| _mm512_set1_epi32(k as i32),
    operands: (_mm512_set1_epi8(black_box(1)), _mm512_set1_epi8(black_box(1))),
    update: _mm512_dpbusd_epi32, add: _mm512_add_epi32,
    reduce: |s| _mm512_reduce_add_epi32(s) as f32
);

/// Sums every line of `buf` with aligned 512-bit loads into 4 accumulators.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn read_avx512(buf: &[Line]) -> f32 {
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut chunks = buf.chunks_exact(4);
    for quad in &mut chunks {
        for (a, line) in acc.iter_mut().zip(quad) {
            // SAFETY: a `Line` is 64 bytes, 64-byte aligned: one aligned zmm load.
            *a = _mm512_add_ps(*a, unsafe { _mm512_load_ps(line.0.as_ptr()) });
        }
    }
    for line in chunks.remainder() {
        // SAFETY: as above.
        acc[0] = _mm512_add_ps(acc[0], unsafe { _mm512_load_ps(line.0.as_ptr()) });
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s)
}

/// Sums every line of `buf` with aligned 256-bit loads (two per line) into 4 accumulators.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
unsafe fn read_avx2(buf: &[Line]) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut chunks = buf.chunks_exact(2);
    for pair in &mut chunks {
        for (k, line) in pair.iter().enumerate() {
            let p = line.0.as_ptr();
            // SAFETY: a `Line` is 64 bytes, 64-byte aligned: two aligned ymm loads.
            let (lo, hi) = unsafe { (_mm256_load_ps(p), _mm256_load_ps(p.add(8))) };
            acc[2 * k] = _mm256_add_ps(acc[2 * k], lo);
            acc[2 * k + 1] = _mm256_add_ps(acc[2 * k + 1], hi);
        }
    }
    for line in chunks.remainder() {
        let p = line.0.as_ptr();
        // SAFETY: as above.
        let (lo, hi) = unsafe { (_mm256_load_ps(p), _mm256_load_ps(p.add(8))) };
        acc[0] = _mm256_add_ps(acc[0], lo);
        acc[1] = _mm256_add_ps(acc[1], hi);
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut out = [0.0f32; 8];
    // SAFETY: `out` holds 8 floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
    out.iter().sum()
}

/// The FMA kernel of `backend` and its lanes, when it is an x86-64 backend this CPU has.
pub(super) fn fma_kernel(backend: Backend) -> Option<(FmaKernel, usize)> {
    if !backend.is_supported() {
        return None;
    }
    match backend {
        Backend::Avx512 => Some((fma_avx512_checked, 16)),
        Backend::Avx2 => Some((fma_avx2_checked, 8)),
        _ => None,
    }
}

/// The read kernel of `backend`, when it is an x86-64 backend this CPU has.
pub(super) fn read_kernel(backend: Backend) -> Option<ReadKernel> {
    if !backend.is_supported() {
        return None;
    }
    match backend {
        Backend::Avx512 => Some(read_avx512_checked),
        Backend::Avx2 => Some(read_avx2_checked),
        _ => None,
    }
}

/// The dot-product kernel of `precision`'s products, when this CPU has its instruction:
/// `vdpbf16ps` for bf16 (AVX512-BF16), `vpdpbusd` for int8 (AVX512-VNNI); `None` for f32 (its
/// peak is the FMA's) and for a CPU without the instruction.
pub(super) fn dot_kernel(precision: Precision) -> Option<DotKernel> {
    match precision {
        Precision::Bf16 if Backend::Avx512Bf16.is_supported() => Some(DotKernel {
            run: dot_bf16_checked,
            // 16 lanes × 2 products × 2 FLOPs, per chain and iteration.
            ops_per_iter: 64 * DOT_CHAINS,
            instruction: "vdpbf16ps",
        }),
        Precision::Int8 if Backend::Avx512Vnni.is_supported() => Some(DotKernel {
            run: dot_int8_checked,
            // 16 lanes × 4 products × 2 integer operations, per chain and iteration.
            ops_per_iter: 128 * DOT_CHAINS,
            instruction: "vpdpbusd",
        }),
        _ => None,
    }
}

// The wrappers below are private: only `fma_kernel` / `read_kernel` / `dot_kernel` hand them
// out, after `Backend::is_supported` confirmed the CPU has their features.

fn fma_avx512_checked(iters: usize) -> f32 {
    // SAFETY: handed out by `fma_kernel` only when AVX-512F was detected.
    unsafe { fma_avx512(iters) }
}

fn fma_avx2_checked(iters: usize) -> f32 {
    // SAFETY: handed out by `fma_kernel` only when AVX2 and FMA were detected.
    unsafe { fma_avx2(iters) }
}

fn dot_bf16_checked(iters: usize) -> f32 {
    // SAFETY: handed out by `dot_kernel` only when `Backend::Avx512Bf16` is supported, which
    // detected AVX-512F and AVX512-BF16.
    unsafe { dot_bf16(iters) }
}

fn dot_int8_checked(iters: usize) -> f32 {
    // SAFETY: handed out by `dot_kernel` only when `Backend::Avx512Vnni` is supported, which
    // detected AVX-512F and AVX512-VNNI.
    unsafe { dot_int8(iters) }
}

fn read_avx512_checked(buf: &[Line]) -> f32 {
    // SAFETY: handed out by `read_kernel` only when AVX-512F was detected.
    unsafe { read_avx512(buf) }
}

fn read_avx2_checked(buf: &[Line]) -> f32 {
    // SAFETY: handed out by `read_kernel` only when AVX2 was detected.
    unsafe { read_avx2(buf) }
}
