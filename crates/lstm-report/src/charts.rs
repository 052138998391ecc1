//! The SVG charts, drawn with `plotters` (SVG backend only, no font or bitmap dependencies):
//!
//! - `speedup.svg`: per shape, one bar per engine configuration of ours: how many times
//!   faster than the faster peer at the same precision and thread count, the median of the
//!   per-round ratios (log scale; above 1 we win). Without peers, the speed-up over the naive
//!   engine.
//! - `roofline.svg`: GFLOP/s against arithmetic intensity (FLOPs per weight byte, at each
//!   column's bytes per weight), with the measured FMA peaks, the reduced precisions'
//!   dot-product peaks and bandwidth roofs, one point per shape and runner.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::markdown::{Table, F32};
use crate::peers::PEERS;
use crate::{Report, ReportError, Result};

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 640;

/// A fixed colour per runner label, so every chart and run reads the same.
fn colour(label: &str, k: usize) -> RGBColor {
    match label {
        "torch bf16" => RGBColor(255, 152, 150),
        l if l.starts_with("parallel") && l.ends_with(" bf16") => RGBColor(140, 86, 75),
        l if l.ends_with(" bf16") => RGBColor(255, 127, 14),
        "torch" => RGBColor(214, 39, 40),
        "onnxruntime" => RGBColor(148, 103, 189),
        "naive" => RGBColor(127, 127, 127),
        l if l.ends_with("avx512") => RGBColor(31, 119, 180),
        l if l.ends_with("avx2") => RGBColor(23, 190, 207),
        l if l.ends_with("portable") => RGBColor(44, 160, 44),
        _ => [
            RGBColor(255, 127, 14),
            RGBColor(140, 86, 75),
            RGBColor(227, 119, 194),
            RGBColor(188, 189, 34),
        ][k % 4],
    }
}

fn draw_err<E: std::fmt::Debug>(e: E) -> ReportError {
    ReportError::Chart(format!("{e:?}"))
}

/// Powers of ten (and 2×, 5×) inside `[lo, hi]`, for log-axis labels.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut p = 10f64.powf(lo.log10().floor());
    while p <= hi * 1.0001 {
        for m in [1.0, 2.0, 5.0] {
            let v = p * m;
            if v >= lo * 0.9999 && v <= hi * 1.0001 {
                out.push(v);
            }
        }
        p *= 10.0;
    }
    out
}

fn tick_label(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').to_string()
    }
}

/// One bar: (shape index, series index, value).
struct Bars {
    series: Vec<String>,
    values: Vec<(usize, usize, f64)>,
}

/// `speedup.svg`.
pub fn speedup_svg(report: &Report) -> Result<String> {
    let t = Table::new(report);
    let shapes: Vec<&str> = report
        .shapes
        .iter()
        .map(|s| s.shape.name.as_str())
        .collect();
    let with_peers = !t.peers("forward", F32).is_empty();
    let mut bars = Bars {
        series: Vec::new(),
        values: Vec::new(),
    };
    let mut columns = Vec::new();
    for precision in &report.precisions {
        for &threads in &report.thread_counts {
            for label in t.ours("forward", threads, precision) {
                columns.push((precision, threads, label));
            }
        }
    }
    for (precision, threads, label) in columns {
        let name = if report.thread_counts.len() > 1 {
            format!("{label} {threads}T")
        } else {
            label.clone()
        };
        let k = bars.series.len();
        let mut any = false;
        for (i, shape) in shapes.iter().enumerate() {
            // The median of the per-round ratios (the naive engine runs at 1 thread, in
            // the same rounds as every thread count).
            let ratio = if with_peers {
                t.faster_peer(shape, "forward", threads, precision)
                    .and_then(|(_, peer)| t.ratio(shape, "forward", threads, &peer, &label))
            } else {
                t.get(shape, "forward", "naive", 1)
                    .zip(t.get(shape, "forward", &label, threads))
                    .and_then(|(naive, ours)| crate::RoundRatio::between(naive, ours))
            };
            if let Some(r) = ratio {
                bars.values.push((i, k, r.median));
                any = true;
            }
        }
        if any {
            bars.series.push(name);
        }
    }
    let title = if with_peers {
        "Speed-up over the faster peer (torch, onnxruntime; torch bf16) at the same precision and thread count — above 1: faster"
    } else {
        "Speed-up over the naive engine (peers skipped) — above 1: faster"
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        draw_bars(&root, title, &shapes, &bars).map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

fn draw_bars(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    shapes: &[&str],
    bars: &Bars,
) -> Result<(), Box<dyn std::error::Error>> {
    let (mut lo, mut hi) = (0.5f64, 2.0f64);
    for &(_, _, v) in &bars.values {
        lo = lo.min(v / 1.5);
        hi = hi.max(v * 4.0); // headroom for the value labels and the legend
    }
    let n = shapes.len().max(1);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), (lo..hi).log_scale())?;
    let ticks = log_ticks(lo, hi);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < shapes.len() {
                shapes[i as usize].to_string()
            } else {
                String::new()
            }
        })
        .y_labels(ticks.len().max(2))
        .y_label_formatter(&|v| tick_label(*v))
        .y_desc("× faster (log scale)")
        .label_style(("sans-serif", 13))
        .draw()?;
    let k = bars.series.len().max(1);
    let width = 0.8 / k as f64;
    for (s, name) in bars.series.iter().enumerate() {
        // The label without its thread count (`simd/avx512 1T`).
        let base = name
            .rsplit_once(' ')
            .filter(|(_, t)| t.ends_with('T'))
            .map_or(name.as_str(), |(b, _)| b);
        let c = colour(base, s);
        let rects = bars.values.iter().filter(|b| b.1 == s).map(|&(i, _, v)| {
            let x0 = i as f64 - 0.4 + s as f64 * width;
            Rectangle::new([(x0, lo), (x0 + width * 0.92, v)], c.filled())
        });
        chart
            .draw_series(rects)?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        let labels = bars.values.iter().filter(|b| b.1 == s).map(|&(i, _, v)| {
            let x = i as f64 - 0.4 + (s as f64 + 0.46) * width;
            Text::new(
                crate::markdown::sig2(v),
                (x, v * 1.04),
                ("sans-serif", 10).into_font().color(&BLACK).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Bottom,
                    ),
                ),
            )
        });
        chart.draw_series(labels)?;
    }
    chart.draw_series(LineSeries::new(
        [(-0.5, 1.0), (n as f64 - 0.5, 1.0)],
        BLACK.stroke_width(1),
    ))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}

/// `roofline.svg`.
pub fn roofline_svg(report: &Report) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        draw_roofline(&root, report).map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

fn draw_roofline(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    report: &Report,
) -> Result<(), Box<dyn std::error::Error>> {
    // x: FLOPs per weight byte; y: GFLOP/s.
    // At a column's bytes per weight: bf16 reads half of f32's bytes.
    let ai = |name: &str, precision: &str| {
        let bytes = lstm::Precision::ALL
            .iter()
            .find(|p| p.name() == precision)
            .map_or(4.0, |&p| crate::machine::weight_bytes(p));
        report
            .shapes
            .iter()
            .find(|s| s.shape.name == name)
            .map(|s| s.forward_flops / (s.weight_traffic_bytes * bytes / 4.0))
    };
    let mut points: Vec<(String, usize, f64, f64, String)> = Vec::new(); // label, threads, x, y, shape
    for m in &report.measurements {
        if m.mode != "forward" {
            continue;
        }
        if let (Some(g), Some(x)) = (m.gflops, ai(&m.shape, &m.precision)) {
            points.push((m.label(), m.threads, x, g, m.shape.clone()));
        }
    }
    let peak_max = report
        .limits
        .fma
        .iter()
        .map(|p| p.gflops)
        .chain(report.limits.dot.iter().map(|p| p.gflops))
        .fold(1.0, f64::max);
    let (mut xlo, mut xhi) = (0.1f64, 10.0f64);
    let (mut ylo, mut yhi) = (1.0f64, peak_max * 2.0);
    for p in &points {
        xlo = xlo.min(p.2 / 2.0);
        xhi = xhi.max(p.2 * 2.0);
        ylo = ylo.min(p.3 / 2.0);
        yhi = yhi.max(p.3 * 2.0);
    }
    let mut chart = ChartBuilder::on(root)
        .caption(
            "Roofline: forward GFLOP/s against FLOPs per weight byte (measured roofs: FMA peak, read bandwidth)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((xlo..xhi).log_scale(), (ylo..yhi).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(log_ticks(xlo, xhi).len().max(2))
        .y_labels(log_ticks(ylo, yhi).len().max(2))
        .x_label_formatter(&|v| tick_label(*v))
        .y_label_formatter(&|v| tick_label(*v))
        .x_desc("arithmetic intensity: forward FLOPs / weight bytes read (log)")
        .y_desc("GFLOP/s (log)")
        .label_style(("sans-serif", 13))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;

    // Roofs: for each thread count, min(peak, bandwidth × AI) at a few working sets.
    let xs: Vec<f64> = (0..=200)
        .map(|k| (xlo.ln() + (xhi.ln() - xlo.ln()) * k as f64 / 200.0).exp())
        .collect();
    let levels: Vec<(usize, &str)> = {
        let sizes: Vec<usize> = report
            .limits
            .bandwidth
            .iter()
            .map(|b| b.bytes_per_thread)
            .collect();
        let smallest = sizes.iter().copied().min().unwrap_or(0);
        let largest = sizes.iter().copied().max().unwrap_or(0);
        vec![(smallest, "L1/L2"), (4 << 20, "4 MiB"), (largest, "memory")]
    };
    for (ti, &threads) in report.thread_counts.iter().enumerate() {
        let peak = report.limits.peak(threads);
        if !peak.is_finite() {
            continue;
        }
        let grey = RGBColor(80, 80, 80).mix(if ti == 0 { 0.9 } else { 0.45 });
        for (size, name) in &levels {
            let bw = report.limits.bandwidth(threads, *size as f64);
            let line = xs.iter().map(|&x| (x, (bw * x).min(peak)));
            chart.draw_series(LineSeries::new(line, grey.stroke_width(1)))?;
            // Label the slope where it meets the bottom of the chart or at its left end.
            let x_at = (ylo * 1.6 / bw).max(xlo * 1.1);
            if x_at * bw < peak {
                chart.draw_series(std::iter::once(Text::new(
                    format!("{name} {threads}T {} GB/s", tick_label(bw.round())),
                    (x_at, bw * x_at),
                    ("sans-serif", 10).into_font().color(&grey),
                )))?;
            }
        }
        chart.draw_series(std::iter::once(Text::new(
            format!("FMA peak {threads}T {:.0} GFLOP/s", peak),
            (xhi / 8.0, peak * 1.08),
            ("sans-serif", 11).into_font().color(&grey),
        )))?;
        // The reduced precisions' dot-product peaks: dashed-looking thin lines in their colour.
        for dot in report.limits.dot.iter().filter(|p| p.threads == threads) {
            let c = colour(" bf16", 0).mix(if ti == 0 { 0.9 } else { 0.45 });
            chart.draw_series(LineSeries::new(
                [(xlo, dot.gflops), (xhi, dot.gflops)],
                c.stroke_width(1),
            ))?;
            chart.draw_series(std::iter::once(Text::new(
                format!(
                    "{} peak ({}) {threads}T {:.0} GFLOP/s",
                    dot.instruction, dot.precision, dot.gflops
                ),
                (xhi / 8.0, dot.gflops * 1.08),
                ("sans-serif", 11).into_font().color(&c),
            )))?;
        }
    }

    // Points: one series per runner label (colour), a circle at 1 thread, a triangle above.
    let mut labels: Vec<String> = Vec::new();
    for m in &report.measurements {
        if m.mode == "forward" && !labels.contains(&m.label()) {
            labels.push(m.label());
        }
    }
    labels.sort_by_key(|l| PEERS.contains(&l.as_str()));
    for (k, label) in labels.iter().enumerate() {
        let c = colour(label, k);
        let mine: Vec<&(String, usize, f64, f64, String)> =
            points.iter().filter(|p| &p.0 == label).collect();
        let circles = mine
            .iter()
            .filter(|p| p.1 == 1)
            .map(|p| Circle::new((p.2, p.3), 5, c.filled()));
        chart
            .draw_series(circles)?
            .label(label.clone())
            .legend(move |(x, y)| Circle::new((x + 6, y), 5, c.filled()));
        let triangles = mine
            .iter()
            .filter(|p| p.1 > 1)
            .map(|p| TriangleMarker::new((p.2, p.3), 6, c.filled()));
        chart.draw_series(triangles)?;
    }
    // Shape names under their columns.
    for info in &report.shapes {
        let x = info.forward_flops / info.weight_traffic_bytes;
        let low = points
            .iter()
            .filter(|p| p.4 == info.shape.name)
            .map(|p| p.3)
            .fold(f64::INFINITY, f64::min);
        if low.is_finite() {
            chart.draw_series(std::iter::once(Text::new(
                info.shape.name.clone(),
                (x, low / 1.25),
                ("sans-serif", 11).into_font().color(&BLACK).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Top,
                    ),
                ),
            )))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    if report.thread_counts.len() > 1 {
        root.draw(&Text::new(
            "● 1 thread   ▲ more threads   roofs: dark = 1 thread, light = more",
            (80, HEIGHT as i32 - 18),
            ("sans-serif", 12).into_font().color(&BLACK),
        ))?;
    }
    Ok(())
}
