//! The one error type of the workspace.
//!
//! Every variant names what was wrong and, where there is one, what was expected and what was
//! found, so that a message printed by the CLI is enough to fix the input.

use std::path::PathBuf;

/// Result alias used across the workspace.
pub type Result<T, E = LstmError> = std::result::Result<T, E>;

/// Everything that can go wrong when building, loading or running an LSTM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LstmError {
    /// A configuration value PyTorch itself would refuse (`hidden_size = 0`, `proj_size >= hidden_size`, ...).
    #[error("invalid config: {field} {reason}")]
    InvalidConfig {
        /// The `nn.LSTM` argument at fault.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },

    /// A tensor or array has the wrong shape.
    #[error("{what}: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// What the tensor is (`weight_ih_l0`, `input`, `h0`, ...).
        what: String,
        /// The shape required.
        expected: Vec<usize>,
        /// The shape given.
        found: Vec<usize>,
    },

    /// A tensor or array has the wrong number of dimensions.
    #[error("{what}: expected {expected}, found a {found}-D array of shape {shape:?}")]
    RankMismatch {
        /// What the tensor is.
        what: String,
        /// The ranks accepted, in words (`"a 3-D array [T, B, I] or a 2-D array [T, I]"`).
        expected: String,
        /// The rank found.
        found: usize,
        /// The shape found.
        shape: Vec<usize>,
    },

    /// A buffer does not hold as many elements as its shape says.
    #[error("{what}: shape {shape:?} needs {expected} elements, found {found}")]
    ElementCount {
        /// What the buffer is.
        what: String,
        /// Its declared shape.
        shape: Vec<usize>,
        /// The product of the shape.
        expected: usize,
        /// The length of the buffer.
        found: usize,
    },

    /// A tensor the model needs is absent from the file.
    #[error("missing tensor `{name}`")]
    MissingTensor {
        /// Its full name (prefix included).
        name: String,
    },

    /// A tensor is present that the inferred model has no use for (an `nn.LSTM` parameter name
    /// that does not fit the others, e.g. `weight_hr_l1` without `weight_hr_l0`).
    #[error("unexpected tensor `{name}`: {reason}")]
    UnexpectedTensor {
        /// Its full name.
        name: String,
        /// Why it does not fit.
        reason: String,
    },

    /// A tensor has an element type we cannot convert to f32.
    #[error("tensor `{name}` has dtype {dtype}; expected one of {expected}")]
    UnsupportedDtype {
        /// The tensor (or array) name.
        name: String,
        /// The dtype found.
        dtype: String,
        /// The dtypes accepted.
        expected: &'static str,
    },

    /// No `nn.LSTM` state_dict was found in a file.
    #[error(
        "no LSTM found: no tensor named `weight_ih_l0` (nn.LSTM) or `weight_ih` beside `weight_hh` (nn.LSTMCell), with any prefix, among {count} tensors"
    )]
    NoLstmFound {
        /// How many tensors the file holds.
        count: usize,
    },

    /// The file holds several LSTMs and no prefix was chosen.
    #[error("several LSTMs found (prefixes {candidates:?}); choose one with a prefix")]
    AmbiguousPrefix {
        /// The prefixes found, each ending in `.` (or empty for the top level).
        candidates: Vec<String>,
    },

    /// The tensors under a prefix belong to another recurrent module (a GRU or a plain RNN has
    /// `weight_ih_l0` too).
    #[error("the module at prefix `{prefix}` is not an nn.LSTM: {reason}")]
    NotAnLstm {
        /// The module prefix (`""` for the top level).
        prefix: String,
        /// What the shapes say it is.
        reason: String,
    },

    /// The prefix asked for holds no LSTM.
    #[error("prefix `{prefix}` holds no LSTM (no tensor `{prefix}weight_ih_l0`); prefixes found: {available:?}")]
    PrefixNotFound {
        /// The prefix asked for, normalised to end in `.`.
        prefix: String,
        /// The prefixes that do hold an LSTM.
        available: Vec<String>,
    },

    /// A safetensors file could not be parsed (corrupt, truncated or lying header).
    #[error("invalid safetensors data: {0}")]
    Safetensors(String),

    /// An ONNX file could not be decoded, or its graph is malformed around an LSTM node
    /// (a missing initializer, a cycle, a lying size, ...).
    #[error("invalid ONNX model: {0}")]
    Onnx(String),

    /// An ONNX `LSTM` node uses an attribute or input this library does not run (non-default
    /// `activations`, `activation_alpha`, weights computed at run time, an integer dtype, ...).
    #[error("ONNX LSTM node `{node}`: {attribute}: {reason}")]
    OnnxUnsupported {
        /// The node's name (or its generated name when it has none) and graph path.
        node: String,
        /// The attribute or input at fault (`activations`, `input W`, ...).
        attribute: String,
        /// What was found and what is supported.
        reason: String,
    },

    /// The ONNX model holds no LSTM node, several and none was chosen, or not the one asked for.
    #[error("{reason}; LSTM nodes in the model: {available:?}")]
    OnnxNodeChoice {
        /// What went wrong.
        reason: String,
        /// The LSTM nodes found (names, or `path/name` where names repeat).
        available: Vec<String>,
    },

    /// A `.npy` file could not be parsed or has a layout we do not accept.
    #[error("invalid .npy data: {0}")]
    Npy(String),

    /// The number of per-sequence lengths differs from the batch size.
    #[error("invalid lengths: expected {expected} lengths (one per sequence), found {found}")]
    LengthCount {
        /// The batch size B (1 for unbatched input).
        expected: usize,
        /// The number of lengths given.
        found: usize,
    },

    /// A sequence length lies outside `1..=T`.
    #[error("invalid lengths: length of sequence {sequence} is {length}; each length must lie in 1..={}", max.map_or_else(|| "T".to_string(), |m| m.to_string()))]
    LengthOutOfRange {
        /// Index of the sequence in the batch.
        sequence: usize,
        /// The length given.
        length: i64,
        /// T, the longest length allowed (when known).
        max: Option<usize>,
    },

    /// A buffer would be larger than this process can allocate.
    #[error("{what}: {elements} elements of {element_bytes} bytes cannot be allocated")]
    Allocation {
        /// What the buffer is for.
        what: String,
        /// Its element count.
        elements: usize,
        /// Bytes per element.
        element_bytes: usize,
    },

    /// A value is not acceptable for another reason (named in the message).
    #[error("invalid argument `{what}`: {reason}")]
    InvalidArgument {
        /// The argument.
        what: &'static str,
        /// Why.
        reason: String,
    },

    /// An operation the engine or model does not support (e.g. streaming a bidirectional LSTM).
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// An error about a named file (wraps the error found while reading or writing it).
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        #[source]
        source: Box<LstmError>,
    },
}

impl LstmError {
    /// Wraps `self` with the file it concerns, unless it already names one.
    pub fn in_file(self, path: impl Into<PathBuf>) -> Self {
        match self {
            LstmError::Io { .. } | LstmError::InFile { .. } => self,
            other => LstmError::InFile {
                path: path.into(),
                source: Box::new(other),
            },
        }
    }

    pub(crate) fn shape(what: impl Into<String>, expected: &[usize], found: &[usize]) -> Self {
        LstmError::ShapeMismatch {
            what: what.into(),
            expected: expected.to_vec(),
            found: found.to_vec(),
        }
    }
}
