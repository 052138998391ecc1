//! `lstm report` end to end: a bad grid file is one error line and leaves nothing; a quick
//! report on a tiny grid writes REPORT.md, report.json (which parses and holds every engine)
//! and two SVG charts; peers that cannot run are skipped, and the report says so.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

const TINY: &str = "[[shape]]\nname = \"tiny\"\nseq_len = 3\nbatch = 2\ninput_size = 5\nhidden_size = 8\n\
                    [[shape]]\nname = \"tiny-bi\"\nseq_len = 2\nbatch = 1\ninput_size = 4\nhidden_size = 6\n\
                    num_layers = 2\nbidirectional = true\nproj_size = 3\n";

fn lstm(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lstm"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failed run printed exactly one `error:` line containing `want`.
fn assert_one_error(o: &Output, want: &str) {
    assert_eq!(o.status.code(), Some(1), "{}", stderr(o));
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(want),
        "{err}"
    );
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn bad_grid_files_are_one_line_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for (name, text, want) in [
        ("missing.toml", None, "missing.toml"),
        ("syntax.toml", Some("[[shape]\nname = 1"), "line 1"),
        (
            "field.toml",
            Some(
                "[[shape]]\nname=\"a\"\nseq_len=1\nbatch=1\ninput_size=1\nhidden_size=1\nhiden=2\n",
            ),
            "unknown field `hiden`",
        ),
        (
            "zero.toml",
            Some("[[shape]]\nname=\"a\"\nseq_len=1\nbatch=0\ninput_size=1\nhidden_size=1\n"),
            "batch must be at least 1",
        ),
        ("empty.toml", Some("shape = []\n"), "no [[shape]]"),
    ] {
        if let Some(text) = text {
            std::fs::write(d.join(name), text).unwrap();
        }
        let o = lstm(
            d,
            &[
                "report",
                "--grid",
                name,
                "--quick",
                "--no-peers",
                "--out",
                "out",
            ],
        );
        assert_one_error(&o, want);
        assert!(
            stderr(&o).contains(&format!("--grid {name}")),
            "{}",
            stderr(&o)
        );
        assert!(
            files(&d.join("out")).is_empty(),
            "{:?}",
            files(&d.join("out"))
        );
    }
}

#[test]
fn out_that_is_a_file_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("grid.toml"), TINY).unwrap();
    std::fs::write(tmp.path().join("taken"), "x").unwrap();
    let o = lstm(
        tmp.path(),
        &[
            "report",
            "--grid",
            "grid.toml",
            "--quick",
            "--no-peers",
            "--out",
            "taken",
        ],
    );
    assert_one_error(&o, "not a directory");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("taken")).unwrap(),
        "x"
    );
}

#[test]
fn quick_report_on_a_tiny_grid_writes_every_output() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("grid.toml"), TINY).unwrap();
    // A Python that cannot run: the peers are skipped, and the report says why.
    let o = lstm(
        d,
        &[
            "report",
            "--grid",
            "grid.toml",
            "--quick",
            "--min-time",
            "0.01",
            "--python",
            "/nonexistent/python3",
            "--out",
            "rep",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("peers skipped"), "{}", stderr(&o));
    assert_eq!(
        files(&d.join("rep")),
        ["REPORT.md", "report.json", "roofline.svg", "speedup.svg"]
    );

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("rep/report.json")).unwrap()).unwrap();
    assert!(json["peers"]["status"]
        .as_str()
        .unwrap()
        .starts_with("skipped"));
    assert_eq!(json["shapes"].as_array().unwrap().len(), 2);
    let ms = json["measurements"].as_array().unwrap();
    for engine in ["naive", "simd"] {
        for shape in ["tiny", "tiny-bi"] {
            assert!(
                ms.iter().any(|m| m["runner"] == engine
                    && m["shape"] == shape
                    && m["mode"] == "forward"
                    && m["median_ms"].as_f64().is_some_and(|v| v > 0.0)),
                "{engine} {shape}"
            );
        }
    }
    // The reference engine has a backward: it has a training-step row.
    assert!(ms
        .iter()
        .any(|m| m["runner"] == "naive" && m["mode"] == "train" && m["median_ms"].is_f64()));
    assert!(json["limits"]["fma"][0]["gflops"].as_f64().unwrap() > 0.0);

    let md = std::fs::read_to_string(d.join("rep/REPORT.md")).unwrap();
    for want in [
        "## Machine",
        "## Method",
        "## Forward pass, 1 thread(s)",
        "tiny-bi",
        "skipped",
    ] {
        assert!(md.contains(want), "REPORT.md lacks {want:?}");
    }
    for svg in ["speedup.svg", "roofline.svg"] {
        let text = std::fs::read_to_string(d.join("rep").join(svg)).unwrap();
        assert!(
            text.starts_with("<svg") && text.trim_end().ends_with("</svg>"),
            "{svg}"
        );
    }

    // A second run replaces the outputs in place (no temporaries left beside them).
    let o = lstm(
        d,
        &[
            "report",
            "--grid",
            "grid.toml",
            "--quick",
            "--min-time",
            "0",
            "--no-peers",
            "--no-train",
            "--out",
            "rep",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        files(&d.join("rep")).len(),
        4,
        "{:?}",
        files(&d.join("rep"))
    );
}

/// The bf16 columns with their errors; the peers skipped (no Python needed).
#[test]
fn bf16_columns_carry_their_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("grid.toml"), TINY).unwrap();
    let o = lstm(
        d,
        &[
            "report",
            "--grid",
            "grid.toml",
            "--quick",
            "--min-time",
            "0",
            "--no-peers",
            "--no-train",
            "--max-threads",
            "2",
            "--precision",
            "f32,bf16",
            "--out",
            "rep",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("rep/report.json")).unwrap()).unwrap();
    assert_eq!(json["precisions"], serde_json::json!(["f32", "bf16"]));
    let ms = json["measurements"].as_array().unwrap();
    for shape in ["tiny", "tiny-bi"] {
        let err = |engine: &str, precision: &str, threads: u64| {
            ms.iter()
                .find(|m| {
                    m["runner"] == engine
                        && m["shape"] == shape
                        && m["precision"] == precision
                        && m["threads"] == threads
                })
                .and_then(|m| m["max_abs_err"].as_f64())
                .unwrap_or_else(|| panic!("{engine} {precision} {threads}T {shape}"))
        };
        // bf16 rounds the weights and operands (8 significant bits): its error is well
        // above f32's, and within the tolerance of a few roundings of |output| ≤ 1.
        let (bf16, f32) = (err("simd", "bf16", 1), err("simd", "f32", 1));
        assert!(
            f32 < 1e-5 && bf16 > 4.0 * f32 && bf16 < 0.05,
            "{shape}: {f32} {bf16}"
        );
        assert_eq!(err("parallel", "bf16", 2), bf16, "{shape}");
        let info = json["shapes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == shape)
            .unwrap();
        assert!(info["max_abs_ref"].as_f64().unwrap() > 0.0);
    }
    assert!(
        !ms.iter()
            .any(|m| m["precision"] == "bf16" && m["mode"] == "train"),
        "bf16 has no training step"
    );
    let md = std::fs::read_to_string(d.join("rep/REPORT.md")).unwrap();
    for want in [
        "## Forward pass, bf16, 1 thread(s)",
        "## Forward pass, bf16, 2 thread(s)",
        "## Accuracy: max abs error",
        "bound bf16 1T ms",
    ] {
        assert!(md.contains(want), "REPORT.md lacks {want:?}");
    }

    // f32 alone: no bf16 column and no error measured.
    let o = lstm(
        d,
        &[
            "report",
            "--grid",
            "grid.toml",
            "--quick",
            "--min-time",
            "0",
            "--no-peers",
            "--no-train",
            "--precision",
            "f32",
            "--out",
            "rep32",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("rep32/report.json")).unwrap())
            .unwrap();
    let ms = json["measurements"].as_array().unwrap();
    assert!(ms
        .iter()
        .all(|m| m["precision"] == "f32" && m["max_abs_err"].is_null()));

    let o = lstm(
        d,
        &[
            "report",
            "--grid",
            "grid.toml",
            "--precision",
            "f32,int4",
            "--out",
            "bad",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("int4"), "{}", stderr(&o));
    assert!(!d.join("bad").exists());
}

/// With torch: its bf16 column and its errors on our weights (its f32 error at f32's level
/// shows it ran on the very weights and input of ours). Skipped, saying so, without torch.
#[test]
fn torch_bf16_runs_on_our_weights() {
    let has_torch = Command::new("python3")
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_torch {
        eprintln!("skipped: python3 cannot import torch");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("grid.toml"), TINY).unwrap();
    let o = lstm(
        d,
        &[
            "report",
            "--grid",
            "grid.toml",
            "--quick",
            "--min-time",
            "0",
            "--no-train",
            "--max-threads",
            "1",
            "--precision",
            "f32,bf16",
            "--out",
            "rep",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("rep/report.json")).unwrap()).unwrap();
    assert_eq!(json["peers"]["status"], "ran", "{}", json["peers"]);
    let ms = json["measurements"].as_array().unwrap();
    for shape in ["tiny", "tiny-bi"] {
        let torch = |precision: &str| {
            ms.iter()
                .find(|m| {
                    m["runner"] == "torch" && m["shape"] == shape && m["precision"] == precision
                })
                .unwrap_or_else(|| panic!("torch {precision} {shape}"))
        };
        let (t32, t16) = (torch("f32"), torch("bf16"));
        assert!(t16["median_ms"].as_f64().is_some_and(|v| v > 0.0), "{t16}");
        let (e32, e16) = (
            t32["max_abs_err"].as_f64().unwrap(),
            t16["max_abs_err"].as_f64().unwrap(),
        );
        assert!(
            e32 < 1e-5 && e16 > 4.0 * e32 && e16 < 0.05,
            "{shape}: {e32} {e16}"
        );
    }
    assert!(json["ratios"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["peer"] == "torch bf16" && r["ours"].as_str().unwrap().ends_with(" bf16")));
}
