//! `lstm convert`: writes a model (an ONNX LSTM node or chain, or any state_dict we load,
//! `nn.LSTMCell` included) as an `nn.LSTM` state_dict in safetensors, so that its weights move
//! into PyTorch (`lstm.load_state_dict(safetensors.torch.load_file(...))`).

use std::path::PathBuf;

use clap::Args;
use lstm::{LstmError, Model};

use crate::output::{check_paths, StagedOutputs};
use crate::{CliError, CliResult};

/// Arguments of `lstm convert`.
#[derive(Debug, Args)]
pub(crate) struct ConvertArgs {
    /// The model: an ONNX file or a safetensors state_dict (told apart by content).
    #[arg(long, value_name = "M")]
    model: PathBuf,

    /// Where to write the `nn.LSTM` state_dict (safetensors, F32).
    #[arg(long, value_name = "OUT.safetensors")]
    output: PathBuf,

    /// ONNX models: the LSTM node to convert (needed only when the model holds several).
    #[arg(long, value_name = "NAME")]
    node: Option<String>,

    /// Safetensors models: the module prefix of the LSTM to convert.
    #[arg(long, value_name = "P")]
    prefix: Option<String>,

    /// The module prefix to write the tensors under (default: none, `weight_ih_l0`, ...).
    #[arg(long, value_name = "P", default_value = "")]
    output_prefix: String,
}

/// Runs `lstm convert`.
pub(crate) fn convert(args: &ConvertArgs) -> CliResult {
    check_paths(&[("--model", &args.model)], &[("--output", &args.output)])?;
    let model = match &args.node {
        Some(node) => Model::load_onnx(&args.model, Some(node)),
        None => Model::load_with_prefix(&args.model, args.prefix.as_deref()),
    }
    .map_err(|e| CliError::in_arg("--model", &args.model, e))?;
    if let Some(options) = model.config().onnx_only_options() {
        return Err(CliError::msg(format!(
            "--model {}: cannot convert to an nn.LSTM state_dict: the model uses {options}, which torch.nn.LSTM cannot express",
            args.model.display()
        )));
    }
    let bytes = lstm::io::serialize_safetensors(model.weights(), &args.output_prefix)
        .map_err(|e: LstmError| CliError::in_arg("--output", &args.output, e))?;
    let mut staged = StagedOutputs::new();
    staged.stage("--output", &args.output, &bytes)?;
    staged.commit()
}
