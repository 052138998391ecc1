//! `lstm run --model X.onnx`: one forward pass of an ONNX LSTM node (or multi-layer chain),
//! with ONNX's shapes: `--input` is `X` (`[T, B, I]`, `[B, T, I]` with layout 1), `--output`
//! is `Y` (`[T, D, B, H]`, `[B, T, D, H]`), `--hn`/`--cn` are `Y_h`/`Y_c` (`[L·D, B, H]`,
//! `[B, L·D, H]`), `--h0`/`--c0` are `initial_h`/`initial_c` in the same layout, and
//! `--lengths` is `sequence_lens` (each in 0..=T; 0 gives zeros, as onnxruntime does).

use std::path::Path;

use lstm::{io, EngineOptions, Model};

use super::RunArgs;
use crate::cli_common::read_f32;
use crate::output::{check_paths, FileArg, StagedOutputs};
use crate::{CliError, CliResult};

/// Reads `--bind NAME=FILE.npy` values.
pub(crate) fn read_bindings(binds: &[String]) -> CliResult<Vec<(String, lstm::Tensor<f32>)>> {
    binds
        .iter()
        .map(|b| {
            let (name, file) = b
                .split_once('=')
                .ok_or_else(|| CliError::msg(format!("--bind `{b}`: expected NAME=FILE.npy")))?;
            Ok((name.to_string(), read_f32("--bind", Path::new(file), name)?))
        })
        .collect()
}

/// `Some(result)` when `--model` is an ONNX file (by content), `None` for a safetensors one.
pub(super) fn run_if_onnx(args: &RunArgs) -> Option<CliResult> {
    let bytes = std::fs::read(&args.model).ok()?;
    lstm::onnx::looks_like_onnx(&bytes).then(|| run_onnx(args, &bytes))
}

fn run_onnx(args: &RunArgs, bytes: &[u8]) -> CliResult {
    for (flag, given) in [
        ("--prefix", args.prefix.is_some()),
        ("--batch-first", args.batch_first),
        ("--total-length", args.total_length.is_some()),
    ] {
        if given {
            return Err(CliError::msg(format!(
                "{flag} does not apply to an ONNX model (its layout attribute fixes the layout, and Y always has T steps)"
            )));
        }
    }
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

    let bound = read_bindings(&args.bind)?;
    let pairs: Vec<(&str, &lstm::Tensor<f32>)> =
        bound.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let model = lstm::onnx::parse_onnx_with_inputs(bytes, &pairs)
        .and_then(|file| file.select(args.node.as_deref()))
        .map(Model::from_onnx)
        .map_err(|e| CliError::in_arg("--model", &args.model, e))?;
    let Some(lstm) = model.onnx() else {
        return Err(CliError::msg(
            "internal error: an ONNX model without its ONNX part",
        ));
    };
    let x = read_f32("--input", &args.input, "input")?;
    let state = match (&args.h0, &args.c0) {
        (Some(h0), Some(c0)) => Some((
            read_f32("--h0", h0, "initial_h")?,
            read_f32("--c0", c0, "initial_c")?,
        )),
        _ => None,
    };
    let lens: Option<Vec<i64>> = match &args.lengths {
        Some(path) => Some(
            io::read_npy(path)
                .and_then(|a| a.into_lengths("sequence_lens"))
                .map_err(|e| CliError::in_arg("--lengths", path, e))?
                .into_iter()
                .map(|n| i64::try_from(n).unwrap_or(i64::MAX))
                .collect(),
        ),
        None => None,
    };
    let kind = args.engine.unwrap_or_default();
    let mut options = EngineOptions::default().with_precision(args.precision);
    if let Some(n) = args.threads {
        options = options.with_threads(n.get());
    }
    let engine = model.engine_with(kind, options)?;
    let out = lstm.run(
        engine.as_ref(),
        &x,
        state.as_ref().map(|(h, c)| (h, c)),
        lens.as_deref(),
    )?;

    let mut encoded: Vec<(&'static str, &Path, Vec<u8>)> = Vec::new();
    for (flag, path, tensor) in [
        ("--output", Some(&args.output), &out.y),
        ("--hn", args.hn.as_ref(), &out.y_h),
        ("--cn", args.cn.as_ref(), &out.y_c),
    ] {
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
