//! The one error type of the workspace.
//!
//! Every variant names what was wrong and, where there is one, what was expected and what was
//! found, so that a message printed by the CLI is enough to fix the input.

use std::path::PathBuf;

/// Result alias used across the workspace.
pub type Result<T, E = LstmError> = std::result::Result<T, E>;

/// An argument of a call (`forward`, `step`, `forward_train`, `backward`): which one an error
/// is about, so that a caller (the CLI naming the file it read it from, a binding naming its
/// parameter) can attribute the error without reading its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operand {
    /// The input sequence `[T, B, I]`.
    Input,
    /// The initial hidden state `h0`.
    H0,
    /// The initial cell state `c0`.
    C0,
    /// The per-sequence lengths.
    Lengths,
    /// `total_length` of `pad_to_total_length`.
    TotalLength,
    /// An output to pad (`pad_to_total_length`).
    Output,
    /// A streaming step's input `x_t`.
    StepInput,
    /// A streaming step's output buffer.
    StepOutput,
    /// A streaming state's `h`.
    StateH,
    /// A streaming state's `c`.
    StateC,
    /// The upstream gradient of the output.
    GradOutput,
    /// The upstream gradient of `h_n`.
    GradHN,
    /// The upstream gradient of `c_n`.
    GradCN,
}

impl Operand {
    /// The name used in messages (PyTorch's where it has one).
    pub fn name(self) -> &'static str {
        match self {
            Operand::Input => "input",
            Operand::H0 => "h0",
            Operand::C0 => "c0",
            Operand::Lengths => "lengths",
            Operand::TotalLength => "total_length",
            Operand::Output => "output",
            Operand::StepInput => "x_t",
            Operand::StepOutput => "output",
            Operand::StateH => "state.h",
            Operand::StateC => "state.c",
            Operand::GradOutput => "grad_output",
            Operand::GradHN => "grad_h_n",
            Operand::GradCN => "grad_c_n",
        }
    }
}

impl std::fmt::Display for Operand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a shape error is about: an operand of the call, or a named tensor (a weight in a file,
/// an array being read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// An argument of the call.
    Operand(Operand),
    /// A tensor by name (`weight_ih_l0`, `training tape`, ...).
    Tensor(String),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Operand(o) => o.fmt(f),
            Subject::Tensor(name) => f.write_str(name),
        }
    }
}

impl From<Operand> for Subject {
    fn from(o: Operand) -> Self {
        Subject::Operand(o)
    }
}

impl From<String> for Subject {
    fn from(name: String) -> Self {
        Subject::Tensor(name)
    }
}

impl From<&str> for Subject {
    fn from(name: &str) -> Self {
        Subject::Tensor(name.to_string())
    }
}

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
        /// What the tensor is (an operand such as `input` or `h0`, or a named tensor such as
        /// `weight_ih_l0`).
        what: Subject,
        /// The shape required.
        expected: Vec<usize>,
        /// The shape given.
        found: Vec<usize>,
    },

    /// A tensor or array has the wrong number of dimensions.
    #[error("{what}: expected {expected}, found a {found}-D array of shape {shape:?}")]
    RankMismatch {
        /// What the tensor is.
        what: Subject,
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
        what: Subject,
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
        "no LSTM found: no tensor named `weight_ih_l0` (with any prefix) among {count} tensors"
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
    #[error("invalid safetensors data: {reason}")]
    Safetensors {
        /// What was wrong, in words.
        reason: String,
        /// The `safetensors` crate's error, when it found the fault.
        #[source]
        source: Option<safetensors::SafeTensorError>,
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

    /// An operand of the call is not acceptable for a reason other than its shape (an empty
    /// sequence, lengths with unbatched input, a `total_length` shorter than the output).
    #[error("invalid {operand}: {reason}")]
    InvalidOperand {
        /// The operand at fault.
        operand: Operand,
        /// Why.
        reason: String,
    },

    /// A training tape that cannot serve this backward call: it holds no forward pass, or one
    /// recorded by an engine of another model.
    #[error("training tape {reason}")]
    TapeMismatch {
        /// Why.
        reason: String,
    },

    /// A call validated for one model was given to an engine of another
    /// ([`SequenceBatch::ensure_config`](crate::SequenceBatch::ensure_config)).
    #[error("call/engine mismatch: {reason}")]
    CallMismatch {
        /// Both configs.
        reason: String,
    },

    /// An invariant that the checks before make impossible was found broken: a bug in
    /// lstm-kernels, reported as an error instead of a panic.
    #[error("internal error (please report): {0}")]
    Internal(String),

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

impl From<safetensors::SafeTensorError> for LstmError {
    fn from(e: safetensors::SafeTensorError) -> Self {
        LstmError::Safetensors {
            reason: e.to_string(),
            source: Some(e),
        }
    }
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

    /// The operand of the call this error is about, if it is about one (looking through
    /// [`InFile`](LstmError::InFile)).
    pub fn operand(&self) -> Option<Operand> {
        match self {
            LstmError::ShapeMismatch { what, .. }
            | LstmError::RankMismatch { what, .. }
            | LstmError::ElementCount { what, .. } => match what {
                Subject::Operand(o) => Some(*o),
                Subject::Tensor(_) => None,
            },
            LstmError::InvalidOperand { operand, .. } => Some(*operand),
            LstmError::LengthCount { .. } | LstmError::LengthOutOfRange { .. } => {
                Some(Operand::Lengths)
            }
            LstmError::InFile { source, .. } => source.operand(),
            _ => None,
        }
    }

    pub(crate) fn shape(what: impl Into<Subject>, expected: &[usize], found: &[usize]) -> Self {
        LstmError::ShapeMismatch {
            what: what.into(),
            expected: expected.to_vec(),
            found: found.to_vec(),
        }
    }
}
