//! The peers (PyTorch, onnxruntime), timed by this crate's `peers_bench.py` in a Python
//! process that `lstm report` keeps running and asks for one measurement at a time.
//!
//! The script is compiled into the library and run as `python3 -c SCRIPT --serve`, so the
//! report runs from any directory; the same file runs by hand
//! (`python3 crates/lstm-report/src/peers_bench.py --help`). Requests and answers are JSON
//! lines on the child's stdin and stdout.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

use lstm::{LstmWeights, Precision, Tensor};
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
    #[serde(default)]
    max_abs_err: BTreeMap<String, f64>,
    #[serde(default)]
    max_abs_ref: Option<f64>,
}

/// One timing request to the script.
#[derive(Serialize)]
struct Request<'a> {
    peer: &'a str,
    mode: &'a str,
    precision: &'a str,
    shape: &'a Shape,
    threads: usize,
    min_time: f64,
    min_samples: usize,
    max_time: f64,
}

/// One accuracy request to the script: run torch on the weights and input in `data_dir`
/// (see [`write_accuracy_data`]) at each precision and in float64.
#[derive(Serialize)]
struct AccuracyRequest<'a> {
    request: &'static str,
    shape: &'a Shape,
    data_dir: &'a Path,
    precisions: Vec<&'static str>,
    threads: usize,
}

/// torch's max abs error against its own float64 run, on weights and an input of ours.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerErrors {
    /// By precision name (`f32`: `model(x)`; `bf16`: `model.bfloat16()(x.bfloat16())`).
    pub max_abs_err: BTreeMap<String, f64>,
    /// The largest |output| of the float64 run.
    pub max_abs_ref: f64,
}

/// The column label of `peer` at `precision`: `torch`, `torch bf16`.
pub fn peer_label(peer: &str, precision: Precision) -> String {
    match precision {
        Precision::F32 => peer.to_string(),
        other => format!("{peer} {other}"),
    }
}

/// Writes `weights` (one file per PyTorch parameter name, `weight_ih_l0.f32`, …) and `x`
/// (`input.f32`) into `dir` as raw native-endian f32, C order: what the script's accuracy
/// request reads (with `torch.frombuffer`, no numpy needed).
pub fn write_accuracy_data(
    dir: &Path,
    weights: &LstmWeights<f32>,
    x: &Tensor<f32>,
) -> std::io::Result<()> {
    let raw = |data: &[f32]| -> Vec<u8> { data.iter().flat_map(|v| v.to_ne_bytes()).collect() };
    for (name, _, data) in weights.named_tensors() {
        std::fs::write(dir.join(format!("{name}.f32")), raw(data))?;
    }
    std::fs::write(dir.join("input.f32"), raw(x.data()))
}

/// A directory of its own under the system's temporary directory, removed when dropped.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates `lstm-report-<pid>-<n>` in the temporary directory.
    pub fn new() -> std::io::Result<ScratchDir> {
        let base = std::env::temp_dir();
        let pid = std::process::id();
        for n in 0..1000u32 {
            let dir = base.join(format!("lstm-report-{pid}-{n}"));
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(ScratchDir(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("no free scratch directory name"))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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

    /// The peers that run `mode` on `shape` at `precision` here, in [`PEERS`] order: at f32
    /// torch (forward and training step) and onnxruntime (forward, no projection); at bf16
    /// torch's forward (`model.bfloat16()` on bf16 input).
    pub fn peers_for(&self, mode: &str, shape: &Shape, precision: Precision) -> Vec<&'static str> {
        match precision {
            Precision::F32 => {
                let mut out = vec!["torch"];
                if mode == "forward" && self.info.onnxruntime.is_some() && shape.proj_size == 0 {
                    out.push("onnxruntime");
                }
                out
            }
            Precision::Bf16 if mode == "forward" => vec!["torch"],
            _ => Vec::new(),
        }
    }

    /// Times `peer` (`torch`, `onnxruntime`) on `shape` in `mode` (`forward`, `train`) at
    /// `threads` and `precision`. The outer error means the script is gone (no more requests
    /// will be answered); the inner one, that this measurement failed.
    pub fn time(
        &mut self,
        peer: &str,
        mode: &str,
        shape: &Shape,
        threads: usize,
        precision: Precision,
        plan: TimingPlan,
    ) -> Result<Result<Timing, String>, String> {
        let request = Request {
            peer,
            mode,
            precision: precision.name(),
            shape,
            threads,
            min_time: plan.min_time,
            min_samples: plan.min_samples,
            // JSON has no infinity; a day is as good.
            max_time: plan.max_time.min(86_400.0),
        };
        let e = self.ask(&request)?;
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

    /// torch's max abs error at each of `precisions` against its own float64 run, on `shape`
    /// with the weights and input [`write_accuracy_data`] wrote into `data_dir`, on `threads`
    /// threads. The errors are as in [`time`](Self::time).
    pub fn errors(
        &mut self,
        shape: &Shape,
        data_dir: &Path,
        precisions: &[Precision],
        threads: usize,
    ) -> Result<Result<PeerErrors, String>, String> {
        let request = AccuracyRequest {
            request: "accuracy",
            shape,
            data_dir,
            precisions: precisions.iter().map(|p| p.name()).collect(),
            threads,
        };
        let e = self.ask(&request)?;
        Ok(match (e.error, e.max_abs_ref) {
            (Some(err), _) => Err(err),
            (None, None) => Err("no max_abs_ref in the answer".to_string()),
            (None, Some(max_abs_ref)) => Ok(PeerErrors {
                max_abs_err: e.max_abs_err,
                max_abs_ref,
            }),
        })
    }

    /// Sends one request line and reads the answer; an error means the script is gone.
    fn ask(&mut self, request: &impl Serialize) -> Result<Event, String> {
        let line = serde_json::to_string(request).map_err(|e| e.to_string())?;
        let python = &self.python;
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| format!("`{python}` is closed"))?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("cannot send a request to `{python}`: {e}"))?;
        self.next_event()
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
        let e: Event = serde_json::from_str(
            r#"{"event": "accuracy", "max_abs_err": {"f32": 1e-7, "bf16": 2e-3}, "max_abs_ref": 0.5}"#,
        )
        .unwrap();
        assert_eq!((e.max_abs_err["bf16"], e.max_abs_ref), (2e-3, Some(0.5)));
    }

    #[test]
    fn accuracy_data_is_raw_f32_by_parameter_name() {
        let config = lstm::LstmConfig::new(3, 2).with_bidirectional(true);
        let w = LstmWeights::random(config, 1).unwrap();
        let x = Tensor::new([1, 1, 3], vec![0.5f32, -1.0, 2.0]).unwrap();
        let dir = ScratchDir::new().unwrap();
        write_accuracy_data(dir.path(), &w, &x).unwrap();
        let whh = std::fs::read(dir.path().join("weight_hh_l0_reverse.f32")).unwrap();
        assert_eq!(whh.len(), 4 * 8 * 2);
        let input = std::fs::read(dir.path().join("input.f32")).unwrap();
        assert_eq!(input[4..8], (-1.0f32).to_ne_bytes());
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists());
        assert_eq!(peer_label("torch", Precision::Bf16), "torch bf16");
        assert_eq!(peer_label("torch", Precision::F32), "torch");
    }
}
