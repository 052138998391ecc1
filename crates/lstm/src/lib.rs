//! Run PyTorch-trained `torch.nn.LSTM` models on the CPU, with PyTorch's numbers.
//!
//! Save the `state_dict` in PyTorch (`safetensors.torch.save_file(model.state_dict(), "m.safetensors")`),
//! then in Rust: load, build an engine, forward.
//!
//! ```
//! use lstm::{EngineKind, Model, Tensor};
//! # let dir = std::env::temp_dir().join(format!("lstm-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # let path = dir.join("m.safetensors");
//! # let config = lstm::LstmConfig::new(3, 8).with_num_layers(2);
//! # lstm::io::save_safetensors(&path, &lstm::LstmWeights::random(config, 1)?, "encoder.rnn.")?;
//! let model = Model::load(&path)?; // config inferred, module prefix found
//! let engine = model.engine(EngineKind::default())?;
//! let out = engine.forward(&Tensor::new([10, 4, 3], vec![0.5; 120])?, None, None)?;
//! assert_eq!(out.output.shape(), &[10, 4, 8]); // [T, B, H]
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Every `nn.LSTM` option is supported in eval mode: layers, `bias=False`, `bidirectional`,
//! `proj_size`, `batch_first` ([`Model::with_batch_first`]), unbatched `[T, I]` input, initial
//! states `(h0, c0)`, and per-sequence lengths with `pack_padded_sequence(enforce_sorted=False)`
//! semantics. Streaming callers advance a caller-held [`LstmState`] with
//! [`LstmEngine::step`].
//!
//! Engines ([`EngineKind`]) share one contract, [`LstmEngine`]: the default [`SimdEngine`]
//! (packed weights, fused kernels, AVX-512 / AVX2+FMA / portable chosen at run time), and the
//! reference [`NaiveEngine`], which also runs in `f64` ([`Model::reference_f64`]) as the
//! oracle the fast engines are tested against.

pub use lstm_core::io::{LoadedModel, TensorInfo};
pub use lstm_core::{
    io, pad_to_total_length, CellWeights, LstmConfig, LstmEngine, LstmError, LstmOutput, LstmState,
    LstmWeights, ParamKind, Precision, Result, SplitMix64, Tensor,
};
// Training: forward_train records a TrainingTape, backward returns LstmGradients.
pub use lstm_core::{GradOutputs, LstmBackward, LstmGradients, TrainingTape};
pub use lstm_naive::NaiveEngine;
pub use lstm_parallel::{ParallelEngine, Plan};
pub use lstm_simd::{activations, Backend, SimdEngine};

/// What an engine implementer needs beyond the user API: the validated call
/// ([`SequenceBatch`](engine::SequenceBatch)), its canonical result, step-argument checks and
/// fallible buffer allocation.
pub mod engine {
    pub use lstm_core::engine::{check_step, BatchOutput, SequenceBatch};
    pub use lstm_core::tensor::{checked_numel, try_filled_vec};
}

use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// Which engine runs a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EngineKind {
    /// The reference engine: PyTorch's equations loop by loop, in f32.
    Naive,
    /// The SIMD engine: packed weights and fused kernels on the best instruction set of this
    /// CPU ([`Backend::detect`]).
    #[default]
    Simd,
    /// The SIMD engine on several threads of a pool of its own (batch shards, or each step's
    /// hidden units split across cores), bit-identical to `Simd`.
    Parallel,
}

impl EngineKind {
    /// Every engine this build has.
    pub const ALL: &'static [EngineKind] =
        &[EngineKind::Naive, EngineKind::Simd, EngineKind::Parallel];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Naive => "naive",
            EngineKind::Simd => "simd",
            EngineKind::Parallel => "parallel",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EngineKind {
    type Err = LstmError;

    fn from_str(s: &str) -> Result<Self> {
        EngineKind::ALL
            .iter()
            .copied()
            .find(|k| k.name() == s)
            .ok_or_else(|| LstmError::InvalidArgument {
                what: "engine",
                reason: format!(
                    "unknown engine `{s}`; expected one of {:?}",
                    EngineKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>()
                ),
            })
    }
}

/// How to build an engine: threads for the parallel runner, the SIMD instruction set, and the
/// precision of the weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineOptions {
    /// Threads of the parallel runner (`None`: one per core); ignored by the others.
    pub threads: Option<usize>,
    /// The SIMD backend (`None`: the best this CPU has for the precision); refused for the
    /// naive engine.
    pub backend: Option<Backend>,
    /// The precision of the weights and products (default f32; see
    /// [`SimdEngine::with_options`]); the naive engine runs f32 only.
    pub precision: Precision,
}

impl EngineOptions {
    /// With `threads` threads (the parallel runner).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// With the SIMD backend pinned.
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// With the weights packed in `precision` (bf16: half the bytes, bf16 products with f32
    /// accumulation; the state and the nonlinearities stay f32).
    ///
    /// ```
    /// use lstm::{EngineKind, EngineOptions, LstmConfig, LstmWeights, Model, Precision, Tensor};
    ///
    /// let model = Model::from_weights(LstmWeights::random(LstmConfig::new(3, 16), 1)?);
    /// let options = EngineOptions::default().with_precision(Precision::Bf16);
    /// let engine = model.engine_with(EngineKind::Simd, options)?;
    /// let out = engine.forward(&Tensor::new([5, 2, 3], vec![0.5; 30])?, None, None)?;
    /// assert_eq!(out.output.shape(), &[5, 2, 16]);
    /// # Ok::<(), lstm::LstmError>(())
    /// ```
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }
}

/// A boxed engine that can be shared across threads.
pub type DynEngine = Box<dyn LstmEngine<f32> + Send + Sync>;

/// An `nn.LSTM` loaded from a `state_dict`: its config and f32 weights.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    weights: LstmWeights<f32>,
    prefix: String,
    tensors: Vec<TensorInfo>,
}

impl Model {
    /// Loads the LSTM in a safetensors file, finding its module prefix when the file holds
    /// exactly one LSTM.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with_prefix(path, None)
    }

    /// Loads the LSTM under `prefix` (`"encoder.rnn"` or `"encoder.rnn."`; `""` for the top
    /// level), or finds it when `prefix` is `None`.
    pub fn load_with_prefix(path: impl AsRef<Path>, prefix: Option<&str>) -> Result<Self> {
        Ok(Self::from_loaded(io::load_safetensors(
            path.as_ref(),
            prefix,
        )?))
    }

    /// Parses a safetensors file held in memory.
    pub fn from_safetensors_bytes(bytes: &[u8], prefix: Option<&str>) -> Result<Self> {
        Ok(Self::from_loaded(io::parse_safetensors(bytes, prefix)?))
    }

    /// Wraps weights built in Rust.
    pub fn from_weights(weights: LstmWeights<f32>) -> Self {
        let tensors = weights
            .named_tensors()
            .into_iter()
            .map(|(name, shape, _)| TensorInfo {
                name,
                dtype: "F32".to_string(),
                shape,
            })
            .collect();
        Model {
            weights,
            prefix: String::new(),
            tensors,
        }
    }

    fn from_loaded(loaded: LoadedModel) -> Self {
        Model {
            weights: loaded.weights,
            prefix: loaded.prefix,
            tensors: loaded.tensors,
        }
    }

    /// Sets `batch_first`, which a `state_dict` does not record.
    pub fn with_batch_first(mut self, batch_first: bool) -> Result<Self> {
        let dropout = self.weights.config().dropout;
        self.weights.set_call_options(batch_first, dropout)?;
        Ok(self)
    }

    /// The configuration (inferred from the tensor shapes when loaded).
    pub fn config(&self) -> &LstmConfig {
        self.weights.config()
    }

    /// The weights, in PyTorch's layout.
    pub fn weights(&self) -> &LstmWeights<f32> {
        &self.weights
    }

    /// The module prefix the LSTM was found under (`""` at top level).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The model's tensors as stored in the file (name, dtype, shape).
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Builds an engine of `kind` over this model's weights (default options: the parallel
    /// runner gets one thread per core, SIMD engines the best backend of this CPU).
    pub fn engine(&self, kind: EngineKind) -> Result<DynEngine> {
        self.engine_with(kind, EngineOptions::default())
    }

    /// Builds an engine of `kind` with explicit options.
    pub fn engine_with(&self, kind: EngineKind, options: EngineOptions) -> Result<DynEngine> {
        let precision = options.precision;
        let backend = options
            .backend
            .unwrap_or_else(|| Backend::detect_for(precision));
        match kind {
            EngineKind::Naive if precision != Precision::F32 => Err(LstmError::InvalidArgument {
                what: "precision",
                reason: format!(
                    "the naive engine runs f32 only (asked for `{precision}`); use the simd or parallel engine"
                ),
            }),
            EngineKind::Naive => {
                if let Some(b) = options.backend {
                    return Err(LstmError::InvalidArgument {
                        what: "backend",
                        reason: format!(
                            "the naive engine has no SIMD backend (asked for `{b}`); use the simd or parallel engine"
                        ),
                    });
                }
                Ok(Box::new(NaiveEngine::new(self.weights.clone())?))
            }
            EngineKind::Simd => Ok(Box::new(SimdEngine::with_options(
                &self.weights,
                backend,
                precision,
            )?)),
            EngineKind::Parallel => {
                let threads = options
                    .threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
                Ok(Box::new(ParallelEngine::with_options(
                    &self.weights,
                    backend,
                    precision,
                    threads,
                )?))
            }
        }
    }

    /// The SIMD engine pinned to `backend` (an error when this CPU lacks it).
    pub fn simd_engine(&self, backend: Backend) -> Result<SimdEngine> {
        SimdEngine::with_backend(&self.weights, backend)
    }

    /// The reference engine in f64: the oracle (f32 weights widen exactly).
    pub fn reference_f64(&self) -> Result<NaiveEngine<f64>> {
        NaiveEngine::new(self.weights.cast::<f64>())
    }

    /// Saves the weights as a safetensors file (F32) with names under `prefix`.
    pub fn save(&self, path: impl AsRef<Path>, prefix: &str) -> Result<()> {
        io::save_safetensors(path.as_ref(), &self.weights, prefix)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn engine_kind_parses() {
        for &k in EngineKind::ALL {
            assert_eq!(k.name().parse::<EngineKind>().unwrap(), k);
        }
        assert!(matches!(
            "gpu".parse::<EngineKind>(),
            Err(LstmError::InvalidArgument { .. })
        ));
    }

    #[test]
    fn batch_first_reaches_the_engine() {
        let config = LstmConfig::new(2, 3);
        let model = Model::from_weights(LstmWeights::random(config, 2).unwrap());
        let x = Tensor::new([4, 2, 2], vec![0.1f32; 16]).unwrap();
        let seq_first = model
            .engine(EngineKind::Naive)
            .unwrap()
            .forward(&x, None, None)
            .unwrap();
        let bf = model.clone().with_batch_first(true).unwrap();
        assert!(bf.config().batch_first);
        let xt = x.swap_leading_axes().unwrap();
        let batch_first = bf
            .engine(EngineKind::Naive)
            .unwrap()
            .forward(&xt, None, None)
            .unwrap();
        assert_eq!(
            batch_first.output,
            seq_first.output.swap_leading_axes().unwrap()
        );
    }
}
