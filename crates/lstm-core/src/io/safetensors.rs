//! safetensors `state_dict` load and save.
//!
//! A file may hold any number of tensors; the LSTM is found by its `weight_ih_l0` tensor under a
//! module prefix (`""` at the top level, `"encoder.rnn."` for `model.encoder.rnn`), and its
//! config is inferred from the shapes of the tensors under that prefix. Nothing in the file is
//! trusted: the safetensors crate checks the header's offsets against the buffer, and every
//! tensor's byte length is checked again against its shape and dtype before it is converted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::config::LstmConfig;
use crate::error::{LstmError, Result};
use crate::tensor::checked_numel;
use crate::weights::{LstmWeights, ParamKind};

/// One tensor of a loaded file, as `lstm inspect` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Full name, prefix included.
    pub name: String,
    /// dtype as safetensors names it (`F32`, `BF16`, ...).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
}

/// An LSTM found in a safetensors file.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedModel {
    /// The weights, converted to f32, with the config inferred from the shapes
    /// (`batch_first = false`, `dropout = 0`: a state_dict does not record them).
    pub weights: LstmWeights<f32>,
    /// The module prefix the LSTM was found under (`""` or ending in `.`).
    pub prefix: String,
    /// The LSTM's tensors as stored in the file.
    pub tensors: Vec<TensorInfo>,
}

/// The dtypes we convert, in words, for [`LstmError::UnsupportedDtype`].
const ACCEPTED_DTYPES: &str = "F32, F64, F16 or BF16";

/// The name every `nn.LSTM` state_dict has, whatever its config.
const FIRST_WEIGHT: &str = "weight_ih_l0";

/// `prefix` as a module prefix: empty, or ending in `.`.
pub(crate) fn normalise_prefix(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('.') {
        prefix.to_string()
    } else {
        format!("{prefix}.")
    }
}

/// What the layer-0 shapes under a prefix say about the module: `weight_ih_l0` is `[G·H, I]`
/// and `weight_hh_l0` `[G·H, H_out]` with G = 4 gates for an LSTM, 3 for a GRU, 1 for a plain
/// RNN. `Ok(())` when it may be an LSTM (or the shapes are too broken to tell: then the full
/// inference reports exactly what is wrong); otherwise an error naming the module it looks like.
fn check_lstm_shaped(file: &SafeTensors<'_>, prefix: &str) -> Result<()> {
    let shape = |name: &str| {
        file.tensor(&format!("{prefix}{name}"))
            .ok()
            .map(|v| v.shape().to_vec())
    };
    let (Some(ih), Some(hh)) = (shape(FIRST_WEIGHT), shape("weight_hh_l0")) else {
        return Ok(());
    };
    let (&[rows, _], &[hh_rows, hh_cols]) = (ih.as_slice(), hh.as_slice()) else {
        return Ok(());
    };
    if rows == 0 || hh_rows != rows || hh_cols == 0 {
        return Ok(());
    }
    let projected = shape("weight_hr_l0").is_some_and(|hr| hr.first() == Some(&hh_cols));
    if rows.is_multiple_of(4) && (hh_cols.checked_mul(4) == Some(rows) || projected) {
        return Ok(());
    }
    let looks_like = if hh_cols.checked_mul(3) == Some(rows) {
        "a GRU (3 gates)"
    } else if hh_cols == rows {
        "a plain RNN (1 gate)"
    } else {
        return Ok(());
    };
    Err(LstmError::NotAnLstm {
        prefix: prefix.to_string(),
        reason: format!(
            "weight_ih_l0 {ih:?} and weight_hh_l0 {hh:?} have {rows} = {}·{hh_cols} gate rows: {looks_like}; an LSTM has 4·hidden_size",
            rows / hh_cols
        ),
    })
}

/// A parameter tensor of the chosen LSTM, keyed in PyTorch's registration order.
struct Param<'data> {
    kind: ParamKind,
    full_name: String,
    view: TensorView<'data>,
}

/// `(layer, reverse, index of the kind in ParamKind::ALL)`: sorts as PyTorch registers them.
type ParamKey = (usize, bool, usize);

fn param_key(kind: ParamKind, layer: usize, reverse: bool) -> ParamKey {
    let index = ParamKind::ALL
        .iter()
        .position(|&k| k == kind)
        .unwrap_or(ParamKind::ALL.len());
    (layer, reverse, index)
}

/// Parses a safetensors file's bytes; `prefix` chooses the LSTM when the file holds several.
///
/// With `prefix = None` the file must hold exactly one LSTM (a tensor named `weight_ih_l0`
/// under some module prefix); with `Some(p)`, `p` is the module path with or without its
/// trailing `.` (`""` for the top level).
pub fn parse_safetensors(bytes: &[u8], prefix: Option<&str>) -> Result<LoadedModel> {
    let file = SafeTensors::deserialize(bytes).map_err(LstmError::from)?;

    let candidates: BTreeSet<String> = file
        .names()
        .into_iter()
        .filter_map(|name| name.strip_suffix(FIRST_WEIGHT))
        .filter(|p| p.is_empty() || p.ends_with('.'))
        .map(str::to_string)
        .collect();
    let prefix = match prefix {
        Some(asked) => {
            let asked = normalise_prefix(asked);
            if !candidates.contains(&asked) {
                return Err(LstmError::PrefixNotFound {
                    prefix: asked,
                    available: candidates.into_iter().collect(),
                });
            }
            check_lstm_shaped(&file, &asked)?;
            asked
        }
        None => {
            // GRUs and plain RNNs have `weight_ih_l0` too: only LSTM-shaped modules count.
            let (lstms, others): (Vec<String>, Vec<String>) = candidates
                .into_iter()
                .partition(|p| check_lstm_shaped(&file, p).is_ok());
            let mut found = lstms.into_iter();
            match (found.next(), found.next()) {
                (Some(only), None) => only,
                (None, _) => {
                    return Err(match others.first() {
                        Some(p) => check_lstm_shaped(&file, p)
                            .err()
                            .unwrap_or(LstmError::NoLstmFound { count: file.len() }),
                        None => LstmError::NoLstmFound { count: file.len() },
                    })
                }
                (Some(first), Some(second)) => {
                    let mut all = vec![first, second];
                    all.extend(found);
                    return Err(LstmError::AmbiguousPrefix { candidates: all });
                }
            }
        }
    };

    // The LSTM's parameter tensors: directly under the prefix, with a parameter name.
    let mut params: BTreeMap<ParamKey, Param<'_>> = BTreeMap::new();
    for (name, view) in file.iter() {
        let Some(local) = name.strip_prefix(prefix.as_str()) else {
            continue;
        };
        if local.contains('.') {
            continue;
        }
        if let Some((kind, layer, reverse)) = ParamKind::parse(local) {
            params.insert(
                param_key(kind, layer, reverse),
                Param {
                    kind,
                    full_name: name.to_string(),
                    view,
                },
            );
        }
    }

    let config = infer_config(&prefix, &params)?;
    check_unexpected(&config, &params)?;
    let weights = build_weights(&prefix, config, &params)?;

    let mut tensors = Vec::new();
    for (name, _, _) in weights.named_tensors() {
        let param = ParamKind::parse(&name)
            .and_then(|(kind, layer, reverse)| params.get(&param_key(kind, layer, reverse)))
            .ok_or_else(|| LstmError::MissingTensor {
                name: format!("{prefix}{name}"),
            })?;
        tensors.push(TensorInfo {
            name: param.full_name.clone(),
            dtype: param.view.dtype().to_string(),
            shape: param.view.shape().to_vec(),
        });
    }
    Ok(LoadedModel {
        weights,
        prefix,
        tensors,
    })
}

/// The 2-D shape `[rows, cols]` of a tensor, or a rank error naming it.
fn matrix_dims(param: &Param<'_>, expected: &str) -> Result<(usize, usize)> {
    match param.view.shape() {
        &[rows, cols] => Ok((rows, cols)),
        shape => Err(LstmError::RankMismatch {
            what: param.full_name.clone().into(),
            expected: expected.to_string(),
            found: shape.len(),
            shape: shape.to_vec(),
        }),
    }
}

/// Infers the `nn.LSTM` arguments from the shapes of its parameters.
fn infer_config(prefix: &str, params: &BTreeMap<ParamKey, Param<'_>>) -> Result<LstmConfig> {
    let get =
        |kind: ParamKind, layer: usize, reverse: bool| params.get(&param_key(kind, layer, reverse));
    let full = |name: &str| format!("{prefix}{name}");

    let w_ih0 = get(ParamKind::WeightIh, 0, false).ok_or_else(|| LstmError::MissingTensor {
        name: full(FIRST_WEIGHT),
    })?;
    let (rows, input_size) = matrix_dims(w_ih0, "a 2-D array [4*hidden_size, input_size]")?;
    if rows == 0 || !rows.is_multiple_of(4) {
        return Err(LstmError::ShapeMismatch {
            what: format!(
                "{} (its rows are 4*hidden_size: a positive multiple of 4)",
                w_ih0.full_name
            )
            .into(),
            expected: vec![4 * (rows / 4).max(1), input_size],
            found: vec![rows, input_size],
        });
    }
    let hidden_size = rows / 4;

    // Layers must be 0, 1, ..., L-1 with no gap: the first layer without a `weight_ih` that
    // lies below the highest layer index seen is missing. Checking this here also bounds
    // `num_layers` by the number of tensors in the file, whatever index a name claims.
    let max_layer = params.keys().map(|&(layer, _, _)| layer).max().unwrap_or(0);
    let first_weight = param_key(ParamKind::WeightIh, 0, false).2;
    let mut num_layers = 0usize;
    for &(layer, reverse, kind) in params.keys() {
        // Keys sort by layer, so this counts the run of layers 0, 1, ... that have one.
        if !reverse && kind == first_weight && layer == num_layers {
            num_layers += 1;
        }
    }
    if num_layers <= max_layer {
        return Err(LstmError::MissingTensor {
            name: full(&ParamKind::WeightIh.name(num_layers, false)),
        });
    }

    let bidirectional = get(ParamKind::WeightIh, 0, true).is_some();

    let bias = match (
        get(ParamKind::BiasIh, 0, false),
        get(ParamKind::BiasHh, 0, false),
    ) {
        (Some(_), Some(_)) => true,
        (None, None) => false,
        (Some(_), None) => {
            return Err(LstmError::MissingTensor {
                name: full(&ParamKind::BiasHh.name(0, false)),
            })
        }
        (None, Some(_)) => {
            return Err(LstmError::MissingTensor {
                name: full(&ParamKind::BiasIh.name(0, false)),
            })
        }
    };

    let proj_size = match get(ParamKind::WeightHr, 0, false) {
        None => 0,
        Some(w_hr) => {
            let (proj, cols) = matrix_dims(w_hr, "a 2-D array [proj_size, hidden_size]")?;
            if proj == 0 {
                return Err(LstmError::ShapeMismatch {
                    what: format!(
                        "{} (its rows are proj_size, which must be at least 1 when the tensor exists)",
                        w_hr.full_name
                    ).into(),
                    expected: vec![1, hidden_size],
                    found: vec![proj, cols],
                });
            }
            proj
        }
    };

    let config = LstmConfig {
        input_size,
        hidden_size,
        num_layers,
        bias,
        batch_first: false,
        dropout: 0.0,
        bidirectional,
        proj_size,
    };
    config.validate()?;
    Ok(config)
}

/// Refuses any parameter-named tensor under the prefix that the inferred config has no use for.
fn check_unexpected(config: &LstmConfig, params: &BTreeMap<ParamKey, Param<'_>>) -> Result<()> {
    for (&(layer, reverse, _), param) in params {
        let kind = param.kind;
        let reason = if reverse && !config.bidirectional {
            Some(format!(
                "the LSTM is unidirectional (there is no `{}` beside it)",
                sibling(&param.full_name, &ParamKind::WeightIh.name(0, true))
            ))
        } else if layer >= config.num_layers {
            Some(format!(
                "the LSTM has {} layers (0..{})",
                config.num_layers, config.num_layers
            ))
        } else if kind.shape(config, layer).is_none() {
            Some(match kind {
                ParamKind::BiasIh | ParamKind::BiasHh => format!(
                    "the LSTM has bias=False (there is no `{}` nor `{}` beside it)",
                    sibling(&param.full_name, &ParamKind::BiasIh.name(0, false)),
                    sibling(&param.full_name, &ParamKind::BiasHh.name(0, false)),
                ),
                ParamKind::WeightHr => format!(
                    "the LSTM has proj_size=0 (there is no `{}` beside it)",
                    sibling(&param.full_name, &ParamKind::WeightHr.name(0, false)),
                ),
                ParamKind::WeightIh | ParamKind::WeightHh => {
                    "the inferred config has no such parameter".to_string()
                }
            })
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(LstmError::UnexpectedTensor {
                name: param.full_name.clone(),
                reason,
            });
        }
    }
    Ok(())
}

/// `name` with its last path component replaced by `local`.
fn sibling(name: &str, local: &str) -> String {
    match name.rsplit_once('.') {
        Some((module, _)) => format!("{module}.{local}"),
        None => local.to_string(),
    }
}

/// Converts each tensor the config needs and checks its shape, with names in errors carrying
/// the prefix.
fn build_weights(
    prefix: &str,
    config: LstmConfig,
    params: &BTreeMap<ParamKey, Param<'_>>,
) -> Result<LstmWeights<f32>> {
    let mut failure: Option<LstmError> = None;
    let lookup = |name: &str| -> Option<(Vec<usize>, Vec<f32>)> {
        if failure.is_some() {
            return None;
        }
        let (kind, layer, reverse) = ParamKind::parse(name)?;
        let param = params.get(&param_key(kind, layer, reverse))?;
        let shape = param.view.shape().to_vec();
        if kind.shape(&config, layer).as_deref() != Some(shape.as_slice()) {
            // Let `from_named` report the shape mismatch; convert nothing.
            return Some((shape, Vec::new()));
        }
        match view_to_f32(&param.full_name, &param.view) {
            Ok(data) => Some((shape, data)),
            Err(e) => {
                failure = Some(e);
                None
            }
        }
    };
    let result = LstmWeights::from_named(config.clone(), lookup);
    if let Some(e) = failure {
        return Err(e);
    }
    result.map_err(|e| with_prefix(e, prefix))
}

/// Puts `prefix` in front of the tensor name an error from [`LstmWeights`] carries.
fn with_prefix(error: LstmError, prefix: &str) -> LstmError {
    if prefix.is_empty() {
        return error;
    }
    match error {
        LstmError::MissingTensor { name } => LstmError::MissingTensor {
            name: format!("{prefix}{name}"),
        },
        LstmError::UnexpectedTensor { name, reason } => LstmError::UnexpectedTensor {
            name: format!("{prefix}{name}"),
            reason,
        },
        LstmError::UnsupportedDtype {
            name,
            dtype,
            expected,
        } => LstmError::UnsupportedDtype {
            name: format!("{prefix}{name}"),
            dtype,
            expected,
        },
        LstmError::ShapeMismatch {
            what,
            expected,
            found,
        } => LstmError::ShapeMismatch {
            what: format!("{prefix}{what}").into(),
            expected,
            found,
        },
        LstmError::ElementCount {
            what,
            shape,
            expected,
            found,
        } => LstmError::ElementCount {
            what: format!("{prefix}{what}").into(),
            shape,
            expected,
            found,
        },
        other => other,
    }
}

/// Decodes fixed-size little-endian elements.
fn decode_le<const N: usize>(data: &[u8], convert: impl Fn([u8; N]) -> f32) -> Vec<f32> {
    data.chunks_exact(N)
        .map(|chunk| {
            let mut bytes = [0u8; N];
            bytes.copy_from_slice(chunk);
            convert(bytes)
        })
        .collect()
}

/// A tensor's elements as f32, after checking its byte length against its shape and dtype.
fn view_to_f32(name: &str, view: &TensorView<'_>) -> Result<Vec<f32>> {
    let dtype = view.dtype();
    let item_size = match dtype {
        Dtype::F32 => 4,
        Dtype::F64 => 8,
        Dtype::F16 | Dtype::BF16 => 2,
        other => {
            return Err(LstmError::UnsupportedDtype {
                name: name.to_string(),
                dtype: other.to_string(),
                expected: ACCEPTED_DTYPES,
            })
        }
    };
    let shape = view.shape();
    let data = view.data();
    let expected = checked_numel(shape).and_then(|n| n.checked_mul(item_size));
    if expected != Some(data.len()) {
        return Err(LstmError::Safetensors {
            reason: format!(
                "tensor `{name}` ({dtype}, shape {shape:?}) needs {} bytes of data, found {}",
                expected.map_or_else(|| "more than usize::MAX".to_string(), |n| n.to_string()),
                data.len()
            ),
            source: None,
        });
    }
    Ok(match dtype {
        Dtype::F32 => decode_le::<4>(data, f32::from_le_bytes),
        Dtype::F64 => decode_le::<8>(data, |b| f64::from_le_bytes(b) as f32),
        Dtype::F16 => decode_le::<2>(data, |b| half::f16::from_le_bytes(b).to_f32()),
        // BF16 is the top half of an f32: exact.
        _ => decode_le::<2>(data, |b| half::bf16::from_le_bytes(b).to_f32()),
    })
}

/// Reads a safetensors file.
pub fn load_safetensors(path: &Path, prefix: Option<&str>) -> Result<LoadedModel> {
    let bytes = std::fs::read(path).map_err(|source| LstmError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_safetensors(&bytes, prefix).map_err(|e| e.in_file(path))
}

/// Encodes weights as a safetensors file (F32), names under `prefix`.
///
/// `prefix` is a module prefix: `""`, or a module path with or without its trailing `.`
/// (`"encoder.rnn"` and `"encoder.rnn."` both give `encoder.rnn.weight_ih_l0`, ...). The
/// file's metadata says `format: pt`, as `safetensors.torch.save_file` writes it.
pub fn serialize_safetensors(weights: &LstmWeights<f32>, prefix: &str) -> Result<Vec<u8>> {
    let prefix = normalise_prefix(prefix);
    let named = weights.named_tensors();
    let encoded: Vec<(String, Vec<usize>, Vec<u8>)> = named
        .into_iter()
        .map(|(name, shape, data)| {
            let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            (format!("{prefix}{name}"), shape, bytes)
        })
        .collect();
    let mut views = Vec::with_capacity(encoded.len());
    for (name, shape, bytes) in &encoded {
        let view = TensorView::new(Dtype::F32, shape.clone(), bytes).map_err(|e| {
            LstmError::Safetensors {
                reason: format!("tensor `{name}`: {e}"),
                source: Some(e),
            }
        })?;
        views.push((name.as_str(), view));
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(metadata)).map_err(LstmError::from)
}

/// Writes weights to a safetensors file, atomically.
pub fn save_safetensors(path: &Path, weights: &LstmWeights<f32>, prefix: &str) -> Result<()> {
    super::write_file_atomic(path, &serialize_safetensors(weights, prefix)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    type Entry = (String, Dtype, Vec<usize>, Vec<u8>);

    fn f32_bytes(data: &[f32]) -> Vec<u8> {
        data.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// The weights' tensors as F32 entries named under `prefix`.
    fn entries(weights: &LstmWeights<f32>, prefix: &str) -> Vec<Entry> {
        weights
            .named_tensors()
            .into_iter()
            .map(|(name, shape, data)| {
                (
                    format!("{prefix}{name}"),
                    Dtype::F32,
                    shape,
                    f32_bytes(data),
                )
            })
            .collect()
    }

    fn file(entries: &[Entry]) -> Vec<u8> {
        let views: Vec<(&str, TensorView<'_>)> = entries
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                (
                    name.as_str(),
                    TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
                )
            })
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    fn without(mut entries: Vec<Entry>, name: &str) -> Vec<Entry> {
        let before = entries.len();
        entries.retain(|e| e.0 != name);
        assert_eq!(entries.len() + 1, before, "{name}");
        entries
    }

    fn replace(entries: &mut [Entry], name: &str, dtype: Dtype, shape: Vec<usize>, bytes: Vec<u8>) {
        let entry = entries.iter_mut().find(|e| e.0 == name).unwrap();
        *entry = (name.to_string(), dtype, shape, bytes);
    }

    fn small() -> LstmWeights<f32> {
        LstmWeights::random(LstmConfig::new(3, 5).with_num_layers(2), 7).unwrap()
    }

    #[test]
    fn round_trip_with_and_without_prefix() {
        let weights = small();
        for (prefix, expected) in [
            ("", ""),
            ("encoder.rnn.", "encoder.rnn."),
            ("encoder.rnn", "encoder.rnn."),
        ] {
            let bytes = serialize_safetensors(&weights, prefix).unwrap();
            for asked in [None, Some(prefix), Some(expected)] {
                let loaded = parse_safetensors(&bytes, asked).unwrap();
                assert_eq!(loaded.weights, weights);
                assert_eq!(loaded.prefix, expected);
                let names: Vec<String> = loaded.tensors.iter().map(|t| t.name.clone()).collect();
                let want: Vec<String> = weights
                    .named_tensors()
                    .into_iter()
                    .map(|(n, _, _)| format!("{expected}{n}"))
                    .collect();
                assert_eq!(names, want);
                assert!(loaded.tensors.iter().all(|t| t.dtype == "F32"));
                assert_eq!(loaded.tensors[0].shape, vec![20, 3]);
            }
        }
    }

    #[test]
    fn bidirectional_projection_without_bias() {
        let config = LstmConfig::new(3, 5)
            .with_num_layers(3)
            .with_bidirectional(true)
            .with_proj_size(2)
            .with_bias(false);
        let weights = LstmWeights::random(config.clone(), 3).unwrap();
        let loaded =
            parse_safetensors(&serialize_safetensors(&weights, "m.").unwrap(), None).unwrap();
        assert_eq!(loaded.weights.config(), &config);
        assert_eq!(loaded.weights, weights);
        assert_eq!(loaded.tensors.len(), 3 * 2 * 3);
        assert_eq!(loaded.tensors[2].name, "m.weight_hr_l0");
        assert_eq!(loaded.tensors[3].name, "m.weight_ih_l0_reverse");
    }

    #[test]
    fn prefixes_are_found_chosen_or_refused() {
        let a = small();
        let b = LstmWeights::random(LstmConfig::new(2, 3), 1).unwrap();
        let mut all = entries(&a, "enc.rnn.");
        all.extend(entries(&b, "dec.rnn."));
        all.push((
            "enc.linear.weight".to_string(),
            Dtype::F32,
            vec![2],
            f32_bytes(&[1.0, 2.0]),
        ));
        let bytes = file(&all);
        match parse_safetensors(&bytes, None) {
            Err(LstmError::AmbiguousPrefix { candidates }) => {
                assert_eq!(candidates, vec!["dec.rnn.", "enc.rnn."])
            }
            other => panic!("{other:?}"),
        }
        for asked in ["enc.rnn", "enc.rnn."] {
            let loaded = parse_safetensors(&bytes, Some(asked)).unwrap();
            assert_eq!(
                (loaded.weights, loaded.prefix.as_str()),
                (a.clone(), "enc.rnn.")
            );
        }
        assert_eq!(
            parse_safetensors(&bytes, Some("dec.rnn")).unwrap().weights,
            b
        );
        for asked in ["enc", "", "rnn.", "."] {
            match parse_safetensors(&bytes, Some(asked)) {
                Err(LstmError::PrefixNotFound { prefix, available }) => {
                    assert_eq!(prefix, normalise_prefix(asked));
                    assert_eq!(available, vec!["dec.rnn.", "enc.rnn."]);
                }
                other => panic!("{asked}: {other:?}"),
            }
        }
        // A GRU beside the LSTM is not a candidate; alone, or asked for, it is named as such.
        let gru = |prefix: &str| {
            let (h, i) = (4usize, 2usize);
            vec![
                (
                    format!("{prefix}weight_ih_l0"),
                    Dtype::F32,
                    vec![3 * h, i],
                    f32_bytes(&vec![0.5; 3 * h * i]),
                ),
                (
                    format!("{prefix}weight_hh_l0"),
                    Dtype::F32,
                    vec![3 * h, h],
                    f32_bytes(&vec![0.5; 3 * h * h]),
                ),
            ]
        };
        let mut with_gru = entries(&a, "enc.");
        with_gru.extend(gru("dec."));
        let bytes = file(&with_gru);
        assert_eq!(parse_safetensors(&bytes, None).unwrap().prefix, "enc.");
        for asked in [Some("dec"), None] {
            let only_gru = if asked.is_some() {
                bytes.clone()
            } else {
                file(&gru("dec."))
            };
            match parse_safetensors(&only_gru, asked) {
                Err(LstmError::NotAnLstm { prefix, reason }) => {
                    assert_eq!(prefix, "dec.");
                    assert!(reason.contains("GRU"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
        // A top-level LSTM beside a nested one: the nested tensors are not the top one's.
        let mut nested = entries(&a, "");
        nested.extend(entries(&b, "sub."));
        let bytes = file(&nested);
        assert!(matches!(
            parse_safetensors(&bytes, None),
            Err(LstmError::AmbiguousPrefix { .. })
        ));
        assert_eq!(parse_safetensors(&bytes, Some("")).unwrap().weights, a);
        assert_eq!(parse_safetensors(&bytes, Some("sub")).unwrap().weights, b);
        // `xweight_ih_l0` is not under a module prefix.
        let odd = file(&[(
            "xweight_ih_l0".to_string(),
            Dtype::F32,
            vec![4, 1],
            f32_bytes(&[0.0; 4]),
        )]);
        assert!(matches!(
            parse_safetensors(&odd, None),
            Err(LstmError::NoLstmFound { count: 1 })
        ));
        let empty = file(&[]);
        assert!(matches!(
            parse_safetensors(&empty, None),
            Err(LstmError::NoLstmFound { count: 0 })
        ));
    }

    #[test]
    fn half_bfloat_and_double_are_converted() {
        let weights = small();
        let mut all = entries(&weights, "p.");
        let mut expected = Vec::new();
        for (i, (name, dtype, _, bytes)) in all.iter_mut().enumerate() {
            let values: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let (new_dtype, new_bytes, rounded): (Dtype, Vec<u8>, Vec<f32>) = match i % 4 {
                0 => (
                    Dtype::F16,
                    values
                        .iter()
                        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                        .collect(),
                    values
                        .iter()
                        .map(|&x| half::f16::from_f32(x).to_f32())
                        .collect(),
                ),
                1 => (
                    Dtype::BF16,
                    values
                        .iter()
                        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                        .collect(),
                    values
                        .iter()
                        .map(|&x| half::bf16::from_f32(x).to_f32())
                        .collect(),
                ),
                2 => (
                    Dtype::F64,
                    values
                        .iter()
                        .flat_map(|&x| (f64::from(x) + 1e-12).to_le_bytes())
                        .collect(),
                    values
                        .iter()
                        .map(|&x| (f64::from(x) + 1e-12) as f32)
                        .collect(),
                ),
                _ => (Dtype::F32, bytes.clone(), values.clone()),
            };
            // The rounding really changed something for the narrow types.
            if i % 4 < 2 {
                assert_ne!(rounded, values, "{name}");
            }
            *dtype = new_dtype;
            *bytes = new_bytes;
            expected.push((name.clone(), new_dtype.to_string(), rounded));
        }
        let loaded = parse_safetensors(&file(&all), None).unwrap();
        for ((name, dtype, values), ((local, _, data), info)) in expected.iter().zip(
            loaded
                .weights
                .named_tensors()
                .into_iter()
                .zip(&loaded.tensors),
        ) {
            assert_eq!(name, &format!("p.{local}"));
            assert_eq!(&info.name, name);
            assert_eq!(&info.dtype, dtype);
            assert_eq!(data, values.as_slice(), "{name}");
        }
        // Exact values: 1.5 in every format, and an f16 subnormal.
        let mut exact = entries(&LstmWeights::random(LstmConfig::new(1, 1), 0).unwrap(), "");
        replace(
            &mut exact,
            "weight_ih_l0",
            Dtype::F16,
            vec![4, 1],
            [0x3e00u16, 0x0001, 0xbc00, 0x7c00]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        );
        replace(
            &mut exact,
            "weight_hh_l0",
            Dtype::BF16,
            vec![4, 1],
            [0x3fc0u16, 0xbf80, 0x0000, 0x4049]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        );
        replace(
            &mut exact,
            "bias_ih_l0",
            Dtype::F64,
            vec![4],
            [1.5f64, -1.0, 1e300, 0.1]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        );
        let w = parse_safetensors(&file(&exact), None).unwrap().weights;
        let cell = &w.cells()[0];
        assert_eq!(cell.w_ih, vec![1.5, 2f32.powi(-24), -1.0, f32::INFINITY]);
        assert_eq!(cell.w_hh, vec![1.5, -1.0, 0.0, 3.140625]);
        assert_eq!(
            cell.b_ih.as_deref(),
            Some([1.5, -1.0, f32::INFINITY, 0.1f32].as_slice())
        );
    }

    #[test]
    fn unsupported_dtype_is_named() {
        let mut all = entries(&small(), "p.");
        replace(
            &mut all,
            "p.weight_hh_l1",
            Dtype::I32,
            vec![20, 5],
            vec![0; 400],
        );
        match parse_safetensors(&file(&all), None) {
            Err(LstmError::UnsupportedDtype {
                name,
                dtype,
                expected,
            }) => {
                assert_eq!((name.as_str(), dtype.as_str()), ("p.weight_hh_l1", "I32"));
                assert_eq!(expected, "F32, F64, F16 or BF16");
            }
            other => panic!("{other:?}"),
        }
        // A tensor the LSTM does not use may have any dtype.
        let mut all = entries(&small(), "p.");
        all.push(("p.step".to_string(), Dtype::I64, vec![], vec![0; 8]));
        all.push((
            "other.weight_ih_l7".to_string(),
            Dtype::U8,
            vec![1],
            vec![0],
        ));
        assert!(parse_safetensors(&file(&all), Some("p")).is_ok());
    }

    #[test]
    fn missing_tensors_are_named() {
        let all = entries(&small(), "p.");
        let missing = |entries: Vec<Entry>| match parse_safetensors(&file(&entries), None) {
            Err(LstmError::MissingTensor { name }) => name,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            missing(without(all.clone(), "p.weight_hh_l1")),
            "p.weight_hh_l1"
        );
        assert_eq!(
            missing(without(all.clone(), "p.bias_hh_l0")),
            "p.bias_hh_l0"
        );
        assert_eq!(
            missing(without(all.clone(), "p.bias_ih_l0")),
            "p.bias_ih_l0"
        );
        assert_eq!(
            missing(without(all.clone(), "p.bias_ih_l1")),
            "p.bias_ih_l1"
        );
        // A layer gap: l0 and l2 without l1.
        let three = entries(
            &LstmWeights::random(LstmConfig::new(3, 5).with_num_layers(3), 1).unwrap(),
            "p.",
        );
        let gap: Vec<Entry> = three.into_iter().filter(|e| !e.0.contains("_l1")).collect();
        assert_eq!(missing(gap), "p.weight_ih_l1");
        // A name claiming an absurd layer index does not make an absurd config.
        let mut huge = all.clone();
        huge.push((
            format!("p.bias_hh_l{}", usize::MAX),
            Dtype::F32,
            vec![1],
            f32_bytes(&[0.0]),
        ));
        assert_eq!(missing(huge), "p.weight_ih_l2");
        // Reverse direction partly present.
        let bi = entries(
            &LstmWeights::random(LstmConfig::new(3, 5).with_bidirectional(true), 1).unwrap(),
            "",
        );
        assert_eq!(
            missing(without(bi, "weight_hh_l0_reverse")),
            "weight_hh_l0_reverse"
        );
    }

    #[test]
    fn wrong_shapes_are_named_with_expected_and_found() {
        let mut all = entries(&small(), "p.");
        replace(
            &mut all,
            "p.weight_hh_l0",
            Dtype::F32,
            vec![20, 4],
            f32_bytes(&[0.0; 80]),
        );
        let err = parse_safetensors(&file(&all), None).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, LstmError::ShapeMismatch { .. }), "{err:?}");
        assert!(message.contains("p.weight_hh_l0"), "{message}");
        assert!(
            message.contains("[20, 5]") && message.contains("[20, 4]"),
            "{message}"
        );

        let mut all = entries(&small(), "p.");
        replace(
            &mut all,
            "p.bias_ih_l1",
            Dtype::F32,
            vec![4, 5],
            f32_bytes(&[0.0; 20]),
        );
        let message = parse_safetensors(&file(&all), None)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("p.bias_ih_l1")
                && message.contains("[20]")
                && message.contains("[4, 5]"),
            "{message}"
        );

        // weight_ih_l0 itself: 1-D, rows not a multiple of 4, zero rows, zero columns.
        let base = entries(&LstmWeights::random(LstmConfig::new(3, 2), 1).unwrap(), "");
        let with_ih = |shape: Vec<usize>| {
            let mut e = base.clone();
            let n: usize = shape.iter().product();
            replace(
                &mut e,
                "weight_ih_l0",
                Dtype::F32,
                shape,
                f32_bytes(&vec![0.0; n]),
            );
            parse_safetensors(&file(&e), None).unwrap_err()
        };
        assert!(matches!(
            with_ih(vec![24]),
            LstmError::RankMismatch { found: 1, .. }
        ));
        assert!(matches!(
            with_ih(vec![8, 3, 1]),
            LstmError::RankMismatch { found: 3, .. }
        ));
        match with_ih(vec![6, 3]) {
            LstmError::ShapeMismatch {
                what,
                expected,
                found,
            } => {
                assert!(what.to_string().starts_with("weight_ih_l0"), "{what}");
                assert_eq!((expected, found), (vec![4, 3], vec![6, 3]));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            with_ih(vec![0, 3]),
            LstmError::ShapeMismatch { .. }
        ));
        assert!(matches!(
            with_ih(vec![0, 1 << 62]),
            LstmError::ShapeMismatch { .. }
        ));
        assert!(matches!(
            with_ih(vec![8, 0]),
            LstmError::InvalidConfig {
                field: "input_size",
                ..
            }
        ));
        // proj_size must be below hidden_size, and weight_hr must be a non-empty matrix.
        let mut e = base.clone();
        e.push((
            "weight_hr_l0".to_string(),
            Dtype::F32,
            vec![2, 2],
            f32_bytes(&[0.0; 4]),
        ));
        assert!(matches!(
            parse_safetensors(&file(&e), None),
            Err(LstmError::InvalidConfig {
                field: "proj_size",
                ..
            })
        ));
        let mut e = base.clone();
        e.push(("weight_hr_l0".to_string(), Dtype::F32, vec![0, 2], vec![]));
        assert!(matches!(
            parse_safetensors(&file(&e), None),
            Err(LstmError::ShapeMismatch { .. })
        ));
        let mut e = base;
        e.push((
            "weight_hr_l0".to_string(),
            Dtype::F32,
            vec![2],
            f32_bytes(&[0.0; 2]),
        ));
        assert!(matches!(
            parse_safetensors(&file(&e), None),
            Err(LstmError::RankMismatch { .. })
        ));
    }

    #[test]
    fn unexpected_tensors_are_refused() {
        let unexpected = |entries: Vec<Entry>| match parse_safetensors(&file(&entries), None) {
            Err(LstmError::UnexpectedTensor { name, reason }) => (name, reason),
            other => panic!("{other:?}"),
        };
        let weights = small();
        let mut e = entries(&weights, "p.");
        e.push((
            "p.weight_hr_l1".to_string(),
            Dtype::F32,
            vec![2, 5],
            f32_bytes(&[0.0; 10]),
        ));
        let (name, reason) = unexpected(e);
        assert_eq!(name, "p.weight_hr_l1");
        assert!(
            reason.contains("proj_size=0") && reason.contains("p.weight_hr_l0"),
            "{reason}"
        );

        let mut e = entries(&weights, "p.");
        e.push((
            "p.weight_hh_l1_reverse".to_string(),
            Dtype::F32,
            vec![20, 5],
            f32_bytes(&[0.0; 100]),
        ));
        let (name, reason) = unexpected(e);
        assert_eq!(name, "p.weight_hh_l1_reverse");
        assert!(reason.contains("unidirectional"), "{reason}");

        let no_bias =
            LstmWeights::random(LstmConfig::new(3, 5).with_num_layers(2).with_bias(false), 1)
                .unwrap();
        let mut e = entries(&no_bias, "");
        e.push((
            "bias_ih_l1".to_string(),
            Dtype::F32,
            vec![20],
            f32_bytes(&[0.0; 20]),
        ));
        let (name, reason) = unexpected(e);
        assert_eq!(name, "bias_ih_l1");
        assert!(reason.contains("bias=False"), "{reason}");

        // Names that are not LSTM parameters, or are in submodules, are ignored.
        let mut e = entries(&weights, "p.");
        for extra in [
            "p.weight_ih",
            "p.weight_ih_l01",
            "p.sub.weight_hr_l0",
            "p.weight_ih_l0_rev",
            "q.bias_ih_l9",
        ] {
            e.push((extra.to_string(), Dtype::F32, vec![1], f32_bytes(&[0.0])));
        }
        assert_eq!(
            parse_safetensors(&file(&e), Some("p")).unwrap().weights,
            weights
        );
    }

    #[test]
    fn unaligned_data_is_read() {
        // A 1-byte tensor first puts every f32 at an odd offset.
        let w = LstmWeights::random(LstmConfig::new(1, 1).with_bias(false), 5).unwrap();
        let ih = f32_bytes(&w.cells()[0].w_ih);
        let hh = f32_bytes(&w.cells()[0].w_hh);
        let header = r#"{"pad":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"weight_ih_l0":{"dtype":"F32","shape":[4,1],"data_offsets":[1,17]},"weight_hh_l0":{"dtype":"F32","shape":[4,1],"data_offsets":[17,33]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.push(0xaa);
        bytes.extend_from_slice(&ih);
        bytes.extend_from_slice(&hh);
        assert_eq!(parse_safetensors(&bytes, None).unwrap().weights, w);
    }

    #[test]
    fn corrupt_files_are_errors_not_panics() {
        let weights = LstmWeights::random(LstmConfig::new(2, 1), 2).unwrap();
        let bytes = serialize_safetensors(&weights, "m.").unwrap();
        for len in 0..bytes.len() {
            assert!(
                parse_safetensors(&bytes[..len], None).is_err(),
                "truncated to {len}"
            );
        }
        for i in 0..bytes.len() {
            for v in [0u8, b'9', b'"', b',', 0xff] {
                let mut bad = bytes.clone();
                bad[i] = v;
                let _ = parse_safetensors(&bad, None);
            }
        }
        for n in [u64::MAX, 1 << 62, 1 << 40, 100_000_001] {
            let mut huge = n.to_le_bytes().to_vec();
            huge.extend_from_slice(b"{}");
            let start = std::time::Instant::now();
            assert!(matches!(
                parse_safetensors(&huge, None),
                Err(LstmError::Safetensors { .. })
            ));
            assert!(start.elapsed().as_secs() < 1);
        }
        for header in [
            &b"{not json"[..],
            b"[]",
            b"{\"a\": 1}",
            b"\xff\xfe",
            b"{\"weight_ih_l0\":{\"dtype\":\"F32\",\"shape\":[4,1],\"data_offsets\":[0,999]}}",
        ] {
            let mut bad = (header.len() as u64).to_le_bytes().to_vec();
            bad.extend_from_slice(header);
            assert!(
                matches!(
                    parse_safetensors(&bad, None),
                    Err(LstmError::Safetensors { .. })
                ),
                "{header:?}"
            );
        }
        // Trailing bytes after the last tensor.
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            parse_safetensors(&long, None),
            Err(LstmError::Safetensors { .. })
        ));
    }

    #[test]
    fn files_and_io_errors() {
        let dir = std::env::temp_dir().join(format!("lstm-core-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.safetensors");
        let weights = small();
        save_safetensors(&path, &weights, "rnn").unwrap();
        let loaded = load_safetensors(&path, None).unwrap();
        assert_eq!((loaded.weights, loaded.prefix.as_str()), (weights, "rnn."));
        match load_safetensors(&path, Some("x")) {
            Err(LstmError::InFile { path: p, source }) => {
                assert_eq!(p, path);
                assert!(matches!(*source, LstmError::PrefixNotFound { .. }));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            load_safetensors(&dir.join("missing.safetensors"), None),
            Err(LstmError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
