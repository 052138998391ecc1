//! `REPORT.md`: machine, versions, method, and the tables.

use std::fmt::Write;

use crate::machine::human_bytes;
use crate::peers::PEERS;
use crate::{Measurement, Report, RoundRatio};

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

    /// Our column labels for `mode` at `threads`, in measurement order.
    pub(crate) fn ours(&self, mode: &str, threads: usize) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for m in &self.report.measurements {
            if m.ours && m.mode == mode && m.threads == threads && !out.contains(&m.label()) {
                out.push(m.label());
            }
        }
        out
    }

    /// The peers with at least one time for `mode` (any thread count).
    pub(crate) fn peers(&self, mode: &str) -> Vec<&'static str> {
        PEERS
            .iter()
            .copied()
            .filter(|p| {
                self.report
                    .measurements
                    .iter()
                    .any(|m| !m.ours && m.mode == mode && m.runner == *p && m.median_ms.is_some())
            })
            .collect()
    }

    /// The faster peer's median on a shape, and its name.
    pub(crate) fn faster_peer(
        &self,
        shape: &str,
        mode: &str,
        threads: usize,
    ) -> Option<(f64, &'static str)> {
        PEERS
            .iter()
            .filter_map(|p| Some((self.ms(shape, mode, p, threads)?, *p)))
            .min_by(|a, b| a.0.total_cmp(&b.0))
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

    /// Our best (label, median) on a shape.
    pub(crate) fn best_ours(
        &self,
        shape: &str,
        mode: &str,
        threads: usize,
    ) -> Option<(String, f64)> {
        self.ours(mode, threads)
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
        let peer_times = report
            .shapes
            .iter()
            .any(|s| t.faster_peer(&s.shape.name, "forward", threads).is_some());
        for label in t.ours("forward", threads) {
            let ratios: Vec<f64> = report
                .shapes
                .iter()
                .filter_map(|s| {
                    let name = &s.shape.name;
                    let (_, peer) = t.faster_peer(name, "forward", threads)?;
                    Some(t.ratio(name, "forward", threads, peer, &label)?.median)
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
    for &threads in &report.thread_counts {
        for label in t.ours("train", threads) {
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
                .ours("forward", threads)
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

    for &threads in &report.thread_counts {
        forward_tables(&mut s, report, &t, threads);
    }
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
    let ours = t.ours("forward", threads);
    let peers = t.peers("forward");
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
    cols.extend(peers.iter().map(|p| p.to_string()));
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
        let bound =
            info.bounds
                .iter()
                .find(|b| b.threads == threads)
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
            .best_ours(name, "forward", threads)
            .zip(t.faster_peer(name, "forward", threads))
            .and_then(|((label, _), (_, peer))| {
                let r = t.ratio(name, "forward", threads, peer, &label)?;
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

fn train_table(s: &mut String, r: &Report, t: &Table<'_>, threads: usize) {
    let ours = t.ours("train", threads);
    let has_torch = t.peers("train").contains(&"torch");
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
            .best_ours(name, "train", threads)
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
    for &threads in &r.thread_counts {
        cols.push(format!("bound {threads}T ms (limit)"));
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
                "{} ({} {} GB/s)",
                sig3(b.ms),
                if b.limited_by == "compute" {
                    "FMA,"
                } else {
                    "mem,"
                },
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
