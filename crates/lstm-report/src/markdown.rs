//! `REPORT.md`: machine, versions, method, and the tables.

use std::fmt::Write;

use crate::machine::human_bytes;
use crate::peers::PEERS;
use crate::{Measurement, Report, RoundRatio};

/// The precision every peer runs and the main tables are about.
pub(crate) const F32: &str = "f32";

/// A measurement lookup over a report.
pub(crate) struct Table<'a> {
    report: &'a Report,
}

impl<'a> Table<'a> {
    pub(crate) fn new(report: &'a Report) -> Self {
        Table { report }
    }

    pub(crate) fn get(
        &self,
        shape: &str,
        mode: &str,
        label: &str,
        threads: usize,
    ) -> Option<&'a Measurement> {
        self.report.measurements.iter().find(|m| {
            m.shape == shape && m.mode == mode && m.threads == threads && m.label() == label
        })
    }

    /// The median, when there is one.
    pub(crate) fn ms(&self, shape: &str, mode: &str, label: &str, threads: usize) -> Option<f64> {
        self.get(shape, mode, label, threads)?.median_ms
    }

    /// Our column labels for `mode` at `threads` and `precision`, in measurement order.
    pub(crate) fn ours(&self, mode: &str, threads: usize, precision: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for m in &self.report.measurements {
            if m.ours
                && m.mode == mode
                && m.threads == threads
                && m.precision == precision
                && !out.contains(&m.label())
            {
                out.push(m.label());
            }
        }
        out
    }

    /// The peers' column labels with at least one time for `mode` at `precision` (any
    /// thread count), in [`PEERS`] order: `torch`, `torch bf16`.
    pub(crate) fn peers(&self, mode: &str, precision: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in PEERS {
            for m in &self.report.measurements {
                if !m.ours
                    && m.mode == mode
                    && m.runner == *p
                    && m.precision == precision
                    && m.median_ms.is_some()
                    && !out.contains(&m.label())
                {
                    out.push(m.label());
                }
            }
        }
        out
    }

    /// The faster peer's median on a shape at `precision`, and its label.
    pub(crate) fn faster_peer(
        &self,
        shape: &str,
        mode: &str,
        threads: usize,
        precision: &str,
    ) -> Option<(f64, String)> {
        self.peers(mode, precision)
            .into_iter()
            .filter_map(|p| Some((self.ms(shape, mode, &p, threads)?, p)))
            .min_by(|a, b| a.0.total_cmp(&b.0))
    }

    /// The max abs error against float64 of a label on a shape (forward, any thread count).
    pub(crate) fn error(&self, shape: &str, label: &str) -> Option<f64> {
        self.report
            .measurements
            .iter()
            .filter(|m| m.shape == shape && m.mode == "forward" && m.label() == label)
            .find_map(|m| m.max_abs_err)
    }

    /// `numerator`'s time over `denominator`'s, round by round (how many times faster
    /// `denominator` is).
    pub(crate) fn ratio(
        &self,
        shape: &str,
        mode: &str,
        threads: usize,
        numerator: &str,
        denominator: &str,
    ) -> Option<RoundRatio> {
        RoundRatio::between(
            self.get(shape, mode, numerator, threads)?,
            self.get(shape, mode, denominator, threads)?,
        )
    }

    /// Our best (label, median) on a shape at `precision`.
    pub(crate) fn best_ours(
        &self,
        shape: &str,
        mode: &str,
        threads: usize,
        precision: &str,
    ) -> Option<(String, f64)> {
        self.ours(mode, threads, precision)
            .into_iter()
            .filter_map(|l| Some((self.ms(shape, mode, &l, threads)?, l)))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(ms, l)| (l, ms))
    }
}

/// Three significant digits: `0.0123`, `1.23`, `123`, `1234`.
pub(crate) fn sig3(v: f64) -> String {
    if !v.is_finite() {
        return "—".to_string();
    }
    if v == 0.0 {
        return "0".to_string();
    }
    let digits = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    format!("{v:.digits$}")
}

/// Two significant digits (chart labels): `0.021`, `1.3`, `12`.
pub(crate) fn sig2(v: f64) -> String {
    if !v.is_finite() || v <= 0.0 {
        return sig3(v);
    }
    let digits = (1 - v.log10().floor() as i32).max(0) as usize;
    format!("{v:.digits$}")
}

/// The geometric mean of positive values.
pub(crate) fn geomean(v: &[f64]) -> Option<f64> {
    let v: Vec<f64> = v
        .iter()
        .copied()
        .filter(|x| *x > 0.0 && x.is_finite())
        .collect();
    if v.is_empty() {
        return None;
    }
    Some((v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp())
}

/// The short summary: who wins where, geometric means (also printed on stdout).
pub fn summary_lines(report: &Report) -> Vec<String> {
    let t = Table::new(report);
    let mut lines = Vec::new();
    for &threads in &report.thread_counts {
        let peer_times = report.shapes.iter().any(|s| {
            t.faster_peer(&s.shape.name, "forward", threads, F32)
                .is_some()
        });
        for label in t.ours("forward", threads, F32) {
            let ratios: Vec<f64> = report
                .shapes
                .iter()
                .filter_map(|s| {
                    let name = &s.shape.name;
                    let (_, peer) = t.faster_peer(name, "forward", threads, F32)?;
                    Some(t.ratio(name, "forward", threads, &peer, &label)?.median)
                })
                .collect();
            if let (true, Some(g)) = (peer_times, geomean(&ratios)) {
                let wins = ratios.iter().filter(|r| **r > 1.0).count();
                lines.push(format!(
                    "forward, {threads} thread(s): {label} is {}× the faster peer (geometric mean over {} shapes of the median per-round ratio; faster on {wins})",
                    sig3(g),
                    ratios.len()
                ));
            }
        }
    }
    for precision in report.precisions.iter().filter(|p| *p != F32) {
        reduced_summary_lines(&mut lines, report, &t, precision);
    }
    for &threads in &report.thread_counts {
        for label in t.ours("train", threads, F32) {
            let ratios: Vec<f64> = report
                .shapes
                .iter()
                .filter_map(|s| {
                    let name = &s.shape.name;
                    Some(t.ratio(name, "train", threads, "torch", &label)?.median)
                })
                .collect();
            if let Some(g) = geomean(&ratios) {
                lines.push(format!(
                    "training step, {threads} thread(s): {label} is {}× torch (geometric mean over {} shapes of the median per-round ratio)",
                    sig3(g),
                    ratios.len()
                ));
            }
        }
    }
    if report.peers.status != "ran" {
        lines.push(format!(
            "peers (torch, onnxruntime): {}",
            report.peers.status
        ));
    }
    lines
}

/// The summary of a reduced precision's columns: each against the peers at that precision,
/// against our best f32 at the same thread count, and its error against torch's.
fn reduced_summary_lines(lines: &mut Vec<String>, report: &Report, t: &Table<'_>, precision: &str) {
    for &threads in &report.thread_counts {
        for label in t.ours("forward", threads, precision) {
            let names = report.shapes.iter().map(|s| s.shape.name.as_str());
            let vs_peer: Vec<f64> = names
                .clone()
                .filter_map(|name| {
                    let (_, peer) = t.faster_peer(name, "forward", threads, precision)?;
                    Some(t.ratio(name, "forward", threads, &peer, &label)?.median)
                })
                .collect();
            let vs_f32: Vec<f64> = names
                .clone()
                .filter_map(|name| {
                    let (f32_label, _) = t.best_ours(name, "forward", threads, F32)?;
                    Some(
                        t.ratio(name, "forward", threads, &f32_label, &label)?
                            .median,
                    )
                })
                .collect();
            let mut parts = Vec::new();
            if let Some(g) = geomean(&vs_peer) {
                let wins = vs_peer.iter().filter(|r| **r > 1.0).count();
                parts.push(format!(
                    "{}× the faster {precision} peer (faster on {wins} of {})",
                    sig3(g),
                    vs_peer.len()
                ));
            }
            if let Some(g) = geomean(&vs_f32) {
                parts.push(format!(
                    "{}× our best f32 ({} shapes)",
                    sig3(g),
                    vs_f32.len()
                ));
            }
            if !parts.is_empty() {
                lines.push(format!(
                    "forward {precision}, {threads} thread(s): {label} is {} (geometric means of the median per-round ratios)",
                    parts.join(", ")
                ));
            }
        }
    }
    // Errors: ours against the peer's, shape by shape (any of our columns: they agree).
    let peer = format!("torch {precision}");
    let mut compared = 0;
    let mut not_worse = 0;
    for info in &report.shapes {
        let name = &info.shape.name;
        let ours = t
            .ours("forward", 1, precision)
            .first()
            .and_then(|l| t.error(name, l));
        if let (Some(a), Some(b)) = (ours, t.error(name, &peer)) {
            compared += 1;
            not_worse += usize::from(a <= b);
        }
    }
    if compared > 0 {
        lines.push(format!(
            "max abs error vs float64, {precision}: ours ≤ {peer}'s on {not_worse} of {compared} shapes (same weights and input)"
        ));
    }
}

/// `2026-05-01 12:34 UTC` from Unix seconds.
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

fn cell_ms(m: Option<&Measurement>) -> String {
    match m {
        Some(m) => match (m.median_ms, m.p25_ms, m.p75_ms) {
            (Some(med), Some(lo), Some(hi)) if m.samples > 1 => {
                format!("{} ±{:.0}%", sig3(med), (hi - lo) / 2.0 / med * 100.0)
            }
            (Some(med), ..) => format!("{} (1 call)", sig3(med)),
            _ => short_note(m),
        },
        None => "—".to_string(),
    }
}

fn short_note(m: &Measurement) -> String {
    match &m.note {
        Some(n) if n.starts_with("skipped") => n.split(" (").next().unwrap_or(n).to_string(),
        Some(_) => "error".to_string(),
        None => "—".to_string(),
    }
}

/// `**1.52×** (1.48–1.60)`: the median per-round ratio and its range.
fn cell_ratio(r: &RoundRatio) -> String {
    format!("**{}×** ({}–{})", sig3(r.median), sig3(r.min), sig3(r.max))
}

fn cell_rate(m: Option<&Measurement>) -> String {
    match m.and_then(|m| m.gflops.map(|g| (g, m.bound_fraction))) {
        Some((g, Some(f))) => format!("{} ({:.0}%)", sig3(g), f * 100.0),
        Some((g, None)) => sig3(g),
        None => "—".to_string(),
    }
}

/// The whole `REPORT.md`.
pub fn render(report: &Report) -> String {
    let t = Table::new(report);
    let mut s = String::new();
    let kind = if report.quick { "quick" } else { "full" };
    let _ = writeln!(s, "# lstm-kernels performance report\n");
    let _ = writeln!(
        s,
        "Made by `lstm report{}` ({kind} run, grid: {}) on {}{}, in {:.0} s. Raw numbers: \
         [`report.json`](report.json).\n",
        if report.quick { " --quick" } else { "" },
        report.grid,
        utc(report.generated_unix),
        report
            .machine
            .git_commit
            .as_ref()
            .map(|c| format!(" at commit `{c}`"))
            .unwrap_or_default(),
        report.elapsed_s
    );
    if !report.machine.optimized_build {
        let _ = writeln!(
            s,
            "**Debug build: these timings mean little. Run `cargo run --release -p lstm-cli -- report`.**\n"
        );
    }
    let _ = writeln!(s, "## Summary\n");
    for line in summary_lines(report) {
        let _ = writeln!(s, "- {line}");
    }
    let _ = writeln!(s, "- fastest per shape (forward):");
    for &threads in &report.thread_counts {
        let mut winners = Vec::new();
        for info in &report.shapes {
            let name = &info.shape.name;
            let mut all: Vec<(f64, String)> = t
                .ours("forward", threads, F32)
                .into_iter()
                .chain(PEERS.iter().map(|p| p.to_string()))
                .filter_map(|l| Some((t.ms(name, "forward", &l, threads)?, l)))
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((_, w)) = all.first() {
                winners.push(format!("{name}: {w}"));
            }
        }
        if !winners.is_empty() {
            let _ = writeln!(s, "  - {threads} thread(s): {}", winners.join(", "));
        }
    }
    let _ = writeln!(
        s,
        "\n![Speed-up over the faster peer](speedup.svg)\n\n![Roofline](roofline.svg)\n"
    );

    machine_section(&mut s, report);
    method_section(&mut s, report);

    // f32's tables (absent when the report measured reduced precisions alone).
    if report.precisions.iter().any(|p| p == F32) {
        for &threads in &report.thread_counts {
            forward_tables(&mut s, report, &t, threads);
        }
    }
    for precision in report.precisions.iter().filter(|p| *p != F32) {
        for &threads in &report.thread_counts {
            reduced_table(&mut s, report, &t, precision, threads);
        }
    }
    accuracy_table(&mut s, report, &t);
    if report
        .measurements
        .iter()
        .any(|m| m.mode == "train" && m.ours)
    {
        for &threads in &report.thread_counts {
            train_table(&mut s, report, &t, threads);
        }
    } else {
        let _ = writeln!(
            s,
            "## Training step\n\nNot measured (`--no-train`, or no shape asks for it).\n"
        );
    }
    grid_section(&mut s, report);
    let errors: Vec<&Measurement> = report
        .measurements
        .iter()
        .filter(|m| m.note.as_deref().is_some_and(|n| n.starts_with("error")))
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(s, "## Errors\n");
        for m in errors {
            let _ = writeln!(
                s,
                "- {} {} {}T {}: {}",
                m.label(),
                m.mode,
                m.threads,
                m.shape,
                m.note.as_deref().unwrap_or("")
            );
        }
        let _ = writeln!(s);
    }
    s
}

fn machine_section(s: &mut String, r: &Report) {
    let m = &r.machine;
    let _ = writeln!(s, "## Machine\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(
        s,
        "| CPU | {} ({} logical CPUs) |",
        m.cpu_model, m.logical_cpus
    );
    let _ = writeln!(s, "| caches (CPU 0) | {} |", m.caches_line());
    let _ = writeln!(s, "| OS | {} |", m.kernel);
    let _ = writeln!(s, "| rustc | {} |", m.rustc);
    let _ = writeln!(s, "| lstm-kernels | {} |", m.lstm_version);
    let peers = &r.peers;
    let or_skip = |v: &Option<String>| v.clone().unwrap_or_else(|| "not run".to_string());
    let _ = writeln!(
        s,
        "| Python | {} |",
        peers
            .python
            .clone()
            .unwrap_or_else(|| "not run".to_string())
    );
    let _ = writeln!(s, "| torch | {} |", or_skip(&peers.torch));
    let _ = writeln!(s, "| onnxruntime | {} |", or_skip(&peers.onnxruntime));
    let load = |l: Option<[f64; 3]>| {
        l.map_or("unknown".to_string(), |l| {
            format!("{:.2} / {:.2} / {:.2}", l[0], l[1], l[2])
        })
    };
    let _ = writeln!(
        s,
        "| load average (1/5/15 min) | before {}; after {} |",
        load(m.load_before),
        load(m.load_after)
    );
    if peers.status != "ran" {
        let _ = writeln!(s, "| peers | **{}** |", peers.status);
    }
    for n in &peers.notes {
        let _ = writeln!(s, "| peers note | {} |", n.replace('|', "/"));
    }
    let _ = writeln!(s);
    let threads = &r.thread_counts;
    let _ = writeln!(
        s,
        "### Measured limits\n\nfp32 FMA peak, GFLOP/s (independent FMA chains on every thread):\n"
    );
    let _ = writeln!(
        s,
        "| backend | {} |\n|---|{}",
        threads
            .iter()
            .map(|t| format!("{t} thread(s)"))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(threads.len())
    );
    let mut backends: Vec<&str> = Vec::new();
    for p in &r.limits.fma {
        if !backends.contains(&p.backend.as_str()) {
            backends.push(&p.backend);
        }
    }
    for b in backends {
        let cells: Vec<String> = threads
            .iter()
            .map(|&t| {
                r.limits
                    .fma
                    .iter()
                    .find(|p| p.backend == b && p.threads == t)
                    .map_or("—".to_string(), |p| sig3(p.gflops))
            })
            .collect();
        let _ = writeln!(s, "| {b} | {} |", cells.join(" | "));
    }
    dot_peaks(s, r);
    let _ = writeln!(
        s,
        "\nRead bandwidth, GB/s, by working set per thread ({} loads, all threads together):\n",
        r.limits.bandwidth_backend
    );
    let _ = writeln!(
        s,
        "| working set per thread | {} |\n|---|{}",
        threads
            .iter()
            .map(|t| format!("{t} thread(s)"))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(threads.len())
    );
    let mut sizes: Vec<usize> = r
        .limits
        .bandwidth
        .iter()
        .map(|b| b.bytes_per_thread)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    for size in sizes {
        let cells: Vec<String> = threads
            .iter()
            .map(|&t| {
                r.limits
                    .bandwidth
                    .iter()
                    .find(|b| b.bytes_per_thread == size && b.threads == t)
                    .map_or("—".to_string(), |b| sig3(b.gbs))
            })
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} |",
            human_bytes(size as f64),
            cells.join(" | ")
        );
    }
    let _ = writeln!(s);
}

/// The reduced precisions' dot-product peaks beside the best fp32 FMA peak.
fn dot_peaks(s: &mut String, r: &Report) {
    let threads = &r.thread_counts;
    let reduced: Vec<&String> = r.precisions.iter().filter(|p| *p != F32).collect();
    if reduced.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\nReduced-precision dot-product peak, GFLOP/s (independent chains of the instruction on \
         every thread; `vdpbf16ps` adds 2 bf16 products per f32 lane: 4 FLOPs), and its ratio \
         to the best fp32 FMA peak:\n"
    );
    let _ = writeln!(
        s,
        "| precision: instruction | {} |\n|---|{}",
        threads
            .iter()
            .map(|t| format!("{t} thread(s)"))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(threads.len())
    );
    for precision in reduced {
        let peaks: Vec<_> = r
            .limits
            .dot
            .iter()
            .filter(|p| &p.precision == precision)
            .collect();
        let Some(first) = peaks.first() else {
            let _ = writeln!(
                s,
                "| {precision}: not measured (no probe, or this CPU lacks the instruction: its bound uses the FMA peak) | {} |",
                vec!["—"; threads.len()].join(" | ")
            );
            continue;
        };
        let cells: Vec<String> = threads
            .iter()
            .map(|&t| {
                peaks
                    .iter()
                    .find(|p| p.threads == t)
                    .map_or("—".to_string(), |p| {
                        format!(
                            "{} ({}×)",
                            sig3(p.gflops),
                            sig3(p.gflops / r.limits.peak(t))
                        )
                    })
            })
            .collect();
        let _ = writeln!(
            s,
            "| {precision}: `{}` | {} |",
            first.instruction,
            cells.join(" | ")
        );
    }
}

fn method_section(s: &mut String, r: &Report) {
    let p = &r.plan;
    let _ = writeln!(s, "## Method\n");
    let _ = writeln!(
        s,
        "- **Ours**: every engine of this build (`EngineKind::ALL`), the SIMD engine on every \
         backend this CPU has, engines that use threads at 1..={} threads; random weights \
         (PyTorch's init range) and input in [-1, 1], built once (packing is not timed). \
         Forward: `engine.forward(x)` with zero initial state. Training step: \
         `forward_train` then `backward` from a random upstream gradient of the output, for \
         engines with a backward pass (`LstmBackward`).",
        r.thread_counts.last().copied().unwrap_or(1)
    );
    let _ = writeln!(
        s,
        "- **Peers** (`crates/lstm-report/src/peers_bench.py`, one Python process kept \
         running): PyTorch `nn.LSTM(...).eval()` under `torch.inference_mode()` (its default \
         oneDNN path; no oneDNN for `proj_size`); onnxruntime, CPUExecutionProvider, one ONNX \
         `LSTM` node per layer, `intra_op_num_threads` = the thread count (no projection \
         support, so no column for shapes with one); training: `y = m(x); y.backward(g)` in \
         train mode. `torch.set_num_threads` = the thread count."
    );
    for precision in r.precisions.iter().filter(|p| *p != F32) {
        let known = lstm::Precision::ALL
            .iter()
            .copied()
            .find(|p| p.name() == precision);
        let peer = match known {
            Some(lstm::Precision::Bf16) => {
                "PyTorch's bf16 path, `model.bfloat16()` on `x.bfloat16()` under \
                 `torch.inference_mode()`, at the same thread counts"
            }
            _ => "no peer path measured",
        };
        let _ = writeln!(
            s,
            "- **{precision}** (forward only): ours with `EngineOptions::with_precision` \
             (`--precision {precision}`): the SIMD engine on its best {precision} backend at 1 \
             thread and the parallel engine at {} threads; {peer}; in the same rounds as the \
             f32 columns. Its bound counts {} byte(s) per weight and the peak of its \
             dot-product instruction (the FMA peak without one). **Errors**: on each shape's \
             weights and input (the same for every column: `lstm report` hands torch its \
             weights), the max abs error of the forward output against float64: ours against \
             the naive engine in f64, torch against itself in float64.",
            r.thread_counts.last().copied().unwrap_or(1),
            known.map_or(4.0, crate::machine::weight_bytes)
        );
    }
    let _ = writeln!(
        s,
        "- **Interleaved rounds**: per shape and mode, each of {} rounds times, at every \
         thread count, every configuration of ours and then each peer, one after the other. \
         A ratio is taken within a round (peer time ÷ our time, seconds apart), and the tables \
         give the median of the per-round ratios with their range (min–max): load that comes \
         and goes slows both sides of a ratio alike.",
        r.rounds
    );
    let _ = writeln!(
        s,
        "- **Timing** of one measurement in one round, the same for all (`lstm_report::timing`, \
         as `lstm bench`): warm-up (≥ 1 call and {:.2} s), then samples of back-to-back calls \
         lasting ≥ 2 ms each, until ≥ {} samples and ≥ {:.2} s, or {:.2} s; a call slower \
         than that is timed once after one warm-up call (\"1 call\"). Times are the median \
         per call over the samples of every round, ± half their interquartile range in % of \
         the median (min, max and each round's median are in `report.json`). Training steps \
         estimated over {} s (3 forwards) are skipped.",
        p.min_time / 10.0,
        p.min_samples,
        p.min_time,
        p.max_time,
        r.max_train_step_s
    );
    let _ = writeln!(
        s,
        "- **FLOPs**: Σ over layers and directions of 8·T·B·H·(I_layer + H_out) (+ 2·T·B·P·H \
         with a projection); a training step counts 3× the forward."
    );
    let _ = writeln!(
        s,
        "- **Bound** on N threads = max(FLOPs / FMA peak on N threads, bytes / bandwidth), \
         where bytes = the recurrent weights (`W_hh`, 16·H·H_out bytes per layer and \
         direction) re-read every step, plus `W_ih` read once; the bandwidth is the one \
         measured at a working set of one `W_hh` split over the N threads (interpolated \
         log-log). \"% of bound\" = bound / measured time: 100% is the machine's limit."
    );
    let _ = writeln!(
        s,
        "- **Noise**: the machine may be shared (see the load average). A wide ratio range \
         says the load changed within a shape's rounds; the median is still taken between \
         times measured together.\n"
    );
}

fn header(s: &mut String, first: &str, cols: &[String], last: &[&str]) {
    let all: Vec<String> = std::iter::once(first.to_string())
        .chain(cols.iter().cloned())
        .chain(last.iter().map(|l| l.to_string()))
        .collect();
    let _ = writeln!(s, "| {} |", all.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(all.len()));
}

fn forward_tables(s: &mut String, r: &Report, t: &Table<'_>, threads: usize) {
    let ours = t.ours("forward", threads, F32);
    let peers = t.peers("forward", F32);
    let _ = writeln!(s, "## Forward pass, {threads} thread(s)\n");
    if ours.is_empty() {
        let _ = writeln!(
            s,
            "No engine of this build runs on {threads} threads yet; the peers alone:\n"
        );
        if peers.is_empty() {
            return;
        }
    }
    let mut cols: Vec<String> = ours.clone();
    cols.extend(peers.iter().cloned());
    let _ = writeln!(
        s,
        "Median ms per forward (± half the interquartile range); the last column is the \
         median of the per-round ratios (their range):\n"
    );
    header(s, "shape", &cols, &["bound ms", "best ours ÷ faster peer"]);
    for info in &r.shapes {
        let name = &info.shape.name;
        let mut row = vec![format!("{name}")];
        for c in &cols {
            row.push(cell_ms(t.get(name, "forward", c, threads)));
        }
        let bound = info
            .bounds
            .iter()
            .find(|b| b.threads == threads && b.precision == F32)
            .map_or("—".to_string(), |b| {
                format!(
                    "{} ({})",
                    sig3(b.ms),
                    if b.limited_by == "compute" {
                        "FMA"
                    } else {
                        "mem"
                    }
                )
            });
        row.push(bound);
        let ratio = t
            .best_ours(name, "forward", threads, F32)
            .zip(t.faster_peer(name, "forward", threads, F32))
            .and_then(|((label, _), (_, peer))| {
                let r = t.ratio(name, "forward", threads, &peer, &label)?;
                Some(format!("{} ({label} vs {peer})", cell_ratio(&r)))
            })
            .unwrap_or_else(|| "—".to_string());
        row.push(ratio);
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    let _ = writeln!(s, "\nGFLOP/s (% of the bound):\n");
    header(s, "shape", &cols, &[]);
    for info in &r.shapes {
        let name = &info.shape.name;
        let mut row = vec![name.clone()];
        for c in &cols {
            row.push(cell_rate(t.get(name, "forward", c, threads)));
        }
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    let _ = writeln!(s);
}

/// One reduced precision's forward table at `threads`: ours and the peers at that precision,
/// beside our best f32 measured in the same rounds.
fn reduced_table(s: &mut String, r: &Report, t: &Table<'_>, precision: &str, threads: usize) {
    let ours = t.ours("forward", threads, precision);
    if ours.is_empty() {
        return;
    }
    let peers = t.peers("forward", precision);
    let _ = writeln!(
        s,
        "## Forward pass, {precision}, {threads} thread(s)\n\nMedian ms per forward (± half the \
         interquartile range) with {precision} weights, beside our best f32 from the same rounds; \
         the ratio columns are medians of the per-round ratios (their range): how many times \
         faster our best {precision} column is.\n"
    );
    let mut cols: Vec<String> = ours.clone();
    cols.extend(peers.iter().cloned());
    header(
        s,
        "shape",
        &cols,
        &[
            "best ours f32",
            "bound ms",
            "best ours ÷ faster peer",
            "best ours ÷ best ours f32",
        ],
    );
    for info in &r.shapes {
        let name = &info.shape.name;
        let mut row = vec![name.clone()];
        for c in &cols {
            row.push(cell_ms(t.get(name, "forward", c, threads)));
        }
        let best_f32 = t.best_ours(name, "forward", threads, F32);
        row.push(best_f32.as_ref().map_or("—".to_string(), |(label, _)| {
            format!(
                "{} ({label})",
                cell_ms(t.get(name, "forward", label, threads))
            )
        }));
        row.push(
            info.bounds
                .iter()
                .find(|b| b.threads == threads && b.precision == precision)
                .map_or("—".to_string(), |b| {
                    format!("{} ({})", sig3(b.ms), limit_name(r, b))
                }),
        );
        let best = t.best_ours(name, "forward", threads, precision);
        let vs_peer = best
            .as_ref()
            .zip(t.faster_peer(name, "forward", threads, precision))
            .and_then(|((label, _), (_, peer))| {
                let ratio = t.ratio(name, "forward", threads, &peer, label)?;
                Some(format!("{} ({label} vs {peer})", cell_ratio(&ratio)))
            });
        row.push(vs_peer.unwrap_or_else(|| "—".to_string()));
        let vs_f32 =
            best.as_ref()
                .zip(best_f32.as_ref())
                .and_then(|((label, _), (f32_label, _))| {
                    let ratio = t.ratio(name, "forward", threads, f32_label, label)?;
                    Some(cell_ratio(&ratio))
                });
        row.push(vs_f32.unwrap_or_else(|| "—".to_string()));
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    let _ = writeln!(s);
}

/// What limits a bound: `mem`, `FMA`, or `dot` (a reduced precision's dot-product peak).
fn limit_name(r: &Report, b: &crate::machine::Bound) -> &'static str {
    if b.limited_by != "compute" {
        "mem"
    } else if r
        .limits
        .dot
        .iter()
        .any(|p| p.precision == b.precision && p.threads == b.threads)
    {
        "dot"
    } else {
        "FMA"
    }
}

/// The max abs error against float64 of every column that has one, per shape.
fn accuracy_table(s: &mut String, r: &Report, t: &Table<'_>) {
    let mut cols: Vec<String> = Vec::new();
    for ours in [true, false] {
        for m in &r.measurements {
            if m.ours == ours && m.max_abs_err.is_some() && !cols.contains(&m.label()) {
                cols.push(m.label());
            }
        }
    }
    if cols.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "## Accuracy: max abs error of the forward output against float64\n\nOn each shape's \
         weights and input, the same for every column: ours against the naive engine in f64, \
         torch against torch in float64 (the naive engine evaluates the reference's arithmetic \
         and has no column). The last column is the scale: the largest |output|.\n"
    );
    header(s, "shape", &cols, &["max abs output"]);
    for info in &r.shapes {
        let name = &info.shape.name;
        let mut row = vec![name.clone()];
        for c in &cols {
            row.push(
                t.error(name, c)
                    .map_or("—".to_string(), |e| format!("{e:.2e}")),
            );
        }
        row.push(info.max_abs_ref.map_or("—".to_string(), sig3));
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    let _ = writeln!(s);
}

fn train_table(s: &mut String, r: &Report, t: &Table<'_>, threads: usize) {
    let ours = t.ours("train", threads, F32);
    let has_torch = t.peers("train", F32).iter().any(|p| p == "torch");
    if ours.is_empty() && !has_torch {
        return;
    }
    let _ = writeln!(
        s,
        "## Training step (forward + backward), {threads} thread(s)\n\nMedian ms per step \
         (± half the interquartile range); GFLOP/s counts 3× the forward's FLOPs; the last column is \
         the median of the per-round ratios (their range).\n"
    );
    let mut cols = ours.clone();
    if has_torch {
        cols.push("torch".to_string());
    }
    header(s, "shape", &cols, &["best ours ÷ torch"]);
    for info in r.shapes.iter().filter(|i| i.shape.train) {
        let name = &info.shape.name;
        let mut row = vec![name.clone()];
        for c in &cols {
            let m = t.get(name, "train", c, threads);
            let mut cell = cell_ms(m);
            if let Some(g) = m.and_then(|m| m.gflops) {
                let _ = write!(cell, " · {} GF/s", sig3(g));
            }
            row.push(cell);
        }
        let ratio = t
            .best_ours(name, "train", threads, F32)
            .and_then(|(label, _)| {
                let r = t.ratio(name, "train", threads, "torch", &label)?;
                Some(format!("{} ({label})", cell_ratio(&r)))
            })
            .unwrap_or_else(|| "—".to_string());
        row.push(ratio);
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    let _ = writeln!(s);
}

fn grid_section(s: &mut String, r: &Report) {
    let _ = writeln!(s, "## The grid and its bounds\n");
    let mut cols: Vec<String> = [
        "T",
        "B",
        "I",
        "H",
        "layers",
        "dirs",
        "GFLOP",
        "W_hh (one layer·dir)",
        "weight bytes read",
        "FLOP/byte",
    ]
    .iter()
    .map(|c| c.to_string())
    .collect();
    for b in r.shapes.first().map_or(&[][..], |i| &i.bounds[..]) {
        cols.push(if b.precision == F32 {
            format!("bound {}T ms (limit)", b.threads)
        } else {
            format!("bound {} {}T ms (limit)", b.precision, b.threads)
        });
    }
    header(s, "shape", &cols, &[]);
    for info in &r.shapes {
        let sh = &info.shape;
        let mut row = vec![
            sh.name.clone(),
            sh.seq_len.to_string(),
            sh.batch.to_string(),
            sh.input_size.to_string(),
            format!(
                "{}{}",
                sh.hidden_size,
                if sh.proj_size > 0 {
                    format!(" (P={})", sh.proj_size)
                } else {
                    String::new()
                }
            ),
            sh.num_layers.to_string(),
            if sh.bidirectional { "2" } else { "1" }.to_string(),
            sig3(info.forward_flops / 1e9),
            human_bytes(info.recurrent_bytes as f64),
            human_bytes(info.weight_traffic_bytes),
            sig3(info.forward_flops / info.weight_traffic_bytes),
        ];
        for b in &info.bounds {
            row.push(format!(
                "{} ({}, {} GB/s)",
                sig3(b.ms),
                limit_name(r, b),
                sig3(b.bandwidth_gbs)
            ));
        }
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    let _ = writeln!(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_format() {
        assert_eq!(sig3(0.012345), "0.0123");
        assert_eq!(sig3(1.2345), "1.23");
        assert_eq!(sig3(123.45), "123");
        assert_eq!(sig3(12345.6), "12346");
        assert_eq!(
            (sig2(0.0213), sig2(1.26), sig2(12.4)),
            ("0.021".into(), "1.3".into(), "12".into())
        );
        assert_eq!(geomean(&[2.0, 8.0]), Some(4.0));
        assert_eq!(geomean(&[]), None);
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400 + 3661), "2000-02-29 01:01 UTC");
    }
}
