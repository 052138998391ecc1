//! One ONNX `LSTM` node → one layer of weights in PyTorch's layout and gate order.

use lstm_core::{CellWeights, Direction, LstmError, Result, Tensor};

use crate::consts::{attr, Const, FloatKind, Fold, Folder, Values};
use crate::proto::NodeProto;

/// The attributes the ONNX LSTM operator defines; any other is refused.
const KNOWN_ATTRIBUTES: [&str; 8] = [
    "activation_alpha",
    "activation_beta",
    "activations",
    "clip",
    "direction",
    "hidden_size",
    "input_forget",
    "layout",
];

/// ONNX gate blocks are ordered i, o, f, c; ours (PyTorch's) i, f, g(=c), o: block `k` of
/// ours is block `ONNX_BLOCK[k]` of ONNX's.
const ONNX_BLOCK: [usize; 4] = [0, 2, 3, 1];
/// Peepholes: ONNX i, o, f → ours i, f, o.
const ONNX_PEEPHOLE_BLOCK: [usize; 3] = [0, 2, 1];

/// A parsed LSTM node: one layer.
#[derive(Clone, Debug)]
pub(crate) struct Layer {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) x_input: String,
    pub(crate) y_output: String,
    pub(crate) direction: Direction,
    pub(crate) batch_first: bool,
    pub(crate) input_size: usize,
    pub(crate) hidden_size: usize,
    pub(crate) clip: Option<f32>,
    pub(crate) input_forget: bool,
    pub(crate) dtype: FloatKind,
    /// One per direction, PyTorch's gate order; biases `None` when the node has no `B`.
    pub(crate) cells: Vec<CellWeights<f32>>,
    /// One `[3H]` (i, f, o) per direction when the node has `P`.
    pub(crate) peepholes: Option<Vec<Vec<f32>>>,
    /// Constant `initial_h` / `initial_c` / `sequence_lens`, in ONNX's layout.
    pub(crate) initial_h: Option<Tensor<f32>>,
    pub(crate) initial_c: Option<Tensor<f32>>,
    pub(crate) sequence_lens: Option<Vec<i64>>,
}

impl Layer {
    pub(crate) fn num_directions(&self) -> usize {
        if self.direction == Direction::Bidirectional {
            2
        } else {
            1
        }
    }
}

fn unsupported(node: &str, attribute: impl Into<String>, reason: impl Into<String>) -> LstmError {
    LstmError::OnnxUnsupported {
        node: node.to_string(),
        attribute: attribute.into(),
        reason: reason.into(),
    }
}

/// Names the node and input an error of the constant folder concerns.
fn in_node(node: &str, input: &str, e: LstmError) -> LstmError {
    match e {
        LstmError::Onnx(m) => LstmError::Onnx(format!("LSTM node `{node}`, input {input}: {m}")),
        other => other,
    }
}

/// Parses `node` (an `LSTM`), folding its constant inputs with `folder`. `display` is the name
/// errors use (the node's name, or a generated one).
pub(crate) fn parse_lstm(
    node: &NodeProto,
    display: &str,
    path: &str,
    folder: &mut Folder<'_, '_>,
) -> Result<Layer> {
    let bad = |attribute: &str, reason: String| unsupported(display, attribute, reason);
    for a in &node.attribute {
        if !KNOWN_ATTRIBUTES.contains(&a.name()) {
            return Err(bad(
                a.name(),
                "is not an attribute of the ONNX LSTM operator".to_string(),
            ));
        }
    }
    let direction = match attr(node, "direction").map(|a| a.s()) {
        None | Some(b"forward") => Direction::Forward,
        Some(b"reverse") => Direction::Reverse,
        Some(b"bidirectional") => Direction::Bidirectional,
        Some(other) => {
            return Err(bad(
                "direction",
                format!(
                    "`{}` is not one of forward, reverse, bidirectional",
                    String::from_utf8_lossy(other)
                ),
            ))
        }
    };
    let dirs = if direction == Direction::Bidirectional {
        2
    } else {
        1
    };
    if let Some(a) = attr(node, "activations") {
        let found: Vec<String> = a
            .strings
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        let default_ok = found.len() == 3 * dirs
            && found.chunks(3).all(|c| {
                c[0].eq_ignore_ascii_case("sigmoid")
                    && c[1].eq_ignore_ascii_case("tanh")
                    && c[2].eq_ignore_ascii_case("tanh")
            });
        if !default_ok {
            return Err(bad(
                "activations",
                format!("{found:?} is not supported; only the default [Sigmoid, Tanh, Tanh] per direction is"),
            ));
        }
    }
    for name in ["activation_alpha", "activation_beta"] {
        if let Some(a) = attr(node, name) {
            return Err(bad(
                name,
                format!(
                    "{:?} is not supported (only the default activations, which take no parameters)",
                    a.floats
                ),
            ));
        }
    }
    let clip = match attr(node, "clip") {
        None => None,
        Some(a) => {
            let c = a.f();
            if !(c.is_finite() && c > 0.0) {
                return Err(bad("clip", format!("must be finite and > 0, found {c}")));
            }
            Some(c)
        }
    };
    let input_forget = match attr(node, "input_forget").map(|a| a.i()) {
        None | Some(0) => false,
        Some(1) => true,
        Some(v) => return Err(bad("input_forget", format!("must be 0 or 1, found {v}"))),
    };
    let batch_first = match attr(node, "layout").map(|a| a.i()) {
        None | Some(0) => false,
        Some(1) => true,
        Some(v) => return Err(bad("layout", format!("must be 0 or 1, found {v}"))),
    };

    let input_name = |k: usize| node.input.get(k).filter(|s| !s.is_empty()).cloned();
    // A constant input, folded; `None` when absent; refused when computed at run time.
    let mut weight = |k: usize, what: &str| -> Result<Option<Const>> {
        let Some(name) = input_name(k) else {
            return Ok(None);
        };
        match folder.fold(&name) {
            Ok(c) => Ok(Some((*c).clone())),
            Err(Fold::Dynamic(from)) => Err(bad(
                &format!("input {what}"),
                format!("`{name}` is computed at run time (from {from}); only constant weights (initializers, Constant nodes and constant chains of shape ops) are supported"),
            )),
            Err(Fold::Error(e)) => Err(in_node(display, what, e)),
        }
    };
    let w = weight(1, "W")?.ok_or_else(|| bad("input W", "is missing".to_string()))?;
    let r = weight(2, "R")?.ok_or_else(|| bad("input R", "is missing".to_string()))?;
    let b = weight(3, "B")?;
    let p = weight(7, "P")?;

    let float = |c: &Const, what: &str| -> Result<(FloatKind, Vec<f32>)> {
        match &c.values {
            Values::Float(kind, v) => Ok((*kind, v.iter().map(|&x| x as f32).collect())),
            Values::Int(_) => Err(bad(
                &format!("input {what}"),
                "has an integer dtype; float, double, float16 and bfloat16 are supported"
                    .to_string(),
            )),
        }
    };
    let shape_err = |what: &str, expected: String, found: &[usize]| {
        bad(
            &format!("input {what}"),
            format!("expected shape {expected}, found {found:?}"),
        )
    };
    let (dtype, w_data) = float(&w, "W")?;
    let [wd, w_rows, input_size] = w.dims[..] else {
        return Err(shape_err(
            "W",
            "[num_directions, 4*hidden_size, input_size]".into(),
            &w.dims,
        ));
    };
    if wd != dirs || w_rows % 4 != 0 || w_rows == 0 || input_size == 0 {
        return Err(shape_err(
            "W",
            format!(
                "[{dirs}, 4*hidden_size, input_size] (direction {})",
                direction.onnx_name()
            ),
            &w.dims,
        ));
    }
    let hidden = w_rows / 4;
    if let Some(hs) = attr(node, "hidden_size").map(|a| a.i()) {
        if usize::try_from(hs).ok() != Some(hidden) {
            return Err(bad(
                "hidden_size",
                format!("is {hs}, but W has {w_rows} = 4·{hidden} rows"),
            ));
        }
    }
    let (_, r_data) = float(&r, "R")?;
    if r.dims != [dirs, 4 * hidden, hidden] {
        return Err(shape_err(
            "R",
            format!("[{dirs}, {}, {hidden}]", 4 * hidden),
            &r.dims,
        ));
    }
    let b_data = match &b {
        Some(b) => {
            if b.dims != [dirs, 8 * hidden] {
                return Err(shape_err("B", format!("[{dirs}, {}]", 8 * hidden), &b.dims));
            }
            Some(float(b, "B")?.1)
        }
        None => None,
    };
    let p_data = match &p {
        Some(p) => {
            if p.dims != [dirs, 3 * hidden] {
                return Err(shape_err("P", format!("[{dirs}, {}]", 3 * hidden), &p.dims));
            }
            Some(float(p, "P")?.1)
        }
        None => None,
    };

    // Reorders the gate blocks of one direction's `[blocks·H, cols]` matrix.
    let reorder = |data: &[f32], order: &[usize], cols: usize| -> Vec<f32> {
        let block = hidden * cols;
        order
            .iter()
            .flat_map(|&k| data[k * block..(k + 1) * block].iter().copied())
            .collect()
    };
    let mut cells = Vec::with_capacity(dirs);
    let mut peepholes = p_data.as_ref().map(|_| Vec::with_capacity(dirs));
    for d in 0..dirs {
        let w_dir = &w_data[d * 4 * hidden * input_size..(d + 1) * 4 * hidden * input_size];
        let r_dir = &r_data[d * 4 * hidden * hidden..(d + 1) * 4 * hidden * hidden];
        let (b_ih, b_hh) = match &b_data {
            Some(bd) => {
                let dir = &bd[d * 8 * hidden..(d + 1) * 8 * hidden];
                (
                    Some(reorder(&dir[..4 * hidden], &ONNX_BLOCK, 1)),
                    Some(reorder(&dir[4 * hidden..], &ONNX_BLOCK, 1)),
                )
            }
            None => (None, None),
        };
        cells.push(CellWeights {
            w_ih: reorder(w_dir, &ONNX_BLOCK, input_size),
            w_hh: reorder(r_dir, &ONNX_BLOCK, hidden),
            b_ih,
            b_hh,
            w_hr: None,
        });
        if let (Some(out), Some(pd)) = (peepholes.as_mut(), &p_data) {
            out.push(reorder(
                &pd[d * 3 * hidden..(d + 1) * 3 * hidden],
                &ONNX_PEEPHOLE_BLOCK,
                1,
            ));
        }
    }

    // Optional run-time inputs: kept as defaults when constant, else supplied by the caller.
    let mut optional = |k: usize, what: &str| -> Result<Option<Const>> {
        let Some(name) = input_name(k) else {
            return Ok(None);
        };
        match folder.fold(&name) {
            Ok(c) => Ok(Some((*c).clone())),
            Err(Fold::Dynamic(_)) => Ok(None),
            Err(Fold::Error(e)) => Err(in_node(display, what, e)),
        }
    };
    let state = |c: Option<Const>, what: &str| -> Result<Option<Tensor<f32>>> {
        let Some(c) = c else { return Ok(None) };
        let (_, data) = float(&c, what)?;
        let ok = c.dims.len() == 3 && c.dims[2] == hidden && {
            let d_axis = if batch_first { 1 } else { 0 };
            c.dims[d_axis] == dirs
        };
        if !ok {
            let expected = if batch_first {
                format!("[batch_size, {dirs}, {hidden}] (layout 1)")
            } else {
                format!("[{dirs}, batch_size, {hidden}]")
            };
            return Err(shape_err(what, expected, &c.dims));
        }
        Ok(Some(Tensor::new(c.dims.clone(), data)?))
    };
    let sequence_lens = match optional(4, "sequence_lens")? {
        Some(c) => Some(
            c.ints("sequence_lens")
                .map_err(|_| {
                    bad(
                        "input sequence_lens",
                        "must be an integer tensor".to_string(),
                    )
                })?
                .to_vec(),
        ),
        None => None,
    };
    let initial_h = optional(5, "initial_h")?;
    let initial_h = state(initial_h, "initial_h")?;
    let initial_c = optional(6, "initial_c")?;
    let initial_c = state(initial_c, "initial_c")?;

    Ok(Layer {
        name: display.to_string(),
        path: path.to_string(),
        x_input: input_name(0).ok_or_else(|| bad("input X", "is missing".to_string()))?,
        y_output: node.output.first().cloned().unwrap_or_default(),
        direction,
        batch_first,
        input_size,
        hidden_size: hidden,
        clip,
        input_forget,
        dtype,
        cells,
        peepholes,
        initial_h,
        initial_c,
        sequence_lens,
    })
}
