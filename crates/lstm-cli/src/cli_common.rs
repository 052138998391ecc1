//! What the subcommands share: argument parsers, reading the input arrays, naming the file an
//! engine error is about, and writing `.npy` outputs all or nothing.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use clap::builder::{PossibleValuesParser, TypedValueParser};
use lstm::{io, EngineKind, LstmError, LstmState, Model, Operand, Precision, Tensor};

use crate::output::{FileArg, StagedOutputs};
use crate::{CliError, CliResult};

/// `--engine`: the names of [`EngineKind::ALL`], parsed with `EngineKind::from_str`.
pub(crate) fn engine_parser() -> impl TypedValueParser<Value = EngineKind> {
    PossibleValuesParser::new(EngineKind::ALL.iter().map(|k| k.name()))
        .try_map(|s| s.parse::<EngineKind>())
}

/// `--threads`: a whole number of at least 1.
/// `--precision`: one of [`Precision::ALL`].
pub(crate) fn precision_parser() -> impl TypedValueParser<Value = Precision> {
    PossibleValuesParser::new(Precision::ALL.iter().map(|p| p.name()))
        .try_map(|s| s.parse::<Precision>())
}

pub(crate) fn parse_threads(s: &str) -> Result<NonZeroUsize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number"))?;
    NonZeroUsize::new(n).ok_or_else(|| "the number of threads must be at least 1".to_string())
}

/// The file arguments among `args` that were given.
pub(crate) fn given<'a>(args: &[(&'static str, Option<&'a PathBuf>)]) -> Vec<FileArg<'a>> {
    args.iter()
        .filter_map(|&(flag, path)| Some((flag, path?.as_path())))
        .collect()
}

/// Loads `--model` (with `--prefix`), for input laid out `[B, T, *]` when `batch_first`.
pub(crate) fn load_model(path: &Path, prefix: Option<&str>, batch_first: bool) -> CliResult<Model> {
    Model::load_with_prefix(path, prefix)
        .and_then(|m| m.with_batch_first(batch_first))
        .map_err(|e| CliError::in_arg("--model", path, e))
}

/// Reads a float `.npy` as an f32 tensor; `what` names it in errors. An f32 file is decoded
/// straight into the tensor's buffer (no second copy).
pub(crate) fn read_f32(flag: &str, path: &Path, what: &str) -> CliResult<Tensor<f32>> {
    io::read_npy(path)
        .and_then(|a| a.into_f32_tensor(what))
        .map_err(|e| CliError::in_arg(flag, path, e))
}

/// The arrays of one forward call, as `lstm run` and `lstm grad` take them.
#[derive(Debug)]
pub(crate) struct SequenceInputs {
    pub(crate) input: Tensor<f32>,
    pub(crate) state: Option<LstmState<f32>>,
    pub(crate) lengths: Option<Vec<usize>>,
}

impl SequenceInputs {
    /// Reads `--input`, `--h0` with `--c0`, and `--lengths`.
    pub(crate) fn read(
        input: &Path,
        h0: Option<&Path>,
        c0: Option<&Path>,
        lengths: Option<&Path>,
    ) -> CliResult<Self> {
        let input = read_f32("--input", input, "input")?;
        let state = match (h0, c0) {
            (Some(h0), Some(c0)) => Some(LstmState {
                h: read_f32("--h0", h0, "h0")?,
                c: read_f32("--c0", c0, "c0")?,
            }),
            (None, None) => None,
            // clap enforces both-or-neither; kept as an error, never a panic.
            (Some(_), None) => return Err(CliError::msg("--h0 needs --c0 as well")),
            (None, Some(_)) => return Err(CliError::msg("--c0 needs --h0 as well")),
        };
        let lengths = match lengths {
            Some(path) => Some(
                io::read_npy(path)
                    .and_then(|a| a.into_lengths("lengths"))
                    .map_err(|e| CliError::in_arg("--lengths", path, e))?,
            ),
            None => None,
        };
        Ok(SequenceInputs {
            input,
            state,
            lengths,
        })
    }
}

/// The files an engine's validation errors can be about: (the operand, its flag, its file
/// when given).
pub(crate) type Operands<'a> = [(Operand, &'static str, Option<&'a Path>)];

/// Names the file a validation error of a forward or backward call is about, from the
/// operand the error names.
pub(crate) fn attribute(err: LstmError, operands: &Operands<'_>) -> CliError {
    let file = err.operand().and_then(|operand| {
        operands
            .iter()
            .find(|(o, ..)| *o == operand)
            .and_then(|&(_, flag, path)| Some((flag, path?)))
    });
    match file {
        Some((flag, path)) => CliError::in_arg(flag, path, err),
        None => err.into(),
    }
}

/// Writes each requested tensor as an f32 `.npy` (streamed from the tensor, no copy as
/// bytes) to a temporary beside its destination, registered with `staged`.
pub(crate) fn stage_npy(
    staged: &mut StagedOutputs,
    requested: &[(&'static str, Option<&PathBuf>, &Tensor<f32>)],
) -> CliResult {
    for &(flag, path, tensor) in requested {
        if let Some(path) = path {
            staged.stage_with(flag, path, |file| {
                io::write_npy_f32_to(file, tensor)
                    .map(|refused| refused.map_err(|e| CliError::in_arg(flag, path, e).to_string()))
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn threads_parse() {
        assert_eq!(parse_threads("4").unwrap().get(), 4);
        assert!(parse_threads("0").unwrap_err().contains("at least 1"));
        assert!(parse_threads("-1").is_err());
        assert!(parse_threads("many").is_err());
    }

    #[test]
    fn errors_name_the_operand_file() {
        let x = Path::new("x.npy");
        let operands: &Operands<'_> = &[
            (Operand::Input, "--input", Some(x)),
            (Operand::H0, "--h0", None),
        ];
        let e = LstmError::RankMismatch {
            what: Operand::Input.into(),
            expected: "3-D".to_string(),
            found: 1,
            shape: vec![2],
        };
        assert!(attribute(e, operands)
            .to_string()
            .starts_with("--input x.npy: "));
        let e = LstmError::LengthCount {
            expected: 1,
            found: 2,
        };
        assert!(!attribute(e, operands).to_string().starts_with("--"));
        let e = LstmError::RankMismatch {
            what: Operand::H0.into(),
            expected: "3-D".to_string(),
            found: 1,
            shape: vec![2],
        };
        assert!(!attribute(e, operands).to_string().starts_with("--"));
    }
}
