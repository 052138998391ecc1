//! What a report (and `lstm bench`) runs of ours: every engine of [`EngineKind::ALL`], every
//! backend the CPU has for the SIMD engine, every thread count for engines that use threads;
//! the forward pass and the training step (`forward_train` then `backward`).

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
