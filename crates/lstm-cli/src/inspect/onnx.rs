//! `lstm inspect model.onnx`: every LSTM node of an ONNX model (name, graph path, sizes,
//! direction, layout, dtype, options, the multi-layer chain it belongs to, and why it cannot
//! load when it cannot), or with `--node` one node and the model it loads as.

use std::fmt::Write as _;

use lstm::onnx::{self, LstmNodeInfo};

use super::{write_stdout, InspectArgs};
use crate::{CliError, CliResult};

/// `Some(result)` when `--model` is an ONNX file (by content), `None` for a safetensors one.
pub(super) fn inspect_if_onnx(args: &InspectArgs) -> Option<CliResult> {
    let bytes = match std::fs::read(&args.model) {
        Ok(b) => b,
        // The safetensors path reports the I/O error with its usual wording.
        Err(_) => return None,
    };
    if !onnx::looks_like_onnx(&bytes) {
        return None;
    }
    if args.prefix.is_some() {
        return Some(Err(CliError::msg(
            "--prefix applies to safetensors state_dicts; choose an ONNX LSTM node with --node",
        )));
    }
    Some(inspect_onnx(args, &bytes))
}

fn inspect_onnx(args: &InspectArgs, bytes: &[u8]) -> CliResult {
    let in_model = |e: lstm::LstmError| CliError::in_arg("--model", &args.model, e);
    let file = onnx::parse_onnx(bytes).map_err(in_model)?;
    let mut nodes: Vec<&LstmNodeInfo> = file.nodes().iter().collect();
    let loaded = match &args.node {
        Some(name) => {
            let model = file.select(Some(name)).map_err(in_model)?;
            nodes.retain(|n| model.nodes().contains(&n.name) && n.path == model.path());
            Some(model)
        }
        None => None,
    };
    let text = if args.json {
        render_json(args, &nodes, loaded.as_ref())
    } else {
        render_text(args, &nodes, loaded.as_ref())
    };
    write_stdout(&text)
}

fn direction(n: &LstmNodeInfo) -> &'static str {
    n.direction.map_or("?", |d| d.onnx_name())
}

fn options(n: &LstmNodeInfo) -> Vec<String> {
    let mut o = Vec::new();
    if n.peepholes {
        o.push("peepholes".to_string());
    }
    if let Some(c) = n.clip {
        o.push(format!("clip={c}"));
    }
    if n.input_forget {
        o.push("input_forget".to_string());
    }
    o
}

fn size(v: Option<usize>) -> String {
    v.map_or_else(|| "?".to_string(), |n| n.to_string())
}

fn render_text(
    args: &InspectArgs,
    nodes: &[&LstmNodeInfo],
    loaded: Option<&onnx::OnnxLstm>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "model:       {}",
        args.model.display().to_string().escape_debug()
    );
    let _ = writeln!(s, "format:      ONNX, {} LSTM node(s)", nodes.len());
    for n in nodes {
        let _ = writeln!(s, "node:        {}", n.name.escape_debug());
        let _ = writeln!(s, "  path:        {}", n.path.escape_debug());
        let _ = writeln!(s, "  input_size:  {}", size(n.input_size));
        let _ = writeln!(s, "  hidden_size: {}", size(n.hidden_size));
        let _ = writeln!(s, "  direction:   {}", direction(n));
        let _ = writeln!(
            s,
            "  layout:      {}",
            if n.batch_first {
                "1 (batch first)"
            } else {
                "0 (sequence first)"
            }
        );
        let _ = writeln!(s, "  dtype:       {}", n.dtype.unwrap_or("?"));
        let _ = writeln!(s, "  bias:        {}", n.bias);
        let opts = options(n);
        let _ = writeln!(
            s,
            "  options:     {}",
            if opts.is_empty() {
                "none".to_string()
            } else {
                opts.join(", ")
            }
        );
        if let Some((first, layer)) = &n.chain {
            let _ = writeln!(
                s,
                "  chain:       layer {layer} of the LSTM starting at `{}`",
                first.escape_debug()
            );
        }
        match &n.problem {
            None => {
                let _ = writeln!(s, "  loads:       yes");
            }
            Some(p) => {
                let _ = writeln!(s, "  loads:       no: {}", p.escape_debug());
            }
        }
    }
    if let Some(m) = loaded {
        let c = m.weights().config();
        let _ = writeln!(
            s,
            "loads as:    {} layer(s), nodes {:?}",
            c.num_layers,
            m.nodes()
        );
        let _ = writeln!(s, "parameters:  {}", c.parameter_count());
        if let Some(o) = c.onnx_only_options() {
            let _ = writeln!(
                s,
                "engines:     naive only ({o} are not in the simd/parallel engines yet)"
            );
        } else {
            let _ = writeln!(s, "engines:     naive, simd, parallel");
        }
    }
    s
}

fn render_json(
    args: &InspectArgs,
    nodes: &[&LstmNodeInfo],
    loaded: Option<&onnx::OnnxLstm>,
) -> String {
    let nodes: Vec<serde_json::Value> = nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "name": n.name,
                "path": n.path,
                "input_size": n.input_size,
                "hidden_size": n.hidden_size,
                "direction": direction(n),
                "layout": u8::from(n.batch_first),
                "dtype": n.dtype,
                "bias": n.bias,
                "peepholes": n.peepholes,
                "clip": n.clip,
                "input_forget": n.input_forget,
                "chain": n.chain.as_ref().map(|(first, layer)| serde_json::json!({"first": first, "layer": layer})),
                "problem": n.problem,
            })
        })
        .collect();
    let mut summary = serde_json::json!({
        "model": args.model.to_string_lossy(),
        "format": "onnx",
        "nodes": nodes,
    });
    if let Some(m) = loaded {
        let c = m.weights().config();
        summary["loads_as"] = serde_json::json!({
            "nodes": m.nodes(),
            "num_layers": c.num_layers,
            "parameter_count": c.parameter_count(),
        });
    }
    format!("{summary}\n")
}
