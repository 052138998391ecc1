//! `lstm report`: how fast, compared with what, on which machine.
//!
//! Runs a grid of workloads ([`grid`]) through every engine, backend and thread count of this
//! build ([`measure`]) and, when Python has them, through PyTorch and onnxruntime ([`peers`]);
//! measures the machine's FMA peak and read bandwidth on the spot ([`machine`]) to bound each
//! shape; writes `REPORT.md` ([`markdown`]), SVG charts ([`charts`]) and the raw numbers as
//! `report.json`, all renamed into place together once complete.

mod charts;
mod grid;
mod machine;
mod markdown;
mod measure;
mod peers;

use std::io::{IsTerminal, Write};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use lstm::LstmWeights;
use serde::Serialize;

use self::grid::Shape;
use self::machine::{Bound, Limits, Machine};
use self::measure::{TimingPlan, Variant};
use self::peers::PeersInfo;
use crate::output::StagedOutputs;
use crate::run::parse_threads;
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

    /// Minimum timed seconds per measurement (default 1; 0.2 with --quick).
    #[arg(long, value_name = "S")]
    min_time: Option<f64>,

    /// The largest thread count for engines and peers that use threads (default: every
    /// core).
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    max_threads: Option<NonZeroUsize>,
}

/// One timed configuration, ours or a peer's, on one shape.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Measurement {
    pub(crate) shape: String,
    /// `forward` or `train` (forward + backward).
    pub(crate) mode: &'static str,
    /// `naive`, `simd`, … for ours; `torch`, `onnxruntime` for the peers.
    pub(crate) runner: String,
    pub(crate) backend: Option<String>,
    pub(crate) threads: usize,
    pub(crate) ours: bool,
    pub(crate) median_ms: Option<f64>,
    pub(crate) min_ms: Option<f64>,
    pub(crate) max_ms: Option<f64>,
    /// The quartiles of the samples: the spread the tables show.
    pub(crate) p25_ms: Option<f64>,
    pub(crate) p75_ms: Option<f64>,
    pub(crate) samples: usize,
    pub(crate) calls_per_sample: usize,
    /// FLOPs of the work (3× the forward's for a training step) per second, 10⁹.
    pub(crate) gflops: Option<f64>,
    /// The shape's hardware bound over this time (forward only): 1 is at the roof.
    pub(crate) bound_fraction: Option<f64>,
    /// Why there is no time (an error, or a skip).
    pub(crate) note: Option<String>,
}

impl Measurement {
    /// `simd/avx512`, `naive`, `torch`: the column name.
    pub(crate) fn label(&self) -> String {
        match &self.backend {
            Some(b) => format!("{}/{b}", self.runner),
            None => self.runner.clone(),
        }
    }
}

/// A shape with its costs and bounds.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ShapeInfo {
    #[serde(flatten)]
    pub(crate) shape: Shape,
    pub(crate) forward_flops: f64,
    pub(crate) train_flops: f64,
    /// Weight bytes a forward reads at least (recurrent weights every step, W_ih once).
    pub(crate) weight_traffic_bytes: f64,
    /// The recurrent weights of one layer and direction (re-read every step).
    pub(crate) recurrent_bytes: usize,
    pub(crate) bounds: Vec<Bound>,
}

/// Everything a report holds: `report.json`, and the source of `REPORT.md` and the charts.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) generated_unix: u64,
    pub(crate) quick: bool,
    pub(crate) grid: String,
    pub(crate) plan: TimingPlan,
    pub(crate) max_train_step_s: f64,
    pub(crate) thread_counts: Vec<usize>,
    pub(crate) machine: Machine,
    pub(crate) limits: Limits,
    pub(crate) peers: PeersInfo,
    pub(crate) shapes: Vec<ShapeInfo>,
    pub(crate) measurements: Vec<Measurement>,
    pub(crate) elapsed_s: f64,
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

/// Runs `lstm report`.
pub(crate) fn report(args: &ReportArgs) -> CliResult {
    let started = Instant::now();
    // 1. Everything that can fail on user input, before any work.
    let (shapes, grid_source) = match &args.grid {
        Some(path) => (grid::load(path)?, path.display().to_string()),
        None if args.quick => (grid::builtin(true), "built-in (quick subset)".to_string()),
        None => (grid::builtin(false), "built-in".to_string()),
    };
    let min_time = args.min_time.unwrap_or(if args.quick { 0.2 } else { 1.0 });
    if !(min_time.is_finite() && (0.0..=600.0).contains(&min_time)) {
        return Err(CliError::msg(
            "--min-time must be a number of seconds in 0..=600",
        ));
    }
    let plan = TimingPlan {
        min_time,
        min_samples: 5,
        max_time: 3.0 * min_time.max(0.01),
    };
    let max_train_step_s = if args.quick { 1.5 } else { 10.0 };
    prepare_out_dir(&args.out)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max_threads = args.max_threads.map_or(cores, |n| n.get());
    let thread_counts: Vec<usize> = (1..=max_threads).collect();
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; its timings mean little (use --release)");
    }

    // 2. What the peers can run (a quick probe), to size the progress bar.
    let peers_probe = if args.no_peers {
        Err("--no-peers".to_string())
    } else {
        peers::probe(&args.python)
    };
    let variants = measure::variants(max_threads);
    let train = !args.no_train;
    let train_shapes = shapes.iter().filter(|s| s.train && train).count();
    let trainers = measure::trainers(&variants)?;
    let limit_steps = lstm::Backend::all().len() * max_threads
        + machine::bandwidth_sizes(args.quick).len() * max_threads;
    let peer_steps = match &peers_probe {
        Ok(info) => {
            let per = 1 + usize::from(info.onnxruntime.is_some());
            thread_counts.len() * (shapes.len() * per + train_shapes)
        }
        Err(_) => 0,
    };
    let mut progress = Progress::new(
        limit_steps + variants.len() * shapes.len() + trainers * train_shapes + peer_steps,
    );

    // 3. The machine's limits.
    let mut machine = Machine::describe();
    let limits = machine::measure_limits(max_threads, args.quick, &mut |what| progress.step(what))?;
    let shape_infos: Vec<ShapeInfo> = shapes
        .iter()
        .map(|s| ShapeInfo {
            shape: s.clone(),
            forward_flops: s.forward_flops(),
            train_flops: s.train_flops(),
            weight_traffic_bytes: s.weight_traffic_bytes(),
            recurrent_bytes: s.recurrent_bytes(),
            bounds: thread_counts.iter().map(|&t| limits.bound(s, t)).collect(),
        })
        .collect();

    // 4. Ours.
    let mut measurements = Vec::new();
    for info in &shape_infos {
        run_ours(
            info,
            &variants,
            plan,
            train && info.shape.train,
            max_train_step_s,
            &mut progress,
            &mut measurements,
        )?;
    }

    // 5. The peers.
    let peers_info = match peers_probe {
        Ok(mut info) => {
            let mut on_event = |e: peers::Event| match e.event.as_str() {
                "start" => {
                    progress.step(&format!("{} {} {}T {}", e.peer, e.mode, e.threads, e.shape))
                }
                "result" => measurements.push(peer_measurement(&e, &shape_infos)),
                _ => {}
            };
            if let Err(err) = peers::run(
                &args.python,
                &shapes,
                &thread_counts,
                plan,
                train,
                &mut on_event,
            ) {
                info.notes.push(err.to_string());
                progress.note(&format!("warning: {err}"));
            }
            info
        }
        Err(reason) => {
            progress.note(&format!("peers skipped: {reason}"));
            PeersInfo {
                status: format!("skipped: {reason}"),
                ..PeersInfo::default()
            }
        }
    };
    progress.finish();
    machine.load_after = machine::load_average();

    // 6. Write everything, all or nothing.
    let report = Report {
        generated_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        quick: args.quick,
        grid: grid_source,
        plan,
        max_train_step_s,
        thread_counts,
        machine,
        limits,
        peers: peers_info,
        shapes: shape_infos,
        measurements,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    write_outputs(&report, &args.out)?;
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

/// Times every variant of ours on one shape: the forward, then the training step where the
/// engine has one and it is not too slow.
fn run_ours(
    info: &ShapeInfo,
    variants: &[Variant],
    plan: TimingPlan,
    train: bool,
    max_train_step_s: f64,
    progress: &mut Progress,
    out: &mut Vec<Measurement>,
) -> CliResult {
    let s = &info.shape;
    let config = s.config();
    let weights = LstmWeights::<f32>::random(config.clone(), 0x5eed)?;
    let x = measure::random_tensor([s.seq_len, s.batch, s.input_size], 42)?;
    let mut forward_ms = Vec::new();
    for v in variants {
        progress.step(&format!("{} {}T forward {}", v.label(), v.threads, s.name));
        let engine = measure::forward_engine(&weights, v)?;
        let mut work: measure::Work<'_> = Box::new(|| {
            std::hint::black_box(engine.forward(std::hint::black_box(&x), None, None)?);
            Ok(())
        });
        let m = ours_measurement(v, info, "forward", measure::time_calls(&mut work, plan));
        forward_ms.push(m.median_ms);
        out.push(m);
    }
    if !train {
        return Ok(());
    }
    let gy = measure::random_tensor([s.seq_len, s.batch, config.output_size()], 7)?;
    for (v, fwd) in variants.iter().zip(forward_ms) {
        let Some(mut step) = measure::train_step(&weights, v, &x, &gy)? else {
            continue;
        };
        progress.step(&format!("{} {}T train {}", v.label(), v.threads, s.name));
        // A training step costs about three forwards; skip what would take too long.
        let estimate = fwd.map_or(0.0, |ms| 3.0 * ms / 1e3);
        let m = if estimate > max_train_step_s {
            let mut m = ours_measurement(v, info, "train", Err(CliError::msg("")));
            m.note = Some(format!(
                "skipped: ~{estimate:.0} s per step (over {max_train_step_s} s)"
            ));
            m
        } else {
            ours_measurement(v, info, "train", measure::time_calls(&mut step, plan))
        };
        out.push(m);
    }
    Ok(())
}

fn ours_measurement(
    v: &Variant,
    info: &ShapeInfo,
    mode: &'static str,
    timing: CliResult<measure::Timing>,
) -> Measurement {
    let mut m = Measurement {
        shape: info.shape.name.clone(),
        mode,
        runner: v.engine.to_string(),
        backend: v.backend.map(|b| b.name().to_string()),
        threads: v.threads,
        ours: true,
        median_ms: None,
        min_ms: None,
        max_ms: None,
        p25_ms: None,
        p75_ms: None,
        samples: 0,
        calls_per_sample: 0,
        gflops: None,
        bound_fraction: None,
        note: None,
    };
    match timing {
        Ok(t) => {
            let med = t.median();
            m.median_ms = Some(med * 1e3);
            m.min_ms = t.samples.first().map(|v| v * 1e3);
            m.max_ms = t.samples.last().map(|v| v * 1e3);
            m.p25_ms = Some(t.quantile(0.25) * 1e3);
            m.p75_ms = Some(t.quantile(0.75) * 1e3);
            m.samples = t.samples.len();
            m.calls_per_sample = t.calls_per_sample;
            fill_rates(&mut m, info);
        }
        Err(e) => m.note = Some(format!("error: {e}")),
    }
    m
}

/// GFLOP/s and the fraction of the bound, from the median.
fn fill_rates(m: &mut Measurement, info: &ShapeInfo) {
    let Some(ms) = m.median_ms.filter(|ms| *ms > 0.0) else {
        return;
    };
    let flops = if m.mode == "train" {
        info.train_flops
    } else {
        info.forward_flops
    };
    m.gflops = Some(flops / (ms / 1e3) / 1e9);
    if m.mode == "forward" {
        if let Some(b) = info.bounds.iter().find(|b| b.threads == m.threads) {
            m.bound_fraction = Some(b.ms / ms);
        }
    }
}

fn peer_measurement(e: &peers::Event, shapes: &[ShapeInfo]) -> Measurement {
    let mut m = Measurement {
        shape: e.shape.clone(),
        mode: if e.mode == "train" {
            "train"
        } else {
            "forward"
        },
        runner: e.peer.clone(),
        backend: None,
        threads: e.threads,
        ours: false,
        median_ms: e.median_ms,
        min_ms: e.min_ms,
        max_ms: e.max_ms,
        p25_ms: e.p25_ms,
        p75_ms: e.p75_ms,
        samples: e.samples,
        calls_per_sample: e.calls_per_sample,
        gflops: None,
        bound_fraction: None,
        note: e.error.clone().map(|err| format!("error: {err}")),
    };
    if let Some(info) = shapes.iter().find(|s| s.shape.name == e.shape) {
        fill_rates(&mut m, info);
    }
    m
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

/// Renders and writes the four outputs, renamed into place together.
fn write_outputs(report: &Report, dir: &Path) -> CliResult {
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| CliError::msg(format!("cannot encode report.json: {e}")))?;
    let md = markdown::render(report);
    let speedup = charts::speedup_svg(report)?;
    let roofline = charts::roofline_svg(report)?;
    let mut staged = StagedOutputs::new();
    staged.stage("--out", &dir.join("report.json"), json.as_bytes())?;
    staged.stage("--out", &dir.join("REPORT.md"), md.as_bytes())?;
    staged.stage("--out", &dir.join("speedup.svg"), speedup.as_bytes())?;
    staged.stage("--out", &dir.join("roofline.svg"), roofline.as_bytes())?;
    staged.commit()
}
