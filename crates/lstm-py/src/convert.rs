//! Crossing the boundary: NumPy arrays in and out, library errors as Python exceptions.

use std::io::ErrorKind;

use lstm::{LstmError, Operand, Tensor};
use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{
    PyFileNotFoundError, PyIsADirectoryError, PyMemoryError, PyOSError, PyPermissionError,
    PyRuntimeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// The Python exception for a library error, carrying its one-line message: `FileNotFoundError`,
/// `PermissionError`, `IsADirectoryError` or `OSError` for what the OS refused,
/// `MemoryError` for a buffer too large to allocate, `RuntimeError` for a broken internal
/// invariant (a bug to report), `ValueError` for everything else (shapes, arguments, a file
/// whose contents are not a valid model). When the error is about an argument of the call,
/// the exception's `operand` attribute names the Python parameter (`"input"`, `"h0"`,
/// `"lengths"`, `"x_t"`, `"grad_output"`, ...).
pub(crate) fn to_py_err(err: LstmError) -> PyErr {
    let message = err.to_string();
    let py_err = match &err {
        LstmError::Io { source, .. } => match source.kind() {
            ErrorKind::NotFound => PyFileNotFoundError::new_err(message),
            ErrorKind::PermissionDenied => PyPermissionError::new_err(message),
            ErrorKind::IsADirectory => PyIsADirectoryError::new_err(message),
            _ => PyOSError::new_err(message),
        },
        LstmError::Allocation { .. } => PyMemoryError::new_err(message),
        LstmError::Internal(_)
        | LstmError::TapeMismatch { .. }
        | LstmError::CallMismatch { .. } => PyRuntimeError::new_err(message),
        _ => PyValueError::new_err(message),
    };
    if let Some(operand) = err.operand() {
        let name = match operand {
            Operand::StepOutput => "out",
            other => other.name(),
        };
        return with_operand(py_err, name);
    }
    py_err
}

/// `err` with its `operand` attribute set to `name`, the Python parameter it is about.
pub(crate) fn with_operand(err: PyErr, name: &str) -> PyErr {
    Python::attach(|py| {
        // An attribute the caller may read; failing to set it loses nothing else.
        let _ = err.value(py).setattr("operand", name);
    });
    err
}

/// A `ValueError` about the call's parameter `operand`.
pub(crate) fn operand_error(operand: &str, message: impl Into<String>) -> PyErr {
    with_operand(value_error(message), operand)
}

/// A `ValueError` with `message`.
pub(crate) fn value_error(message: impl Into<String>) -> PyErr {
    PyValueError::new_err(message.into())
}

/// `lstm_kernels._convert.as_float32`, imported once: the slow path of [`as_f32_array`].
fn as_float32_fn(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static AS_FLOAT32: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    AS_FLOAT32.import(py, "lstm_kernels._convert", "as_float32")
}

/// `obj` as a C-contiguous, aligned float32 NumPy array: the array itself when it already is
/// one (no copy), else a converted copy (float64/float16 arrays, strided views, torch CPU
/// tensors, anything with `__array__` or `__dlpack__`). Other dtypes are a `ValueError` naming
/// `what`.
pub(crate) fn as_f32_array<'py>(
    obj: &Bound<'py, PyAny>,
    what: &str,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    if let Ok(array) = obj.cast::<PyArrayDyn<f32>>() {
        if array.is_c_contiguous() && array.is_aligned() {
            return Ok(array.clone());
        }
    }
    let converted = as_float32_fn(obj.py())?
        .call1((obj, what))
        .map_err(|e| with_operand(e, what))?;
    converted
        .cast_into::<PyArrayDyn<f32>>()
        .map_err(|e| operand_error(what, format!("{what}: conversion to float32 failed: {e}")))
}

/// Copies `data` into a new vector; a buffer too large for memory is a `MemoryError`.
pub(crate) fn try_copy(what: &str, data: &[f32]) -> PyResult<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(data.len()).map_err(|_| {
        to_py_err(LstmError::Allocation {
            what: what.to_string(),
            elements: data.len(),
            element_bytes: std::mem::size_of::<f32>(),
        })
    })?;
    v.extend_from_slice(data);
    Ok(v)
}

/// `obj` read into an owned [`Tensor`] (one copy, which the engines' `forward` needs).
pub(crate) fn tensor_from_py(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Tensor<f32>> {
    let array = as_f32_array(obj, what)?;
    let shape = array.shape().to_vec();
    let view = array
        .try_readonly()
        .map_err(|e| value_error(format!("{what}: {e}")))?;
    let data = view
        .as_slice()
        .map_err(|e| value_error(format!("{what}: {e}")))?;
    Tensor::new(shape, try_copy(what, data)?).map_err(to_py_err)
}

/// A tensor handed to NumPy without a copy (the array owns the tensor's buffer).
pub(crate) fn tensor_to_py(py: Python<'_>, tensor: Tensor<f32>) -> PyResult<Bound<'_, PyAny>> {
    let (shape, data) = tensor.into_parts();
    array_to_py(py, shape, data)
}

/// `data` with `shape` as a NumPy array, without a copy.
pub(crate) fn array_to_py(
    py: Python<'_>,
    shape: Vec<usize>,
    data: Vec<f32>,
) -> PyResult<Bound<'_, PyAny>> {
    let array = ArrayD::from_shape_vec(IxDyn(&shape), data)
        .map_err(|e| value_error(format!("array of shape {shape:?}: {e}")))?;
    Ok(PyArrayDyn::from_owned_array(py, array).into_any())
}

/// A copy of `data` with `shape` as a NumPy array.
pub(crate) fn slice_to_py<'py>(
    py: Python<'py>,
    shape: &[usize],
    data: &[f32],
) -> PyResult<Bound<'py, PyAny>> {
    array_to_py(py, shape.to_vec(), try_copy("array", data)?)
}

/// Per-sequence lengths from a sequence of integers (a list, a NumPy integer array, a torch
/// tensor); each must lie in `1..=seq_len` (PyTorch's rule), checked here for the negative ones
/// a `usize` cannot hold and by the engine for the rest.
pub(crate) fn lengths_from_py(obj: &Bound<'_, PyAny>, seq_len: usize) -> PyResult<Vec<usize>> {
    let raw: Vec<i64> = obj.extract().map_err(|_| {
        operand_error(
            "lengths",
            format!(
                "lengths: expected a sequence of integers (one per sequence), found {}",
                type_name(obj)
            ),
        )
    })?;
    raw.iter()
        .enumerate()
        .map(|(sequence, &length)| {
            usize::try_from(length).map_err(|_| {
                to_py_err(LstmError::LengthOutOfRange {
                    sequence,
                    length,
                    max: Some(seq_len),
                })
            })
        })
        .collect()
}

/// The Python type name of `obj`, for messages.
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "an object".to_string(), |n| n.to_string())
}
