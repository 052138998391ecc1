//! `lstm bench`: times one engine on one shape, with random weights and input.
//!
//! `--mode forward` (the default) times `forward`; `--mode train` times one training step,
//! `forward_train` then `backward` with a fixed random upstream gradient of the output, the
//! tape reused across calls (what a training loop does). GFLOP/s count the forward's FLOPs
//! (`LstmConfig::forward_flops`), times 3 for a training step (the backward's four GEMMs,
//! `dh·W_hh`, `dG·W_ih`, `dW_hh`, `dW_ih`, are twice the forward's two).
//!
//! Method: build the engine (packing is not timed), then time it with
//! [`lstm_report::timing::time_calls`] (warm-up, samples of calls lasting ~2 ms, at least 10
//! samples and `--min-time` seconds). With `--json`, the last line of stdout is one JSON
//! object (scripts such as `compare.py` depend on its keys).

use std::num::NonZeroUsize;

use clap::Args;
use clap::ValueEnum;
use lstm::{Backend, EngineKind, LstmConfig, LstmWeights, Precision};
use lstm_report::measure::{self, Variant};
use lstm_report::timing::{time_calls, TimingPlan};
use serde::Serialize;

use crate::cli_common::{engine_parser, parse_threads, precision_parser};
use crate::{CliError, CliResult};

/// What `lstm bench` times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// `forward` (inference).
    #[default]
    Forward,
    /// A training step: `forward_train` + `backward`.
    Train,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Forward => "forward",
            Mode::Train => "train",
        }
    }
}

/// Arguments of `lstm bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// What to time: `forward`, or `train` (forward_train + backward with a random upstream
    /// gradient).
    #[arg(long, value_enum, default_value_t = Mode::Forward)]
    mode: Mode,

    /// The engine to time.
    #[arg(
        long,
        value_name = "ENGINE",
        default_value_t = EngineKind::default(),
        value_parser = engine_parser(),
    )]
    engine: EngineKind,

    /// Pin the SIMD engine's instruction set (portable, avx2, avx512); default: the best this
    /// CPU has.
    #[arg(long, value_name = "BACKEND")]
    backend: Option<String>,

    /// Sequence length T.
    #[arg(long, value_name = "T", value_parser = parse_positive)]
    seq_len: usize,

    /// Batch size B.
    #[arg(long, value_name = "B", value_parser = parse_positive)]
    batch: usize,

    /// Input features I.
    #[arg(long, value_name = "I", value_parser = parse_positive)]
    input_size: usize,

    /// Hidden size H.
    #[arg(long, value_name = "H", value_parser = parse_positive)]
    hidden_size: usize,

    /// Stacked layers.
    #[arg(long, value_name = "L", default_value_t = 1, value_parser = parse_positive)]
    num_layers: usize,

    /// Bidirectional LSTM.
    #[arg(long)]
    bidirectional: bool,

    /// Projection size P (0: none).
    #[arg(long, value_name = "P", default_value_t = 0)]
    proj_size: usize,

    /// Threads of the parallel engine (default: one per core); the simd and naive engines run
    /// on one.
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    threads: Option<NonZeroUsize>,

    /// Precision of the weights and products (f32, bf16); forward only.
    #[arg(
        long,
        value_name = "PRECISION",
        default_value_t = Precision::F32,
        value_parser = precision_parser(),
    )]
    precision: Precision,

    /// Minimum total time of the timed samples, in seconds.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    min_time: f64,

    /// Print one JSON object as the last line (for scripts).
    #[arg(long)]
    json: bool,
}

/// `--seq-len` and the other sizes: a whole number of at least 1.
fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a whole number")),
    }
}

/// What one benchmark measured: the `--json` line.
#[derive(Debug, Serialize)]
struct BenchResult {
    engine: &'static str,
    backend: &'static str,
    precision: &'static str,
    threads: usize,
    mode: &'static str,
    seq_len: usize,
    batch: usize,
    input_size: usize,
    hidden_size: usize,
    num_layers: usize,
    bidirectional: bool,
    proj_size: usize,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    gflops: f64,
    samples: usize,
    calls_per_sample: usize,
}

/// Runs `lstm bench`.
pub(crate) fn bench(args: &BenchArgs) -> CliResult {
    let config = LstmConfig::new(args.input_size, args.hidden_size)
        .with_num_layers(args.num_layers)
        .with_bidirectional(args.bidirectional)
        .with_proj_size(args.proj_size);
    config.validate()?;
    if !(args.min_time.is_finite() && args.min_time >= 0.0) {
        return Err(CliError::msg("--min-time must be a number of seconds >= 0"));
    }
    if args.mode == Mode::Train && args.precision != Precision::F32 {
        return Err(CliError::msg(format!(
            "--mode train runs f32 only (asked for --precision {})",
            args.precision
        )));
    }
    let weights = LstmWeights::<f32>::random(config.clone(), 0x5eed)?;
    let variant = Variant {
        precision: args.precision,
        engine: args.engine,
        backend: match &args.backend {
            Some(name) => Some(name.parse::<Backend>()?),
            None => None,
        },
        threads: if measure::uses_threads(args.engine) {
            args.threads.map_or_else(lstm::default_threads, |n| n.get())
        } else {
            1
        },
    };
    let report_err = |e: lstm_report::ReportError| CliError::msg(e.to_string());
    let x = measure::random_tensor([args.seq_len, args.batch, args.input_size], 42)
        .map_err(report_err)?;
    let plan = TimingPlan {
        min_time: args.min_time,
        min_samples: 10,
        max_time: f64::INFINITY,
    };
    let timing = match args.mode {
        Mode::Forward => {
            let engine = variant.forward_engine(&weights).map_err(report_err)?;
            time_calls(measure::forward_work(engine.as_ref(), &x), plan)?
        }
        Mode::Train => {
            let trainer = variant.trainer(&weights).map_err(|e| match e {
                lstm_report::ReportError::Unsupported(why) => {
                    CliError::msg(format!("--mode train: {why}"))
                }
                other => report_err(other),
            })?;
            let out = [args.seq_len, args.batch, config.output_size()];
            let gy = measure::random_tensor(out, 7).map_err(report_err)?;
            time_calls(measure::train_work(trainer.as_ref(), &x, &gy), plan)?
        }
    };
    let flops_per_call = match args.mode {
        Mode::Forward => 1.0,
        Mode::Train => 3.0,
    } * config.forward_flops(args.seq_len, args.batch);
    let med = timing.median();
    let result = BenchResult {
        engine: args.engine.name(),
        backend: variant.backend_name(),
        precision: args.precision.name(),
        threads: variant.threads,
        mode: args.mode.name(),
        seq_len: args.seq_len,
        batch: args.batch,
        input_size: args.input_size,
        hidden_size: args.hidden_size,
        num_layers: args.num_layers,
        bidirectional: args.bidirectional,
        proj_size: args.proj_size,
        median_ms: med * 1e3,
        min_ms: timing.quantile(0.0) * 1e3,
        max_ms: timing.quantile(1.0) * 1e3,
        gflops: flops_per_call / med / 1e9,
        samples: timing.samples.len(),
        calls_per_sample: timing.calls_per_sample,
    };
    println!(
        "{} {} ({} {}, {} thread{}): T={} B={} I={} H={} L={}{}{}: median {:.4} ms (min {:.4}, max {:.4}; {} samples × {} calls), {:.1} GFLOP/s",
        result.engine,
        result.mode,
        result.precision,
        result.backend,
        result.threads,
        if result.threads == 1 { "" } else { "s" },
        args.seq_len,
        args.batch,
        args.input_size,
        args.hidden_size,
        args.num_layers,
        if args.bidirectional { " bidirectional" } else { "" },
        if args.proj_size > 0 { format!(" P={}", args.proj_size) } else { String::new() },
        result.median_ms,
        result.min_ms,
        result.max_ms,
        result.samples,
        result.calls_per_sample,
        result.gflops,
    );
    if args.json {
        let line = serde_json::to_string(&result)
            .map_err(|e| CliError::msg(format!("cannot encode the result as JSON: {e}")))?;
        println!("{line}");
    }
    Ok(())
}
