//! A whole report: the machine's limits, then every shape in interleaved rounds.
//!
//! For each shape and mode (forward, then the training step), each round times, at every
//! thread count, every configuration of ours and then each peer, one after the other; the
//! rounds repeat this [`ReportOptions::rounds`] times. A ratio (peer ÷ ours) is taken within a
//! round, between times measured seconds apart, and the report gives the median of the
//! per-round ratios with their range: a neighbour that slows the machine for a while slows
//! both sides of a ratio alike instead of skewing it.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use lstm::LstmWeights;
use serde::Serialize;

use crate::grid::Shape;
use crate::machine::{self, Bound, Limits, Machine};
use crate::measure::{self, Variant};
use crate::peers::{PeerServer, PeersInfo, PEERS};
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
        }
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
}

impl Measurement {
    /// `simd/avx512`, `naive`, `torch`: the column name.
    pub fn label(&self) -> String {
        match &self.backend {
            Some(b) => format!("{}/{b}", self.runner),
            None => self.runner.clone(),
        }
    }

    fn empty(shape: &Shape, mode: &'static str, runner: String, threads: usize) -> Self {
        Measurement {
            shape: shape.name.clone(),
            mode,
            runner,
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
    /// The bound at each thread count.
    pub bounds: Vec<Bound>,
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
    let variants = measure::variants(max_threads);
    let limit_steps = lstm::Backend::all().len() * max_threads
        + machine::bandwidth_sizes(options.quick).len() * max_threads;
    let mut steps = limit_steps;
    for s in &options.shapes {
        for mode in modes(options, s) {
            let peers = server.as_ref().map_or(0, |p| p.peers_for(mode, s).len());
            steps += options.rounds * (variants.len() + peers * max_threads);
        }
    }
    progress(Progress::Steps(steps));

    // The machine's limits.
    let mut machine = Machine::describe();
    let limits = machine::measure_limits(max_threads, options.quick, &mut |what| {
        progress(Progress::Step(what));
    })?;
    let shapes: Vec<ShapeInfo> = options
        .shapes
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

    // Every shape, in rounds.
    let mut measurements = Vec::new();
    for info in &shapes {
        let mut peers = server.as_mut().ok();
        let measured = measure_shape(
            options,
            info,
            &variants,
            &mut peers,
            &mut peers_info,
            progress,
        )?;
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
/// `None` when the peers' script stops.
fn measure_shape(
    options: &ReportOptions,
    info: &ShapeInfo,
    variants: &[Variant],
    peers: &mut Option<&mut PeerServer>,
    peers_info: &mut PeersInfo,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Vec<Measurement>> {
    let s = &info.shape;
    let config = s.config();
    let weights = LstmWeights::<f32>::random(config.clone(), 0x5eed)?;
    let x = measure::random_tensor([s.seq_len, s.batch, s.input_size], 42)?;
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
        for (k, v) in variants.iter().enumerate() {
            let mut m = Measurement::empty(s, mode, v.engine.to_string(), v.threads);
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
            ours.push((Column::new(m), work));
        }
        let mut theirs: Vec<Column> = Vec::new();
        if let Some(server) = peers.as_deref() {
            for &t in &thread_counts(options) {
                for peer in server.peers_for(mode, s) {
                    theirs.push(Column::new(Measurement::empty(
                        s,
                        mode,
                        peer.to_string(),
                        t,
                    )));
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
                for column in theirs.iter_mut().filter(|c| c.measurement.threads == t) {
                    let peer = column.measurement.runner.clone();
                    progress(Progress::Step(&format!(
                        "{peer} {t}T {mode} {} (round {round}/{})",
                        s.name, options.rounds
                    )));
                    let Some(server) = peers.as_deref_mut() else {
                        continue;
                    };
                    match server.time(&peer, mode, s, t, options.plan) {
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
        out.extend(theirs.into_iter().map(|c| c.finish(info)));
    }
    Ok(out)
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
        if let Some(b) = info.bounds.iter().find(|b| b.threads == m.threads) {
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
        }) {
            if let Some(ratio) = RoundRatio::between(peer, ours) {
                rows.push(RatioRow {
                    shape: ours.shape.clone(),
                    mode: ours.mode,
                    threads: ours.threads,
                    ours: ours.label(),
                    peer: peer.runner.clone(),
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
        let mut m = Measurement::empty(&shape, "forward", runner.to_string(), 1);
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
