//! The machine's own limits, measured on the spot: fp32 FMA throughput, the throughput of the
//! reduced-precision dot-product instructions (`vdpbf16ps`), and read bandwidth by
//! working-set size, per [`Backend`] and thread count. `lstm report` bounds every measured
//! time by these (the roofline), so that the bound describes the machine the report ran on.
//!
//! - [`fma_peak_gflops`]: independent chains of vector FMAs (enough of them to cover the FMA
//!   latency on every port), counted as 2 FLOPs per lane.
//! - [`dot_peak_gflops`]: the same with the dot-product instruction of a reduced precision
//!   (`vdpbf16ps` for bf16: 2 products per lane, 4 FLOPs), when the CPU has it.
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
//! use lstm::Backend;
//! use lstm_report::roofline;
//!
//! let gflops = roofline::fma_peak_gflops(Backend::detect(), 1, Duration::from_millis(20))?;
//! let gbs = roofline::read_bandwidth_gbs(Backend::detect(), 32 << 10, 1, Duration::from_millis(20))?;
//! assert!(gflops > 0.0 && gbs > 0.0);
//! # Ok::<(), lstm_report::ReportError>(())
//! ```

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use lstm::{Backend, Precision};

use crate::timing::median;
use crate::{ReportError, Result};

mod portable;
#[cfg(target_arch = "x86_64")]
mod x86_64;

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
                sink += kernel(black_box(FMA_ITERS));
                times.push(t0.elapsed().as_secs_f64());
            }
            black_box(sink);
            per_call / median(&mut times) / 1e9
        }
    })
}

/// The throughput of `precision`'s dot-product instruction on `threads` cores, in GFLOP/s
/// (each product and each addition counts as one), measured for about `duration`, with the
/// instruction's name: `vdpbf16ps` for bf16.
///
/// `Ok(None)` when the CPU lacks the instruction (the products then run on the FMA units,
/// whose peak is [`fma_peak_gflops`]'s), and for f32. Errors when `threads` is 0.
pub fn dot_peak_gflops(
    precision: Precision,
    threads: usize,
    duration: Duration,
) -> Result<Option<(&'static str, f64)>> {
    check(Backend::Portable, threads)?;
    let Some(kernel) = dot_kernel(precision) else {
        return Ok(None);
    };
    let per_call = (kernel.flops_per_iter * FMA_ITERS) as f64;
    let gflops = per_thread_sum(threads, duration, |_| {
        move |deadline: Instant| {
            let mut times = Vec::new();
            let mut sink = 0.0f32;
            while times.len() < 5 || (Instant::now() < deadline && times.len() < 100_000) {
                let t0 = Instant::now();
                sink += (kernel.run)(black_box(FMA_ITERS));
                times.push(t0.elapsed().as_secs_f64());
            }
            black_box(sink);
            per_call / median(&mut times) / 1e9
        }
    })?;
    Ok(Some((kernel.instruction, gflops)))
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
        buf.try_reserve_exact(lines).map_err(|_| {
            ReportError::Lstm(lstm::LstmError::Allocation {
                what: "bandwidth buffer".to_string(),
                elements: lines * 16,
                element_bytes: 4,
            })
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
            sink += kernel(buf);
            while times.len() < 5 || (Instant::now() < deadline && times.len() < 100_000) {
                let t0 = Instant::now();
                for _ in 0..passes {
                    sink += kernel(black_box(buf));
                }
                times.push(t0.elapsed().as_secs_f64() / passes as f64);
            }
            black_box(sink);
            bytes / median(&mut times) / 1e9
        }
    })
}

fn check(backend: Backend, threads: usize) -> Result<()> {
    if !backend.is_supported() {
        return Err(ReportError::Unsupported(format!(
            "the {backend} backend needs CPU features this machine lacks"
        )));
    }
    if threads == 0 {
        return Err(ReportError::InvalidArgument {
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
    .map_err(|_| ReportError::Unsupported("a measurement thread panicked".to_string()))?;
    Ok(rates.iter().sum())
}

/// Independent FMA chains per kernel: 12 cover a 4-cycle latency on 2 FMA pipes (8) with room
/// to spare, and fit the 16 ymm registers of AVX2.
const FMA_CHAINS: usize = 12;

/// A block of `FMA_CHAINS` chains of `iters` FMAs per lane; returns their sum (kept alive).
type FmaKernel = fn(usize) -> f32;
/// A dot-product block: `run(iters)` runs `iters` iterations of independent chains of a
/// reduced-precision dot-product instruction, `flops_per_iter` FLOPs each (all chains).
#[derive(Clone, Copy)]
struct DotKernel {
    run: fn(usize) -> f32,
    flops_per_iter: usize,
    instruction: &'static str,
}

/// `precision`'s dot-product kernel, when this CPU has one (see [`dot_peak_gflops`]).
fn dot_kernel(precision: Precision) -> Option<DotKernel> {
    #[cfg(target_arch = "x86_64")]
    if let Some(kernel) = x86_64::dot_kernel(precision) {
        return Some(kernel);
    }
    let _ = precision;
    None
}

/// One pass of vector loads over every line; returns their sum (kept alive).
type ReadKernel = fn(&[Line]) -> f32;

/// `backend`'s FMA kernel and its lanes. Only called after [`check`] (the per-ISA modules
/// hand out their kernels only for a supported backend).
fn fma_kernel(backend: Backend) -> (FmaKernel, usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(kernel) = x86_64::fma_kernel(backend) {
        return kernel;
    }
    let _ = backend;
    (portable::fma, 8)
}

/// `backend`'s read kernel (as [`fma_kernel`]).
fn read_kernel(backend: Backend) -> ReadKernel {
    #[cfg(target_arch = "x86_64")]
    if let Some(kernel) = x86_64::read_kernel(backend) {
        return kernel;
    }
    let _ = backend;
    portable::read
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
    fn dot_peaks_run_where_the_instruction_exists() {
        let d = Duration::from_millis(5);
        assert_eq!(dot_peak_gflops(Precision::F32, 1, d).unwrap(), None);
        let bf16 = dot_peak_gflops(Precision::Bf16, 2, d).unwrap();
        assert_eq!(bf16.is_some(), Backend::Avx512Bf16.is_supported());
        if let Some((instruction, gflops)) = bf16 {
            assert_eq!(instruction, "vdpbf16ps");
            assert!(gflops.is_finite() && gflops > 0.1, "{gflops}");
        }
        assert!(dot_peak_gflops(Precision::Bf16, 0, d).is_err());
    }

    #[test]
    fn zero_threads_is_an_error() {
        assert!(fma_peak_gflops(Backend::Portable, 0, Duration::ZERO).is_err());
        assert!(read_bandwidth_gbs(Backend::Portable, 64, 0, Duration::ZERO).is_err());
    }
}
