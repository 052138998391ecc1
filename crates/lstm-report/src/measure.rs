//! What a report (and `lstm bench`) runs of ours: every engine of [`EngineKind::ALL`], every
//! backend the CPU has for the SIMD engine, every thread count for engines that use threads;
//! the forward pass and the training step (`forward_train` then `backward`); and, for each
//! reduced precision (bf16), the SIMD engine on its best backend at 1 thread and the parallel
//! engine at the most threads, forward only.

use std::hint::black_box;

use lstm::{
    Backend, DynEngine, DynTrainer, EngineKind, EngineOptions, GradOutputs, LstmBackward,
    LstmEngine, LstmWeights, Model, Precision, Tensor, TrainingTape,
};

use crate::{ReportError, Result};

/// One configuration of ours: an engine, its backend (SIMD only) and its thread count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    /// The engine.
    pub engine: EngineKind,
    /// The SIMD backend (`None`: the engine's default, the best this CPU has).
    pub backend: Option<Backend>,
    /// Worker threads (1 for the single-threaded engines).
    pub threads: usize,
    /// The precision of the weights and products.
    pub precision: Precision,
}

impl Variant {
    /// `simd/avx512`, `naive`: the column name (the thread count is the table's).
    pub fn label(&self) -> String {
        let name = match self.backend {
            Some(b) => format!("{}/{}", self.engine, b),
            None => self.engine.to_string(),
        };
        match self.precision {
            Precision::F32 => name,
            other => format!("{name} {other}"),
        }
    }

    /// The backend's name as tables show it (`scalar` for the naive engine).
    pub fn backend_name(&self) -> &'static str {
        match self.engine {
            EngineKind::Naive => "scalar",
            _ => self
                .backend
                .unwrap_or_else(|| Backend::detect_for(self.precision))
                .name(),
        }
    }

    /// Whether this variant has a training step: f32 only (the engines refuse to train with
    /// reduced-precision weights).
    pub fn trains(&self) -> bool {
        matches!(self.precision, Precision::F32)
    }

    /// The engine options of this variant: its backend, and its threads for an engine that
    /// uses them.
    pub fn options(&self) -> EngineOptions {
        let mut options = EngineOptions::default().with_precision(self.precision);
        if let Some(backend) = self.backend {
            options = options.with_backend(backend);
        }
        if uses_threads(self.engine) {
            options = options.with_threads(self.threads);
        }
        options
    }

    /// The forward engine of this variant over `weights`.
    pub fn forward_engine(&self, weights: &LstmWeights<f32>) -> Result<DynEngine> {
        Ok(Model::from_weights(weights.clone()).engine_with(self.engine, self.options())?)
    }

    /// The training engine (forward recording a tape, then the backward) of this variant over
    /// `weights`, from [`Model::trainer`].
    pub fn trainer(&self, weights: &LstmWeights<f32>) -> Result<DynTrainer> {
        Ok(Model::from_weights(weights.clone()).trainer(self.engine, self.options())?)
    }
}

/// Whether `engine` runs on several threads (and so is measured at every thread count).
pub fn uses_threads(engine: EngineKind) -> bool {
    !matches!(engine, EngineKind::Naive | EngineKind::Simd)
}

/// The thread counts an engine is run with: 1 for single-threaded engines, else
/// `1..=max_threads`.
pub fn thread_counts(engine: EngineKind, max_threads: usize) -> Vec<usize> {
    if uses_threads(engine) {
        (1..=max_threads.max(1)).collect()
    } else {
        vec![1]
    }
}

/// Every variant of this build on this CPU, in table order: engines as in
/// [`EngineKind::ALL`], backends as in [`Backend::all`] for the SIMD engine (the others run
/// on their default: the best backend), then thread counts.
pub fn variants(max_threads: usize) -> Vec<Variant> {
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
                    precision: Precision::F32,
                    threads,
                });
            }
        }
    }
    out
}

/// The variants of a report at `precisions` ([`variants`] for f32), in table order: f32's,
/// then for each reduced precision the SIMD engine on that precision's best backend
/// ([`Backend::detect_for`]) at 1 thread and, with `max_threads > 1`, the parallel engine at
/// `max_threads` (a reduced precision is a speed option: its best configurations, not every
/// backend and thread count).
pub fn report_variants(max_threads: usize, precisions: &[Precision]) -> Vec<Variant> {
    let mut out = Vec::new();
    for &precision in precisions {
        if precision == Precision::F32 {
            out.extend(variants(max_threads));
            continue;
        }
        out.push(Variant {
            engine: EngineKind::Simd,
            backend: Some(Backend::detect_for(precision)),
            threads: 1,
            precision,
        });
        if max_threads > 1 {
            out.push(Variant {
                engine: EngineKind::Parallel,
                backend: None,
                threads: max_threads,
                precision,
            });
        }
    }
    out
}

/// The precisions a report measures by default: f32, and each reduced precision this CPU
/// has a backend of its own for (bf16 with AVX512-BF16's `vdpbf16ps`, int8 with
/// AVX512-VNNI); elsewhere a reduced precision only widens its weights to f32 (and PyTorch's
/// bf16 path is emulated), which `--precision` can still ask for.
pub fn default_precisions() -> Vec<Precision> {
    Precision::ALL
        .iter()
        .copied()
        .filter(|&p| p == Precision::F32 || Backend::detect_for(p) != Backend::detect())
        .collect()
}

/// A timed closure: one call of the work being measured.
pub type Work<'a> = Box<dyn FnMut() -> lstm::Result<()> + 'a>;

/// One forward pass of `engine` on `x` (zero initial state), as a timed closure.
pub fn forward_work<'a>(engine: &'a dyn LstmEngine<f32>, x: &'a Tensor<f32>) -> Work<'a> {
    Box::new(move || {
        black_box(engine.forward(black_box(x), None, None)?);
        Ok(())
    })
}

/// One training step of `engine` (`forward_train` into a tape reused across calls, as a
/// training loop does, then `backward` from `grad_output`), as a timed closure.
pub fn train_work<'a>(
    engine: &'a dyn LstmBackward<f32>,
    x: &'a Tensor<f32>,
    grad_output: &'a Tensor<f32>,
) -> Work<'a> {
    let mut tape = TrainingTape::new();
    Box::new(move || {
        black_box(engine.forward_train(black_box(x), None, None, &mut tape)?);
        black_box(engine.backward(&tape, &GradOutputs::new(black_box(grad_output)))?);
        Ok(())
    })
}

/// Random values in [-1, 1) shaped `dims` (an input `[T, B, I]`, or an upstream gradient
/// shaped like the output), from `seed`.
pub fn random_tensor(dims: [usize; 3], seed: u64) -> Result<Tensor<f32>> {
    let n = lstm::engine::checked_numel(&dims).ok_or_else(|| ReportError::InvalidArgument {
        what: "shape",
        reason: format!("{dims:?} has too many elements"),
    })?;
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
    fn reduced_precisions_run_their_best_configurations() {
        let v = report_variants(2, &[Precision::F32, Precision::Bf16]);
        assert_eq!(&v[..variants(2).len()], &variants(2)[..]);
        let bf16: Vec<&Variant> = v
            .iter()
            .filter(|x| x.precision == Precision::Bf16)
            .collect();
        assert_eq!(bf16.len(), 2);
        assert_eq!(
            (bf16[0].engine, bf16[0].backend, bf16[0].threads),
            (
                EngineKind::Simd,
                Some(Backend::detect_for(Precision::Bf16)),
                1
            )
        );
        assert_eq!((bf16[1].engine, bf16[1].threads), (EngineKind::Parallel, 2));
        assert!(bf16
            .iter()
            .all(|x| !x.trains() && x.label().ends_with(" bf16")));
        assert_eq!(report_variants(1, &[Precision::Bf16]).len(), 1);
        assert_eq!(default_precisions()[0], Precision::F32);
        assert_eq!(
            default_precisions().contains(&Precision::Bf16),
            lstm::Backend::Avx512Bf16.is_supported()
        );
    }

    #[test]
    fn every_variant_trains() {
        let config = lstm::LstmConfig::new(3, 4);
        let w = LstmWeights::random(config, 1).unwrap();
        let x = random_tensor([2, 1, 3], 1).unwrap();
        let gy = random_tensor([2, 1, 4], 2).unwrap();
        for v in variants(2) {
            let trainer = v.trainer(&w).unwrap();
            let mut step = train_work(&*trainer, &x, &gy);
            step().unwrap();
            let engine = v.forward_engine(&w).unwrap();
            forward_work(&*engine, &x)().unwrap();
        }
    }
}
