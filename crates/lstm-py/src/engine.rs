//! The engine behind one `LSTM` object: the forward/streaming engine, and the trainer built on
//! the first `grad` call.

use std::sync::OnceLock;

use lstm::{
    Backend, DynEngine, EngineKind, EngineOptions, LstmBackward, LstmError, Model, NaiveEngine,
    ParallelEngine, Result, SimdEngine,
};

/// A trainer shared between threads (each call brings its own tape).
pub(crate) type DynTrainer = Box<dyn LstmBackward<f32> + Send + Sync>;

/// The engine of a model, with what its properties report.
pub(crate) struct Engines {
    /// Runs `forward` and `step`.
    pub(crate) engine: DynEngine,
    /// Runs `forward_train` + `backward`; built on the first `grad` call (a second packed copy
    /// of the weights that inference-only users never pay for).
    trainer: OnceLock<DynTrainer>,
    pub(crate) kind: EngineKind,
    /// The SIMD backend the engine runs (`None` for the naive engine).
    pub(crate) backend: Option<Backend>,
    /// The parallel runner's threads (1 for the others).
    pub(crate) threads: usize,
}

impl Engines {
    /// Builds the engine of `kind` over `model`; `threads` only for the parallel runner,
    /// `backend` refused for the naive engine, as `Model::engine_with` does.
    pub(crate) fn new(model: &Model, kind: EngineKind, options: EngineOptions) -> Result<Self> {
        if kind != EngineKind::Parallel {
            if let Some(threads) = options.threads {
                return Err(LstmError::InvalidArgument {
                    what: "threads",
                    reason: format!(
                        "only the parallel engine takes a thread count (asked for {threads} with the {kind} engine)"
                    ),
                });
            }
        }
        let engine = model.engine_with(kind, options)?;
        let backend = match kind {
            EngineKind::Naive => None,
            _ => Some(options.backend.unwrap_or_else(Backend::detect)),
        };
        let threads = match kind {
            EngineKind::Parallel => options
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            _ => 1,
        };
        Ok(Engines {
            engine,
            trainer: OnceLock::new(),
            kind,
            backend,
            threads,
        })
    }

    /// The trainer of the same kind, backend and threads as the engine.
    pub(crate) fn trainer(&self, model: &Model) -> Result<&DynTrainer> {
        if let Some(trainer) = self.trainer.get() {
            return Ok(trainer);
        }
        let built: DynTrainer = match (self.kind, self.backend) {
            (EngineKind::Naive, _) | (_, None) => {
                Box::new(NaiveEngine::new(model.weights().clone())?)
            }
            (EngineKind::Parallel, Some(backend)) => Box::new(ParallelEngine::with_backend(
                model.weights(),
                backend,
                self.threads,
            )?),
            (_, Some(backend)) => Box::new(SimdEngine::with_backend(model.weights(), backend)?),
        };
        // Two threads may race to build it; the loser's copy is dropped.
        Ok(self.trainer.get_or_init(|| built))
    }
}
