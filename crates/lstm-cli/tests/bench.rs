//! `lstm bench`: the JSON line scripts read, for both modes and every engine.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lstm"))
        .args([
            "bench",
            "--seq-len",
            "3",
            "--batch",
            "2",
            "--input-size",
            "5",
        ])
        .args(["--hidden-size", "7", "--min-time", "0", "--json"])
        .args(args)
        .output()
        .unwrap()
}

fn json(args: &[&str]) -> Value {
    let out = bench(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn both_modes_print_the_json_line() {
    for (mode, engine) in [("forward", "simd"), ("train", "simd"), ("train", "naive")] {
        let v = json(&["--mode", mode, "--engine", engine]);
        assert_eq!(v["mode"], mode);
        assert_eq!(v["engine"], engine);
        assert_eq!(v["seq_len"], 3);
        assert!(v["median_ms"].as_f64().unwrap() > 0.0);
        assert!(v["gflops"].as_f64().unwrap() > 0.0);
    }
    // The default mode is forward.
    assert_eq!(json(&[])["mode"], "forward");
}

/// Every engine trains (`lstm grad` and `lstm bench --mode train` build their training
/// engines in one place), the parallel runner on the threads asked for.
#[test]
fn every_engine_times_a_training_step() {
    for &kind in lstm::EngineKind::ALL {
        let v = json(&["--mode", "train", "--engine", kind.name(), "--threads", "2"]);
        assert_eq!(v["mode"], "train");
        assert_eq!(v["engine"], kind.name());
        assert!(v["median_ms"].as_f64().unwrap() > 0.0);
    }
    let v = json(&["--mode", "train", "--engine", "parallel", "--threads", "2"]);
    assert_eq!(v["threads"], 2);
}
