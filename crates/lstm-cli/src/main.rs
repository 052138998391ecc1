//! `lstm`: run and inspect PyTorch `torch.nn.LSTM` models on the CPU.
//!
//! Every subcommand lives in its own module and returns a [`CliResult`]; `main` turns an
//! error into exactly one line on stderr, `error: <message>`, and exit code 1. Usage errors
//! found by clap are also printed as one `error:` line, with clap's exit code (2).
#![forbid(unsafe_code)]

mod bench;
mod cli_common;
mod error;
mod grad;
mod inspect;
mod output;
mod report;
mod run;

use std::io::Write;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};

pub(crate) use crate::error::{CliError, CliResult};

/// Run PyTorch `torch.nn.LSTM` models on the CPU, with PyTorch's numbers.
///
/// Models are safetensors files holding an `nn.LSTM` `state_dict` (saved with
/// `safetensors.torch.save_file(model.state_dict(), "m.safetensors")`); the LSTM's
/// configuration is inferred from the tensor shapes. Arrays are NumPy `.npy` files.
///
/// On failure, `lstm` prints exactly one line, `error: <message>`, on stderr, exits with
/// status 1 (2 for a usage error), and leaves no output file behind.
#[derive(Debug, Parser)]
#[command(
    name = "lstm",
    version,
    propagate_version = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a model's forward pass over an input `.npy` and write the output (and the final
    /// states) as f32 `.npy` files.
    #[command(
        long_about = "Run a model's forward pass over an input `.npy` and write the output (and \
                      optionally the final states h_n, c_n) as f32 `.npy` files, in PyTorch's \
                      shapes.\n\n\
                      Equivalent to `output, (h_n, c_n) = lstm(x, (h0, c0))` in eval mode, or, \
                      with --lengths, to running a packed sequence \
                      (`pack_padded_sequence(x, lengths, enforce_sorted=False)`) and padding the \
                      output back to T with zeros.\n\n\
                      Every input is checked and the whole computation done before anything is \
                      written; outputs are then written to temporary files and renamed into \
                      place, so that on any error no output file is created or changed."
    )]
    Run(run::RunArgs),
    /// Show the LSTM in a safetensors file: its inferred configuration, tensors and parameter
    /// count.
    Inspect(inspect::InspectArgs),
    /// Run a model's backward pass (BPTT): from the upstream gradient of the output (and of
    /// h_n, c_n), write the gradients of every parameter (and of the input, h0, c0).
    #[command(
        long_about = "Run a model's backward pass (BPTT): from the upstream gradient of the output \
                      (and optionally of h_n, c_n), write the gradient of every parameter as a \
                      safetensors file named like the model's tensors, and optionally the \
                      gradients of the input, h0 and c0 as f32 `.npy` files.\n\n\
                      Equivalent to `output, (h_n, c_n) = lstm(x, (h0, c0))` then \
                      `torch.autograd.backward([output, h_n, c_n], [gy, ghn, gcn])` in eval mode; \
                      with --lengths, through `pack_padded_sequence(enforce_sorted=False)` and \
                      `pad_packed_sequence`.\n\n\
                      As with `run`, every input is checked and the whole computation done \
                      before anything is written, and on any error no output file is created or \
                      changed."
    )]
    Grad(grad::GradArgs),
    /// Time an engine on one shape (random weights and input): median, spread and GFLOP/s;
    /// `--json` adds one JSON object as the last line.
    Bench(bench::BenchArgs),
    /// The performance report: every engine, backend and thread count on a grid of real
    /// workloads, beside PyTorch and onnxruntime when Python has them, bounded by the
    /// machine's measured FMA peak and bandwidth; writes REPORT.md, SVG charts and JSON.
    Report(report::ReportArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(&e),
    };
    // A panic is a bug of ours, never the user's: it still gets the one-line error contract
    // (the default hook's multi-line report is silenced), and staged outputs are removed as
    // the stack unwinds.
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| match &cli.command {
        Command::Run(args) => run::run(args),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Grad(args) => grad::grad(args),
        Command::Bench(args) => bench::bench(args),
        Command::Report(args) => report::report(args),
    });
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            print_error_line(&e.to_string());
            ExitCode::from(1)
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            print_error_line(&format!("internal error (please report it): {what}"));
            ExitCode::from(1)
        }
    }
}

/// Prints `error: <message>` as exactly one line on stderr (ignoring a closed stderr).
fn print_error_line(message: &str) {
    let line = one_line(message);
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    let _ = writeln!(std::io::stderr().lock(), "error: {line}");
}

/// Collapses whitespace runs that contain a line break into one space.
fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Handles a clap error: help and version go out as clap prints them; a usage error becomes
/// one `error:` line (its first paragraph and any tips), with clap's exit code.
fn clap_exit(e: &clap::Error) -> ExitCode {
    let code = u8::try_from(e.exit_code()).unwrap_or(2);
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(code)
        }
        _ => {
            let rendered = e.render().to_string();
            let mut parts: Vec<String> = Vec::new();
            let mut command =
                invoked_subcommand().map_or("lstm".to_string(), |c| format!("lstm {c}"));
            for (i, paragraph) in rendered.split("\n\n").enumerate() {
                let text = one_line(paragraph);
                if let Some(usage) = text.strip_prefix("Usage: ") {
                    // `Usage: lstm run [OPTIONS] ...` -> `lstm run`
                    command = usage
                        .split_whitespace()
                        .take_while(|w| !w.starts_with(['[', '<', '-']))
                        .collect::<Vec<_>>()
                        .join(" ");
                } else if (i == 0 || text.starts_with("tip:")) && !text.is_empty() {
                    parts.push(text);
                }
            }
            print_error_line(&format!("{} (see `{command} --help`)", parts.join("; ")));
            ExitCode::from(code)
        }
    }
}

/// The subcommand named on the command line, if any (for error hints).
fn invoked_subcommand() -> Option<String> {
    let first = std::env::args_os().nth(1)?;
    let first = first.to_str()?;
    Cli::command()
        .get_subcommands()
        .any(|c| c.get_name() == first)
        .then(|| first.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn one_line_joins_lines() {
        assert_eq!(one_line("a\n  b\r\n\nc "), "a b c");
    }
}
