//! The peers (PyTorch, onnxruntime), timed by `tools/peers_bench.py` in a Python process.
//!
//! The script is compiled into the binary and fed to `python3 -` on stdin, so the report runs
//! from any directory; the same file runs by hand (`python3 tools/peers_bench.py --help`).
//! It prints JSON lines, read here as they come (for the progress line).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::grid::Shape;
use super::measure::TimingPlan;
use crate::{CliError, CliResult};

/// The script, as committed in `tools/`.
const SCRIPT: &str = include_str!("../../../../tools/peers_bench.py");

/// What the peers' side of the report found.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct PeersInfo {
    /// `ran`, or `skipped: <why>`.
    pub(crate) status: String,
    pub(crate) python: Option<String>,
    pub(crate) torch: Option<String>,
    pub(crate) onnxruntime: Option<String>,
    pub(crate) notes: Vec<String>,
}

/// One line of the script's output.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Event {
    pub(crate) event: String,
    #[serde(default)]
    pub(crate) python: Option<String>,
    #[serde(default)]
    pub(crate) torch: Option<String>,
    #[serde(default)]
    pub(crate) onnxruntime: Option<String>,
    #[serde(default)]
    pub(crate) notes: Vec<String>,
    #[serde(default)]
    pub(crate) peer: String,
    #[serde(default)]
    pub(crate) mode: String,
    #[serde(default)]
    pub(crate) shape: String,
    #[serde(default)]
    pub(crate) threads: usize,
    #[serde(default)]
    pub(crate) median_ms: Option<f64>,
    #[serde(default)]
    pub(crate) min_ms: Option<f64>,
    #[serde(default)]
    pub(crate) max_ms: Option<f64>,
    #[serde(default)]
    pub(crate) p25_ms: Option<f64>,
    #[serde(default)]
    pub(crate) p75_ms: Option<f64>,
    #[serde(default)]
    pub(crate) samples: usize,
    #[serde(default)]
    pub(crate) calls_per_sample: usize,
    #[serde(default)]
    pub(crate) error: Option<String>,
}

/// Asks `python` which peers it has. `Err(reason)` when the peers must be skipped.
pub(crate) fn probe(python: &str) -> Result<PeersInfo, String> {
    let mut events = Vec::new();
    let status = spawn_script(python, &["--probe".to_string()], &mut |e| events.push(e))?;
    let Some(v) = events.into_iter().find(|e| e.event == "versions") else {
        return Err(format!(
            "{python} ran the peers script but it printed nothing ({status})"
        ));
    };
    let info = PeersInfo {
        status: "ran".to_string(),
        python: v.python,
        torch: v.torch,
        onnxruntime: v.onnxruntime,
        notes: v.notes,
    };
    if info.torch.is_none() {
        return Err(format!(
            "torch is not importable by {python} ({})",
            info.notes.join("; ")
        ));
    }
    Ok(info)
}

/// Runs every peer on every shape and thread count; each JSON line goes to `on_event`.
pub(crate) fn run(
    python: &str,
    shapes: &[Shape],
    threads: &[usize],
    plan: TimingPlan,
    train: bool,
    on_event: &mut dyn FnMut(Event),
) -> CliResult<()> {
    let shapes_json = serde_json::to_string(shapes)
        .map_err(|e| CliError::msg(format!("cannot encode the shapes for the peers: {e}")))?;
    let mut args = vec![
        "--shapes".to_string(),
        shapes_json,
        "--threads".to_string(),
        threads
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(","),
        "--min-time".to_string(),
        plan.min_time.to_string(),
        "--min-samples".to_string(),
        plan.min_samples.to_string(),
        "--max-time".to_string(),
        plan.max_time.to_string(),
    ];
    if !train {
        args.push("--no-train".to_string());
    }
    spawn_script(python, &args, on_event)
        .map(|_| ())
        .map_err(|e| CliError::msg(format!("the peers script failed: {e}")))
}

/// Runs the script under `python` with `args`, feeding each parsed stdout line to
/// `on_event`; returns a description of the exit status, or why it could not run or failed.
fn spawn_script(
    python: &str,
    args: &[String],
    on_event: &mut dyn FnMut(Event),
) -> Result<String, String> {
    let mut child = Command::new(python)
        .arg("-")
        .args(args)
        .env("PYTHONWARNINGS", "ignore")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{python}`: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(SCRIPT.as_bytes())
            .map_err(|e| format!("cannot send the script to `{python}`: {e}"))?;
    }
    // stderr is drained on its own thread so that a chatty child cannot block on a full pipe.
    let stderr = child.stderr.take().map(|mut s| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            text
        })
    });
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(event) = serde_json::from_str::<Event>(&line) {
                on_event(event);
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for `{python}`: {e}"))?;
    let err_text = stderr
        .and_then(|h| h.join().ok())
        .unwrap_or_default()
        .trim()
        .to_string();
    if status.success() {
        Ok(status.to_string())
    } else {
        let tail: String = err_text
            .lines()
            .last()
            .unwrap_or("")
            .chars()
            .take(300)
            .collect();
        Err(format!("`{python}` {status}: {tail}"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn missing_python_is_a_reason_to_skip() {
        let e = probe("/nonexistent/python3").unwrap_err();
        assert!(e.contains("cannot run"), "{e}");
    }

    #[test]
    fn result_lines_parse() {
        let e: Event = serde_json::from_str(
            r#"{"event": "result", "peer": "torch", "mode": "forward", "shape": "a", "threads": 1, "median_ms": 1.5, "min_ms": 1.0, "max_ms": 2.0, "samples": 3, "calls_per_sample": 1, "gflops": 3.0}"#,
        )
        .unwrap();
        assert_eq!((e.peer.as_str(), e.median_ms), ("torch", Some(1.5)));
    }
}
