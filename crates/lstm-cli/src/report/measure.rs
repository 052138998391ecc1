//! What the report runs of ours: every engine of [`EngineKind::ALL`], every backend the CPU
//! has for the SIMD engine, every thread count for engines that use threads; the forward pass
//! and, for engines with a backward, the training step. Timing follows `lstm bench`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use lstm::{
    Backend, EngineKind, EngineOptions, GradOutputs, LstmBackward, LstmEngine, LstmWeights,
    NaiveEngine, Tensor, TrainingTape,
};
use serde::Serialize;

use crate::CliResult;

/// One configuration of ours: an engine, its backend (SIMD only) and its thread count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Variant {
    pub(crate) engine: EngineKind,
    pub(crate) backend: Option<Backend>,
    pub(crate) threads: usize,
}

impl Variant {
    /// `simd/avx512`, `naive`: the column name (the thread count is the table's).
    pub(crate) fn label(&self) -> String {
        match self.backend {
            Some(b) => format!("{}/{}", self.engine, b),
            None => self.engine.to_string(),
        }
    }
}

/// The thread counts an engine is run with: 1 for single-threaded engines, else
/// `1..=max_threads`.
pub(crate) fn thread_counts(engine: EngineKind, max_threads: usize) -> Vec<usize> {
    match engine {
        EngineKind::Naive | EngineKind::Simd => vec![1],
        // An engine that uses threads: measured at every count up to the cores.
        _ => (1..=max_threads.max(1)).collect(),
    }
}

/// Every variant of this build on this CPU, in table order: engines as in
/// [`EngineKind::ALL`], backends as in [`Backend::all`] for the SIMD engine (the others run
/// on their default: the best backend), then thread counts.
pub(crate) fn variants(max_threads: usize) -> Vec<Variant> {
    let mut out = Vec::new();
    for &engine in EngineKind::ALL {
        let backends: Vec<Option<Backend>> = match engine {
            EngineKind::Simd => Backend::all().into_iter().map(Some).collect(),
            _ => vec![None],
        };
        for backend in backends {
            for threads in thread_counts(engine, max_threads) {
                out.push(Variant {
                    engine,
                    backend,
                    threads,
                });
            }
        }
    }
    out
}

/// The forward engine of `variant` over `weights`.
pub(crate) fn forward_engine(
    weights: &LstmWeights<f32>,
    variant: &Variant,
) -> CliResult<Box<dyn LstmEngine<f32>>> {
    let mut options = EngineOptions::default();
    if let Some(backend) = variant.backend {
        options = options.with_backend(backend);
    }
    if thread_counts(variant.engine, 2).len() > 1 {
        options = options.with_threads(variant.threads);
    }
    Ok(lstm::Model::from_weights(weights.clone()).engine_with(variant.engine, options)?)
}

/// A timed closure: one call of the work being measured.
pub(crate) type Work<'a> = Box<dyn FnMut() -> CliResult<()> + 'a>;

/// One training step (forward recording a tape, then the backward from `grad_output`) of
/// `variant`, or `None` when its engine has no backward pass yet. Engines gain a row in the
/// training table by getting an arm here.
pub(crate) fn train_step<'a>(
    weights: &LstmWeights<f32>,
    variant: &Variant,
    x: &'a Tensor<f32>,
    grad_output: &'a Tensor<f32>,
) -> CliResult<Option<Work<'a>>> {
    Ok(match variant.engine {
        EngineKind::Naive => Some(boxed_train_step(
            NaiveEngine::new(weights.clone())?,
            x,
            grad_output,
        )),
        EngineKind::Simd => Some(boxed_train_step(
            lstm::SimdEngine::with_backend(
                weights,
                variant.backend.unwrap_or_else(Backend::detect),
            )?,
            x,
            grad_output,
        )),
        _ => None,
    })
}

/// How many of `variants` have a training step (asked of [`train_step`] on a tiny model).
pub(crate) fn trainers(variants: &[Variant]) -> CliResult<usize> {
    let w = LstmWeights::random(lstm::LstmConfig::new(1, 1), 1)?;
    let x = Tensor::new([1, 1, 1], vec![0.0f32])?;
    let mut n = 0;
    for v in variants {
        n += usize::from(train_step(&w, v, &x, &x)?.is_some());
    }
    Ok(n)
}

fn boxed_train_step<'a, E>(engine: E, x: &'a Tensor<f32>, grad_output: &'a Tensor<f32>) -> Work<'a>
where
    E: LstmBackward<f32> + 'a,
{
    let mut tape = TrainingTape::new();
    Box::new(move || {
        black_box(engine.forward_train(black_box(x), None, None, &mut tape)?);
        black_box(engine.backward(&tape, &GradOutputs::new(black_box(grad_output)))?);
        Ok(())
    })
}

/// How long to time one measurement.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct TimingPlan {
    /// Minimum total time of the timed samples, in seconds.
    pub(crate) min_time: f64,
    /// Minimum number of samples (unless `max_time` runs out first).
    pub(crate) min_samples: usize,
    /// Stop taking samples past this many seconds (at least one sample is always taken).
    pub(crate) max_time: f64,
}

/// Per-call times of one measurement.
#[derive(Clone, Debug)]
pub(crate) struct Timing {
    /// Per-call seconds of each sample, sorted.
    pub(crate) samples: Vec<f64>,
    pub(crate) calls_per_sample: usize,
}

impl Timing {
    pub(crate) fn median(&self) -> f64 {
        self.quantile(0.5)
    }

    /// The `q`-quantile of the samples, interpolated linearly (NaN without samples).
    pub(crate) fn quantile(&self, q: f64) -> f64 {
        let n = self.samples.len();
        if n == 0 {
            return f64::NAN;
        }
        let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        let f = pos - lo as f64;
        self.samples[lo] * (1.0 - f) + self.samples[hi] * f
    }
}

/// Times `work` as `lstm bench` does: warm up (at least one call, and a tenth of the minimum
/// time), then samples of enough back-to-back calls to last ~2 ms each, until both the
/// minimum count and time are reached, or the maximum time. A call slower than the whole
/// budget is timed once, after one warm-up call.
pub(crate) fn time_calls(work: &mut Work<'_>, plan: TimingPlan) -> CliResult<Timing> {
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
    let budget = Duration::from_secs_f64(plan.max_time);
    loop {
        let t0 = Instant::now();
        for _ in 0..calls {
            work()?;
        }
        samples.push(t0.elapsed().as_secs_f64() / calls as f64);
        let elapsed = start.elapsed();
        let enough =
            samples.len() >= plan.min_samples.max(1) && elapsed.as_secs_f64() >= plan.min_time;
        // Stop before a sample that would overrun the budget.
        let next = elapsed + elapsed / samples.len() as u32;
        if enough || next > budget || samples.len() >= 10_000 {
            break;
        }
    }
    samples.sort_by(f64::total_cmp);
    Ok(Timing {
        samples,
        calls_per_sample: calls,
    })
}

/// Random input `[T, B, I]` (and upstream gradients shaped like the output) for a shape, as
/// `lstm bench` makes them.
pub(crate) fn random_tensor(dims: [usize; 3], seed: u64) -> CliResult<Tensor<f32>> {
    let n = lstm::engine::checked_numel(&dims)
        .ok_or_else(|| crate::CliError::msg("the tensor size overflows"))?;
    let mut rng = lstm::engine::SplitMix64::new(seed);
    let mut data = lstm::engine::try_filled_vec("input", n, 0.0f32)?;
    for v in &mut data {
        *v = rng.next_signed_unit() as f32;
    }
    Ok(Tensor::new(dims, data)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn variants_cover_every_engine_and_backend() {
        let v = variants(2);
        for &e in EngineKind::ALL {
            assert!(v.iter().any(|x| x.engine == e));
        }
        for b in Backend::all() {
            assert!(v.iter().any(|x| x.backend == Some(b)));
        }
        assert!(v.iter().all(|x| x.threads >= 1 && x.threads <= 2));
    }

    #[test]
    fn timing_respects_the_budget() {
        let mut n = 0usize;
        let mut work: Work<'_> = Box::new(|| {
            n += 1;
            std::thread::sleep(Duration::from_millis(5));
            Ok(())
        });
        let plan = TimingPlan {
            min_time: 10.0,
            min_samples: 1000,
            max_time: 0.05,
        };
        let t0 = Instant::now();
        let timing = time_calls(&mut work, plan).unwrap();
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
    fn naive_trains() {
        let config = lstm::LstmConfig::new(3, 4);
        let w = LstmWeights::random(config, 1).unwrap();
        let x = random_tensor([2, 1, 3], 1).unwrap();
        let gy = random_tensor([2, 1, 4], 2).unwrap();
        let v = Variant {
            engine: EngineKind::Naive,
            backend: None,
            threads: 1,
        };
        let mut step = train_step(&w, &v, &x, &gy).unwrap().unwrap();
        step().unwrap();
    }
}
