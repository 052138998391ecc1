//! `lstm run`: one forward pass from `.npy` files to `.npy` files.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;
use lstm::{io, EngineKind, LstmError, LstmState, Model, Precision, Tensor};

use crate::output::{check_paths, FileArg, StagedOutputs};
use crate::{CliError, CliResult};

/// Arguments of `lstm run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The model: a safetensors file holding an `nn.LSTM` state_dict.
    #[arg(long, value_name = "M.safetensors")]
    model: PathBuf,

    /// The input `.npy` (f32 or f64): [T, B, I], [B, T, I] with --batch-first, or unbatched
    /// [T, I].
    #[arg(long, value_name = "X.npy")]
    input: PathBuf,

    /// Where to write the output (f32 `.npy`): [T, B, D*H_out] ([B, T, D*H_out] with
    /// --batch-first, [T, D*H_out] unbatched).
    #[arg(long, value_name = "Y.npy")]
    output: PathBuf,

    /// Also write the final hidden state h_n (f32 `.npy`): [L*D, B, H_out] ([L*D, H_out]
    /// unbatched).
    #[arg(long, value_name = "HN.npy")]
    hn: Option<PathBuf>,

    /// Also write the final cell state c_n (f32 `.npy`): [L*D, B, H] ([L*D, H] unbatched).
    #[arg(long, value_name = "CN.npy")]
    cn: Option<PathBuf>,

    /// Initial hidden state h0 (f32 or f64 `.npy`): [L*D, B, H_out] ([L*D, H_out] unbatched);
    /// needs --c0. Zeros when absent.
    #[arg(long, value_name = "H0.npy", requires = "c0")]
    h0: Option<PathBuf>,

    /// Initial cell state c0 (f32 or f64 `.npy`): [L*D, B, H] ([L*D, H] unbatched); needs
    /// --h0. Zeros when absent.
    #[arg(long, value_name = "C0.npy", requires = "h0")]
    c0: Option<PathBuf>,

    /// Per-sequence lengths (1-D int32 or int64 `.npy`, one per sequence, each in 1..=T), as
    /// `pack_padded_sequence(enforce_sorted=False)`: the output past a sequence's end is 0
    /// and h_n, c_n come from its last valid step.
    #[arg(long, value_name = "L.npy")]
    lengths: Option<PathBuf>,

    /// Pad the output's time axis to N steps, as `pad_packed_sequence(..., total_length=N)`
    /// does (needs --lengths). Without it the output has max(lengths) steps, PyTorch's
    /// default; pass the input's T to keep it.
    #[arg(long, value_name = "N", requires = "lengths")]
    total_length: Option<usize>,

    /// Input and output are [B, T, *] (the model was built with `batch_first=True`, which a
    /// state_dict does not record). h0, c0, h_n and c_n keep their layout.
    #[arg(long)]
    batch_first: bool,

    /// The module prefix of the LSTM in the file (`encoder.rnn` or `encoder.rnn.`; "" for
    /// the top level). Needed only when the file holds several LSTMs.
    #[arg(long, value_name = "P")]
    prefix: Option<String>,

    /// The engine that runs the model.
    #[arg(
        long,
        value_name = "ENGINE",
        default_value_t = EngineKind::default(),
        value_parser = engine_parser(),
    )]
    engine: EngineKind,

    /// Worker threads (at least 1) of the parallel engine (default: one per core); the naive
    /// and simd engines run on one.
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    threads: Option<NonZeroUsize>,

    /// Precision of the weights and products: f32 (default), or bf16 (weights rounded to
    /// bf16 once, bf16 products with f32 accumulation; simd and parallel engines only).
    #[arg(
        long,
        value_name = "PRECISION",
        default_value_t = Precision::F32,
        value_parser = precision_parser(),
    )]
    precision: Precision,
}

/// `--engine`: the names of [`EngineKind::ALL`], parsed with `EngineKind::from_str`.
pub(crate) fn engine_parser() -> impl TypedValueParser<Value = EngineKind> {
    PossibleValuesParser::new(EngineKind::ALL.iter().map(|k| k.name()))
        .try_map(|s| s.parse::<EngineKind>())
}

/// `--precision`: one of [`Precision::ALL`].
pub(crate) fn precision_parser() -> impl TypedValueParser<Value = Precision> {
    PossibleValuesParser::new(Precision::ALL.iter().map(|p| p.name()))
        .try_map(|s| s.parse::<Precision>())
}

/// `--threads`: a whole number of at least 1.
pub(crate) fn parse_threads(s: &str) -> Result<NonZeroUsize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number"))?;
    NonZeroUsize::new(n).ok_or_else(|| "the number of threads must be at least 1".to_string())
}

/// Runs `lstm run`.
pub(crate) fn run(args: &RunArgs) -> CliResult {
    // 1. Paths, before any work: outputs in existing directories, distinct, not inputs.
    let mut inputs: Vec<FileArg<'_>> = vec![("--model", &args.model), ("--input", &args.input)];
    for (flag, path) in [
        ("--h0", &args.h0),
        ("--c0", &args.c0),
        ("--lengths", &args.lengths),
    ] {
        if let Some(p) = path {
            inputs.push((flag, p));
        }
    }
    let mut outputs: Vec<FileArg<'_>> = vec![("--output", &args.output)];
    for (flag, path) in [("--hn", &args.hn), ("--cn", &args.cn)] {
        if let Some(p) = path {
            outputs.push((flag, p));
        }
    }
    check_paths(&inputs, &outputs)?;

    // 2. Every input, read and checked.
    let model = Model::load_with_prefix(&args.model, args.prefix.as_deref())
        .and_then(|m| m.with_batch_first(args.batch_first))
        .map_err(|e| CliError::in_arg("--model", &args.model, e))?;
    let input = read_f32("--input", &args.input, "input")?;
    let state = match (&args.h0, &args.c0) {
        (Some(h0), Some(c0)) => Some(LstmState {
            h: read_f32("--h0", h0, "h0")?,
            c: read_f32("--c0", c0, "c0")?,
        }),
        (None, None) => None,
        // clap enforces both-or-neither; kept as an error, never a panic.
        (Some(_), None) => return Err(CliError::msg("--h0 needs --c0 as well")),
        (None, Some(_)) => return Err(CliError::msg("--c0 needs --h0 as well")),
    };
    let lengths = match &args.lengths {
        Some(path) => Some(
            io::read_npy(path)
                .and_then(|a| a.into_lengths("lengths"))
                .map_err(|e| CliError::in_arg("--lengths", path, e))?,
        ),
        None => None,
    };

    // 3. The forward pass (which validates every shape and length before computing).
    let mut options = lstm::EngineOptions::default().with_precision(args.precision);
    if let Some(n) = args.threads {
        options = options.with_threads(n.get());
    }
    let engine = model.engine_with(args.engine, options)?;
    let mut out = engine
        .forward(&input, state.as_ref(), lengths.as_deref())
        .map_err(|e| attribute(e, args))?;
    if let Some(n) = args.total_length {
        out.output = lstm::pad_to_total_length(out.output, n, args.batch_first)
            .map_err(|e| CliError::msg(format!("--total-length {n}: {e}")))?;
    }

    // 4. Encode every output, then stage and commit them all together.
    let mut encoded: Vec<(&'static str, &Path, Vec<u8>)> = Vec::new();
    let requested = [
        ("--output", Some(&args.output), &out.output),
        ("--hn", args.hn.as_ref(), &out.h_n),
        ("--cn", args.cn.as_ref(), &out.c_n),
    ];
    for (flag, path, tensor) in requested {
        if let Some(path) = path {
            let bytes = io::npy_bytes_f32(tensor).map_err(|e| CliError::in_arg(flag, path, e))?;
            encoded.push((flag, path, bytes));
        }
    }
    let mut staged = StagedOutputs::new();
    for (flag, path, bytes) in &encoded {
        staged.stage(flag, path, bytes)?;
    }
    staged.commit()
}

/// Reads a float `.npy` as an f32 tensor; `what` names it in errors.
pub(crate) fn read_f32(flag: &str, path: &Path, what: &str) -> CliResult<Tensor<f32>> {
    io::read_npy(path)
        .and_then(|a| a.into_f32_tensor(what))
        .map_err(|e| CliError::in_arg(flag, path, e))
}

/// Names the file a validation error of `forward` is about.
fn attribute(err: LstmError, args: &RunArgs) -> CliError {
    let file: Option<(&str, &Path)> = match &err {
        LstmError::ShapeMismatch { what, .. }
        | LstmError::RankMismatch { what, .. }
        | LstmError::ElementCount { what, .. } => match what.as_str() {
            "input" => Some(("--input", &args.input)),
            "h0" => args.h0.as_deref().map(|p| ("--h0", p)),
            "c0" => args.c0.as_deref().map(|p| ("--c0", p)),
            _ => None,
        },
        LstmError::InvalidArgument { what: "input", .. } => Some(("--input", &args.input)),
        LstmError::InvalidArgument {
            what: "lengths", ..
        } => args.lengths.as_deref().map(|p| ("--lengths", p)),
        LstmError::LengthCount { .. } | LstmError::LengthOutOfRange { .. } => {
            args.lengths.as_deref().map(|p| ("--lengths", p))
        }
        _ => None,
    };
    match file {
        Some((flag, path)) => CliError::in_arg(flag, path, err),
        None => err.into(),
    }
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
}
