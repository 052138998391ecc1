//! Types, errors, weights and file formats shared by every `lstm-kernels` engine.
//!
//! - [`LstmConfig`]: the arguments of `torch.nn.LSTM`, validated as PyTorch does.
//! - [`LstmWeights`]: the parameters per (layer, direction) in PyTorch's layout and names.
//! - [`LstmEngine`]: the contract the engines implement (`forward` with PyTorch's shapes,
//!   streaming `step`); [`SequenceBatch`] is the validated, canonical form of a call.
//! - [`io`]: safetensors `state_dict` load/save and `.npy` read/write.
//! - [`LstmError`]: the one error enum; every variant says what was expected and what was found.
//! - [`grad`]: the backward pass's types ([`TrainingTape`], [`GradOutputs`], [`LstmGradients`],
//!   the [`LstmBackward`] trait).
//!
//! ```
//! use lstm_core::{LstmConfig, LstmWeights, io};
//! let config = LstmConfig::new(4, 8).with_num_layers(2);
//! let weights = LstmWeights::<f32>::random(config, 42)?;
//! let bytes = io::serialize_safetensors(&weights, "encoder.rnn.")?;
//! let loaded = io::parse_safetensors(&bytes, None)?; // prefix found automatically
//! assert_eq!(loaded.prefix, "encoder.rnn.");
//! assert_eq!(loaded.weights, weights);
//! # Ok::<(), lstm_core::LstmError>(())
//! ```

#![forbid(unsafe_code)]

pub mod config;
pub mod engine;
pub mod error;
pub mod grad;
pub mod io;
pub mod precision;
pub mod tensor;
pub mod weights;

pub use config::{Direction, LstmConfig};
pub use engine::{
    check_step, pad_to_total_length, BatchOutput, LstmEngine, LstmOutput, LstmState, SequenceBatch,
};
pub use error::{LstmError, Operand, Result, Subject};
pub use grad::{GradOutputs, LstmBackward, LstmGradients, TrainingTape};
pub use precision::Precision;
pub use tensor::Tensor;
pub use weights::{CellWeights, LstmWeights, ParamKind, SplitMix64};
