//! The timing method every measurement of the project shares (`lstm bench`, `lstm report`,
//! the machine probe, and — in Python, line for line — the peers' script).
//!
//! Warm up (at least one call, and a tenth of the minimum time), then take samples of enough
//! back-to-back calls to last ~2 ms each (so microsecond calls are not lost in timer noise),
//! until both a minimum count and a minimum total time are reached, or the maximum time runs
//! out. A call slower than the whole budget is timed once, after one warm-up call. The
//! statistics are over the per-call times of the samples.
//!
//! ```
//! use lstm_report::timing::{time_calls, TimingPlan};
//!
//! let plan = TimingPlan { min_time: 0.01, min_samples: 5, max_time: 1.0 };
//! let mut sum = 0u64;
//! let timing = time_calls(|| -> Result<(), std::convert::Infallible> {
//!     sum = std::hint::black_box(sum.wrapping_add(1));
//!     Ok(())
//! }, plan)?;
//! assert!(timing.samples.len() >= 5 && timing.median() > 0.0);
//! # Ok::<(), std::convert::Infallible>(())
//! ```

use std::time::Instant;

use serde::Serialize;

/// How long to time one measurement.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TimingPlan {
    /// Minimum total time of the timed samples, in seconds.
    pub min_time: f64,
    /// Minimum number of samples (unless `max_time` runs out first).
    pub min_samples: usize,
    /// Stop taking samples past this many seconds (at least one sample is always taken);
    /// `f64::INFINITY` for no limit.
    pub max_time: f64,
}

/// Per-call times of one measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// Per-call seconds of each sample, sorted.
    pub samples: Vec<f64>,
    /// Back-to-back calls in each sample.
    pub calls_per_sample: usize,
}

impl Timing {
    /// The median per-call time, in seconds.
    pub fn median(&self) -> f64 {
        self.quantile(0.5)
    }

    /// The `q`-quantile of the samples, interpolated linearly (NaN without samples).
    pub fn quantile(&self, q: f64) -> f64 {
        quantile_sorted(&self.samples, q)
    }
}

/// The `q`-quantile of sorted values, interpolated linearly (NaN when empty).
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let f = pos - lo as f64;
    sorted[lo] * (1.0 - f) + sorted[hi] * f
}

/// The median of `v` (sorted in place; the mean of the middle two for an even count; NaN
/// when empty).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    quantile_sorted(v, 0.5)
}

/// Times `work` (see the module docs for the method); the first error of `work` ends it.
pub fn time_calls<E>(
    mut work: impl FnMut() -> Result<(), E>,
    plan: TimingPlan,
) -> Result<Timing, E> {
    let start = Instant::now();
    work()?;
    if start.elapsed().as_secs_f64() >= plan.max_time {
        // Slower than the whole budget: one warm-up call, then one timed call.
        let t0 = Instant::now();
        work()?;
        return Ok(Timing {
            samples: vec![t0.elapsed().as_secs_f64()],
            calls_per_sample: 1,
        });
    }
    let mut warm = 1u32;
    let warm_up = (plan.min_time / 10.0).min(plan.max_time / 3.0);
    while start.elapsed().as_secs_f64() < warm_up && warm < 1000 {
        work()?;
        warm += 1;
    }
    let per_call = start.elapsed().as_secs_f64() / f64::from(warm);
    let calls = ((2e-3 / per_call.max(1e-9)).ceil() as usize).clamp(1, 100_000);
    let mut samples = Vec::new();
    let start = Instant::now();
    loop {
        let t0 = Instant::now();
        for _ in 0..calls {
            work()?;
        }
        samples.push(t0.elapsed().as_secs_f64() / calls as f64);
        let elapsed = start.elapsed().as_secs_f64();
        let enough = samples.len() >= plan.min_samples.max(1) && elapsed >= plan.min_time;
        // Stop before a sample that would overrun the budget.
        let next = elapsed + elapsed / samples.len() as f64;
        if enough || next > plan.max_time || samples.len() >= 10_000 {
            break;
        }
    }
    samples.sort_by(f64::total_cmp);
    Ok(Timing {
        samples,
        calls_per_sample: calls,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use super::*;

    #[test]
    fn timing_respects_the_budget() {
        let mut n = 0usize;
        let work = || -> Result<(), Infallible> {
            n += 1;
            std::thread::sleep(Duration::from_millis(5));
            Ok(())
        };
        let plan = TimingPlan {
            min_time: 10.0,
            min_samples: 1000,
            max_time: 0.05,
        };
        let t0 = Instant::now();
        let timing = time_calls(work, plan).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert!(!timing.samples.is_empty());
        assert!(timing.median() >= 0.004);
        let t = Timing {
            samples: vec![1.0, 2.0, 3.0, 4.0],
            calls_per_sample: 1,
        };
        assert_eq!(
            (t.median(), t.quantile(0.25), t.quantile(1.0)),
            (2.5, 1.75, 4.0)
        );
    }

    #[test]
    fn no_time_limit_takes_the_minimum_samples() {
        let plan = TimingPlan {
            min_time: 0.0,
            min_samples: 10,
            max_time: f64::INFINITY,
        };
        let timing = time_calls(|| Ok::<(), Infallible>(()), plan).unwrap();
        assert_eq!(timing.samples.len(), 10);
    }

    #[test]
    fn errors_end_the_timing() {
        let plan = TimingPlan {
            min_time: 1.0,
            min_samples: 5,
            max_time: 2.0,
        };
        let mut calls = 0;
        let r = time_calls(
            || {
                calls += 1;
                if calls == 3 {
                    Err("third call")
                } else {
                    Ok(())
                }
            },
            plan,
        );
        assert_eq!(r, Err("third call"));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }
}
