//! `lstm grad`: one backward pass (BPTT) from `.npy` files to gradient files.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::Args;
use lstm::{io, EngineKind, EngineOptions, GradOutputs, Operand, Tensor, TrainingTape};

use crate::cli_common::{
    attribute, engine_parser, given, load_model, parse_threads, read_f32, stage_npy, Operands,
    SequenceInputs,
};
use crate::output::{check_paths, StagedOutputs};
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
    /// weights, fused kernels, GEMMs over all steps for the weight gradients), `parallel`
    /// (the same code, bit for bit, through the parallel runner) or `naive` (the reference).
    #[arg(
        long,
        value_name = "ENGINE",
        default_value_t = EngineKind::Simd,
        value_parser = engine_parser(),
    )]
    engine: EngineKind,

    /// Threads of the parallel engine (default: one per core). Its training forward and
    /// backward run on its pool, bit-identical to the SIMD engine at any thread count.
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
    let inputs = given(&[
        ("--model", Some(&args.model)),
        ("--input", Some(&args.input)),
        ("--grad-output", Some(&args.grad_output)),
        ("--grad-hn", args.grad_hn.as_ref()),
        ("--grad-cn", args.grad_cn.as_ref()),
        ("--h0", args.h0.as_ref()),
        ("--c0", args.c0.as_ref()),
        ("--lengths", args.lengths.as_ref()),
    ]);
    let outputs = given(&[
        ("--grad-weights", Some(&args.grad_weights)),
        ("--grad-input", args.grad_input.as_ref()),
        ("--grad-h0", args.grad_h0.as_ref()),
        ("--grad-c0", args.grad_c0.as_ref()),
    ]);
    check_paths(&inputs, &outputs)?;

    // 2. The training engine (`Model::trainer`: every engine kind trains).
    let model = load_model(&args.model, args.prefix.as_deref(), args.batch_first)?;
    let mut options = EngineOptions::default();
    if let Some(n) = args.threads {
        options = options.with_threads(n.get());
    }
    let engine = model.trainer(args.engine, options)?;

    // 3. Every input, read and checked.
    let arrays = SequenceInputs::read(
        &args.input,
        args.h0.as_deref(),
        args.c0.as_deref(),
        args.lengths.as_deref(),
    )?;
    let grad_output = read_f32("--grad-output", &args.grad_output, "grad_output")?;
    let optional = |flag, path: &Option<PathBuf>, what| -> CliResult<Option<Tensor<f32>>> {
        path.as_deref().map(|p| read_f32(flag, p, what)).transpose()
    };
    let grad_hn = optional("--grad-hn", &args.grad_hn, "grad_h_n")?;
    let grad_cn = optional("--grad-cn", &args.grad_cn, "grad_c_n")?;

    // 4. The forward pass, recording, then the backward (each validates its shapes first).
    let operands: &Operands<'_> = &[
        (Operand::Input, "--input", Some(args.input.as_path())),
        (Operand::H0, "--h0", args.h0.as_deref()),
        (Operand::C0, "--c0", args.c0.as_deref()),
        (Operand::Lengths, "--lengths", args.lengths.as_deref()),
        (
            Operand::GradOutput,
            "--grad-output",
            Some(args.grad_output.as_path()),
        ),
        (Operand::GradHN, "--grad-hn", args.grad_hn.as_deref()),
        (Operand::GradCN, "--grad-cn", args.grad_cn.as_deref()),
    ];
    let mut tape = TrainingTape::new();
    engine
        .forward_train(
            &arrays.input,
            arrays.state.as_ref(),
            arrays.lengths.as_deref(),
            &mut tape,
        )
        .map_err(|e| attribute(e, operands))?;
    let upstream = GradOutputs {
        grad_output: &grad_output,
        grad_h_n: grad_hn.as_ref(),
        grad_c_n: grad_cn.as_ref(),
    };
    let grads = engine
        .backward(&tape, &upstream)
        .map_err(|e| attribute(e, operands))?;

    // 5. Stage every output, then commit them all together.
    let weights = io::serialize_safetensors(grads.params(), model.prefix())
        .map_err(|e| CliError::in_arg("--grad-weights", &args.grad_weights, e))?;
    let mut staged = StagedOutputs::new();
    staged.stage("--grad-weights", &args.grad_weights, &weights)?;
    stage_npy(
        &mut staged,
        &[
            ("--grad-input", args.grad_input.as_ref(), &grads.grad_input),
            ("--grad-h0", args.grad_h0.as_ref(), &grads.grad_h0),
            ("--grad-c0", args.grad_c0.as_ref(), &grads.grad_c0),
        ],
    )?;
    staged.commit()
}
