//! `lstm inspect`: the LSTM found in a safetensors file.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use clap::Args;
use lstm::Model;
use serde::Serialize;

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
}

/// What `lstm inspect` shows of a model file; `--json` prints it as one object with these
/// keys (scripts depend on them), the text form as aligned lines.
#[derive(Debug, Serialize)]
struct Summary {
    /// The file, as given.
    model: String,
    /// The LSTM's module prefix in the file ("" for the top level).
    prefix: String,
    config: ConfigSummary,
    tensors: Vec<TensorSummary>,
    parameter_count: usize,
}

/// The `nn.LSTM` constructor arguments the tensors imply.
#[derive(Debug, Serialize)]
struct ConfigSummary {
    input_size: usize,
    hidden_size: usize,
    num_layers: usize,
    bias: bool,
    bidirectional: bool,
    proj_size: usize,
}

/// One tensor of the file.
#[derive(Debug, Serialize)]
struct TensorSummary {
    name: String,
    dtype: String,
    shape: Vec<usize>,
}

impl Summary {
    /// The summary of a safetensors `state_dict` loaded from `path`.
    fn of_model(path: &std::path::Path, model: &Model) -> Self {
        let c = model.config();
        Summary {
            model: path.to_string_lossy().into_owned(),
            prefix: model.prefix().to_string(),
            config: ConfigSummary {
                input_size: c.input_size,
                hidden_size: c.hidden_size,
                num_layers: c.num_layers,
                bias: c.bias,
                bidirectional: c.bidirectional,
                proj_size: c.proj_size,
            },
            tensors: model
                .tensors()
                .iter()
                .map(|t| TensorSummary {
                    name: t.name.clone(),
                    dtype: t.dtype.clone(),
                    shape: t.shape.clone(),
                })
                .collect(),
            parameter_count: c.parameter_count(),
        }
    }
}

/// Runs `lstm inspect`.
pub(crate) fn inspect(args: &InspectArgs) -> CliResult {
    let model = Model::load_with_prefix(&args.model, args.prefix.as_deref())
        .map_err(|e| CliError::in_arg("--model", &args.model, e))?;
    let summary = Summary::of_model(&args.model, &model);
    let text = if args.json {
        render_json(&summary)?
    } else {
        render_text(&summary)
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

fn render_text(summary: &Summary) -> String {
    let c = &summary.config;
    let mut s = String::new();
    let prefix = if summary.prefix.is_empty() {
        "\"\" (top level)".to_string()
    } else {
        format!("\"{}\"", summary.prefix.escape_debug())
    };
    let _ = writeln!(s, "model:         {}", summary.model.escape_debug());
    let _ = writeln!(s, "prefix:        {prefix}");
    let _ = writeln!(s, "input_size:    {}", c.input_size);
    let _ = writeln!(s, "hidden_size:   {}", c.hidden_size);
    let _ = writeln!(s, "num_layers:    {}", c.num_layers);
    let _ = writeln!(s, "bias:          {}", c.bias);
    let _ = writeln!(s, "bidirectional: {}", c.bidirectional);
    let _ = writeln!(s, "proj_size:     {}", c.proj_size);
    let _ = writeln!(s, "tensors:       {}", summary.tensors.len());
    let names: Vec<String> = summary
        .tensors
        .iter()
        .map(|t| t.name.escape_debug().to_string())
        .collect();
    let name_width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let dtype_width = summary
        .tensors
        .iter()
        .map(|t| t.dtype.chars().count())
        .max()
        .unwrap_or(0);
    for (t, name) in summary.tensors.iter().zip(&names) {
        let _ = writeln!(
            s,
            "  {name:<name_width$}  {:<dtype_width$}  {:?}",
            t.dtype.escape_debug().to_string(),
            t.shape
        );
    }
    let _ = writeln!(
        s,
        "parameters:    {}",
        group_thousands(summary.parameter_count)
    );
    s
}

/// One line of JSON.
fn render_json(summary: &Summary) -> CliResult<String> {
    let mut text = serde_json::to_string(summary)
        .map_err(|e| CliError::msg(format!("cannot encode the summary as JSON: {e}")))?;
    text.push('\n');
    Ok(text)
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes() {
        let json = serde_json::to_string("a\"b\\c\n\u{1}é").unwrap();
        assert_eq!(json, "\"a\\\"b\\\\c\\n\\u0001é\"");
    }

    #[test]
    fn thousands() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(1_234_567), "1,234,567");
    }
}
