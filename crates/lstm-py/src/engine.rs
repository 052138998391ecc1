//! The engine behind one `LSTM` object, with what its properties report.

use lstm::{Backend, DynTrainer, EngineKind, EngineOptions, LstmError, Model, Precision, Result};

/// The engine of a model: one object that runs `forward`, `step` and the backward pass
/// ([`Model::trainer`]), shared by every thread that calls the model.
pub(crate) struct Engines {
    pub(crate) engine: DynTrainer,
    pub(crate) kind: EngineKind,
    /// The SIMD backend the engine runs (`None` for the naive engine).
    pub(crate) backend: Option<Backend>,
    /// The parallel runner's threads (1 for the others).
    pub(crate) threads: usize,
    /// The precision of the weights and products (a reduced one runs forward only: the
    /// backward refuses it).
    pub(crate) precision: Precision,
}

impl Engines {
    /// Builds the engine of `kind` over `model`. A thread count is refused for the engines
    /// that run on the calling thread (the facade ignores it there; from Python it is a
    /// mistake worth naming).
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
        let engine = model.trainer(kind, options)?;
        let backend = match kind {
            EngineKind::Naive => None,
            _ => Some(
                options
                    .backend
                    .unwrap_or_else(|| Backend::detect_for(options.precision)),
            ),
        };
        let threads = match kind {
            EngineKind::Parallel => options.threads_or_default(),
            _ => 1,
        };
        Ok(Engines {
            engine,
            kind,
            backend,
            threads,
            precision: options.precision,
        })
    }
}
