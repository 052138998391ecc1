//! The CLI's error: one message, printed by `main` as `error: <message>`.

use std::fmt;
use std::path::Path;

use lstm::LstmError;

/// Result of a subcommand.
pub(crate) type CliResult<T = ()> = Result<T, CliError>;

/// An error to report to the user: a complete, human-readable message that names the
/// argument and file concerned.
#[derive(Debug)]
pub(crate) struct CliError {
    message: String,
}

impl CliError {
    /// An error with this message.
    pub(crate) fn msg(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
        }
    }

    /// An error about the file given to the argument `flag`:
    /// `--flag /path/file: <what is wrong>`.
    pub(crate) fn in_arg(flag: &str, path: &Path, err: LstmError) -> Self {
        CliError::msg(format!("{flag} {}", err.in_file(path)))
    }
}

impl From<LstmError> for CliError {
    fn from(err: LstmError) -> Self {
        CliError::msg(err.to_string())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}
