//! The peers (PyTorch, onnxruntime), timed by this crate's `peers_bench.py` in a Python
//! process that `lstm report` keeps running and asks for one measurement at a time.
//!
//! The script is compiled into the library and run as `python3 -c SCRIPT --serve`, so the
//! report runs from any directory; the same file runs by hand
//! (`python3 crates/lstm-report/src/peers_bench.py --help`). Requests and answers are JSON
//! lines on the child's stdin and stdout.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use crate::grid::Shape;
use crate::timing::{Timing, TimingPlan};

/// The script, as committed beside this file.
pub const SCRIPT: &str = include_str!("peers_bench.py");

/// The peers, in column order.
pub const PEERS: &[&str] = &["torch", "onnxruntime"];

/// What the peers' side of the report found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PeersInfo {
    /// `ran`, or `skipped: <why>`.
    pub status: String,
    /// Python's version.
    pub python: Option<String>,
    /// torch's version (`None`: not importable).
    pub torch: Option<String>,
    /// onnxruntime's version (`None`: not importable).
    pub onnxruntime: Option<String>,
    /// Why something is missing, and errors of the run.
    pub notes: Vec<String>,
}

/// One line of the script's output.
#[derive(Clone, Debug, Deserialize)]
struct Event {
    event: String,
    #[serde(default)]
    python: Option<String>,
    #[serde(default)]
    torch: Option<String>,
    #[serde(default)]
    onnxruntime: Option<String>,
    #[serde(default)]
    notes: Vec<String>,
    #[serde(default)]
    samples_ms: Vec<f64>,
    #[serde(default)]
    calls_per_sample: usize,
    #[serde(default)]
    error: Option<String>,
}

/// One request to the script.
#[derive(Serialize)]
struct Request<'a> {
    peer: &'a str,
    mode: &'a str,
    shape: &'a Shape,
    threads: usize,
    min_time: f64,
    min_samples: usize,
    max_time: f64,
}

/// The script running under a Python that has torch, answering requests.
#[derive(Debug)]
pub struct PeerServer {
    python: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr: Option<JoinHandle<String>>,
    info: PeersInfo,
}

impl PeerServer {
    /// Starts the script under `python` and reads which peers it has. `Err(reason)` when the
    /// peers must be skipped (no such Python, no torch).
    pub fn start(python: &str) -> Result<PeerServer, String> {
        let mut child = Command::new(python)
            .arg("-c")
            .arg(SCRIPT)
            .arg("--serve")
            .env("PYTHONWARNINGS", "ignore")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run `{python}`: {e}"))?;
        // stderr is drained on its own thread so that a chatty child cannot block on a full
        // pipe; its last line explains a failure.
        let stderr = child.stderr.take().map(|mut s| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = s.read_to_string(&mut text);
                text
            })
        });
        let (stdin, stdout) = match (child.stdin.take(), child.stdout.take()) {
            (Some(i), Some(o)) => (i, BufReader::new(o)),
            _ => return Err(format!("cannot talk to `{python}`: no pipes")),
        };
        let mut server = PeerServer {
            python: python.to_string(),
            child,
            stdin: Some(stdin),
            stdout,
            stderr,
            info: PeersInfo::default(),
        };
        let v = match server.next_event() {
            Ok(v) if v.event == "versions" => v,
            Ok(other) => return Err(format!("{python}: unexpected `{}` line", other.event)),
            Err(e) => return Err(e),
        };
        server.info = PeersInfo {
            status: "ran".to_string(),
            python: v.python,
            torch: v.torch,
            onnxruntime: v.onnxruntime,
            notes: v.notes,
        };
        if server.info.torch.is_none() {
            return Err(format!(
                "torch is not importable by {python} ({})",
                server.info.notes.join("; ")
            ));
        }
        Ok(server)
    }

    /// What the script found (versions, notes).
    pub fn info(&self) -> &PeersInfo {
        &self.info
    }

    /// The peers that run `mode` on `shape` here, in [`PEERS`] order.
    pub fn peers_for(&self, mode: &str, shape: &Shape) -> Vec<&'static str> {
        let mut out = vec!["torch"];
        if mode == "forward" && self.info.onnxruntime.is_some() && shape.proj_size == 0 {
            out.push("onnxruntime");
        }
        out
    }

    /// Times `peer` (`torch`, `onnxruntime`) on `shape` in `mode` (`forward`, `train`) at
    /// `threads`. The outer error means the script is gone (no more requests will be
    /// answered); the inner one, that this measurement failed.
    pub fn time(
        &mut self,
        peer: &str,
        mode: &str,
        shape: &Shape,
        threads: usize,
        plan: TimingPlan,
    ) -> Result<Result<Timing, String>, String> {
        let request = Request {
            peer,
            mode,
            shape,
            threads,
            min_time: plan.min_time,
            min_samples: plan.min_samples,
            // JSON has no infinity; a day is as good.
            max_time: plan.max_time.min(86_400.0),
        };
        let line = serde_json::to_string(&request).map_err(|e| e.to_string())?;
        let python = &self.python;
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| format!("`{python}` is closed"))?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("cannot send a request to `{python}`: {e}"))?;
        let e = self.next_event()?;
        Ok(match e.error {
            Some(err) => Err(err),
            None if e.samples_ms.is_empty() => Err("no samples".to_string()),
            None => {
                let mut samples: Vec<f64> = e.samples_ms.iter().map(|ms| ms / 1e3).collect();
                samples.sort_by(f64::total_cmp);
                Ok(Timing {
                    samples,
                    calls_per_sample: e.calls_per_sample.max(1),
                })
            }
        })
    }

    /// The next JSON line of the script, or why there is none.
    fn next_event(&mut self) -> Result<Event, String> {
        let mut line = String::new();
        loop {
            line.clear();
            match self.stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return Err(self.failure()),
                Ok(_) => {
                    if let Ok(event) = serde_json::from_str::<Event>(&line) {
                        return Ok(event);
                    }
                }
            }
        }
    }

    /// Why the script stopped: its exit status and the last line of its stderr.
    fn failure(&mut self) -> String {
        self.stdin = None;
        let status = self
            .child
            .wait()
            .map_or_else(|e| e.to_string(), |s| s.to_string());
        let err_text = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let tail: String = err_text
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .chars()
            .take(300)
            .collect();
        format!("`{}` stopped ({status}): {tail}", self.python)
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        // Closing stdin ends the script's request loop.
        self.stdin = None;
        let _ = self.child.wait();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn missing_python_is_a_reason_to_skip() {
        let e = PeerServer::start("/nonexistent/python3").unwrap_err();
        assert!(e.contains("cannot run"), "{e}");
    }

    #[test]
    fn result_lines_parse() {
        let e: Event = serde_json::from_str(
            r#"{"event": "result", "peer": "torch", "mode": "forward", "shape": "a", "threads": 1, "samples_ms": [1.0, 2.0], "calls_per_sample": 1, "median_ms": 1.5}"#,
        )
        .unwrap();
        assert_eq!((e.samples_ms.len(), e.calls_per_sample), (2, 1));
    }
}
