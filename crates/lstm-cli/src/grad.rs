//! `lstm grad`: one backward pass (BPTT) from `.npy` files to gradient files.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use clap::Args;
use lstm::{
    io, EngineKind, EngineOptions, GradOutputs, LstmError, LstmState, Model, Operand, Tensor,
    TrainingTape,
};

use crate::output::{check_paths, FileArg, StagedOutputs};
use crate::run::{engine_parser, parse_threads, read_f32};
use crate::{CliError, CliResult};

/// Arguments of `lstm grad`.
#[derive(Debug, Args)]
pub(crate) struct GradArgs {
    /// The model: a safetensors file holding an `nn.LSTM` state_dict.
    #[arg(long, value_name = "M.safetensors")]
    model: PathBuf,

    /// The input `.npy` (f32 or f64): [T, B, I], [B, T, I] with --batch-first, or unbatched
    /// [T, I].
    #[arg(long, value_name = "X.npy")]
    input: PathBuf,

    /// dL/d(output), the upstream gradient (f32 or f64 `.npy`), shaped like the output `lstm
    /// run` writes: [T, B, D*H_out] ([B, T, D*H_out] with --batch-first, [T, D*H_out]
    /// unbatched); with --lengths, max(lengths) or T steps. Values at padded steps are ignored.
    #[arg(long, value_name = "GY.npy")]
    grad_output: PathBuf,

    /// dL/d(h_n) (f32 or f64 `.npy`), shaped like h_n: [L*D, B, H_out] ([L*D, H_out]
    /// unbatched). Zero when absent.
    #[arg(long, value_name = "G.npy")]
    grad_hn: Option<PathBuf>,

    /// dL/d(c_n) (f32 or f64 `.npy`), shaped like c_n: [L*D, B, H] ([L*D, H] unbatched). Zero
    /// when absent.
    #[arg(long, value_name = "G.npy")]
    grad_cn: Option<PathBuf>,

    /// Initial hidden state h0 (f32 or f64 `.npy`): [L*D, B, H_out] ([L*D, H_out] unbatched);
    /// needs --c0. Zeros when absent.
    #[arg(long, value_name = "H0.npy", requires = "c0")]
    h0: Option<PathBuf>,

    /// Initial cell state c0 (f32 or f64 `.npy`): [L*D, B, H] ([L*D, H] unbatched); needs
    /// --h0. Zeros when absent.
    #[arg(long, value_name = "C0.npy", requires = "h0")]
    c0: Option<PathBuf>,

    /// Per-sequence lengths (1-D int32 or int64 `.npy`, one per sequence, each in 1..=T), as
    /// `pack_padded_sequence(enforce_sorted=False)`: padded steps get zero gradient, and the
    /// h_n/c_n gradients enter at each sequence's last valid step.
    #[arg(long, value_name = "L.npy")]
    lengths: Option<PathBuf>,

    /// Input, output and their gradients are [B, T, *] (the model was built with
    /// `batch_first=True`). h0, c0, h_n, c_n and their gradients keep their layout.
    #[arg(long)]
    batch_first: bool,

    /// The module prefix of the LSTM in the file (`encoder.rnn` or `encoder.rnn.`; "" for
    /// the top level). Needed only when the file holds several LSTMs.
    #[arg(long, value_name = "P")]
    prefix: Option<String>,

    /// The engine that runs the forward and backward passes: `simd` (the default: packed
    /// weights, fused kernels, GEMMs over all steps for the weight gradients) or `naive` (the
    /// reference).
    #[arg(
        long,
        value_name = "ENGINE",
        default_value_t = EngineKind::Simd,
        value_parser = engine_parser(),
    )]
    engine: EngineKind,

    /// Threads of the parallel engine (default: one per core). Its training forward and
    /// backward currently run the SIMD engine's code on one thread (same results, bit for bit).
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    threads: Option<NonZeroUsize>,

    /// Where to write the parameter gradients: a safetensors file with one F32 tensor per
    /// parameter, named exactly as in the model file (prefix included).
    #[arg(long, value_name = "GW.safetensors")]
    grad_weights: PathBuf,

    /// Also write dL/d(input) (f32 `.npy`), in the input's shape.
    #[arg(long, value_name = "GX.npy")]
    grad_input: Option<PathBuf>,

    /// Also write dL/d(h0) (f32 `.npy`), shaped like h0. Without --h0 it is the gradient with
    /// respect to the zero initial state.
    #[arg(long, value_name = "GH.npy")]
    grad_h0: Option<PathBuf>,

    /// Also write dL/d(c0) (f32 `.npy`), shaped like c0 (likewise).
    #[arg(long, value_name = "GC.npy")]
    grad_c0: Option<PathBuf>,
}

/// Runs `lstm grad`.
pub(crate) fn grad(args: &GradArgs) -> CliResult {
    // 1. Paths, before any work: outputs in existing directories, distinct, not inputs.
    let mut inputs: Vec<FileArg<'_>> = vec![
        ("--model", &args.model),
        ("--input", &args.input),
        ("--grad-output", &args.grad_output),
    ];
    for (flag, path) in [
        ("--grad-hn", &args.grad_hn),
        ("--grad-cn", &args.grad_cn),
        ("--h0", &args.h0),
        ("--c0", &args.c0),
        ("--lengths", &args.lengths),
    ] {
        if let Some(p) = path {
            inputs.push((flag, p));
        }
    }
    let mut outputs: Vec<FileArg<'_>> = vec![("--grad-weights", &args.grad_weights)];
    for (flag, path) in [
        ("--grad-input", &args.grad_input),
        ("--grad-h0", &args.grad_h0),
        ("--grad-c0", &args.grad_c0),
    ] {
        if let Some(p) = path {
            outputs.push((flag, p));
        }
    }
    check_paths(&inputs, &outputs)?;

    // 2. The engine (refused before reading anything when it has no backward yet).
    let model = Model::load_with_prefix(&args.model, args.prefix.as_deref())
        .and_then(|m| m.with_batch_first(args.batch_first))
        .map_err(|e| CliError::in_arg("--model", &args.model, e))?;
    let mut options = EngineOptions::default();
    if let Some(n) = args.threads {
        options = options.with_threads(n.get());
    }
    let engine = model.trainer(args.engine, options)?;

    // 3. Every input, read and checked.
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
    let grad_output = read_f32("--grad-output", &args.grad_output, "grad_output")?;
    let optional = |flag, path: &Option<PathBuf>, what| -> CliResult<Option<Tensor<f32>>> {
        path.as_deref().map(|p| read_f32(flag, p, what)).transpose()
    };
    let grad_hn = optional("--grad-hn", &args.grad_hn, "grad_h_n")?;
    let grad_cn = optional("--grad-cn", &args.grad_cn, "grad_c_n")?;

    // 4. The forward pass, recording, then the backward (each validates its shapes first).
    let mut tape = TrainingTape::new();
    engine
        .forward_train(&input, state.as_ref(), lengths.as_deref(), &mut tape)
        .map_err(|e| attribute(e, args))?;
    let upstream = GradOutputs {
        grad_output: &grad_output,
        grad_h_n: grad_hn.as_ref(),
        grad_c_n: grad_cn.as_ref(),
    };
    let grads = engine
        .backward(&tape, &upstream)
        .map_err(|e| attribute(e, args))?;

    // 5. Encode every output, then stage and commit them all together.
    let weights = io::serialize_safetensors(grads.params(), model.prefix())
        .map_err(|e| CliError::in_arg("--grad-weights", &args.grad_weights, e))?;
    let mut encoded: Vec<(&'static str, &Path, Vec<u8>)> =
        vec![("--grad-weights", &args.grad_weights, weights)];
    let requested = [
        ("--grad-input", args.grad_input.as_ref(), &grads.grad_input),
        ("--grad-h0", args.grad_h0.as_ref(), &grads.grad_h0),
        ("--grad-c0", args.grad_c0.as_ref(), &grads.grad_c0),
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

/// Names the file a validation error of the forward or the backward is about.
fn attribute(err: LstmError, args: &GradArgs) -> CliError {
    let file: Option<(&str, &Path)> = match err.operand() {
        Some(Operand::Input) => Some(("--input", &args.input)),
        Some(Operand::H0) => args.h0.as_deref().map(|p| ("--h0", p)),
        Some(Operand::C0) => args.c0.as_deref().map(|p| ("--c0", p)),
        Some(Operand::Lengths) => args.lengths.as_deref().map(|p| ("--lengths", p)),
        Some(Operand::GradOutput) => Some(("--grad-output", &args.grad_output)),
        Some(Operand::GradHN) => args.grad_hn.as_deref().map(|p| ("--grad-hn", p)),
        Some(Operand::GradCN) => args.grad_cn.as_deref().map(|p| ("--grad-cn", p)),
        _ => None,
    };
    match file {
        Some((flag, path)) => CliError::in_arg(flag, path, err),
        None => err.into(),
    }
}
