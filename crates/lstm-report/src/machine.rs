//! The machine the report runs on: what it says it is (`/proc/cpuinfo`, the cache hierarchy
//! in sysfs, versions), and what it measures to be (FMA peak and read bandwidth by working
//! set, from [`crate::roofline`]; the dot-product peak of each reduced precision), from which
//! each shape's hardware bound at each precision follows.

use std::process::Command;
use std::time::Duration;

use lstm::{Backend, Precision};
use serde::Serialize;

use crate::grid::Shape;
use crate::{roofline, Result};

/// What the machine says about itself.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub logical_cpus: usize,
    pub caches: Vec<Cache>,
    pub kernel: String,
    pub rustc: String,
    pub lstm_version: String,
    pub git_commit: Option<String>,
    pub optimized_build: bool,
    /// `/proc/loadavg` (1, 5, 15 min) when the report started: above ~0 means others share
    /// the CPU, and the timings are noisier.
    pub load_before: Option<[f64; 3]>,
    pub load_after: Option<[f64; 3]>,
}

/// One cache of CPU 0, as sysfs describes it.
#[derive(Clone, Debug, Serialize)]
pub struct Cache {
    pub level: String,
    pub kind: String,
    pub size: String,
    pub shared_with_cpus: String,
}

impl Machine {
    /// Reads what the system tells (missing files give "unknown", never an error).
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let logical_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut caches = Vec::new();
        for k in 0..8 {
            let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{k}");
            let read = |f: &str| {
                std::fs::read_to_string(format!("{dir}/{f}"))
                    .map(|s| s.trim().to_string())
                    .ok()
            };
            let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size"))
            else {
                continue;
            };
            caches.push(Cache {
                level,
                kind,
                size,
                shared_with_cpus: read("shared_cpu_list").unwrap_or_default(),
            });
        }
        let git_commit = Command::new("git")
            .args(["describe", "--always", "--dirty", "--abbrev=10"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string());
        Machine {
            cpu_model,
            logical_cpus,
            caches,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| format!("{} {}", std::env::consts::OS, s.trim()))
                .unwrap_or_else(|_| std::env::consts::OS.to_string()),
            rustc: env!("LSTM_RUSTC_VERSION").to_string(),
            lstm_version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit,
            optimized_build: !cfg!(debug_assertions),
            load_before: load_average(),
            load_after: None,
        }
    }

    /// `L1d 48K, L1i 32K, L2 1024K, L3 32768K (shared 0-1)`.
    pub fn caches_line(&self) -> String {
        self.caches
            .iter()
            .map(|c| {
                let kind = match c.kind.as_str() {
                    "Data" => "d",
                    "Instruction" => "i",
                    _ => "",
                };
                let shared = if c.shared_with_cpus.contains([',', '-']) {
                    format!(" (shared by CPUs {})", c.shared_with_cpus)
                } else {
                    String::new()
                };
                format!("L{}{kind} {}{shared}", c.level, c.size)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `/proc/loadavg`'s three averages.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// The FMA peak of one backend on some threads.
#[derive(Clone, Debug, Serialize)]
pub struct FmaPeak {
    pub backend: String,
    pub threads: usize,
    pub gflops: f64,
}

/// The peak of a reduced precision's dot-product instruction on some threads.
#[derive(Clone, Debug, Serialize)]
pub struct DotPeak {
    /// `bf16`.
    pub precision: String,
    /// `vdpbf16ps`.
    pub instruction: String,
    pub threads: usize,
    pub gflops: f64,
}

/// The read bandwidth of some threads, each over its own buffer.
#[derive(Clone, Debug, Serialize)]
pub struct Bandwidth {
    pub threads: usize,
    pub bytes_per_thread: usize,
    pub gbs: f64,
}

/// The measured limits.
#[derive(Clone, Debug, Serialize)]
pub struct Limits {
    pub fma: Vec<FmaPeak>,
    /// The reduced precisions' dot-product peaks (none for a precision whose instruction
    /// this CPU lacks: its products then run on the FMA units).
    pub dot: Vec<DotPeak>,
    /// Measured with the best backend's loads.
    pub bandwidth_backend: String,
    pub bandwidth: Vec<Bandwidth>,
}

/// The working-set sizes (per thread) the bandwidth is measured at.
pub fn bandwidth_sizes(quick: bool) -> Vec<usize> {
    const KIB: usize = 1 << 10;
    if quick {
        [32, 256, 1024, 4096, 32768].map(|k| k * KIB).to_vec()
    } else {
        [
            16, 32, 64, 128, 256, 512, 768, 1024, 1536, 2048, 4096, 8192, 16384, 32768, 65536,
        ]
        .map(|k| k * KIB)
        .to_vec()
    }
}

/// The probes [`measure_limits`] runs for `precisions` on 1..=`max_threads` threads (for a
/// progress count).
pub fn limit_steps(max_threads: usize, quick: bool, precisions: &[Precision]) -> usize {
    let dots = precisions.iter().filter(|&&p| p != Precision::F32).count();
    (Backend::all().len() + dots + bandwidth_sizes(quick).len()) * max_threads
}

/// Measures the limits for 1..=`max_threads` threads, with the dot-product peak of every
/// reduced precision among `precisions` the CPU has an instruction for; `tick(what)` is
/// called before each microbenchmark (for the progress line).
pub fn measure_limits(
    max_threads: usize,
    quick: bool,
    precisions: &[Precision],
    tick: &mut dyn FnMut(&str),
) -> Result<Limits> {
    let each = Duration::from_millis(if quick { 25 } else { 80 });
    let mut fma = Vec::new();
    for backend in Backend::all() {
        for threads in 1..=max_threads {
            tick(&format!("FMA peak, {backend}, {threads} thread(s)"));
            fma.push(FmaPeak {
                backend: backend.name().to_string(),
                threads,
                gflops: roofline::fma_peak_gflops(backend, threads, each * 2)?,
            });
        }
    }
    let mut dot = Vec::new();
    for &precision in precisions.iter().filter(|&&p| p != Precision::F32) {
        for threads in 1..=max_threads {
            tick(&format!(
                "{precision} dot-product peak, {threads} thread(s)"
            ));
            if let Some((instruction, gflops)) =
                roofline::dot_peak_gflops(precision, threads, each * 2)?
            {
                dot.push(DotPeak {
                    precision: precision.name().to_string(),
                    instruction: instruction.to_string(),
                    threads,
                    gflops,
                });
            }
        }
    }
    let best = Backend::detect();
    let mut bandwidth = Vec::new();
    for threads in 1..=max_threads {
        for bytes in bandwidth_sizes(quick) {
            tick(&format!(
                "read bandwidth, {threads} thread(s) × {}",
                human_bytes(bytes as f64)
            ));
            bandwidth.push(Bandwidth {
                threads,
                bytes_per_thread: bytes,
                gbs: roofline::read_bandwidth_gbs(best, bytes, threads, each)?,
            });
        }
    }
    Ok(Limits {
        fma,
        dot,
        bandwidth_backend: best.name().to_string(),
        bandwidth,
    })
}

/// A shape's hardware bound on some threads at one precision.
#[derive(Clone, Debug, Serialize)]
pub struct Bound {
    pub threads: usize,
    /// The precision of the weights and products (`f32`, `bf16`).
    pub precision: String,
    /// FLOPs / the peak of the instruction that runs the products.
    pub compute_ms: f64,
    /// Weight bytes / bandwidth at the per-thread working set.
    pub memory_ms: f64,
    /// The larger of the two.
    pub ms: f64,
    pub limited_by: &'static str,
    pub bandwidth_gbs: f64,
    pub peak_gflops: f64,
}

impl Limits {
    /// The best FMA peak measured on `threads` threads (any backend).
    pub fn peak(&self, threads: usize) -> f64 {
        self.fma
            .iter()
            .filter(|p| p.threads == threads)
            .map(|p| p.gflops)
            .fold(f64::NAN, f64::max)
    }

    /// The read bandwidth of `threads` threads each over `bytes_per_thread`, interpolated
    /// log-log between the measured sizes (clamped at the ends).
    pub fn bandwidth(&self, threads: usize, bytes_per_thread: f64) -> f64 {
        let pts: Vec<(f64, f64)> = self
            .bandwidth
            .iter()
            .filter(|b| b.threads == threads)
            .map(|b| (b.bytes_per_thread as f64, b.gbs))
            .collect();
        let (Some(first), Some(last)) = (pts.first(), pts.last()) else {
            return f64::NAN;
        };
        if bytes_per_thread <= first.0 {
            return first.1;
        }
        if bytes_per_thread >= last.0 {
            return last.1;
        }
        for w in pts.windows(2) {
            let ((x0, y0), (x1, y1)) = (w[0], w[1]);
            if bytes_per_thread <= x1 {
                let f = (bytes_per_thread.ln() - x0.ln()) / (x1.ln() - x0.ln());
                return (y0.ln() + f * (y1.ln() - y0.ln())).exp();
            }
        }
        last.1
    }

    /// The peak of `precision`'s products on `threads` threads: its dot-product
    /// instruction's when measured, else the FMA peak (f32, and a reduced precision whose
    /// weights are widened to f32 for the FMAs).
    pub fn peak_for(&self, precision: Precision, threads: usize) -> f64 {
        self.dot
            .iter()
            .find(|p| p.threads == threads && p.precision == precision.name())
            .map_or_else(|| self.peak(threads), |p| p.gflops)
    }

    /// The f32 bound of one forward pass of `shape` on `threads` threads
    /// ([`bound_for`](Self::bound_for) at f32).
    pub fn bound(&self, shape: &Shape, threads: usize) -> Bound {
        self.bound_for(shape, threads, Precision::F32)
    }

    /// The bound of one forward pass of `shape` on `threads` threads with weights of
    /// `precision`: the longer of its FLOPs at the peak of its products
    /// ([`peak_for`](Self::peak_for)) and its weight traffic (at `precision`'s bytes per
    /// weight) at the bandwidth of its working set (the recurrent weights of one layer and
    /// direction, split over the threads).
    pub fn bound_for(&self, shape: &Shape, threads: usize, precision: Precision) -> Bound {
        let peak = self.peak_for(precision, threads);
        let scale = weight_bytes(precision) / 4.0;
        let bw = self.bandwidth(
            threads,
            shape.recurrent_bytes() as f64 * scale / threads as f64,
        );
        let compute_ms = shape.forward_flops() / (peak * 1e9) * 1e3;
        let memory_ms = shape.weight_traffic_bytes() * scale / (bw * 1e9) * 1e3;
        let (ms, limited_by) = if memory_ms > compute_ms {
            (memory_ms, "bandwidth")
        } else {
            (compute_ms, "compute")
        };
        Bound {
            threads,
            precision: precision.name().to_string(),
            compute_ms,
            memory_ms,
            ms,
            limited_by,
            bandwidth_gbs: bw,
            peak_gflops: peak,
        }
    }
}

/// Bytes of one stored weight at `precision`: 4 for f32, 2 for bf16, 1 for int8 (its scale
/// per row is negligible). A precision this function does not know yet is bounded as f32 (a
/// bound that is too low, never one the measurement can beat).
pub fn weight_bytes(precision: Precision) -> f64 {
    match precision {
        Precision::F32 => 4.0,
        Precision::Bf16 => 2.0,
        Precision::Int8 => 1.0,
        _ => 4.0,
    }
}

/// `1.5 MiB`, `32 KiB`, `812 B`.
pub fn human_bytes(b: f64) -> String {
    if b >= (1u64 << 30) as f64 {
        format!("{:.3} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1 << 20) as f64 {
        trim(format!("{:.2}", b / (1 << 20) as f64)) + " MiB"
    } else if b >= 1024.0 {
        trim(format!("{:.1}", b / 1024.0)) + " KiB"
    } else {
        format!("{b:.0} B")
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            fma: vec![
                FmaPeak {
                    backend: "a".into(),
                    threads: 1,
                    gflops: 100.0,
                },
                FmaPeak {
                    backend: "b".into(),
                    threads: 1,
                    gflops: 50.0,
                },
            ],
            dot: vec![DotPeak {
                precision: "bf16".into(),
                instruction: "vdpbf16ps".into(),
                threads: 1,
                gflops: 200.0,
            }],
            bandwidth_backend: "a".into(),
            bandwidth: vec![
                Bandwidth {
                    threads: 1,
                    bytes_per_thread: 1000,
                    gbs: 100.0,
                },
                Bandwidth {
                    threads: 1,
                    bytes_per_thread: 100_000,
                    gbs: 10.0,
                },
            ],
        }
    }

    #[test]
    fn bandwidth_interpolates_log_log() {
        let l = limits();
        assert_eq!(l.peak(1), 100.0);
        assert_eq!(l.bandwidth(1, 10.0), 100.0);
        assert_eq!(l.bandwidth(1, 1e9), 10.0);
        assert!((l.bandwidth(1, 10_000.0) - 31.622_776).abs() < 1e-3);
    }

    #[test]
    fn bound_is_the_larger_limit() {
        let l = limits();
        let shape = &crate::grid::builtin(false)[0]; // stream-small: 1 MiB of W_hh
        let b = l.bound(shape, 1);
        assert_eq!(b.limited_by, "bandwidth");
        assert!((b.memory_ms - shape.weight_traffic_bytes() / 10e9 * 1e3).abs() < 1e-9);
        assert_eq!(b.ms, b.memory_ms);
        // bf16: half the bytes, at the bandwidth of half the working set; twice the peak.
        let h = l.bound_for(shape, 1, Precision::Bf16);
        let bw = l.bandwidth(1, shape.recurrent_bytes() as f64 / 2.0);
        assert!((h.memory_ms - shape.weight_traffic_bytes() / 2.0 / (bw * 1e9) * 1e3).abs() < 1e-9);
        assert!((h.compute_ms - b.compute_ms / 2.0).abs() < 1e-9);
        assert_eq!((h.precision.as_str(), h.peak_gflops), ("bf16", 200.0));
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(1536.0 * 1024.0), "1.5 MiB");
        assert_eq!(human_bytes(32768.0), "32 KiB");
        assert_eq!(human_bytes(100.0), "100 B");
    }

    #[test]
    fn describe_never_fails() {
        let m = Machine::describe();
        assert!(m.logical_cpus >= 1);
        assert!(!m.rustc.is_empty());
    }
}
