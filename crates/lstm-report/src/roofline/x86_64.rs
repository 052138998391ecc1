//! The x86-64 probes: AVX-512F, AVX2+FMA and AVX512-BF16 through `core::arch`, behind safe
//! entry points.
//!
//! The `#[target_feature]` kernels are `unsafe` to call; [`fma_kernel`], [`read_kernel`] and
//! [`dot_kernel`] hand out safe wrappers only for what the CPU supports, so the drivers in
//! `mod.rs` never write `unsafe`.
#![allow(unsafe_code)]

use core::arch::x86_64::*;
use std::hint::black_box;

use lstm::{Backend, Precision};

use super::{DotKernel, FmaKernel, Line, ReadKernel, FMA_CHAINS};

/// `FMA_CHAINS` chains of `_mm512_fmadd_ps`, `iters` times.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn fma_avx512(iters: usize) -> f32 {
    let a = _mm512_set1_ps(black_box(0.999_999));
    let b = _mm512_set1_ps(black_box(1e-7));
    let mut c = [_mm512_setzero_ps(); FMA_CHAINS];
    for (k, ck) in c.iter_mut().enumerate() {
        *ck = _mm512_set1_ps(k as f32);
    }
    for _ in 0..iters {
        for ck in c.iter_mut() {
            *ck = _mm512_fmadd_ps(*ck, a, b);
        }
    }
    let s = c
        .iter()
        .fold(_mm512_setzero_ps(), |s, &v| _mm512_add_ps(s, v));
    _mm512_reduce_add_ps(s)
}

/// `FMA_CHAINS` chains of `_mm256_fmadd_ps`, `iters` times.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_avx2(iters: usize) -> f32 {
    let a = _mm256_set1_ps(black_box(0.999_999));
    let b = _mm256_set1_ps(black_box(1e-7));
    let mut c = [_mm256_setzero_ps(); FMA_CHAINS];
    for (k, ck) in c.iter_mut().enumerate() {
        *ck = _mm256_set1_ps(k as f32);
    }
    for _ in 0..iters {
        for ck in c.iter_mut() {
            *ck = _mm256_fmadd_ps(*ck, a, b);
        }
    }
    let s = c
        .iter()
        .fold(_mm256_setzero_ps(), |s, &v| _mm256_add_ps(s, v));
    let mut out = [0.0f32; 8];
    // SAFETY: `out` holds 8 floats; AVX is implied by the function's AVX2.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
    out.iter().sum()
}

/// Independent `vdpbf16ps` chains: its latency (5-6 cycles) on 2 pipes needs more than
/// `FMA_CHAINS`; 24 accumulators and 2 operands fit the 32 zmm registers.
const DOT_CHAINS: usize = 24;

/// `DOT_CHAINS` chains of `_mm512_dpbf16_ps` (`vdpbf16ps`: 16 lanes, each adding 2 bf16
/// products to an f32), `iters` times.
///
/// # Safety
/// The CPU must support AVX-512F and AVX512-BF16.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn dot_bf16(iters: usize) -> f32 {
    let a = _mm512_cvtne2ps_pbh(
        _mm512_set1_ps(black_box(0.999)),
        _mm512_set1_ps(black_box(1e-3)),
    );
    let b = _mm512_cvtne2ps_pbh(
        _mm512_set1_ps(black_box(1e-4)),
        _mm512_set1_ps(black_box(-1e-4)),
    );
    let mut c = [_mm512_setzero_ps(); DOT_CHAINS];
    for (k, ck) in c.iter_mut().enumerate() {
        *ck = _mm512_set1_ps(k as f32);
    }
    for _ in 0..iters {
        for ck in c.iter_mut() {
            *ck = _mm512_dpbf16_ps(*ck, a, b);
        }
    }
    let s = c
        .iter()
        .fold(_mm512_setzero_ps(), |s, &v| _mm512_add_ps(s, v));
    _mm512_reduce_add_ps(s)
}

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
/// `vdpbf16ps` for bf16 (AVX512-BF16); `None` for f32 (its peak is the FMA's) and for a CPU
/// without the instruction.
pub(super) fn dot_kernel(precision: Precision) -> Option<DotKernel> {
    match precision {
        Precision::Bf16 if Backend::Avx512Bf16.is_supported() => Some(DotKernel {
            run: dot_bf16_checked,
            // 16 lanes × 2 products × 2 FLOPs, per chain and iteration.
            flops_per_iter: 64 * DOT_CHAINS,
            instruction: "vdpbf16ps",
        }),
        _ => None,
    }
}

// The wrappers below are private: only `fma_kernel` / `read_kernel` hand them out, after
// `Backend::is_supported` confirmed the CPU has their features.

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

fn read_avx512_checked(buf: &[Line]) -> f32 {
    // SAFETY: handed out by `read_kernel` only when AVX-512F was detected.
    unsafe { read_avx512(buf) }
}

fn read_avx2_checked(buf: &[Line]) -> f32 {
    // SAFETY: handed out by `read_kernel` only when AVX2 was detected.
    unsafe { read_avx2(buf) }
}
