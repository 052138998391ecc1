//! Checks what `lstm run --precision f32|bf16|int8` wrote against the f64 reference on the
//! weights that precision multiplies by, under the tolerance model of the property tests
//! (docs/numerics.md, "The operand model"): the check of a held-out call through the CLI.
//!
//! ```sh
//! lstm run --model m.safetensors --input x.npy --output y.npy --hn hn.npy --cn cn.npy --precision int8
//! cargo run --release -p lstm-validate --example check_run -- --model m.safetensors \
//!     --input x.npy --output y.npy --hn hn.npy --cn cn.npy --precision int8
//! ```
//!
//! Takes the options of `lstm run` that shape the call (`--h0`, `--c0`, `--lengths`,
//! `--batch-first`, `--prefix`, `--precision`), and `--backend NAME` for the backend whose
//! operand rounding applies (default: the best this CPU has for the precision, which `lstm run`
//! uses). `--hn`/`--cn` are checked when given. Prints one line: `pass` with the worst
//! `|error| / allowed`, or `FAIL` with the first element outside the tolerance (exit code 1).
//! Exit code 2 on bad arguments or unreadable files.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

use lstm_core::io::read_npy;
use lstm_core::{LstmEngine, LstmOutput, LstmState, Precision, Tensor};
use lstm_simd::Backend;

const VALUED: &[&str] = &[
    "--model",
    "--input",
    "--output",
    "--hn",
    "--cn",
    "--h0",
    "--c0",
    "--lengths",
    "--prefix",
    "--precision",
    "--backend",
];

fn parse(args: &[String]) -> Result<(HashMap<&str, &str>, bool), String> {
    let (mut values, mut batch_first) = (HashMap::new(), false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--batch-first" {
            batch_first = true;
        } else if let Some(&name) = VALUED.iter().find(|&&v| v == a) {
            let value = it.next().ok_or(format!("{name} needs a value"))?;
            values.insert(name, value.as_str());
        } else {
            return Err(format!(
                "unknown argument `{a}`; expected {VALUED:?} or --batch-first"
            ));
        }
    }
    for required in ["--model", "--input", "--output"] {
        if !values.contains_key(required) {
            return Err(format!("{required} is required"));
        }
    }
    Ok((values, batch_first))
}

fn tensor(path: &str, what: &str) -> Result<Tensor<f32>, String> {
    read_npy(Path::new(path))
        .and_then(|a| a.into_f32_tensor(what))
        .map_err(|e| format!("{what} `{path}`: {e}"))
}

fn run(args: &[String]) -> Result<bool, String> {
    let (values, batch_first) = parse(args)?;
    let precision: Precision = values
        .get("--precision")
        .map_or(Ok(Precision::F32), |p| p.parse())
        .map_err(|e| format!("--precision: {e}"))?;
    let backend: Backend = values
        .get("--backend")
        .map_or(Ok(Backend::detect_for(precision)), |b| b.parse())
        .map_err(|e| format!("--backend: {e}"))?;
    let model = lstm::Model::load_with_prefix(values["--model"], values.get("--prefix").copied())
        .and_then(|m| m.with_batch_first(batch_first))
        .map_err(|e| format!("--model: {e}"))?;
    let x = tensor(values["--input"], "--input")?;
    let state = match (values.get("--h0"), values.get("--c0")) {
        (Some(h), Some(c)) => Some(LstmState {
            h: tensor(h, "--h0")?,
            c: tensor(c, "--c0")?,
        }),
        (None, None) => None,
        _ => return Err("--h0 and --c0 go together".into()),
    };
    let lengths = match values.get("--lengths") {
        Some(p) => Some(
            read_npy(Path::new(p))
                .and_then(|a| a.into_lengths("--lengths"))
                .map_err(|e| format!("--lengths `{p}`: {e}"))?,
        ),
        None => None,
    };
    let seq_len = match (x.shape(), batch_first) {
        ([_, t, _], true) => *t,
        ([t, ..], _) => *t,
        _ => 0,
    };
    let reference = lstm_validate::reference(&model.weights().rounded_to(precision))
        .and_then(|r| {
            let wide = state.as_ref().map(lstm_validate::widen_state);
            r.forward(&lstm_validate::widen(&x), wide.as_ref(), lengths.as_deref())
        })
        .map_err(|e| format!("reference: {e}"))?;
    // Final states not given: the reference's own, narrowed (they pass trivially).
    let narrow = |t: &Tensor<f64>| t.map(|&v| v as f32);
    let got = LstmOutput {
        output: tensor(values["--output"], "--output")?,
        h_n: match values.get("--hn") {
            Some(p) => tensor(p, "--hn")?,
            None => narrow(&reference.h_n),
        },
        c_n: match values.get("--cn") {
            Some(p) => tensor(p, "--cn")?,
            None => narrow(&reference.c_n),
        },
    };
    let rounding = lstm_validate::operand_rounding(backend, precision);
    let call = lstm_validate::Call {
        x: &x,
        state: state.as_ref(),
        lengths: lengths.as_deref(),
        seq_len,
    };
    let verdict = lstm_validate::check_call(model.weights(), precision, rounding, &call, &got)
        .map_err(|e| format!("reference: {e}"))?;
    match verdict {
        Ok(margin) => {
            println!(
                "pass: {precision} on {backend} ({rounding:?}), worst |error| / allowed = {:.3} \
                 ({} steps past the chaos cut-off)",
                margin.worst_ratio, margin.unchecked_steps
            );
            Ok(true)
        }
        Err(m) => {
            println!("FAIL: {precision} on {backend} ({rounding:?}): {m}");
            Ok(false)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("check_run: {e}");
            ExitCode::from(2)
        }
    }
}
