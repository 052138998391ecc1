//! The performance report of lstm-kernels, as a library: `lstm report` and `lstm bench` call
//! it, and so can a user or a bench.
//!
//! - [`timing`]: the one timing method (warm-up, ~2 ms samples, median and quantiles).
//! - [`roofline`] and [`machine`]: the machine's description and its measured limits (fp32
//!   FMA peak, read bandwidth by working set), from which each shape's bound follows.
//! - [`grid`]: the workloads (built in, or a TOML file).
//! - [`measure`]: the configurations of ours (engine, backend, threads) and the timed calls.
//! - [`peers`]: PyTorch and onnxruntime, timed by a Python script this crate carries.
//! - [`run()`]: every shape in interleaved rounds (ours, torch, onnxruntime, each round), so
//!   that the ratios are taken between times measured seconds apart.
//! - [`markdown`] and [`charts`]: `REPORT.md` and the SVG charts ([`render`] gives every file).
//!
//! ```no_run
//! use lstm_report::{grid, run, ReportOptions, TimingPlan};
//!
//! let options = ReportOptions {
//!     python: None, // no peers
//!     ..ReportOptions::new(grid::builtin(true), "built-in (quick subset)")
//! };
//! let report = run(&options, &mut |_progress| {})?;
//! for (name, text) in lstm_report::render(&report)? {
//!     std::fs::write(name, text)?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]

pub mod charts;
pub mod grid;
pub mod machine;
pub mod markdown;
pub mod measure;
pub mod peers;
pub mod roofline;
mod run;
pub mod timing;

use std::path::PathBuf;

pub use self::run::{
    render, run, Measurement, Progress, RatioRow, Report, ReportOptions, RoundRatio, ShapeInfo,
};
pub use self::timing::{Timing, TimingPlan};

/// What can go wrong while making a report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// An engine, model or tensor error.
    #[error(transparent)]
    Lstm(#[from] lstm::LstmError),
    /// A grid file that cannot be read or is not a valid grid.
    #[error("{}: {reason}", path.display())]
    Grid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (one line).
        reason: String,
    },
    /// A value out of its range.
    #[error("{what}: {reason}")]
    InvalidArgument {
        /// The setting.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// Something this machine or build cannot do.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A chart that could not be drawn.
    #[error("cannot draw a chart: {0}")]
    Chart(String),
    /// `report.json` that could not be encoded.
    #[error("cannot encode report.json: {0}")]
    Json(#[from] serde_json::Error),
}

/// The result of this crate's functions.
pub type Result<T, E = ReportError> = std::result::Result<T, E>;
