//! The machine's own limits, measured on the spot: fp32 FMA throughput and read bandwidth by
//! working-set size, per [`Backend`] and thread count. `lstm report` bounds every measured
//! time by these (the roofline), so that the bound describes the machine the report ran on.
//!
//! - [`fma_peak_gflops`]: independent chains of vector FMAs (enough of them to cover the FMA
//!   latency on every port), counted as 2 FLOPs per lane.
//! - [`read_bandwidth_gbs`]: repeated passes of vector loads over a buffer of a given size,
//!   summed into several accumulators so that the loads, not the adds, limit the loop.
//!
//! With `threads > 1` every thread runs the same loop on its own data at the same time (they
//! start together at a barrier) and the result is their sum. Threads are not pinned; on an
//! idle machine the OS spreads them over the cores. Each figure is the median of repeated
//! timed blocks, which damps the noise of a shared machine.
//!
//! ```
//! use std::time::Duration;
//! use lstm_simd::{roofline, Backend};
//!
//! let gflops = roofline::fma_peak_gflops(Backend::detect(), 1, Duration::from_millis(20))?;
//! let gbs = roofline::read_bandwidth_gbs(Backend::detect(), 32 << 10, 1, Duration::from_millis(20))?;
//! assert!(gflops > 0.0 && gbs > 0.0);
//! # Ok::<(), lstm_core::LstmError>(())
//! ```

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use lstm_core::{LstmError, Result};

use crate::Backend;

/// FMAs per lane in one call of a block kernel: `CHAINS` chains × `FMA_ITERS` iterations.
const FMA_ITERS: usize = 4096;

/// 64-byte aligned storage for the bandwidth buffers (a cache line, one zmm load).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// The fp32 FMA throughput of `threads` cores running `backend`'s widest FMA, in GFLOP/s
/// (a multiply-add counts as 2), measured for about `duration`.
///
/// Errors when the CPU lacks `backend` or `threads` is 0.
pub fn fma_peak_gflops(backend: Backend, threads: usize, duration: Duration) -> Result<f64> {
    check(backend, threads)?;
    let (kernel, lanes) = fma_kernel(backend);
    let per_call = (2 * lanes * FMA_CHAINS * FMA_ITERS) as f64;
    per_thread_sum(threads, duration, |_| {
        // Each thread's rate: FLOPs of one call over the median call time.
        move |deadline: Instant| {
            let mut times = Vec::new();
            let mut sink = 0.0f32;
            while times.len() < 5 || (Instant::now() < deadline && times.len() < 100_000) {
                let t0 = Instant::now();
                // SAFETY: `check` confirmed the CPU supports `backend`, the kernel's features.
                sink += unsafe { kernel(black_box(FMA_ITERS)) };
                times.push(t0.elapsed().as_secs_f64());
            }
            black_box(sink);
            per_call / median(&mut times) / 1e9
        }
    })
}

/// The read bandwidth of `threads` cores, each streaming its own buffer of
/// `bytes_per_thread` bytes (rounded up to 64) with `backend`'s vector loads, in GB/s
/// (10⁹ bytes per second, all threads together), measured for about `duration`.
///
/// Errors when the CPU lacks `backend`, `threads` is 0, or a buffer cannot be allocated.
pub fn read_bandwidth_gbs(
    backend: Backend,
    bytes_per_thread: usize,
    threads: usize,
    duration: Duration,
) -> Result<f64> {
    check(backend, threads)?;
    let lines = bytes_per_thread.div_ceil(64).max(1);
    // Allocate (and touch) every buffer before any timing.
    let mut buffers = Vec::with_capacity(threads);
    for t in 0..threads {
        let mut buf = Vec::new();
        buf.try_reserve_exact(lines)
            .map_err(|_| LstmError::Allocation {
                what: "bandwidth buffer".to_string(),
                elements: lines * 16,
                element_bytes: 4,
            })?;
        buf.resize(lines, Line([1.0 + t as f32 * 1e-3; 16]));
        buffers.push(buf);
    }
    let kernel = read_kernel(backend);
    let bytes = (lines * 64) as f64;
    // Passes per timed block: at least ~64 KiB read, so small buffers are not timer-bound.
    let passes = (65_536 / (lines * 64)).max(1);
    per_thread_sum(threads, duration, |t| {
        let buf = &buffers[t];
        move |deadline: Instant| {
            let mut times = Vec::new();
            let mut sink = 0.0f32;
            // One untimed pass brings the buffer into the caches it fits in.
            // SAFETY: `check` confirmed the CPU supports `backend`; `buf` is whole lines.
            sink += unsafe { kernel(buf) };
            while times.len() < 5 || (Instant::now() < deadline && times.len() < 100_000) {
                let t0 = Instant::now();
                for _ in 0..passes {
                    // SAFETY: as above.
                    sink += unsafe { kernel(black_box(buf)) };
                }
                times.push(t0.elapsed().as_secs_f64() / passes as f64);
            }
            black_box(sink);
            bytes / median(&mut times) / 1e9
        }
    })
}

fn check(backend: Backend, threads: usize) -> Result<()> {
    backend.kernels(lstm_core::Precision::F32)?;
    if threads == 0 {
        return Err(LstmError::InvalidArgument {
            what: "threads",
            reason: "must be at least 1".to_string(),
        });
    }
    Ok(())
}

/// Runs `make(t)`'s loop on `threads` threads started together and sums their rates.
fn per_thread_sum<'a, F, L>(threads: usize, duration: Duration, make: F) -> Result<f64>
where
    F: Fn(usize) -> L,
    L: FnOnce(Instant) -> f64 + Send + 'a,
{
    let barrier = Barrier::new(threads);
    let loops: Vec<L> = (0..threads).map(make).collect();
    let rates = std::thread::scope(|s| {
        let handles: Vec<_> = loops
            .into_iter()
            .map(|run| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    run(Instant::now() + duration)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join())
            .collect::<std::result::Result<Vec<f64>, _>>()
    })
    .map_err(|_| LstmError::Unsupported("a measurement thread panicked".to_string()))?;
    Ok(rates.iter().sum())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Independent FMA chains per kernel: 12 cover a 4-cycle latency on 2 FMA pipes (8) with room
/// to spare, and fit the 16 ymm registers of AVX2.
const FMA_CHAINS: usize = 12;

type FmaKernel = unsafe fn(usize) -> f32;
type ReadKernel = unsafe fn(&[Line]) -> f32;

fn fma_kernel(backend: Backend) -> (FmaKernel, usize) {
    match backend {
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 => (x86::fma_avx512, 16),
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => (x86::fma_avx2, 8),
        _ => (fma_portable, 8),
    }
}

fn read_kernel(backend: Backend) -> ReadKernel {
    match backend {
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 => x86::read_avx512,
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => x86::read_avx2,
        _ => read_portable,
    }
}

/// The portable backend's FMA: `wide::f32x8::mul_add`, as the build compiles it.
///
/// # Safety
/// None needed (safe code); `unsafe` only to share the kernel signature.
unsafe fn fma_portable(iters: usize) -> f32 {
    use wide::f32x8;
    let a = f32x8::splat(black_box(0.999_999));
    let b = f32x8::splat(black_box(1e-7));
    let mut c = [f32x8::ZERO; FMA_CHAINS];
    for (k, ck) in c.iter_mut().enumerate() {
        *ck = f32x8::splat(k as f32);
    }
    for _ in 0..iters {
        for ck in c.iter_mut() {
            *ck = ck.mul_add(a, b);
        }
    }
    c.iter().fold(f32x8::ZERO, |s, &v| s + v).reduce_add()
}

/// The portable backend's read loop over `wide::f32x8` (two loads per line).
///
/// # Safety
/// None needed (safe code); `unsafe` only to share the kernel signature.
unsafe fn read_portable(buf: &[Line]) -> f32 {
    use wide::f32x8;
    let mut acc = [f32x8::ZERO; 4];
    for pair in buf.chunks(2) {
        for (k, line) in pair.iter().enumerate() {
            let lo: [f32; 8] = line.0[..8].try_into().unwrap_or([0.0; 8]);
            let hi: [f32; 8] = line.0[8..].try_into().unwrap_or([0.0; 8]);
            acc[2 * k] += f32x8::from(lo);
            acc[2 * k + 1] += f32x8::from(hi);
        }
    }
    (acc[0] + acc[1] + acc[2] + acc[3]).reduce_add()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;
    use std::hint::black_box;

    use super::{Line, FMA_CHAINS};

    /// `FMA_CHAINS` chains of `_mm512_fmadd_ps`, `iters` times.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fma_avx512(iters: usize) -> f32 {
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
    pub(super) unsafe fn fma_avx2(iters: usize) -> f32 {
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

    /// Sums every line of `buf` with aligned 512-bit loads into 4 accumulators.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn read_avx512(buf: &[Line]) -> f32 {
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
    pub(super) unsafe fn read_avx2(buf: &[Line]) -> f32 {
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_backend_measures_something() {
        for backend in Backend::all() {
            let d = Duration::from_millis(5);
            let peak = fma_peak_gflops(backend, 1, d).unwrap();
            assert!(peak.is_finite() && peak > 0.1, "{backend}: {peak}");
            for bytes in [1, 100, 64 << 10] {
                let bw = read_bandwidth_gbs(backend, bytes, 2, d).unwrap();
                assert!(bw.is_finite() && bw > 0.01, "{backend} {bytes}: {bw}");
            }
        }
    }

    #[test]
    fn zero_threads_is_an_error() {
        assert!(fma_peak_gflops(Backend::Portable, 0, Duration::ZERO).is_err());
        assert!(read_bandwidth_gbs(Backend::Portable, 64, 0, Duration::ZERO).is_err());
    }
}
