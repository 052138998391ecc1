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
//! ONNX models load too: [`Model::load`] tells an ONNX file from a safetensors one by its
//! content, and [`Model::load_onnx`] picks one `LSTM` node by name. Every ONNX LSTM option
//! loads (layouts, the three directions, peepholes, `clip`, `input_forget`, nodes inside
//! `If`/`Loop`/`Scan`, weights built by constant chains, the multi-layer chains of
//! `torch.onnx.export`), and every engine runs them forward (inference and `step`); training
//! refuses ONNX's cell options ([`LstmConfig::onnx_only_options`]) with
//! [`LstmError::Unsupported`] naming them. An `nn.LSTMCell` state_dict loads as a one-layer
//! LSTM.
//!
//! Engines ([`EngineKind`]) share one contract, [`LstmEngine`]: the default
//! [`ParallelEngine`] (the SIMD engine on a pool of [`default_threads`] threads, bit-identical
//! to it), the [`SimdEngine`] on the calling thread (packed weights, fused kernels, AVX-512 /
//! AVX2+FMA / portable chosen at run time), and the reference [`NaiveEngine`], which also runs
//! in `f64` ([`Model::reference_f64`]) as the oracle the fast engines are tested against.
//!
//! Training: [`Model::trainer`] gives any engine kind as an [`LstmBackward`]:
//! `forward_train` records a [`TrainingTape`], `backward` turns upstream gradients
//! ([`GradOutputs`]) into [`LstmGradients`] matching autograd.
//!
//! What only an engine implementer needs (the validated call, fallible buffers, the parallel
//! runner's [`Plan`](engine::Plan), the deterministic generator behind
//! [`LstmWeights::random`]) lives in [`engine`].
#![forbid(unsafe_code)]

// The user API: the model, its engines and their options, tensors and state, errors, training.
pub use lstm_core::io::{LoadedModel, TensorInfo};
pub use lstm_core::{
    io, pad_to_total_length, CellWeights, GradOutputs, LstmBackward, LstmConfig, LstmEngine,
    LstmError, LstmGradients, LstmOutput, LstmState, LstmWeights, Operand, ParamKind, Precision,
    Result, Subject, Tensor, TrainingTape,
};
pub use lstm_naive::NaiveEngine;
/// ONNX models: [`Model::load_onnx`], and the loader itself ([`onnx::parse_onnx`] lists the
/// LSTM nodes, [`onnx::OnnxLstm::run`] runs one with ONNX's layouts and `sequence_lens`).
pub use lstm_onnx as onnx;
pub use lstm_parallel::{default_threads, ParallelEngine};
pub use lstm_simd::{Backend, SimdEngine};

/// What an engine implementer needs beyond the user API: the validated call
/// ([`SequenceBatch`](engine::SequenceBatch)), its canonical result, step-argument checks,
/// fallible buffer allocation, the parallel runner's plans, and the deterministic generator
/// ([`SplitMix64`](engine::SplitMix64)) that makes random weights and test data.
pub mod engine {
    pub use lstm_core::engine::{check_step, BatchOutput, SequenceBatch};
    pub use lstm_core::tensor::{checked_numel, try_filled_vec};
    pub use lstm_core::SplitMix64;
    pub use lstm_parallel::Plan;
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
    /// CPU ([`Backend::detect`]), on the calling thread.
    Simd,
    /// The default: the SIMD engine on several threads of a pool of its own (batch shards, or
    /// each step's hidden units split across cores), bit-identical to `Simd`. Its cost model
    /// keeps calls too small to pay for a fork-join on the calling thread, so it is never
    /// slower than `Simd`; with [`EngineOptions::default`] it uses [`default_threads`].
    #[default]
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
    /// Threads of the parallel runner (`None`: [`default_threads`], one per core); ignored by
    /// the others.
    pub threads: Option<usize>,
    /// The SIMD backend (`None`: the best this CPU has for the precision); refused for the
    /// naive engine.
    pub backend: Option<Backend>,
    /// The precision of the weights and products (default f32; see
    /// [`SimdEngine::with_options`]); the naive engine runs f32 only.
    pub precision: Precision,
}

impl EngineOptions {
    /// The threads the parallel runner gets: those asked for, or [`default_threads`].
    pub fn threads_or_default(&self) -> usize {
        self.threads.unwrap_or_else(default_threads)
    }

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

    /// With the weights packed in `precision`: bf16 (half the bytes, bf16 products with f32
    /// accumulation) or int8 (a quarter of the bytes, a scale per weight row; 8-bit products
    /// with exact integer sums where the CPU has VNNI). The state and the nonlinearities stay
    /// f32; `docs/numerics.md` has the accuracy contract.
    ///
    /// ```
    /// use lstm::{EngineKind, EngineOptions, LstmConfig, LstmWeights, Model, Precision, Tensor};
    ///
    /// let model = Model::from_weights(LstmWeights::random(LstmConfig::new(3, 16), 1)?);
    /// let x = Tensor::new([5, 2, 3], vec![0.5; 30])?;
    /// let exact = model.engine_with(EngineKind::Simd, EngineOptions::default())?;
    /// let want = exact.forward(&x, None, None)?;
    /// for precision in [Precision::Bf16, Precision::Int8] {
    ///     let options = EngineOptions::default().with_precision(precision);
    ///     let engine = model.engine_with(EngineKind::Simd, options)?;
    ///     let out = engine.forward(&x, None, None)?;
    ///     assert_eq!(out.output.shape(), &[5, 2, 16]);
    ///     let worst = out.output.data().iter().zip(want.output.data());
    ///     assert!(worst.map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) < 2e-2);
    /// }
    /// # Ok::<(), lstm::LstmError>(())
    /// ```
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }
}

/// A boxed engine that can be shared across threads.
pub type DynEngine = Box<dyn LstmEngine<f32> + Send + Sync>;

/// An engine that trains as well as it infers: [`LstmEngine`] and [`LstmBackward`] in one
/// object (every engine kind is one).
pub trait TrainingEngine: LstmEngine<f32> + LstmBackward<f32> {}

impl<E: LstmEngine<f32> + LstmBackward<f32>> TrainingEngine for E {}

/// A boxed training engine ([`Model::trainer`]) that can be shared across threads.
pub type DynTrainer = Box<dyn TrainingEngine + Send + Sync>;

/// An engine of a known kind, before it is boxed as an inference or a training engine.
enum BuiltEngine {
    Naive(NaiveEngine<f32>),
    Simd(SimdEngine),
    Parallel(ParallelEngine),
}

/// An `nn.LSTM` loaded from a `state_dict` (or an ONNX model): its config and f32 weights.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    weights: LstmWeights<f32>,
    prefix: String,
    tensors: Vec<TensorInfo>,
    /// What the ONNX loader found, for a model loaded from an ONNX file.
    onnx: Option<onnx::OnnxLstm>,
}

impl Model {
    /// Loads the LSTM in a safetensors file (finding its module prefix when the file holds
    /// exactly one LSTM) or in an ONNX model (its only LSTM node, or chain of nodes from one
    /// multi-layer `nn.LSTM`): the file's content decides, not its name.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with_prefix(path, None)
    }

    /// Loads the LSTM under `prefix` (`"encoder.rnn"` or `"encoder.rnn."`; `""` for the top
    /// level), or finds it when `prefix` is `None`. An ONNX file is loaded as by
    /// [`load_onnx`](Self::load_onnx) with no node named; it has no prefixes.
    pub fn load_with_prefix(path: impl AsRef<Path>, prefix: Option<&str>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        if onnx::looks_like_onnx(&bytes) {
            if let Some(p) = prefix {
                return Err(LstmError::InvalidArgument {
                    what: "prefix",
                    reason: format!(
                        "`{p}` given for an ONNX model, which has nodes, not module prefixes; choose a node with load_onnx (lstm --node)"
                    ),
                }
                .in_file(path));
            }
            return Self::from_onnx_bytes(&bytes, None).map_err(|e| e.in_file(path));
        }
        io::parse_safetensors(&bytes, prefix)
            .map(Self::from_loaded)
            .map_err(|e| e.in_file(path))
    }

    /// Loads the LSTM node named `node` of an ONNX model (a node name, or `path/name`; naming
    /// the first node of a multi-layer chain loads the chain), or its only one when `None`.
    pub fn load_onnx(path: impl AsRef<Path>, node: Option<&str>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_onnx_bytes(&read_file(path)?, node).map_err(|e| e.in_file(path))
    }

    /// Parses an ONNX model held in memory (see [`load_onnx`](Self::load_onnx)).
    pub fn from_onnx_bytes(bytes: &[u8], node: Option<&str>) -> Result<Self> {
        Ok(Self::from_onnx(onnx::load_onnx(bytes, node)?))
    }

    /// Wraps an LSTM the ONNX loader returned (e.g. from
    /// [`onnx::parse_onnx_with_inputs`], for weights a graph takes as inputs).
    pub fn from_onnx(lstm: onnx::OnnxLstm) -> Self {
        let mut model = Self::from_weights(lstm.weights().clone());
        for t in &mut model.tensors {
            t.dtype = lstm.dtype().to_string();
        }
        model.onnx = Some(lstm);
        model
    }

    /// For a model loaded from an ONNX file: the node(s), graph path and ONNX-side defaults,
    /// and [`run`](onnx::OnnxLstm::run) with ONNX's layouts and `sequence_lens`.
    pub fn onnx(&self) -> Option<&onnx::OnnxLstm> {
        self.onnx.as_ref()
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
            onnx: None,
        }
    }

    fn from_loaded(loaded: LoadedModel) -> Self {
        Model {
            weights: loaded.weights,
            prefix: loaded.prefix,
            tensors: loaded.tensors,
            onnx: None,
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
    /// runner gets [`default_threads`], SIMD engines the best backend of this CPU).
    pub fn engine(&self, kind: EngineKind) -> Result<DynEngine> {
        self.engine_with(kind, EngineOptions::default())
    }

    /// Builds an engine of `kind` with explicit options.
    pub fn engine_with(&self, kind: EngineKind, options: EngineOptions) -> Result<DynEngine> {
        Ok(match self.build(kind, options)? {
            BuiltEngine::Naive(e) => Box::new(e),
            BuiltEngine::Simd(e) => Box::new(e),
            BuiltEngine::Parallel(e) => Box::new(e),
        })
    }

    /// Builds a training engine of `kind`: [`LstmBackward::forward_train`] records what
    /// [`LstmBackward::backward`] needs for the gradients of the input, the initial state and
    /// every parameter. Every engine kind trains; the options mean what they mean for
    /// [`engine_with`](Self::engine_with). A model with ONNX's cell options
    /// ([`LstmConfig::onnx_only_options`]: reverse-only, peepholes, `clip`, `input_forget`),
    /// which every engine runs forward, is refused here with [`LstmError::Unsupported`] naming
    /// them: no backward implements them.
    ///
    /// ```
    /// use lstm::{EngineKind, EngineOptions, GradOutputs, LstmConfig, LstmWeights, Model, Tensor, TrainingTape};
    /// let model = Model::from_weights(LstmWeights::random(LstmConfig::new(3, 8), 7)?);
    /// let trainer = model.trainer(EngineKind::default(), EngineOptions::default())?;
    /// let x = Tensor::new([5, 2, 3], vec![0.25; 30])?;
    /// let mut tape = TrainingTape::new();
    /// let out = trainer.forward_train(&x, None, None, &mut tape)?;
    /// let upstream = Tensor::new(out.output.shape().to_vec(), vec![1.0; out.output.len()])?;
    /// let grads = trainer.backward(&tape, &GradOutputs::new(&upstream))?;
    /// assert_eq!(grads.grad_input.shape(), x.shape());
    /// # Ok::<(), lstm::LstmError>(())
    /// ```
    pub fn trainer(&self, kind: EngineKind, options: EngineOptions) -> Result<DynTrainer> {
        if let Some(used) = self.weights.config().onnx_only_options() {
            return Err(LstmError::Unsupported(format!(
                "training with {used}: every engine runs ONNX's cell options forward only"
            )));
        }
        Ok(match self.build(kind, options)? {
            BuiltEngine::Naive(e) => Box::new(e),
            BuiltEngine::Simd(e) => Box::new(e),
            BuiltEngine::Parallel(e) => Box::new(e),
        })
    }

    /// The one place an engine is built from a kind and options.
    fn build(&self, kind: EngineKind, options: EngineOptions) -> Result<BuiltEngine> {
        let precision = options.precision;
        let backend = options
            .backend
            .unwrap_or_else(|| Backend::detect_for(precision));
        Ok(match kind {
            EngineKind::Naive if precision != Precision::F32 => {
                return Err(LstmError::InvalidArgument {
                    what: "precision",
                    reason: format!(
                        "the naive engine runs f32 only (asked for `{precision}`); use the simd or parallel engine"
                    ),
                })
            }
            EngineKind::Naive => {
                if let Some(b) = options.backend {
                    return Err(LstmError::InvalidArgument {
                        what: "backend",
                        reason: format!(
                            "the naive engine has no SIMD backend (asked for `{b}`); use the simd or parallel engine"
                        ),
                    });
                }
                BuiltEngine::Naive(NaiveEngine::new(self.weights.clone())?)
            }
            EngineKind::Simd => {
                BuiltEngine::Simd(SimdEngine::with_options(&self.weights, backend, precision)?)
            }
            EngineKind::Parallel => BuiltEngine::Parallel(ParallelEngine::with_options(
                &self.weights,
                backend,
                precision,
                options.threads_or_default(),
            )?),
        })
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

/// Reads a whole model file.
fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| LstmError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn load_dispatches_on_content() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/onnx");
        let onnx_model = Model::load(fixtures.join("torch_2layer/model.onnx")).unwrap();
        assert_eq!(onnx_model.config().num_layers, 2);
        assert_eq!(onnx_model.onnx().unwrap().nodes().len(), 2);
        let node = onnx_model.onnx().unwrap().nodes()[0].clone();
        let named =
            Model::load_onnx(fixtures.join("torch_2layer/model.onnx"), Some(&node)).unwrap();
        assert_eq!(named, onnx_model);
        // The same content under a .safetensors name is still ONNX; a state_dict under .onnx
        // is still a state_dict.
        let dir = std::env::temp_dir().join(format!("lstm-dispatch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(
            fixtures.join("forward/model.onnx"),
            dir.join("renamed.safetensors"),
        )
        .unwrap();
        assert!(Model::load(dir.join("renamed.safetensors"))
            .unwrap()
            .onnx()
            .is_some());
        let w = LstmWeights::random(LstmConfig::new(2, 3), 1).unwrap();
        io::save_safetensors(&dir.join("m.onnx"), &w, "").unwrap();
        let st = Model::load(dir.join("m.onnx")).unwrap();
        assert!(st.onnx().is_none());
        assert_eq!(st.weights(), &w);
        let err = Model::load_with_prefix(dir.join("renamed.safetensors"), Some("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nodes, not module prefixes"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        // ONNX-only options: every engine runs them; training refuses them clearly.
        let peep = Model::load(fixtures.join("peepholes/model.onnx")).unwrap();
        for &kind in EngineKind::ALL {
            assert!(peep.engine(kind).is_ok(), "{kind:?}");
            let err = peep
                .trainer(kind, EngineOptions::default())
                .err()
                .unwrap()
                .to_string();
            assert!(
                err.contains("peepholes") && err.contains("training"),
                "{err}"
            );
        }
    }

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
