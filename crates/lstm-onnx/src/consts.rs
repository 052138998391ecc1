//! Constant folding of the values in front of an LSTM node's weight inputs: initializers,
//! `Constant` nodes and chains of shape ops (Identity, Cast, Reshape, Squeeze, Unsqueeze,
//! Transpose, Slice, Concat, Split, Gather) over them, as exporters write them.
//!
//! Every size is checked before anything is allocated from it: a tensor's element count must
//! match the bytes the file actually holds, and no folded value may exceed
//! [`MAX_ELEMENTS`]. Chains are walked with a depth limit, a cycle check and a memo (so a
//! diamond-shaped graph is folded once per value, not once per path).

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use lstm_core::{LstmError, Result};

use crate::proto::tensor_proto::DataType;
use crate::proto::{AttributeProto, GraphProto, NodeProto, TensorProto};

/// The largest tensor folded (elements): 2^27, 1 GiB as f64.
pub(crate) const MAX_ELEMENTS: usize = 1 << 27;
/// The longest chain of ops folded in front of one value.
const MAX_DEPTH: usize = 64;
/// The most op evaluations of one model load.
const MAX_EVALUATIONS: usize = 100_000;

/// The element type of a folded float tensor (what the file stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FloatKind {
    F32,
    F64,
    F16,
    Bf16,
}

impl FloatKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            FloatKind::F32 => "float",
            FloatKind::F64 => "double",
            FloatKind::F16 => "float16",
            FloatKind::Bf16 => "bfloat16",
        }
    }

    /// Rounds an f64 to this type (and back, exactly).
    fn round(self, x: f64) -> f64 {
        match self {
            FloatKind::F32 => f64::from(x as f32),
            FloatKind::F64 => x,
            FloatKind::F16 => half::f16::from_f64(x).to_f64(),
            FloatKind::Bf16 => half::bf16::from_f64(x).to_f64(),
        }
    }
}

/// The values of a folded tensor: floats (held exactly as f64) or integers.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Values {
    Float(FloatKind, Vec<f64>),
    Int(Vec<i64>),
}

/// A constant tensor: row-major values and dims.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Const {
    pub(crate) dims: Vec<usize>,
    pub(crate) values: Values,
}

impl Const {
    fn len(&self) -> usize {
        match &self.values {
            Values::Float(_, v) => v.len(),
            Values::Int(v) => v.len(),
        }
    }

    /// The values as integers (indices, axes, shapes); floats are refused.
    pub(crate) fn ints(&self, what: &str) -> Result<&[i64]> {
        match &self.values {
            Values::Int(v) => Ok(v),
            Values::Float(kind, _) => Err(onnx_error(format!(
                "{what} must be an integer tensor, found {}",
                kind.name()
            ))),
        }
    }

    /// The same dims, values mapped through `pick` (source linear index per output index).
    fn gather_linear(&self, dims: Vec<usize>, sources: &[usize]) -> Const {
        let values = match &self.values {
            Values::Float(k, v) => Values::Float(*k, sources.iter().map(|&i| v[i]).collect()),
            Values::Int(v) => Values::Int(sources.iter().map(|&i| v[i]).collect()),
        };
        Const { dims, values }
    }
}

pub(crate) fn onnx_error(message: impl Into<String>) -> LstmError {
    LstmError::Onnx(message.into())
}

/// The element count of `dims`, refused above [`MAX_ELEMENTS`].
pub(crate) fn checked_count(dims: &[usize], what: &str) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| {
            onnx_error(format!(
                "{what}: shape {dims:?} has more than {MAX_ELEMENTS} elements"
            ))
        })
}

fn dims_of(raw: &[i64], what: &str) -> Result<Vec<usize>> {
    raw.iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| onnx_error(format!("{what}: negative dimension {d} in {raw:?}")))
        })
        .collect()
}

/// Decodes an initializer or `Constant` value; `what` names it in errors.
pub(crate) fn decode_tensor(t: &TensorProto, what: &str) -> Result<Const> {
    if t.data_location == Some(1) || !t.external_data.is_empty() {
        return Err(onnx_error(format!(
            "{what}: its data is stored in an external file; only self-contained .onnx files are supported"
        )));
    }
    if t.segment.is_some() {
        return Err(onnx_error(format!(
            "{what}: segmented tensors are not supported"
        )));
    }
    let dims = dims_of(&t.dims, what)?;
    let n = checked_count(&dims, what)?;
    let raw = t.raw_data.as_deref();
    let data_type = t.data_type.unwrap_or(0);
    let count_error = |found: usize, unit: &str| {
        onnx_error(format!(
            "{what}: shape {dims:?} needs {n} elements, the file holds {found} {unit}"
        ))
    };
    // Raw little-endian bytes of `width` bytes per element, checked against n first.
    let raw_elems = |width: usize| -> Result<Option<&[u8]>> {
        match raw {
            Some(bytes) if !bytes.is_empty() || n == 0 => {
                if bytes.len() != n * width {
                    return Err(count_error(bytes.len(), "bytes of raw_data"));
                }
                Ok(Some(bytes))
            }
            _ => Ok(None),
        }
    };
    let typed_len = |len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(count_error(len, "values"))
        }
    };
    let values = match DataType::try_from(data_type) {
        Ok(DataType::Float) => Values::Float(
            FloatKind::F32,
            match raw_elems(4)? {
                Some(b) => b
                    .chunks_exact(4)
                    .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                    .collect(),
                None => {
                    typed_len(t.float_data.len())?;
                    t.float_data.iter().map(|&x| f64::from(x)).collect()
                }
            },
        ),
        Ok(DataType::Double) => Values::Float(
            FloatKind::F64,
            match raw_elems(8)? {
                Some(b) => b
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
                None => {
                    typed_len(t.double_data.len())?;
                    t.double_data.clone()
                }
            },
        ),
        Ok(kind @ (DataType::Float16 | DataType::Bfloat16)) => {
            let from_bits = |bits: u16| match kind {
                DataType::Float16 => half::f16::from_bits(bits).to_f64(),
                _ => half::bf16::from_bits(bits).to_f64(),
            };
            let fk = if kind == DataType::Float16 {
                FloatKind::F16
            } else {
                FloatKind::Bf16
            };
            Values::Float(
                fk,
                match raw_elems(2)? {
                    Some(b) => b
                        .chunks_exact(2)
                        .map(|c| from_bits(u16::from_le_bytes([c[0], c[1]])))
                        .collect(),
                    None => {
                        typed_len(t.int32_data.len())?;
                        // The 16 bits are stored in the low half of each int32.
                        t.int32_data
                            .iter()
                            .map(|&x| from_bits((x & 0xFFFF) as u16))
                            .collect()
                    }
                },
            )
        }
        Ok(DataType::Int64) => Values::Int(match raw_elems(8)? {
            Some(b) => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
            None => {
                typed_len(t.int64_data.len())?;
                t.int64_data.clone()
            }
        }),
        Ok(DataType::Int32) => Values::Int(match raw_elems(4)? {
            Some(b) => b
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            None => {
                typed_len(t.int32_data.len())?;
                t.int32_data.iter().map(|&x| i64::from(x)).collect()
            }
        }),
        _ => {
            return Err(onnx_error(format!(
                "{what}: data type {} is not supported (float, double, float16, bfloat16, int32, int64 are)",
                data_type_name(data_type)
            )))
        }
    };
    Ok(Const { dims, values })
}

/// ONNX's name of a `TensorProto.DataType` code.
pub(crate) fn data_type_name(code: i32) -> String {
    DataType::try_from(code).map_or_else(
        |_| format!("#{code}"),
        |d| d.as_str_name().to_ascii_lowercase(),
    )
}

/// Where a value of the graph comes from.
#[derive(Clone, Copy)]
enum Producer<'g> {
    Initializer(&'g TensorProto),
    Node(&'g NodeProto, usize),
    /// A graph input (or an outer value shadowed by one): known only at run time.
    Input,
}

/// One graph's value table.
pub(crate) struct Scope<'g> {
    producers: HashMap<&'g str, Producer<'g>>,
    id: usize,
}

impl<'g> Scope<'g> {
    pub(crate) fn new(graph: &'g GraphProto, id: usize) -> Self {
        let mut producers = HashMap::new();
        for input in &graph.input {
            if let Some(name) = input.name.as_deref() {
                producers.insert(name, Producer::Input);
            }
        }
        // Initializers also listed as inputs may be overridden at run time (IR < 4 lists
        // every initializer as an input too): ONNX Runtime treats them as constants unless
        // fed, and so do we.
        for init in &graph.initializer {
            if let Some(name) = init.name.as_deref() {
                producers.insert(name, Producer::Initializer(init));
            }
        }
        for node in &graph.node {
            for (k, out) in node.output.iter().enumerate() {
                if !out.is_empty() {
                    producers.insert(out.as_str(), Producer::Node(node, k));
                }
            }
        }
        Scope { producers, id }
    }
}

/// Folds constants across a stack of scopes (outermost first).
pub(crate) struct Folder<'g, 's> {
    scopes: &'s [Scope<'g>],
    /// Values given for graph inputs (ONNX's node tests feed the weights as inputs).
    bindings: &'s HashMap<String, Rc<Const>>,
    memo: HashMap<(usize, String), Rc<Const>>,
    visiting: HashSet<(usize, String)>,
    evaluations: usize,
}

/// Why a value could not be folded: a real error, or simply not a constant.
pub(crate) enum Fold {
    /// Computed at run time; the string says from what (a graph input, an op outside the list).
    Dynamic(String),
    Error(LstmError),
}

impl From<LstmError> for Fold {
    fn from(e: LstmError) -> Self {
        Fold::Error(e)
    }
}

type FoldResult<T> = std::result::Result<T, Fold>;

impl<'g, 's> Folder<'g, 's> {
    pub(crate) fn new(scopes: &'s [Scope<'g>], bindings: &'s HashMap<String, Rc<Const>>) -> Self {
        Folder {
            scopes,
            bindings,
            memo: HashMap::new(),
            visiting: HashSet::new(),
            evaluations: 0,
        }
    }

    fn lookup(&self, name: &str) -> Option<(usize, Producer<'g>)> {
        self.scopes
            .iter()
            .rev()
            .find_map(|s| s.producers.get(name).map(|p| (s.id, *p)))
    }

    /// The node producing `name`, and which of its outputs it is (None for initializers,
    /// inputs and unknown names).
    pub(crate) fn producer_node(&self, name: &str) -> Option<(&'g NodeProto, usize)> {
        match self.lookup(name) {
            Some((_, Producer::Node(n, k))) => Some((n, k)),
            _ => None,
        }
    }

    /// Folds the value `name`.
    pub(crate) fn fold(&mut self, name: &str) -> FoldResult<Rc<Const>> {
        self.fold_at(name, 0)
    }

    fn fold_at(&mut self, name: &str, depth: usize) -> FoldResult<Rc<Const>> {
        let Some((scope, producer)) = self.lookup(name) else {
            return Err(Fold::Error(onnx_error(format!(
                "value `{name}` is used but no initializer, node or graph input produces it"
            ))));
        };
        let key = (scope, name.to_string());
        if let Some(c) = self.memo.get(&key) {
            return Ok(Rc::clone(c));
        }
        if depth > MAX_DEPTH {
            return Err(Fold::Error(onnx_error(format!(
                "value `{name}`: more than {MAX_DEPTH} ops deep in a constant chain"
            ))));
        }
        if !self.visiting.insert(key.clone()) {
            return Err(Fold::Error(onnx_error(format!(
                "value `{name}` depends on itself (a cycle in the graph)"
            ))));
        }
        let result = match producer {
            Producer::Initializer(t) => {
                decode_tensor(t, &format!("initializer `{name}`")).map_err(Fold::Error)
            }
            Producer::Input => match self.bindings.get(name) {
                Some(c) => Ok((**c).clone()),
                None => Err(Fold::Dynamic(format!("graph input `{name}`"))),
            },
            Producer::Node(node, k) => self.eval_node(node, k, depth),
        };
        self.visiting.remove(&key);
        let value = Rc::new(result?);
        self.memo.insert(key, Rc::clone(&value));
        Ok(value)
    }

    /// Folds input `k` of `node`, or `None` when it is absent (or empty, ONNX's "omitted").
    fn input(&mut self, node: &NodeProto, k: usize, depth: usize) -> FoldResult<Option<Rc<Const>>> {
        match node.input.get(k).filter(|s| !s.is_empty()) {
            Some(name) => Ok(Some(self.fold_at(name, depth + 1)?)),
            None => Ok(None),
        }
    }

    fn required(&mut self, node: &NodeProto, k: usize, depth: usize) -> FoldResult<Rc<Const>> {
        self.input(node, k, depth)?.ok_or_else(|| {
            Fold::Error(onnx_error(format!(
                "{} node `{}`: input {k} is missing",
                node.op_type(),
                node.name()
            )))
        })
    }

    fn eval_node(&mut self, node: &NodeProto, output: usize, depth: usize) -> FoldResult<Const> {
        self.evaluations += 1;
        if self.evaluations > MAX_EVALUATIONS {
            return Err(Fold::Error(onnx_error(format!(
                "more than {MAX_EVALUATIONS} ops folded for one model"
            ))));
        }
        let op = node.op_type();
        let ctx =
            |msg: String| Fold::Error(onnx_error(format!("{op} node `{}`: {msg}", node.name())));
        if !node.domain().is_empty() && node.domain() != "ai.onnx" {
            return Err(Fold::Dynamic(format!(
                "op `{}::{op}` (not a constant op)",
                node.domain()
            )));
        }
        let single_output = |c: Const| {
            if output == 0 {
                Ok(c)
            } else {
                Err(ctx(format!("has no output {output}")))
            }
        };
        match op {
            "Constant" => single_output(constant_value(node).map_err(Fold::Error)?),
            "Identity" => single_output((*self.required(node, 0, depth)?).clone()),
            "Cast" => {
                let x = self.required(node, 0, depth)?;
                let to = int_attr(node, "to").ok_or_else(|| ctx("has no `to` attribute".into()))?;
                single_output(cast(&x, to).map_err(&ctx)?)
            }
            "Reshape" => {
                let x = self.required(node, 0, depth)?;
                let shape = self.required(node, 1, depth)?;
                let shape = shape.ints("the shape").map_err(Fold::Error)?.to_vec();
                let allow_zero = int_attr(node, "allowzero").unwrap_or(0) != 0;
                single_output(reshape(&x, &shape, allow_zero).map_err(&ctx)?)
            }
            "Squeeze" | "Unsqueeze" => {
                let x = self.required(node, 0, depth)?;
                let axes = match self.input(node, 1, depth)? {
                    Some(a) => Some(a.ints("axes").map_err(Fold::Error)?.to_vec()),
                    None => ints_attr(node, "axes"),
                };
                let r = if op == "Squeeze" {
                    squeeze(&x, axes.as_deref())
                } else {
                    unsqueeze(&x, axes.as_deref().unwrap_or(&[]))
                };
                single_output(r.map_err(&ctx)?)
            }
            "Transpose" => {
                let x = self.required(node, 0, depth)?;
                let perm = ints_attr(node, "perm")
                    .unwrap_or_else(|| (0..x.dims.len() as i64).rev().collect());
                single_output(transpose(&x, &perm).map_err(&ctx)?)
            }
            "Slice" => {
                let x = self.required(node, 0, depth)?;
                let (starts, ends, axes, steps) = if node.input.len() > 1 {
                    let mut get = |k| -> FoldResult<Option<Vec<i64>>> {
                        Ok(match self.input(node, k, depth)? {
                            Some(c) => {
                                Some(c.ints("Slice argument").map_err(Fold::Error)?.to_vec())
                            }
                            None => None,
                        })
                    };
                    let starts = get(1)?.ok_or_else(|| ctx("has no starts".into()))?;
                    let ends = get(2)?.ok_or_else(|| ctx("has no ends".into()))?;
                    (starts, ends, get(3)?, get(4)?)
                } else {
                    (
                        ints_attr(node, "starts").ok_or_else(|| ctx("has no starts".into()))?,
                        ints_attr(node, "ends").ok_or_else(|| ctx("has no ends".into()))?,
                        ints_attr(node, "axes"),
                        None,
                    )
                };
                single_output(
                    slice(&x, &starts, &ends, axes.as_deref(), steps.as_deref()).map_err(&ctx)?,
                )
            }
            "Concat" => {
                let axis = int_attr(node, "axis").ok_or_else(|| ctx("has no axis".into()))?;
                let mut parts = Vec::with_capacity(node.input.len().min(1024));
                for k in 0..node.input.len() {
                    if let Some(c) = self.input(node, k, depth)? {
                        parts.push(c);
                    }
                }
                single_output(concat(&parts, axis).map_err(&ctx)?)
            }
            "Split" => {
                let x = self.required(node, 0, depth)?;
                let axis = int_attr(node, "axis").unwrap_or(0);
                let sizes = match self.input(node, 1, depth)? {
                    Some(s) => Some(s.ints("split").map_err(Fold::Error)?.to_vec()),
                    None => ints_attr(node, "split"),
                };
                let parts = node.output.len();
                split(&x, axis, sizes.as_deref(), parts, output).map_err(&ctx)
            }
            "Gather" => {
                let x = self.required(node, 0, depth)?;
                let idx = self.required(node, 1, depth)?;
                let axis = int_attr(node, "axis").unwrap_or(0);
                single_output(gather(&x, &idx, axis).map_err(&ctx)?)
            }
            _ => Err(Fold::Dynamic(format!(
                "op `{op}` (node `{}`), which is not folded as a constant",
                node.name()
            ))),
        }
    }
}

pub(crate) fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name)
}

pub(crate) fn int_attr(node: &NodeProto, name: &str) -> Option<i64> {
    attr(node, name).and_then(|a| a.i)
}

pub(crate) fn ints_attr(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

/// The value of a `Constant` node.
fn constant_value(node: &NodeProto) -> Result<Const> {
    let what = format!("Constant node `{}`", node.name());
    let a = node
        .attribute
        .first()
        .ok_or_else(|| onnx_error(format!("{what} has no value")))?;
    match a.name() {
        "value" => decode_tensor(
            a.t.as_ref()
                .ok_or_else(|| onnx_error(format!("{what}: `value` holds no tensor")))?,
            &what,
        ),
        "value_float" => Ok(Const {
            dims: vec![],
            values: Values::Float(FloatKind::F32, vec![f64::from(a.f())]),
        }),
        "value_floats" => Ok(Const {
            dims: vec![a.floats.len()],
            values: Values::Float(
                FloatKind::F32,
                a.floats.iter().map(|&x| f64::from(x)).collect(),
            ),
        }),
        "value_int" => Ok(Const {
            dims: vec![],
            values: Values::Int(vec![a.i()]),
        }),
        "value_ints" => Ok(Const {
            dims: vec![a.ints.len()],
            values: Values::Int(a.ints.clone()),
        }),
        other => Err(onnx_error(format!(
            "{what}: attribute `{other}` ({:?}) is not a supported constant value",
            a.r#type().as_str_name()
        ))),
    }
}

fn cast(x: &Const, to: i64) -> std::result::Result<Const, String> {
    let to = i32::try_from(to).map_err(|_| format!("unknown target type {to}"))?;
    let float_kind = match DataType::try_from(to) {
        Ok(DataType::Float) => Some(FloatKind::F32),
        Ok(DataType::Double) => Some(FloatKind::F64),
        Ok(DataType::Float16) => Some(FloatKind::F16),
        Ok(DataType::Bfloat16) => Some(FloatKind::Bf16),
        Ok(DataType::Int64 | DataType::Int32) => None,
        _ => return Err(format!("cast to {} is not folded", data_type_name(to))),
    };
    let values = match (float_kind, &x.values) {
        (Some(k), Values::Float(_, v)) => Values::Float(k, v.iter().map(|&f| k.round(f)).collect()),
        (Some(k), Values::Int(v)) => {
            Values::Float(k, v.iter().map(|&i| k.round(i as f64)).collect())
        }
        (None, Values::Float(_, v)) => Values::Int(v.iter().map(|&f| f as i64).collect()),
        (None, Values::Int(v)) => Values::Int(if to == DataType::Int32 as i32 {
            v.iter().map(|&i| i64::from(i as i32)).collect()
        } else {
            v.clone()
        }),
    };
    Ok(Const {
        dims: x.dims.clone(),
        values,
    })
}

/// `axis` in `-rank..rank` → `0..rank`.
fn norm_axis(axis: i64, rank: usize) -> std::result::Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(format!("axis {axis} is out of range for rank {rank}"))
    }
}

fn reshape(x: &Const, shape: &[i64], allow_zero: bool) -> std::result::Result<Const, String> {
    let n = x.len();
    let mut dims = Vec::with_capacity(shape.len().min(64));
    let mut infer = None;
    for (i, &s) in shape.iter().enumerate() {
        match s {
            -1 if infer.is_none() => {
                infer = Some(i);
                dims.push(1);
            }
            0 if !allow_zero => dims.push(
                *x.dims
                    .get(i)
                    .ok_or_else(|| format!("shape {shape:?}: 0 at {i} copies no input dim"))?,
            ),
            s if s >= 0 => dims.push(s as usize),
            _ => return Err(format!("invalid shape {shape:?}")),
        }
    }
    let known = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    if let Some(i) = infer {
        if known == 0 || !n.is_multiple_of(known) {
            return Err(format!("cannot reshape {:?} to {shape:?}", x.dims));
        }
        dims[i] = n / known;
    } else if known != n {
        return Err(format!(
            "cannot reshape {:?} ({n} elements) to {shape:?}",
            x.dims
        ));
    }
    Ok(Const {
        dims,
        values: x.values.clone(),
    })
}

fn squeeze(x: &Const, axes: Option<&[i64]>) -> std::result::Result<Const, String> {
    let rank = x.dims.len();
    let remove: Vec<usize> = match axes {
        Some(a) => a
            .iter()
            .map(|&ax| norm_axis(ax, rank))
            .collect::<std::result::Result<_, _>>()?,
        None => (0..rank).filter(|&i| x.dims[i] == 1).collect(),
    };
    if let Some(&i) = remove.iter().find(|&&i| x.dims[i] != 1) {
        return Err(format!(
            "cannot squeeze axis {i} of size {} ({:?})",
            x.dims[i], x.dims
        ));
    }
    let dims = (0..rank)
        .filter(|i| !remove.contains(i))
        .map(|i| x.dims[i])
        .collect();
    Ok(Const {
        dims,
        values: x.values.clone(),
    })
}

fn unsqueeze(x: &Const, axes: &[i64]) -> std::result::Result<Const, String> {
    let rank = x.dims.len() + axes.len();
    let mut at: Vec<usize> = axes
        .iter()
        .map(|&a| norm_axis(a, rank))
        .collect::<std::result::Result<_, _>>()?;
    at.sort_unstable();
    if at.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("repeated axes {axes:?}"));
    }
    let mut src = x.dims.iter();
    let dims = (0..rank)
        .map(|i| {
            if at.contains(&i) {
                1
            } else {
                src.next().copied().unwrap_or(1)
            }
        })
        .collect();
    Ok(Const {
        dims,
        values: x.values.clone(),
    })
}

/// Row-major strides of `dims`.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// The source linear index of every output element, for an output of `out_dims` whose
/// element at multi-index `idx` reads `Σ offset_k(idx_k)` from the source.
fn linear_sources(
    out_dims: &[usize],
    offset: impl Fn(usize, usize) -> usize,
) -> std::result::Result<Vec<usize>, String> {
    let n = checked_count(out_dims, "result").map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; out_dims.len()];
    for _ in 0..n {
        out.push(idx.iter().enumerate().map(|(k, &i)| offset(k, i)).sum());
        for k in (0..idx.len()).rev() {
            idx[k] += 1;
            if idx[k] < out_dims[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    Ok(out)
}

fn transpose(x: &Const, perm: &[i64]) -> std::result::Result<Const, String> {
    let rank = x.dims.len();
    let mut seen = vec![false; rank];
    let perm: Vec<usize> = perm
        .iter()
        .map(|&p| {
            let p = usize::try_from(p).ok().filter(|&p| p < rank && !seen[p]);
            if let Some(p) = p {
                seen[p] = true;
            }
            p
        })
        .collect::<Option<_>>()
        .filter(|p: &Vec<usize>| p.len() == rank)
        .ok_or_else(|| format!("perm {perm:?} is not a permutation of 0..{rank}"))?;
    let st = strides(&x.dims);
    let out_dims: Vec<usize> = perm.iter().map(|&p| x.dims[p]).collect();
    let src = linear_sources(&out_dims, |k, i| i * st[perm[k]])?;
    Ok(x.gather_linear(out_dims, &src))
}

fn slice(
    x: &Const,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> std::result::Result<Const, String> {
    let rank = x.dims.len();
    if starts.len() != ends.len() {
        return Err(format!(
            "starts {starts:?} and ends {ends:?} differ in length"
        ));
    }
    let axes: Vec<usize> = match axes {
        Some(a) => a
            .iter()
            .map(|&ax| norm_axis(ax, rank))
            .collect::<std::result::Result<_, _>>()?,
        None => (0..starts.len()).collect(),
    };
    if axes.len() != starts.len() || steps.is_some_and(|s| s.len() != starts.len()) {
        return Err("starts, ends, axes and steps differ in length".to_string());
    }
    // Per axis: first index and step (as in the ONNX spec's clamping rules).
    let mut first = vec![0i64; rank];
    let mut step = vec![1i64; rank];
    let mut out_dims = x.dims.clone();
    for (k, &axis) in axes.iter().enumerate() {
        let dim = x.dims[axis] as i64;
        let s = steps.map_or(1, |s| s[k]);
        if s == 0 {
            return Err("a step of 0".to_string());
        }
        let norm = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
        // ONNX's clamping: start to [0, dim] (step > 0) or [0, dim - 1] (step < 0), end to
        // [0, dim] or [-1, dim - 1]. min then max: never a panic, even for dim = 0.
        let (start, end) = if s > 0 {
            (
                norm(starts[k]).min(dim).max(0),
                norm(ends[k]).min(dim).max(0),
            )
        } else {
            (
                norm(starts[k]).min(dim - 1).max(0),
                norm(ends[k]).min(dim - 1).max(-1),
            )
        };
        let count = if s > 0 {
            (end - start + s - 1).max(0) / s
        } else {
            (start - end + (-s) - 1).max(0) / (-s)
        };
        first[axis] = start;
        step[axis] = s;
        out_dims[axis] = count.max(0) as usize;
    }
    let st = strides(&x.dims);
    let src = linear_sources(&out_dims, |k, i| {
        (first[k] + i as i64 * step[k]) as usize * st[k]
    })?;
    Ok(x.gather_linear(out_dims, &src))
}

fn concat(parts: &[Rc<Const>], axis: i64) -> std::result::Result<Const, String> {
    let first = parts.first().ok_or("no inputs")?;
    let rank = first.dims.len();
    let axis = norm_axis(axis, rank)?;
    let mut total = 0usize;
    for p in parts {
        let same_rest =
            p.dims.len() == rank && (0..rank).all(|i| i == axis || p.dims[i] == first.dims[i]);
        let same_type = matches!(
            (&p.values, &first.values),
            (Values::Float(..), Values::Float(..)) | (Values::Int(_), Values::Int(_))
        );
        if !same_rest || !same_type {
            return Err(format!(
                "inputs {:?} and {:?} do not concatenate",
                first.dims, p.dims
            ));
        }
        total = total.checked_add(p.dims[axis]).ok_or("size overflows")?;
    }
    let mut dims = first.dims.clone();
    dims[axis] = total;
    checked_count(&dims, "result").map_err(|e| e.to_string())?;
    let outer: usize = first.dims[..axis].iter().product();
    let inner: usize = first.dims[axis + 1..].iter().product();
    let values = match &first.values {
        Values::Float(kind, _) => {
            let mut v = Vec::new();
            for o in 0..outer {
                for p in parts {
                    if let Values::Float(_, d) = &p.values {
                        let block = p.dims[axis] * inner;
                        v.extend_from_slice(&d[o * block..(o + 1) * block]);
                    }
                }
            }
            Values::Float(*kind, v)
        }
        Values::Int(_) => {
            let mut v = Vec::new();
            for o in 0..outer {
                for p in parts {
                    if let Values::Int(d) = &p.values {
                        let block = p.dims[axis] * inner;
                        v.extend_from_slice(&d[o * block..(o + 1) * block]);
                    }
                }
            }
            Values::Int(v)
        }
    };
    Ok(Const { dims, values })
}

fn split(
    x: &Const,
    axis: i64,
    sizes: Option<&[i64]>,
    parts: usize,
    output: usize,
) -> std::result::Result<Const, String> {
    let axis = norm_axis(axis, x.dims.len())?;
    let dim = x.dims[axis];
    let sizes: Vec<usize> = match sizes {
        Some(s) => s
            .iter()
            .map(|&v| usize::try_from(v).map_err(|_| format!("negative split size in {s:?}")))
            .collect::<std::result::Result<_, _>>()?,
        None => {
            if parts == 0 {
                return Err("no outputs".to_string());
            }
            let chunk = dim.div_ceil(parts);
            (0..parts)
                .map(|k| chunk.min(dim.saturating_sub(k * chunk)))
                .collect()
        }
    };
    if sizes.iter().try_fold(0usize, |a, &s| a.checked_add(s)) != Some(dim) {
        return Err(format!("split sizes {sizes:?} do not add up to {dim}"));
    }
    let size = *sizes.get(output).ok_or(format!("has no output {output}"))?;
    let start: usize = sizes[..output].iter().sum();
    let rank = x.dims.len();
    let mut starts = vec![0i64; rank];
    let mut ends: Vec<i64> = x.dims.iter().map(|&d| d as i64).collect();
    starts[axis] = start as i64;
    ends[axis] = (start + size) as i64;
    slice(x, &starts, &ends, None, None)
}

fn gather(x: &Const, idx: &Const, axis: i64) -> std::result::Result<Const, String> {
    let rank = x.dims.len();
    let axis = norm_axis(axis, rank)?;
    let dim = x.dims[axis];
    let indices: Vec<usize> = idx
        .ints("indices")
        .map_err(|e| e.to_string())?
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + dim as i64 } else { i };
            usize::try_from(j)
                .ok()
                .filter(|&j| j < dim)
                .ok_or_else(|| format!("index {i} is out of range for a dim of {dim}"))
        })
        .collect::<std::result::Result<_, _>>()?;
    let mut out_dims: Vec<usize> = x.dims[..axis].to_vec();
    out_dims.extend_from_slice(&idx.dims);
    out_dims.extend_from_slice(&x.dims[axis + 1..]);
    let st = strides(&x.dims);
    let idx_rank = idx.dims.len();
    let idx_strides = strides(&idx.dims);
    // Output axes: [0, axis) from x, then idx's axes, then x's axes after `axis`.
    let n = checked_count(&out_dims, "result").map_err(|e| e.to_string())?;
    let mut src = Vec::with_capacity(n);
    let mut multi = vec![0usize; out_dims.len()];
    for _ in 0..n {
        let mut s = 0;
        for (k, &m) in multi.iter().enumerate().take(axis) {
            s += m * st[k];
        }
        let flat: usize = (0..idx_rank)
            .map(|j| multi[axis + j] * idx_strides[j])
            .sum();
        s += indices[flat] * st[axis];
        for k in axis + 1..rank {
            s += multi[k - 1 + idx_rank] * st[k];
        }
        src.push(s);
        for k in (0..multi.len()).rev() {
            multi[k] += 1;
            if multi[k] < out_dims[k] {
                break;
            }
            multi[k] = 0;
        }
    }
    Ok(x.gather_linear(out_dims, &src))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ints(dims: &[usize], v: Vec<i64>) -> Const {
        Const {
            dims: dims.to_vec(),
            values: Values::Int(v),
        }
    }

    #[test]
    fn shape_ops_match_numpy() {
        let x = ints(&[2, 3], (0..6).collect());
        assert_eq!(
            transpose(&x, &[1, 0]).unwrap(),
            ints(&[3, 2], vec![0, 3, 1, 4, 2, 5])
        );
        assert_eq!(
            slice(&x, &[1], &[i64::MAX], Some(&[1]), None).unwrap(),
            ints(&[2, 2], vec![1, 2, 4, 5])
        );
        assert_eq!(
            slice(&x, &[-1], &[i64::MIN], Some(&[1]), Some(&[-1])).unwrap(),
            ints(&[2, 3], vec![2, 1, 0, 5, 4, 3])
        );
        assert_eq!(
            gather(&x, &ints(&[2], vec![2, -3]), 1).unwrap(),
            ints(&[2, 2], vec![2, 0, 5, 3])
        );
        assert_eq!(
            gather(&x, &ints(&[], vec![1]), 0).unwrap(),
            ints(&[3], vec![3, 4, 5])
        );
        assert_eq!(
            split(&x, 1, Some(&[1, 2]), 2, 1).unwrap(),
            ints(&[2, 2], vec![1, 2, 4, 5])
        );
        assert_eq!(
            split(&x, 0, None, 2, 1).unwrap(),
            ints(&[1, 3], vec![3, 4, 5])
        );
        let c = concat(
            &[Rc::new(x.clone()), Rc::new(ints(&[2, 1], vec![9, 8]))],
            -1,
        )
        .unwrap();
        assert_eq!(c, ints(&[2, 4], vec![0, 1, 2, 9, 3, 4, 5, 8]));
        assert_eq!(reshape(&x, &[0, -1, 1], false).unwrap().dims, vec![2, 3, 1]);
        assert_eq!(unsqueeze(&x, &[0, -1]).unwrap().dims, vec![1, 2, 3, 1]);
        assert_eq!(
            squeeze(&unsqueeze(&x, &[0]).unwrap(), None).unwrap().dims,
            vec![2, 3]
        );
        assert!(squeeze(&x, Some(&[0])).is_err());
        assert!(gather(&x, &ints(&[1], vec![3]), 0).is_err());
        assert!(transpose(&x, &[0, 0]).is_err());
        assert!(reshape(&x, &[4, -1], false).is_err());
        assert!(slice(&x, &[0], &[1], None, Some(&[0])).is_err());
    }

    #[test]
    fn tensors_with_lying_sizes_are_refused() {
        let t = TensorProto {
            dims: vec![2, 3],
            data_type: Some(DataType::Float as i32),
            raw_data: Some(vec![0; 20]),
            ..Default::default()
        };
        assert!(decode_tensor(&t, "w")
            .unwrap_err()
            .to_string()
            .contains("needs 6 elements"));
        let huge = TensorProto {
            dims: vec![1 << 40, 1 << 40],
            data_type: Some(DataType::Float as i32),
            ..Default::default()
        };
        assert!(decode_tensor(&huge, "w").is_err());
        let neg = TensorProto {
            dims: vec![-1],
            data_type: Some(DataType::Float as i32),
            ..Default::default()
        };
        assert!(decode_tensor(&neg, "w").is_err());
    }
}
