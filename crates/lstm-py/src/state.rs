//! `LSTMState`: the `(h, c)` of a stream, advanced in place by `LSTM.step`.

use lstm::{LstmState, Tensor};
use pyo3::prelude::*;

use crate::convert::{slice_to_py, tensor_from_py, value_error};

/// The hidden and cell state of every layer of a stream, advanced in place by
/// :meth:`LSTM.step`.
///
/// ``h`` is ``[num_layers, batch, H_out]`` and ``c`` ``[num_layers, batch, hidden_size]``
/// (without the batch axis for an unbatched stream), as ``nn.LSTM``'s ``(h_n, c_n)``.
/// Make one with :meth:`LSTM.zero_state`, or ``LSTMState(h, c)`` from arrays.
#[pyclass(name = "LSTMState", module = "lstm_kernels")]
pub(crate) struct PyLstmState {
    pub(crate) inner: LstmState<f32>,
}

#[pymethods]
impl PyLstmState {
    /// LSTMState(h, c)
    ///
    /// A state from arrays (copied to float32): ``h`` ``[L, B, H_out]`` and ``c``
    /// ``[L, B, H]``, or both without the ``B`` axis.
    #[new]
    fn new(h: &Bound<'_, PyAny>, c: &Bound<'_, PyAny>) -> PyResult<Self> {
        let h = tensor_from_py(h, "h")?;
        let c = tensor_from_py(c, "c")?;
        check_pair(&h, &c)?;
        Ok(PyLstmState {
            inner: LstmState { h, c },
        })
    }

    /// The hidden state, a float32 copy: ``[L, B, H_out]`` (or ``[L, H_out]``).
    #[getter]
    fn h<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        slice_to_py(py, self.inner.h.shape(), self.inner.h.data())
    }

    /// Replaces the hidden state with an array of the same shape.
    #[setter]
    fn set_h(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let h = tensor_from_py(value, "h")?;
        same_shape("h", &self.inner.h, &h)?;
        self.inner.h = h;
        Ok(())
    }

    /// The cell state, a float32 copy: ``[L, B, hidden_size]`` (or ``[L, hidden_size]``).
    #[getter]
    fn c<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        slice_to_py(py, self.inner.c.shape(), self.inner.c.data())
    }

    /// Replaces the cell state with an array of the same shape.
    #[setter]
    fn set_c(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let c = tensor_from_py(value, "c")?;
        same_shape("c", &self.inner.c, &c)?;
        self.inner.c = c;
        Ok(())
    }

    /// The number of streams (``None`` for an unbatched state).
    #[getter]
    fn batch(&self) -> Option<usize> {
        self.inner.batch()
    }

    /// Sets both states to zero, in place (a new stream, no allocation).
    fn reset(&mut self) {
        self.inner.h.data_mut().fill(0.0);
        self.inner.c.data_mut().fill(0.0);
    }

    /// An independent copy.
    fn copy(&self) -> Self {
        PyLstmState {
            inner: self.inner.clone(),
        }
    }

    /// ``(h, c)`` as float32 arrays (copies): what ``nn.LSTM`` takes as ``hx``.
    fn as_tuple<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        Ok((self.h(py)?, self.c(py)?))
    }

    fn __repr__(&self) -> String {
        format!(
            "LSTMState(h: {:?}, c: {:?})",
            self.inner.h.shape(),
            self.inner.c.shape()
        )
    }
}

/// `h` and `c` must be of the same rank (2 or 3) and agree on every axis but the last.
fn check_pair(h: &Tensor<f32>, c: &Tensor<f32>) -> PyResult<()> {
    let (hs, cs) = (h.shape(), c.shape());
    let ok = hs.len() == cs.len()
        && (hs.len() == 2 || hs.len() == 3)
        && hs[..hs.len() - 1] == cs[..cs.len() - 1];
    if ok {
        Ok(())
    } else {
        Err(value_error(format!(
            "state: expected h [L, B, H_out] and c [L, B, H] (or both without B), found h {hs:?} and c {cs:?}"
        )))
    }
}

fn same_shape(what: &str, old: &Tensor<f32>, new: &Tensor<f32>) -> PyResult<()> {
    if old.shape() == new.shape() {
        Ok(())
    } else {
        Err(value_error(format!(
            "state.{what}: expected shape {:?}, found {:?}",
            old.shape(),
            new.shape()
        )))
    }
}
