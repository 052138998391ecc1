//! `lstm bench`: times one engine on one shape, with random weights and input.
//!
//! `--mode forward` (the default) times `forward`; `--mode train` times one training step,
//! `forward_train` then `backward` with a fixed random upstream gradient of the output, the
//! tape reused across calls (what a training loop does). GFLOP/s count the forward's FLOPs
//! (`LstmConfig::forward_flops`), times 3 for a training step (the backward's four GEMMs,
//! `dh·W_hh`, `dG·W_ih`, `dW_hh`, `dW_ih`, are twice the forward's two).
//!
//! Method: build the engine (packing is not timed), warm up, then take timed samples until
//! both a minimum count and a minimum total time are reached. A sample times enough back-to-back
//! calls to last at least ~2 ms, so that microsecond calls are not lost in timer noise; the
//! statistics are over per-call times of the samples. With `--json`, the last line of stdout is
//! one JSON object (scripts such as `compare.py` depend on its keys).

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use clap::Args;
use clap::ValueEnum;
use lstm::{
    Backend, EngineKind, GradOutputs, LstmBackward, LstmConfig, LstmEngine, LstmWeights,
    NaiveEngine, Precision, SimdEngine, Tensor, TrainingTape,
};

use crate::run::{engine_parser, parse_threads, precision_parser};
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

/// What one benchmark measured.
#[derive(Debug)]
pub(crate) struct BenchResult {
    pub(crate) engine: &'static str,
    pub(crate) backend: String,
    pub(crate) threads: usize,
    pub(crate) median_ms: f64,
    pub(crate) min_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) gflops: f64,
    pub(crate) samples: usize,
    pub(crate) calls_per_sample: usize,
}

/// Times `engine.forward` on `x` (see the module docs for the method).
pub(crate) fn time_forward(
    engine: &dyn LstmEngine<f32>,
    x: &Tensor<f32>,
    min_time: Duration,
) -> CliResult<(Vec<f64>, usize)> {
    time_calls(
        || {
            black_box(engine.forward(black_box(x), None, None)?);
            Ok(())
        },
        min_time,
    )
}

/// Times one training step of `engine` on `x`: `forward_train` into a reused tape, then
/// `backward` with the upstream gradient `gy`.
pub(crate) fn time_train(
    engine: &dyn LstmBackward<f32>,
    x: &Tensor<f32>,
    gy: &Tensor<f32>,
    min_time: Duration,
) -> CliResult<(Vec<f64>, usize)> {
    let mut tape = TrainingTape::new();
    time_calls(
        || {
            black_box(engine.forward_train(black_box(x), None, None, &mut tape)?);
            black_box(engine.backward(&tape, &GradOutputs::new(black_box(gy)))?);
            Ok(())
        },
        min_time,
    )
}

/// Per-call times of `run` over samples (see the module docs for the method).
fn time_calls(
    mut run: impl FnMut() -> CliResult<()>,
    min_time: Duration,
) -> CliResult<(Vec<f64>, usize)> {
    // Warm-up (caches, page faults, CPU frequency), and a first estimate of one call.
    let start = Instant::now();
    let mut warm = 0u32;
    while warm < 3 || (start.elapsed() < min_time / 10 && warm < 1000) {
        run()?;
        warm += 1;
    }
    let per_call = start.elapsed().as_secs_f64() / f64::from(warm);
    let calls = ((2e-3 / per_call.max(1e-9)).ceil() as usize).clamp(1, 100_000);
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 10 || (start.elapsed() < min_time && samples.len() < 10_000) {
        let t0 = Instant::now();
        for _ in 0..calls {
            run()?;
        }
        samples.push(t0.elapsed().as_secs_f64() / calls as f64);
    }
    Ok((samples, calls))
}

/// The median of `v` (sorted in place).
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Runs `lstm bench`.
pub(crate) fn bench(args: &BenchArgs) -> CliResult {
    let config = LstmConfig::new(args.input_size, args.hidden_size)
        .with_num_layers(args.num_layers)
        .with_bidirectional(args.bidirectional)
        .with_proj_size(args.proj_size);
    config.validate()?;
    let weights = LstmWeights::<f32>::random(config.clone(), 0x5eed)?;
    let n = lstm::engine::checked_numel(&[args.seq_len, args.batch, args.input_size])
        .ok_or_else(|| CliError::msg("the input size T·B·I overflows"))?;
    let mut rng = lstm::SplitMix64::new(42);
    let mut data = lstm::engine::try_filled_vec("input", n, 0.0f32)?;
    for v in &mut data {
        *v = rng.next_signed_unit() as f32;
    }
    let x = Tensor::new([args.seq_len, args.batch, args.input_size], data)?;
    // The training step's engine (built before `weights` moves into the forward's).
    let trainer = match args.mode {
        Mode::Forward => None,
        Mode::Train if args.precision != Precision::F32 => {
            return Err(CliError::msg(format!(
                "--mode train runs f32 only (asked for --precision {})",
                args.precision
            )))
        }
        Mode::Train => Some(train_engine(
            args.engine,
            args.backend.as_deref(),
            &weights,
        )?),
    };

    let mut options = lstm::EngineOptions::default().with_precision(args.precision);
    if let Some(name) = &args.backend {
        options = options.with_backend(name.parse::<Backend>()?);
    }
    let threads = match args.engine {
        EngineKind::Parallel => args.threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            |n| n.get(),
        ),
        _ => 1,
    };
    options = options.with_threads(threads);
    let backend = match args.engine {
        EngineKind::Naive => "scalar".to_string(),
        _ => options
            .backend
            .unwrap_or_else(|| Backend::detect_for(args.precision))
            .name()
            .to_string(),
    };
    let engine = lstm::Model::from_weights(weights).engine_with(args.engine, options)?;
    if !(args.min_time.is_finite() && args.min_time >= 0.0) {
        return Err(CliError::msg("--min-time must be a number of seconds >= 0"));
    }
    let min_time = Duration::from_secs_f64(args.min_time);
    let (mut samples, calls) = match &trainer {
        None => time_forward(engine.as_ref(), &x, min_time)?,
        Some(trainer) => {
            let out = [args.seq_len, args.batch, config.output_size()];
            let n = lstm::engine::checked_numel(&out)
                .ok_or_else(|| CliError::msg("the output size overflows"))?;
            let mut gy = lstm::engine::try_filled_vec("upstream gradient", n, 0.0f32)?;
            for v in &mut gy {
                *v = rng.next_signed_unit() as f32;
            }
            time_train(trainer.as_ref(), &x, &Tensor::new(out, gy)?, min_time)?
        }
    };
    let flops_per_call = match args.mode {
        Mode::Forward => 1.0,
        Mode::Train => 3.0,
    } * config.forward_flops(args.seq_len, args.batch);
    let med = median(&mut samples);
    let result = BenchResult {
        engine: engine.name(),
        backend,
        threads,
        median_ms: med * 1e3,
        min_ms: samples.first().copied().unwrap_or(f64::NAN) * 1e3,
        max_ms: samples.last().copied().unwrap_or(f64::NAN) * 1e3,
        gflops: flops_per_call / med / 1e9,
        samples: samples.len(),
        calls_per_sample: calls,
    };
    println!(
        "{} {} ({} {}, {} thread{}): T={} B={} I={} H={} L={}{}{}: median {:.4} ms (min {:.4}, max {:.4}; {} samples × {} calls), {:.1} GFLOP/s",
        result.engine,
        args.mode.name(),
        result.backend,
        args.precision,
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
        println!(
            "{{\"engine\":\"{}\",\"backend\":\"{}\",\"precision\":\"{}\",\"threads\":{},\"mode\":\"{}\",\"seq_len\":{},\"batch\":{},\"input_size\":{},\"hidden_size\":{},\"num_layers\":{},\"bidirectional\":{},\"proj_size\":{},\"median_ms\":{},\"min_ms\":{},\"max_ms\":{},\"gflops\":{},\"samples\":{},\"calls_per_sample\":{}}}",
            result.engine,
            result.backend,
            args.precision,
            result.threads,
            args.mode.name(),
            args.seq_len,
            args.batch,
            args.input_size,
            args.hidden_size,
            args.num_layers,
            args.bidirectional,
            args.proj_size,
            result.median_ms,
            result.min_ms,
            result.max_ms,
            result.gflops,
            result.samples,
            result.calls_per_sample,
        );
    }
    Ok(())
}

/// The engine that runs a training step (`forward_train` + `backward`) of `kind`.
fn train_engine(
    kind: EngineKind,
    backend: Option<&str>,
    weights: &LstmWeights<f32>,
) -> CliResult<Box<dyn LstmBackward<f32>>> {
    match kind {
        EngineKind::Simd => {
            let backend = match backend {
                Some(name) => name.parse::<Backend>()?,
                None => Backend::detect(),
            };
            Ok(Box::new(SimdEngine::with_backend(weights, backend)?))
        }
        EngineKind::Naive => Ok(Box::new(NaiveEngine::new(weights.clone())?)),
        other => Err(CliError::msg(format!(
            "--mode train: the {other} engine has no backward pass; use --engine simd or naive"
        ))),
    }
}
