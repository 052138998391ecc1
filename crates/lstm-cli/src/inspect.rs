//! `lstm inspect`: the LSTM found in a safetensors file.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use lstm::Model;

use crate::{CliError, CliResult};

/// Arguments of `lstm inspect`.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The model: a safetensors file holding an `nn.LSTM` state_dict.
    #[arg(long, value_name = "M.safetensors")]
    model: PathBuf,

    /// The module prefix of the LSTM in the file (`encoder.rnn` or `encoder.rnn.`; "" for
    /// the top level). Needed only when the file holds several LSTMs.
    #[arg(long, value_name = "P")]
    prefix: Option<String>,

    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,

    /// ONNX models: show only the LSTM node NAME (or `path/NAME`), and the model it loads as.
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
}

/// The ONNX listing (`lstm inspect model.onnx`).
mod onnx;

/// Runs `lstm inspect`.
pub(crate) fn inspect(args: &InspectArgs) -> CliResult {
    if let Some(result) = onnx::inspect_if_onnx(args) {
        return result;
    }
    if args.node.is_some() {
        return Err(CliError::msg(
            "--node applies to ONNX models; this model is a safetensors state_dict (use --prefix)",
        ));
    }
    let model = Model::load_with_prefix(&args.model, args.prefix.as_deref())
        .map_err(|e| CliError::in_arg("--model", &args.model, e))?;
    let text = if args.json {
        render_json(&args.model, &model)
    } else {
        render_text(&args.model, &model)
    };
    write_stdout(&text)
}

/// Writes to stdout; a closed pipe (`lstm inspect ... | head -1`) is not an error.
pub(crate) fn write_stdout(text: &str) -> CliResult {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::msg(format!("writing to stdout: {e}"))),
    }
}

fn render_text(path: &Path, model: &Model) -> String {
    let c = model.config();
    let mut s = String::new();
    let prefix = if model.prefix().is_empty() {
        "\"\" (top level)".to_string()
    } else {
        format!("\"{}\"", model.prefix().escape_debug())
    };
    let _ = writeln!(
        s,
        "model:         {}",
        path.display().to_string().escape_debug()
    );
    let _ = writeln!(s, "prefix:        {prefix}");
    let _ = writeln!(s, "input_size:    {}", c.input_size);
    let _ = writeln!(s, "hidden_size:   {}", c.hidden_size);
    let _ = writeln!(s, "num_layers:    {}", c.num_layers);
    let _ = writeln!(s, "bias:          {}", c.bias);
    let _ = writeln!(s, "bidirectional: {}", c.bidirectional);
    let _ = writeln!(s, "proj_size:     {}", c.proj_size);
    let _ = writeln!(s, "tensors:       {}", model.tensors().len());
    let names: Vec<String> = model
        .tensors()
        .iter()
        .map(|t| t.name.escape_debug().to_string())
        .collect();
    let name_width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let dtype_width = model
        .tensors()
        .iter()
        .map(|t| t.dtype.chars().count())
        .max()
        .unwrap_or(0);
    for (t, name) in model.tensors().iter().zip(&names) {
        let _ = writeln!(
            s,
            "  {name:<name_width$}  {:<dtype_width$}  {:?}",
            t.dtype.escape_debug().to_string(),
            t.shape
        );
    }
    let _ = writeln!(s, "parameters:    {}", group_thousands(c.parameter_count()));
    s
}

fn render_json(path: &Path, model: &Model) -> String {
    let c = model.config();
    let mut s = String::from("{");
    let _ = write!(s, "\"model\":{}", json_string(&path.to_string_lossy()));
    let _ = write!(s, ",\"prefix\":{}", json_string(model.prefix()));
    let _ = write!(
        s,
        ",\"config\":{{\"input_size\":{},\"hidden_size\":{},\"num_layers\":{},\"bias\":{},\
         \"bidirectional\":{},\"proj_size\":{}}}",
        c.input_size, c.hidden_size, c.num_layers, c.bias, c.bidirectional, c.proj_size
    );
    s.push_str(",\"tensors\":[");
    for (i, t) in model.tensors().iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let shape: Vec<String> = t.shape.iter().map(usize::to_string).collect();
        let _ = write!(
            s,
            "{{\"name\":{},\"dtype\":{},\"shape\":[{}]}}",
            json_string(&t.name),
            json_string(&t.dtype),
            shape.join(",")
        );
    }
    let _ = writeln!(s, "],\"parameter_count\":{}}}", c.parameter_count());
    s
}

/// A JSON string literal (RFC 8259 escaping).
pub(crate) fn json_string(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 2);
    s.push('"');
    for ch in text.chars() {
        match ch {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            '\u{08}' => s.push_str("\\b"),
            '\u{0c}' => s.push_str("\\f"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(s, "\\u{:04x}", u32::from(c));
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// `1234567` → `1,234,567`.
fn group_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes() {
        assert_eq!(json_string("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }

    #[test]
    fn thousands() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(1_234_567), "1,234,567");
    }
}
