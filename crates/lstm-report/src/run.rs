//! A whole report: the machine's limits, then every shape in interleaved rounds.
//!
//! For each shape and mode (forward, then the training step), each round times, at every
//! thread count, every configuration of ours and then each peer, one after the other; the
//! rounds repeat this [`ReportOptions::rounds`] times. A ratio (peer ÷ ours) is taken within a
//! round, between times measured seconds apart, and the report gives the median of the
//! per-round ratios with their range: a neighbour that slows the machine for a while slows
//! both sides of a ratio alike instead of skewing it.
//!
//! Each precision of [`ReportOptions::precisions`] has its columns (ours, and the peers that
//! run it) in the same rounds; a ratio pairs ours with a peer at the same precision. With a
//! reduced precision, every forward column of ours (but the naive engine, whose arithmetic is
//! the reference's) and torch's get their max abs error against float64 on the same weights
//! and input: ours against the naive engine in f64, torch against itself in float64.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use lstm::{EngineKind, LstmEngine, LstmWeights, NaiveEngine, Precision, Tensor};
use serde::Serialize;

use crate::grid::Shape;
use crate::machine::{self, Bound, Limits, Machine};
use crate::measure::{self, Variant};
use crate::peers::{self, PeerServer, PeersInfo, ScratchDir, PEERS};
use crate::timing::{self, median, Timing, TimingPlan};
use crate::{charts, markdown, ReportError, Result};

/// What to run.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// The workloads.
    pub shapes: Vec<Shape>,
    /// Where they come from (`built-in`, a file name), for the report's header.
    pub grid: String,
    /// A quick run (shorter machine probes; said in the report).
    pub quick: bool,
    /// How long each measurement of one round takes.
    pub plan: TimingPlan,
    /// Rounds per shape and mode (at least 3).
    pub rounds: usize,
    /// The largest thread count (engines that use threads, and the peers, run at
    /// `1..=max_threads`).
    pub max_threads: usize,
    /// Also time the training step (of shapes that ask for it).
    pub train: bool,
    /// Skip a training step of ours estimated (3 forwards) over this many seconds.
    pub max_train_step_s: f64,
    /// The Python interpreter with torch (and onnxruntime) for the peers; `None`: no peers.
    pub python: Option<String>,
    /// The precisions of the weights and products to measure, each once
    /// ([`measure::report_variants`]); f32's columns are the ones compared with every peer.
    pub precisions: Vec<Precision>,
}

impl ReportOptions {
    /// The defaults of `lstm report` for `shapes`: 3 rounds of 1/3 s per measurement, every
    /// core, training steps, peers through `python3`.
    pub fn new(shapes: Vec<Shape>, grid: impl Into<String>) -> Self {
        ReportOptions {
            shapes,
            grid: grid.into(),
            quick: false,
            plan: TimingPlan {
                min_time: 1.0 / 3.0,
                min_samples: 3,
                max_time: 1.0,
            },
            rounds: 3,
            max_threads: lstm::default_threads(),
            train: true,
            max_train_step_s: 10.0,
            python: Some("python3".to_string()),
            precisions: measure::default_precisions(),
        }
    }

    /// Whether a precision other than f32 is measured (then the errors against float64 are
    /// too).
    fn has_reduced_precision(&self) -> bool {
        self.precisions.iter().any(|&p| p != Precision::F32)
    }

    /// The thread counts `precision`'s columns run at: every one for f32, else 1 and
    /// `max_threads` (as [`measure::report_variants`]).
    fn thread_counts_for(&self, precision: Precision) -> Vec<usize> {
        if precision == Precision::F32 {
            return thread_counts(self);
        }
        let mut out = vec![1, self.max_threads];
        out.dedup();
        out
    }

    fn validate(&self) -> Result<()> {
        let p = &self.plan;
        let invalid = |what, reason: &str| ReportError::InvalidArgument {
            what,
            reason: reason.to_string(),
        };
        if !(p.min_time.is_finite() && (0.0..=600.0).contains(&p.min_time)) {
            return Err(invalid(
                "min_time",
                "must be a number of seconds in 0..=600",
            ));
        }
        if p.max_time.is_nan() || p.max_time <= 0.0 {
            return Err(invalid("max_time", "must be a positive number of seconds"));
        }
        if self.rounds < 3 {
            return Err(invalid("rounds", "must be at least 3"));
        }
        if self.max_threads == 0 {
            return Err(invalid("max_threads", "must be at least 1"));
        }
        if self.shapes.is_empty() {
            return Err(invalid("shapes", "the grid is empty"));
        }
        if self.precisions.is_empty() {
            return Err(invalid("precisions", "at least one precision is needed"));
        }
        for (k, p) in self.precisions.iter().enumerate() {
            if self.precisions[..k].contains(p) {
                return Err(invalid("precisions", &format!("{p} is listed twice")));
            }
        }
        Ok(())
    }
}

/// What [`run`] reports as it goes.
#[derive(Clone, Copy, Debug)]
pub enum Progress<'a> {
    /// The number of steps to come (sent first).
    Steps(usize),
    /// The next step begins.
    Step(&'a str),
    /// Something to tell the user (a skip, a warning).
    Note(&'a str),
}

/// One timed configuration, ours or a peer's, on one shape, over every round.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    /// The shape's name.
    pub shape: String,
    /// `forward` or `train` (forward + backward).
    pub mode: &'static str,
    /// `naive`, `simd`, … for ours; `torch`, `onnxruntime` for the peers.
    pub runner: String,
    /// The precision of the weights and products: `f32`, `bf16`.
    pub precision: String,
    /// Ours: the SIMD backend.
    pub backend: Option<String>,
    /// Threads.
    pub threads: usize,
    /// Ours, or a peer.
    pub ours: bool,
    /// The median per-call time over the samples of every round.
    pub median_ms: Option<f64>,
    /// The fastest sample.
    pub min_ms: Option<f64>,
    /// The slowest sample.
    pub max_ms: Option<f64>,
    /// The quartiles of the samples: the spread the tables show.
    pub p25_ms: Option<f64>,
    /// See `p25_ms`.
    pub p75_ms: Option<f64>,
    /// The median of each round, in round order (the ratios are taken between these).
    pub rounds_ms: Vec<f64>,
    /// Samples over every round.
    pub samples: usize,
    /// Back-to-back calls per sample (of the last round).
    pub calls_per_sample: usize,
    /// FLOPs of the work (3× the forward's for a training step) per second, 10⁹.
    pub gflops: Option<f64>,
    /// The shape's hardware bound over this time (forward only): 1 is at the roof.
    pub bound_fraction: Option<f64>,
    /// Why there is no time (an error, or a skip).
    pub note: Option<String>,
    /// The max abs error of this configuration's forward output against float64 on the same
    /// weights and input (measured with a reduced precision in the report; never for the
    /// naive engine, which computes the reference's arithmetic).
    pub max_abs_err: Option<f64>,
}

impl Measurement {
    /// `simd/avx512`, `naive`, `torch`, `simd/avx512bf16 bf16`, `torch bf16`: the column
    /// name (as [`Variant::label`] and [`peers::peer_label`]).
    pub fn label(&self) -> String {
        let name = match &self.backend {
            Some(b) => format!("{}/{b}", self.runner),
            None => self.runner.clone(),
        };
        if self.precision == Precision::F32.name() {
            name
        } else {
            format!("{name} {}", self.precision)
        }
    }

    fn empty(
        shape: &Shape,
        mode: &'static str,
        runner: String,
        threads: usize,
        precision: Precision,
    ) -> Self {
        Measurement {
            shape: shape.name.clone(),
            mode,
            runner,
            precision: precision.name().to_string(),
            backend: None,
            threads,
            ours: false,
            median_ms: None,
            min_ms: None,
            max_ms: None,
            p25_ms: None,
            p75_ms: None,
            rounds_ms: Vec::new(),
            samples: 0,
            calls_per_sample: 0,
            gflops: None,
            bound_fraction: None,
            note: None,
            max_abs_err: None,
        }
    }
}

/// A shape with its costs and bounds.
#[derive(Clone, Debug, Serialize)]
pub struct ShapeInfo {
    /// The shape.
    #[serde(flatten)]
    pub shape: Shape,
    /// FLOPs of one forward.
    pub forward_flops: f64,
    /// FLOPs of one training step.
    pub train_flops: f64,
    /// Weight bytes a forward reads at least (recurrent weights every step, W_ih once).
    pub weight_traffic_bytes: f64,
    /// The recurrent weights of one layer and direction (re-read every step).
    pub recurrent_bytes: usize,
    /// The bound at each thread count and precision.
    pub bounds: Vec<Bound>,
    /// The largest |output| of the float64 reference (with a reduced precision): the scale
    /// of the errors.
    pub max_abs_ref: Option<f64>,
}

/// The median of per-round ratios `a ÷ b` and their range.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RoundRatio {
    /// The median of the per-round ratios.
    pub median: f64,
    /// The smallest per-round ratio.
    pub min: f64,
    /// The largest per-round ratio.
    pub max: f64,
    /// Rounds with both times.
    pub rounds: usize,
}

impl RoundRatio {
    /// `a`'s time over `b`'s, round by round (how many times faster `b` is); `None` without
    /// a common round.
    pub fn between(a: &Measurement, b: &Measurement) -> Option<RoundRatio> {
        let mut ratios: Vec<f64> = a
            .rounds_ms
            .iter()
            .zip(&b.rounds_ms)
            .map(|(x, y)| x / y)
            .filter(|r| r.is_finite() && *r > 0.0)
            .collect();
        if ratios.is_empty() {
            return None;
        }
        let m = median(&mut ratios);
        Some(RoundRatio {
            median: m,
            min: ratios[0],
            max: ratios[ratios.len() - 1],
            rounds: ratios.len(),
        })
    }
}

/// A peer's time over one of ours, per round: the speed-up of ours (in `report.json`).
#[derive(Clone, Debug, Serialize)]
pub struct RatioRow {
    /// The shape.
    pub shape: String,
    /// `forward` or `train`.
    pub mode: &'static str,
    /// Threads of both.
    pub threads: usize,
    /// Our configuration's label.
    pub ours: String,
    /// The peer.
    pub peer: String,
    /// Peer time ÷ our time, per round.
    #[serde(flatten)]
    pub ratio: RoundRatio,
}

/// Everything a report holds: `report.json`, and the source of `REPORT.md` and the charts.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// When it was made.
    pub generated_unix: u64,
    /// A quick run.
    pub quick: bool,
    /// Where the grid came from.
    pub grid: String,
    /// The timing of each measurement in one round.
    pub plan: TimingPlan,
    /// Rounds per shape and mode.
    pub rounds: usize,
    /// Training steps estimated over this are skipped.
    pub max_train_step_s: f64,
    /// Thread counts of the tables.
    pub thread_counts: Vec<usize>,
    /// The precisions measured (`f32`, `bf16`).
    pub precisions: Vec<String>,
    /// The machine.
    pub machine: Machine,
    /// Its measured limits.
    pub limits: Limits,
    /// The peers' versions and status.
    pub peers: PeersInfo,
    /// The shapes, their costs and bounds.
    pub shapes: Vec<ShapeInfo>,
    /// Every measurement.
    pub measurements: Vec<Measurement>,
    /// Every (ours, peer) pair's per-round ratio.
    pub ratios: Vec<RatioRow>,
    /// Seconds the report took.
    pub elapsed_s: f64,
}

/// Every file of a report, rendered: `(file name, contents)` for `report.json`, `REPORT.md`,
/// `speedup.svg` and `roofline.svg`.
pub fn render(report: &Report) -> Result<Vec<(&'static str, String)>> {
    Ok(vec![
        ("report.json", serde_json::to_string_pretty(report)?),
        ("REPORT.md", markdown::render(report)),
        ("speedup.svg", charts::speedup_svg(report)?),
        ("roofline.svg", charts::roofline_svg(report)?),
    ])
}

/// Makes a report (see the module docs for the method).
pub fn run(options: &ReportOptions, progress: &mut dyn FnMut(Progress<'_>)) -> Result<Report> {
    let started = Instant::now();
    options.validate()?;
    let max_threads = options.max_threads;
    let thread_counts: Vec<usize> = (1..=max_threads).collect();

    // The peers (a quick start-up), to size the progress.
    let mut server = match &options.python {
        None => Err("not asked for (--no-peers)".to_string()),
        Some(python) => PeerServer::start(python),
    };
    let mut peers_info = match &server {
        Ok(s) => s.info().clone(),
        Err(reason) => {
            progress(Progress::Note(&format!("peers skipped: {reason}")));
            PeersInfo {
                status: format!("skipped: {reason}"),
                ..PeersInfo::default()
            }
        }
    };
    let variants = measure::report_variants(max_threads, &options.precisions);
    let mut steps = machine::limit_steps(max_threads, options.quick, &options.precisions);
    for s in &options.shapes {
        if options.has_reduced_precision() {
            steps += 1 + usize::from(server.is_ok());
        }
        for mode in modes(options, s) {
            let ours = variants
                .iter()
                .filter(|v| mode == "forward" || v.trains())
                .count();
            let mut peers = 0;
            if let Ok(server) = &server {
                for &p in &options.precisions {
                    peers +=
                        server.peers_for(mode, s, p).len() * options.thread_counts_for(p).len();
                }
            }
            steps += options.rounds * (ours + peers);
        }
    }
    progress(Progress::Steps(steps));

    // The machine's limits.
    let mut machine = Machine::describe();
    let limits = machine::measure_limits(
        max_threads,
        options.quick,
        &options.precisions,
        &mut |what| {
            progress(Progress::Step(what));
        },
    )?;
    let mut shapes: Vec<ShapeInfo> = options
        .shapes
        .iter()
        .map(|s| ShapeInfo {
            shape: s.clone(),
            forward_flops: s.forward_flops(),
            train_flops: s.train_flops(),
            weight_traffic_bytes: s.weight_traffic_bytes(),
            recurrent_bytes: s.recurrent_bytes(),
            bounds: options
                .precisions
                .iter()
                .flat_map(|&p| {
                    let limits = &limits;
                    thread_counts
                        .iter()
                        .map(move |&t| limits.bound_for(s, t, p))
                })
                .collect(),
            max_abs_ref: None,
        })
        .collect();

    // Every shape, in rounds.
    let mut measurements = Vec::new();
    for info in &mut shapes {
        let mut peers = server.as_mut().ok();
        let (measured, max_abs_ref) = measure_shape(
            options,
            info,
            &variants,
            &mut peers,
            &mut peers_info,
            progress,
        )?;
        info.max_abs_ref = max_abs_ref;
        if peers.is_none() && server.is_ok() {
            server = Err("stopped".to_string());
        }
        measurements.extend(measured);
    }
    machine.load_after = machine::load_average();
    let ratios = ratio_rows(&measurements);
    Ok(Report {
        generated_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        quick: options.quick,
        grid: options.grid.clone(),
        plan: options.plan,
        rounds: options.rounds,
        max_train_step_s: options.max_train_step_s,
        thread_counts,
        precisions: options
            .precisions
            .iter()
            .map(|p| p.name().to_string())
            .collect(),
        machine,
        limits,
        peers: peers_info,
        shapes,
        measurements,
        ratios,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// The modes a shape is measured in.
fn modes(options: &ReportOptions, shape: &Shape) -> Vec<&'static str> {
    if options.train && shape.train {
        vec!["forward", "train"]
    } else {
        vec!["forward"]
    }
}

/// One column's timings over the rounds.
struct Column {
    measurement: Measurement,
    samples: Vec<f64>,
}

impl Column {
    fn new(m: Measurement) -> Self {
        Column {
            measurement: m,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, timing: std::result::Result<Timing, String>) {
        match timing {
            Ok(t) => {
                self.measurement.rounds_ms.push(t.median() * 1e3);
                self.measurement.calls_per_sample = t.calls_per_sample;
                self.samples.extend(t.samples);
            }
            Err(e) => {
                if self.measurement.note.is_none() {
                    self.measurement.note = Some(format!("error: {e}"));
                }
            }
        }
    }

    /// The measurement with its statistics over every round, or its note alone when a round
    /// failed (a partial set of rounds would pair with the wrong rounds of the others).
    fn finish(mut self, info: &ShapeInfo) -> Measurement {
        let m = &mut self.measurement;
        if m.note.is_some() || self.samples.is_empty() {
            m.rounds_ms.clear();
            return self.measurement;
        }
        self.samples.sort_by(f64::total_cmp);
        let q = |p| Some(timing::quantile_sorted(&self.samples, p) * 1e3);
        m.median_ms = q(0.5);
        m.min_ms = q(0.0);
        m.max_ms = q(1.0);
        m.p25_ms = q(0.25);
        m.p75_ms = q(0.75);
        m.samples = self.samples.len();
        fill_rates(m, info);
        self.measurement
    }
}

/// Every configuration of ours and every peer on one shape, in rounds; `peers` becomes
/// `None` when the peers' script stops. Also gives the largest |output| of the float64
/// reference when the errors are measured.
fn measure_shape(
    options: &ReportOptions,
    info: &ShapeInfo,
    variants: &[Variant],
    peers: &mut Option<&mut PeerServer>,
    peers_info: &mut PeersInfo,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(Vec<Measurement>, Option<f64>)> {
    let s = &info.shape;
    let config = s.config();
    let weights = LstmWeights::<f32>::random(config.clone(), 0x5eed)?;
    let x = measure::random_tensor([s.seq_len, s.batch, s.input_size], 42)?;
    // With a reduced precision: the float64 reference on the same weights and input, and
    // torch's errors against its own.
    let reference = if options.has_reduced_precision() {
        progress(Progress::Step(&format!("float64 reference {}", s.name)));
        Some(f64_reference(&weights, &x)?)
    } else {
        None
    };
    let peer_errors = match (&reference, peers.as_deref_mut()) {
        (Some(_), Some(server)) => {
            progress(Progress::Step(&format!("torch accuracy {}", s.name)));
            match torch_errors(options, s, &weights, &x, server) {
                Ok(Ok(errors)) => Some(errors),
                Ok(Err(why)) => {
                    let note = format!("{}: torch's errors not measured: {why}", s.name);
                    progress(Progress::Note(&format!("warning: {note}")));
                    peers_info.notes.push(note);
                    None
                }
                Err(gone) => {
                    progress(Progress::Note(&format!("warning: {gone}")));
                    peers_info.notes.push(gone);
                    *peers = None;
                    None
                }
            }
        }
        _ => None,
    };
    let mut out = Vec::new();
    let mut forward_ms: Vec<Option<f64>> = Vec::new();
    for mode in modes(options, s) {
        let gy = match mode {
            "train" => Some(measure::random_tensor(
                [s.seq_len, s.batch, config.output_size()],
                7,
            )?),
            _ => None,
        };
        // Ours: one column per variant (engines built once, not timed).
        let mut ours: Vec<(Column, Option<Work>)> = Vec::new();
        for (k, v) in variants
            .iter()
            .enumerate()
            .filter(|(_, v)| mode == "forward" || v.trains())
        {
            let mut m = Measurement::empty(s, mode, v.engine.to_string(), v.threads, v.precision);
            m.ours = true;
            m.backend = v.backend.map(|b| b.name().to_string());
            // A training step costs about three forwards; skip what would take too long.
            let estimate = forward_ms
                .get(k)
                .copied()
                .flatten()
                .map(|ms| 3.0 * ms / 1e3);
            let work = match (mode, estimate) {
                ("train", Some(e)) if e > options.max_train_step_s => {
                    m.note = Some(format!(
                        "skipped: ~{e:.0} s per step (over {} s)",
                        options.max_train_step_s
                    ));
                    None
                }
                _ => match Work::new(v, &weights, gy.is_some()) {
                    Ok(w) => Some(w),
                    Err(e) => {
                        m.note = Some(format!("error: {e}"));
                        None
                    }
                },
            };
            if let (Some(Work::Forward(engine)), Some(reference)) = (&work, &reference) {
                if v.engine != EngineKind::Naive {
                    let y = engine.forward(&x, None, None)?.output;
                    m.max_abs_err = Some(max_abs_diff(y.data(), reference.data()));
                }
            }
            ours.push((Column::new(m), work));
        }
        let mut theirs: Vec<(Column, Precision)> = Vec::new();
        if let Some(server) = peers.as_deref() {
            for &p in &options.precisions {
                for t in options.thread_counts_for(p) {
                    for peer in server.peers_for(mode, s, p) {
                        let mut m = Measurement::empty(s, mode, peer.to_string(), t, p);
                        if mode == "forward" {
                            m.max_abs_err = peer_errors
                                .as_ref()
                                .and_then(|e| e.max_abs_err.get(p.name()).copied())
                                .filter(|_| peer == "torch");
                        }
                        theirs.push((Column::new(m), p));
                    }
                }
            }
        }
        for round in 1..=options.rounds {
            for t in thread_counts(options) {
                for (column, work) in ours.iter_mut().filter(|(c, _)| c.measurement.threads == t) {
                    let m = &column.measurement;
                    progress(Progress::Step(&format!(
                        "{} {}T {mode} {} (round {round}/{})",
                        m.label(),
                        t,
                        s.name,
                        options.rounds
                    )));
                    if let Some(work) = work {
                        let timing = work.time(&x, gy.as_ref(), options.plan);
                        column.add(timing.map_err(|e| e.to_string()));
                    }
                }
                for (column, precision) in theirs
                    .iter_mut()
                    .filter(|(c, _)| c.measurement.threads == t)
                {
                    let peer = column.measurement.runner.clone();
                    progress(Progress::Step(&format!(
                        "{} {t}T {mode} {} (round {round}/{})",
                        column.measurement.label(),
                        s.name,
                        options.rounds
                    )));
                    let Some(server) = peers.as_deref_mut() else {
                        continue;
                    };
                    match server.time(&peer, mode, s, t, *precision, options.plan) {
                        Ok(timing) => column.add(timing),
                        Err(gone) => {
                            progress(Progress::Note(&format!("warning: {gone}")));
                            peers_info.notes.push(gone.clone());
                            column.add(Err(gone));
                            *peers = None;
                        }
                    }
                }
            }
        }
        let finished: Vec<Measurement> = ours.into_iter().map(|(c, _)| c.finish(info)).collect();
        if mode == "forward" {
            forward_ms = finished.iter().map(|m| m.median_ms).collect();
        }
        out.extend(finished);
        out.extend(theirs.into_iter().map(|(c, _)| c.finish(info)));
    }
    let max_abs_ref = reference.map(|r| r.data().iter().fold(0.0, |m: f64, v| m.max(v.abs())));
    Ok((out, max_abs_ref))
}

/// The forward output of `weights` on `x` in float64 (the naive engine over the weights and
/// input widened exactly): the reference every error is measured against.
fn f64_reference(weights: &LstmWeights<f32>, x: &Tensor<f32>) -> Result<Tensor<f64>> {
    let engine = NaiveEngine::new(weights.cast::<f64>())?;
    Ok(engine
        .forward(&x.map(|&v| f64::from(v)), None, None)?
        .output)
}

/// The largest |a − b| (f64), NaN when any output is NaN.
fn max_abs_diff<T: Copy + Into<f64>>(a: &[T], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&a, &b)| (a.into() - b).abs())
        .fold(0.0, |m, d| {
            if d.is_nan() || m.is_nan() {
                f64::NAN
            } else {
                m.max(d)
            }
        })
}

/// torch's errors at the report's precisions on `weights` and `x` (written to a scratch
/// directory for the script). The inner error says why they could not be measured; the
/// outer one, that the script is gone.
fn torch_errors(
    options: &ReportOptions,
    shape: &Shape,
    weights: &LstmWeights<f32>,
    x: &Tensor<f32>,
    server: &mut PeerServer,
) -> std::result::Result<std::result::Result<peers::PeerErrors, String>, String> {
    let precisions: Vec<Precision> = options
        .precisions
        .iter()
        .copied()
        .filter(|&p| !server.peers_for("forward", shape, p).is_empty())
        .collect();
    let dir = match ScratchDir::new()
        .and_then(|dir| peers::write_accuracy_data(dir.path(), weights, x).map(|()| dir))
    {
        Ok(dir) => dir,
        Err(e) => return Ok(Err(format!("cannot write the weights for torch: {e}"))),
    };
    server.errors(shape, dir.path(), &precisions, options.max_threads)
}

fn thread_counts(options: &ReportOptions) -> Vec<usize> {
    (1..=options.max_threads).collect()
}

/// A built engine of ours, forward or training.
enum Work {
    Forward(lstm::DynEngine),
    Train(lstm::DynTrainer),
}

impl Work {
    fn new(v: &Variant, weights: &LstmWeights<f32>, train: bool) -> Result<Work> {
        Ok(if train {
            Work::Train(v.trainer(weights)?)
        } else {
            Work::Forward(v.forward_engine(weights)?)
        })
    }

    fn time(
        &self,
        x: &lstm::Tensor<f32>,
        gy: Option<&lstm::Tensor<f32>>,
        plan: TimingPlan,
    ) -> lstm::Result<Timing> {
        let work = match (self, gy) {
            (Work::Forward(engine), _) => measure::forward_work(&**engine, x),
            (Work::Train(engine), Some(gy)) => measure::train_work(&**engine, x, gy),
            (Work::Train(engine), None) => measure::train_work(&**engine, x, x),
        };
        timing::time_calls(work, plan)
    }
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
        if let Some(b) = info
            .bounds
            .iter()
            .find(|b| b.threads == m.threads && b.precision == m.precision)
        {
            m.bound_fraction = Some(b.ms / ms);
        }
    }
}

/// Every (ours, peer) pair at the same shape, mode and thread count.
fn ratio_rows(measurements: &[Measurement]) -> Vec<RatioRow> {
    let mut rows = Vec::new();
    for ours in measurements.iter().filter(|m| m.ours) {
        for peer in measurements.iter().filter(|m| {
            !m.ours
                && PEERS.contains(&m.runner.as_str())
                && m.shape == ours.shape
                && m.mode == ours.mode
                && m.threads == ours.threads
                && m.precision == ours.precision
        }) {
            if let Some(ratio) = RoundRatio::between(peer, ours) {
                rows.push(RatioRow {
                    shape: ours.shape.clone(),
                    mode: ours.mode,
                    threads: ours.threads,
                    ours: ours.label(),
                    peer: peer.label(),
                    ratio,
                });
            }
        }
    }
    rows
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn with_rounds(runner: &str, rounds: &[f64]) -> Measurement {
        let shape = crate::grid::builtin(true).remove(0);
        let mut m = Measurement::empty(&shape, "forward", runner.to_string(), 1, Precision::F32);
        m.rounds_ms = rounds.to_vec();
        m
    }

    #[test]
    fn ratios_are_taken_round_by_round() {
        // The machine got twice as slow in round 2: both sides slowed, the ratio did not.
        let ours = with_rounds("simd", &[1.0, 2.0, 1.0]);
        let torch = with_rounds("torch", &[3.0, 6.0, 3.3]);
        let r = RoundRatio::between(&torch, &ours).unwrap();
        assert_eq!((r.median, r.min, r.rounds), (3.0, 3.0, 3));
        assert!((r.max - 3.3).abs() < 1e-12);
        assert!(RoundRatio::between(&torch, &with_rounds("naive", &[])).is_none());
    }

    #[test]
    fn fewer_than_three_rounds_is_refused() {
        let mut o = ReportOptions::new(crate::grid::builtin(true), "test");
        o.rounds = 2;
        assert!(matches!(
            run(&o, &mut |_| {}),
            Err(ReportError::InvalidArgument { what: "rounds", .. })
        ));
    }
}
