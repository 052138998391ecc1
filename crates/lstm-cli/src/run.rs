//! `lstm run`: one forward pass from `.npy` files to `.npy` files.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::Args;
use lstm::{EngineKind, Operand, Precision};

use crate::cli_common::{
    attribute, engine_parser, given, load_model, parse_threads, precision_parser, stage_npy,
    Operands, SequenceInputs,
};
use crate::output::{check_paths, StagedOutputs};
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

    /// The engine that runs the model (default: parallel, on every core); each runs ONNX's
    /// cell options.
    #[arg(long, value_name = "ENGINE", value_parser = engine_parser())]
    engine: Option<EngineKind>,

    /// ONNX models: the LSTM node to run (its name, or `path/NAME`; the first node of a
    /// multi-layer chain runs the chain). Needed only when the model holds several.
    #[arg(long, value_name = "NAME")]
    node: Option<String>,

    /// ONNX models: a value (f32/f64 `.npy`) for a graph input the LSTM's weights come from
    /// (ONNX's own node tests feed W, R, B, P as inputs); repeatable.
    #[arg(long, value_name = "NAME=FILE.npy")]
    bind: Vec<String>,

    /// Worker threads (at least 1) of the parallel engine (default: one per core); the naive
    /// and simd engines run on one.
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    threads: Option<NonZeroUsize>,

    /// Precision of the weights and products: f32 (default); bf16 (weights rounded to bf16
    /// once, bf16 products with f32 accumulation); or int8 (weights quantized per row once,
    /// inputs and h per row and step where the CPU has VNNI, exact integer sums scaled back to
    /// f32). bf16 and int8: simd and parallel engines only.
    #[arg(
        long,
        value_name = "PRECISION",
        default_value_t = Precision::F32,
        value_parser = precision_parser(),
    )]
    precision: Precision,
}

/// `lstm run` on an ONNX model: ONNX's shapes and `sequence_lens`.
mod onnx;

/// Runs `lstm run`.
pub(crate) fn run(args: &RunArgs) -> CliResult {
    if let Some(result) = onnx::run_if_onnx(args) {
        return result;
    }
    if args.node.is_some() || !args.bind.is_empty() {
        return Err(CliError::msg(
            "--node and --bind apply to ONNX models; this model is a safetensors state_dict (use --prefix)",
        ));
    }
    // 1. Paths, before any work: outputs in existing directories, distinct, not inputs.
    let inputs = given(&[
        ("--model", Some(&args.model)),
        ("--input", Some(&args.input)),
        ("--h0", args.h0.as_ref()),
        ("--c0", args.c0.as_ref()),
        ("--lengths", args.lengths.as_ref()),
    ]);
    let outputs = given(&[
        ("--output", Some(&args.output)),
        ("--hn", args.hn.as_ref()),
        ("--cn", args.cn.as_ref()),
    ]);
    check_paths(&inputs, &outputs)?;

    // 2. Every input, read and checked.
    let model = load_model(&args.model, args.prefix.as_deref(), args.batch_first)?;
    let arrays = SequenceInputs::read(
        &args.input,
        args.h0.as_deref(),
        args.c0.as_deref(),
        args.lengths.as_deref(),
    )?;

    // 3. The forward pass (which validates every shape and length before computing).
    let mut options = lstm::EngineOptions::default().with_precision(args.precision);
    if let Some(n) = args.threads {
        options = options.with_threads(n.get());
    }
    let engine = model.engine_with(args.engine.unwrap_or_default(), options)?;
    // The engine holds its own (packed) copy of the weights.
    drop(model);
    let operands: &Operands<'_> = &[
        (Operand::Input, "--input", Some(&args.input)),
        (Operand::H0, "--h0", args.h0.as_deref()),
        (Operand::C0, "--c0", args.c0.as_deref()),
        (Operand::Lengths, "--lengths", args.lengths.as_deref()),
    ];
    let mut out = engine
        .forward(
            &arrays.input,
            arrays.state.as_ref(),
            arrays.lengths.as_deref(),
        )
        .map_err(|e| attribute(e, operands))?;
    // The input and the engine (with its scratch) are no longer needed: their memory goes
    // before the outputs are written.
    drop(arrays);
    drop(engine);
    if let Some(n) = args.total_length {
        out.output = lstm::pad_to_total_length(out.output, n, args.batch_first)
            .map_err(|e| CliError::msg(format!("--total-length {n}: {e}")))?;
    }

    // 4. Stage every output (streamed from the tensors), then commit them all together.
    let mut staged = StagedOutputs::new();
    stage_npy(
        &mut staged,
        &[
            ("--output", Some(&args.output), &out.output),
            ("--hn", args.hn.as_ref(), &out.h_n),
            ("--cn", args.cn.as_ref(), &out.c_n),
        ],
    )?;
    staged.commit()
}
