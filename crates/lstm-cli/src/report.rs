//! `lstm report`: the arguments and the progress line; the report itself is the
//! `lstm-report` library's ([`lstm_report::run`], [`lstm_report::render`]), and its files
//! are renamed into place together once complete.

use std::io::{IsTerminal, Write};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use lstm::Precision;
use lstm_report::{grid, markdown, measure, ReportOptions, TimingPlan};

use crate::cli_common::{parse_threads, precision_parser};
use crate::output::StagedOutputs;
use crate::{CliError, CliResult};

/// Arguments of `lstm report`.
#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// A TOML file of shapes to run instead of the built-in grid: `[[shape]]` tables with
    /// name, seq_len, batch, input_size, hidden_size and optionally num_layers,
    /// bidirectional, proj_size, train (see docs/report.md).
    #[arg(long, value_name = "FILE")]
    grid: Option<PathBuf>,

    /// A one-minute report: four cheap shapes of the built-in grid (every shape of --grid)
    /// and shorter timings.
    #[arg(long)]
    quick: bool,

    /// The directory to write REPORT.md, report.json and the SVG charts to (created if
    /// missing).
    #[arg(long, value_name = "DIR", default_value = "report")]
    out: PathBuf,

    /// Do not run PyTorch and onnxruntime (the report says they were skipped).
    #[arg(long)]
    no_peers: bool,

    /// The Python interpreter that has torch (and onnxruntime) for the peers.
    #[arg(long, value_name = "PATH", default_value = "python3")]
    python: String,

    /// Skip the training-step (forward + backward) table.
    #[arg(long)]
    no_train: bool,

    /// Minimum timed seconds per measurement, shared among its rounds (default 1; 0.2 with
    /// --quick).
    #[arg(long, value_name = "S")]
    min_time: Option<f64>,

    /// Interleaved rounds per shape (at least 3): each round times every configuration of
    /// ours and then each peer; ratios are medians over the rounds.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = parse_rounds)]
    rounds: usize,

    /// The largest thread count for engines and peers that use threads (default: every
    /// core).
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    max_threads: Option<NonZeroUsize>,

    /// The precisions of the weights and products to measure, comma-separated: f32, bf16,
    /// int8. A reduced precision adds forward columns (ours; for bf16 also PyTorch's
    /// `model.bfloat16()` path) and each column's max abs error against float64 (default:
    /// f32, plus each reduced precision this CPU has a backend of its own for: bf16 with
    /// AVX512-BF16, int8 with AVX512-VNNI).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = precision_parser())]
    precision: Vec<Precision>,
}

/// Progress on stderr: one rewritten line on a terminal, else one line per step.
struct Progress {
    total: usize,
    done: usize,
    start: Instant,
    tty: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        Progress {
            total,
            done: 0,
            start: Instant::now(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Announces the next step (counting the previous one as done).
    fn step(&mut self, what: &str) {
        let elapsed = self.start.elapsed().as_secs_f64();
        let left = if self.done == 0 {
            String::new()
        } else {
            let rest = self.total.saturating_sub(self.done) as f64;
            format!(", ~{} left", clock(elapsed / self.done as f64 * rest))
        };
        let width = 24;
        let filled = (self.done * width)
            .checked_div(self.total)
            .unwrap_or(0)
            .min(width);
        let bar = format!("{}{}", "#".repeat(filled), ".".repeat(width - filled));
        let line = format!(
            "[{bar}] {}/{} {what} ({} elapsed{left})",
            self.done + 1,
            self.total.max(self.done + 1),
            clock(elapsed)
        );
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
        self.done += 1;
    }

    /// A note that stays on screen.
    fn note(&self, text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            writeln!(err, "\r\x1b[2K{text}")
        } else {
            writeln!(err, "{text}")
        };
    }

    fn finish(&self) {
        if self.tty {
            let _ = writeln!(std::io::stderr().lock());
        }
    }
}

/// `1:05`, `0:09`.
fn clock(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

/// `--rounds`: a whole number of at least 3.
fn parse_rounds(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 3 => Ok(n),
        Ok(_) => Err("at least 3 rounds are needed for a median and a spread".to_string()),
        Err(_) => Err(format!("`{s}` is not a whole number")),
    }
}

/// Runs `lstm report`.
pub(crate) fn report(args: &ReportArgs) -> CliResult {
    // 1. Everything that can fail on user input, before any work.
    let (shapes, grid_source) = match &args.grid {
        Some(path) => (
            grid::load(path).map_err(|e| CliError::msg(format!("--grid {e}")))?,
            path.display().to_string(),
        ),
        None if args.quick => (grid::builtin(true), "built-in (quick subset)".to_string()),
        None => (grid::builtin(false), "built-in".to_string()),
    };
    let min_time = args.min_time.unwrap_or(if args.quick { 0.2 } else { 1.0 });
    if !(min_time.is_finite() && (0.0..=600.0).contains(&min_time)) {
        return Err(CliError::msg(
            "--min-time must be a number of seconds in 0..=600",
        ));
    }
    let mut precisions = Vec::new();
    for &p in &args.precision {
        if !precisions.contains(&p) {
            precisions.push(p);
        }
    }
    if precisions.is_empty() {
        precisions = measure::default_precisions();
    }
    let rounds = args.rounds;
    // Each measurement's time is shared among its rounds.
    let per_round = min_time / rounds as f64;
    let options = ReportOptions {
        quick: args.quick,
        plan: TimingPlan {
            min_time: per_round,
            min_samples: 3,
            max_time: 3.0 * per_round.max(0.01),
        },
        rounds,
        max_threads: args
            .max_threads
            .map_or_else(lstm::default_threads, |n| n.get()),
        train: !args.no_train,
        max_train_step_s: if args.quick { 1.5 } else { 10.0 },
        python: (!args.no_peers).then(|| args.python.clone()),
        precisions,
        ..ReportOptions::new(shapes, grid_source)
    };
    prepare_out_dir(&args.out)?;
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; its timings mean little (use --release)");
    }

    // 2. The measurements.
    let mut progress = Progress::new(0);
    let report = lstm_report::run(&options, &mut |p| match p {
        lstm_report::Progress::Steps(n) => progress.total = n,
        lstm_report::Progress::Step(what) => progress.step(what),
        lstm_report::Progress::Note(text) => progress.note(text),
    })
    .map_err(|e| CliError::msg(e.to_string()))?;
    progress.finish();

    // 3. Write everything, all or nothing.
    let files = lstm_report::render(&report).map_err(|e| CliError::msg(e.to_string()))?;
    let mut staged = StagedOutputs::new();
    for (name, text) in &files {
        staged.stage("--out", &args.out.join(name), text.as_bytes())?;
    }
    staged.commit()?;
    for line in markdown::summary_lines(&report) {
        println!("{line}");
    }
    println!(
        "wrote {} (REPORT.md, report.json, speedup.svg, roofline.svg) in {}",
        args.out.display(),
        clock(report.elapsed_s)
    );
    Ok(())
}

/// Creates the output directory (and its parents) when missing; an existing non-directory
/// is an error.
fn prepare_out_dir(dir: &Path) -> CliResult {
    if dir.as_os_str().is_empty() {
        return Err(CliError::msg("--out: empty path"));
    }
    if dir.exists() && !dir.is_dir() {
        return Err(CliError::msg(format!(
            "--out {}: not a directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::msg(format!("--out {}: cannot create it: {e}", dir.display())))
}
