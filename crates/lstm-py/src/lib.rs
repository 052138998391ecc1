//! `lstm_kernels._native`: the `lstm` engines as a Python extension module, shaped like
//! `torch.nn.LSTM` (see `python/lstm_kernels/__init__.py` for the package around it).
//!
//! Every computation runs with the Python thread detached (the GIL released), so Python threads
//! run models concurrently; an `LSTM` object is immutable after construction and shared freely.
//! Every error is a Python exception carrying the library's one-line message
//! (`convert::to_py_err`).
#![forbid(unsafe_code)]

mod convert;
mod engine;
mod state;

use std::path::PathBuf;

use lstm::{
    io, pad_to_total_length, Backend, EngineKind, EngineOptions, GradOutputs, LstmError, LstmState,
    Model, Precision, Tensor, TrainingTape,
};
use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use convert::{
    array_to_py, as_f32_array, lengths_from_py, operand_error, tensor_from_py, tensor_to_py,
    to_py_err, type_name, value_error,
};
use engine::Engines;
use state::PyLstmState;

/// What `(output, (h_n, c_n))` is made of before it reaches Python.
type ForwardResult<'py> = (Bound<'py, PyAny>, (Bound<'py, PyAny>, Bound<'py, PyAny>));

/// A forward call's arguments, read and checked: input, `(h0, c0)`, lengths.
type CallArgs = (Tensor<f32>, Option<LstmState<f32>>, Option<Vec<usize>>);

/// An ``nn.LSTM`` (eval mode) run by the lstm-kernels engines.
///
/// Build one with :func:`lstm_kernels.load` (a safetensors ``state_dict``),
/// :meth:`LSTM.from_torch` (an ``nn.LSTM``, an ``nn.LSTMCell`` or a module holding one) or
/// :meth:`LSTM.from_state_dict`. Call it like the PyTorch module::
///
///     output, (h_n, c_n) = model(input, hx=None, lengths=None, total_length=None)
///
/// - ``input``: ``[T, B, input_size]`` (``[B, T, input_size]`` when ``batch_first``), or
///   unbatched ``[T, input_size]``; float32 (read without a copy when C-contiguous) or
///   float64/float16, a NumPy array, a CPU torch tensor or anything with ``__array__``.
/// - ``hx``: ``(h0, c0)``, ``[L·D, B, H_out]`` and ``[L·D, B, hidden_size]`` (without ``B``
///   when unbatched), or an :class:`LSTMState`; zeros when ``None``.
/// - ``lengths``: one length per sequence, each in ``1..=T``, as
///   ``pack_padded_sequence(enforce_sorted=False)``: the output past a sequence's end is 0,
///   ``h_n``/``c_n`` come from its last valid step, and the output has ``max(lengths)`` steps.
/// - ``total_length``: pads the output's time axis to this many steps, as
///   ``pad_packed_sequence(total_length=...)`` (batched input only).
///
/// Returns ``output`` ``[T, B, D·H_out]`` (``[B, T, ·]`` when ``batch_first``) and
/// ``(h_n, c_n)``, float32 NumPy arrays (``D`` = 2 when bidirectional, ``H_out`` = ``proj_size``
/// or ``hidden_size``). :meth:`forward` is the same call.
///
/// Streaming: ``state = model.zero_state(batch)``, then ``y = model.step(x_t, state)`` per time
/// step. Training: :meth:`grad`. Every computation releases the GIL; one object may be shared
/// by any number of threads.
#[pyclass(name = "LSTM", module = "lstm_kernels", frozen)]
struct Lstm {
    model: Model,
    engines: Engines,
}

/// The engine arguments every constructor takes: `engine=`, `threads=`, `backend=`,
/// `precision=`.
struct EngineArgs<'a> {
    engine: &'a str,
    threads: Option<usize>,
    backend: Option<&'a str>,
    precision: &'a str,
}

/// Parses the engine arguments (a bad name is a ValueError naming it and the valid ones).
fn engine_options(args: &EngineArgs<'_>) -> PyResult<(EngineKind, EngineOptions)> {
    let EngineArgs {
        engine,
        threads,
        backend,
        precision,
    } = *args;
    let kind: EngineKind = engine.parse().map_err(to_py_err)?;
    let precision: Precision = precision.parse().map_err(to_py_err)?;
    let mut options = EngineOptions::default().with_precision(precision);
    if let Some(threads) = threads {
        options = options.with_threads(threads);
    }
    if let Some(name) = backend {
        let backend: Backend = name.parse().map_err(to_py_err)?;
        options = options.with_backend(backend);
    }
    Ok((kind, options))
}

impl Lstm {
    fn build(model: Model, batch_first: bool, engine: &EngineArgs<'_>) -> PyResult<Self> {
        let model = model.with_batch_first(batch_first).map_err(to_py_err)?;
        let (kind, options) = engine_options(engine)?;
        let engines = Engines::new(&model, kind, options).map_err(to_py_err)?;
        Ok(Lstm { model, engines })
    }

    /// `(h0, c0)` from `hx`: a tuple of two arrays or an [`PyLstmState`].
    fn state_from_py(hx: &Bound<'_, PyAny>) -> PyResult<LstmState<f32>> {
        if let Ok(state) = hx.cast::<PyLstmState>() {
            return Ok(state.borrow().inner.clone());
        }
        let pair = hx
            .cast::<PyTuple>()
            .ok()
            .filter(|t| t.len() == 2)
            .ok_or_else(|| {
                operand_error(
                    "hx",
                    format!(
                        "hx: expected a tuple (h0, c0) of arrays or an LSTMState, found {}",
                        type_name(hx)
                    ),
                )
            })?;
        Ok(LstmState {
            h: tensor_from_py(&pair.get_item(0)?, "h0")?,
            c: tensor_from_py(&pair.get_item(1)?, "c0")?,
        })
    }

    /// The sequence length of `x` as the engine will read it (for the lengths' bound).
    fn seq_len(&self, x: &Tensor<f32>) -> usize {
        match x.shape() {
            [t, _] => *t,
            [_, b, _] if self.model.config().batch_first => *b,
            [a, _, _] => *a,
            _ => 0,
        }
    }

    /// The (checked) arguments of a forward call.
    fn call_args(
        &self,
        x: &Bound<'_, PyAny>,
        hx: Option<&Bound<'_, PyAny>>,
        lengths: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<CallArgs> {
        let x = tensor_from_py(x, "input")?;
        let state = hx.map(Self::state_from_py).transpose()?;
        let lengths = lengths
            .map(|l| lengths_from_py(l, self.seq_len(&x)))
            .transpose()?;
        Ok((x, state, lengths))
    }
}

#[pymethods]
impl Lstm {
    /// LSTM.from_state_dict(state_dict, *, prefix=None, batch_first=False, engine="simd", threads=None, backend=None, precision="f32")
    ///
    /// An LSTM from a ``state_dict``-like mapping of names to arrays or tensors (any float
    /// dtype; non-float entries, such as a BatchNorm's counters, are ignored). The config is
    /// inferred from the shapes; ``prefix`` picks the LSTM when the mapping holds several
    /// (``"encoder.rnn"``; ``""`` for the top level). ``batch_first`` is not in a state_dict:
    /// pass the module's. ``engine``: ``"simd"`` (default), ``"parallel"`` (``threads``, default
    /// one per core) or ``"naive"``; ``backend``: ``"avx512"``, ``"avx2"``, ``"portable"`` or
    /// ``"avx512bf16"`` (default: the best this CPU has for the precision); ``precision``:
    /// ``"f32"`` (default: PyTorch's results within a few ULPs) or ``"bf16"`` (weights rounded
    /// to bfloat16 once, products of bf16 operands accumulated in f32, state and activations
    /// f32: about twice as fast where the CPU has AVX512-BF16, errors of ~1e-3 on outputs of
    /// order 1, see docs/numerics.md; forward and :meth:`step` only, :meth:`grad` refuses
    /// it; the simd and parallel engines). A name that is not one of these is a ValueError
    /// naming it.
    #[classmethod]
    #[pyo3(signature = (state_dict, *, prefix=None, batch_first=false, engine="simd", threads=None, backend=None, precision="f32"))]
    // One argument per keyword of the Python signature.
    #[allow(clippy::too_many_arguments)]
    fn from_state_dict(
        _cls: &Bound<'_, pyo3::types::PyType>,
        state_dict: &Bound<'_, PyAny>,
        prefix: Option<&str>,
        batch_first: bool,
        engine: &str,
        threads: Option<usize>,
        backend: Option<&str>,
        precision: &str,
    ) -> PyResult<Self> {
        let py = state_dict.py();
        static FLOAT_ITEMS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let items = FLOAT_ITEMS
            .import(py, "lstm_kernels._convert", "float_items")?
            .call1((state_dict,))?;
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for item in items.try_iter()? {
            let (name, value): (String, Bound<'_, PyAny>) = item?.extract()?;
            let array = as_f32_array(&value, &name)?;
            let view = array
                .try_readonly()
                .map_err(|e| value_error(format!("{name}: {e}")))?;
            let data = view
                .as_slice()
                .map_err(|e| value_error(format!("{name}: {e}")))?;
            let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            tensors.push((name, array.shape().to_vec(), bytes));
        }
        let model = model_from_named(&tensors, prefix).map_err(to_py_err)?;
        Lstm::build(
            model,
            batch_first,
            &EngineArgs {
                engine,
                threads,
                backend,
                precision,
            },
        )
    }

    /// LSTM.from_torch(module, *, engine="simd", threads=None, backend=None, precision="f32")
    ///
    /// An LSTM with the weights and options of a PyTorch module: an ``nn.LSTM``, an
    /// ``nn.LSTMCell`` (a one-layer LSTM: run it with :meth:`step`), or a module holding
    /// exactly one of them. ``batch_first`` is taken from the module. torch is only imported by
    /// the caller; nothing here needs it.
    #[classmethod]
    #[pyo3(signature = (module, *, engine="simd", threads=None, backend=None, precision="f32"))]
    fn from_torch(
        cls: &Bound<'_, pyo3::types::PyType>,
        module: &Bound<'_, PyAny>,
        engine: &str,
        threads: Option<usize>,
        backend: Option<&str>,
        precision: &str,
    ) -> PyResult<Self> {
        let py = module.py();
        static FIND: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let found = FIND
            .import(py, "lstm_kernels._torch", "lstm_state_dict")?
            .call1((module,))?;
        let (state_dict, batch_first): (Bound<'_, PyAny>, bool) = found.extract()?;
        Lstm::from_state_dict(
            cls,
            &state_dict,
            Some(""),
            batch_first,
            engine,
            threads,
            backend,
            precision,
        )
    }

    /// LSTM.from_bytes(data, *, prefix=None, batch_first=False, engine="simd", threads=None, backend=None, precision="f32")
    ///
    /// An LSTM from the bytes of a safetensors file (what :meth:`to_bytes` gives): a model
    /// shipped over the network or to another process.
    #[classmethod]
    #[pyo3(signature = (data, *, prefix=None, batch_first=false, engine="simd", threads=None, backend=None, precision="f32"))]
    // One argument per keyword of the Python signature.
    #[allow(clippy::too_many_arguments)]
    fn from_bytes(
        _cls: &Bound<'_, pyo3::types::PyType>,
        data: &[u8],
        prefix: Option<&str>,
        batch_first: bool,
        engine: &str,
        threads: Option<usize>,
        backend: Option<&str>,
        precision: &str,
    ) -> PyResult<Self> {
        let model = Model::from_safetensors_bytes(data, prefix).map_err(to_py_err)?;
        Lstm::build(
            model,
            batch_first,
            &EngineArgs {
                engine,
                threads,
                backend,
                precision,
            },
        )
    }

    /// The forward pass (see the class documentation and :meth:`forward`).
    #[pyo3(signature = (input, hx=None, lengths=None, total_length=None))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        hx: Option<&Bound<'py, PyAny>>,
        lengths: Option<&Bound<'py, PyAny>>,
        total_length: Option<usize>,
    ) -> PyResult<ForwardResult<'py>> {
        let (x, state, lengths) = self.call_args(input, hx, lengths)?;
        if total_length.is_some() && x.rank() != 3 {
            return Err(operand_error("total_length", format!(
                "total_length: needs batched input [T, B, I] or [B, T, I]; the input is unbatched {:?}",
                x.shape()
            )));
        }
        let engine = &self.engines.engine;
        let batch_first = self.model.config().batch_first;
        let out = py
            .detach(|| {
                let mut out = engine.forward(&x, state.as_ref(), lengths.as_deref())?;
                if let Some(n) = total_length {
                    out.output = pad_to_total_length(out.output, n, batch_first)?;
                }
                Ok::<_, LstmError>(out)
            })
            .map_err(to_py_err)?;
        Ok((
            tensor_to_py(py, out.output)?,
            (tensor_to_py(py, out.h_n)?, tensor_to_py(py, out.c_n)?),
        ))
    }

    /// forward(input, hx=None, lengths=None, total_length=None) -> (output, (h_n, c_n))
    ///
    /// The forward pass of ``nn.LSTM`` in eval mode (the same as calling the model).
    ///
    /// - ``input``: ``[T, B, input_size]`` (``[B, T, input_size]`` when ``batch_first``), or
    ///   unbatched ``[T, input_size]``; float32 (read without a copy when C-contiguous) or
    ///   float64/float16, a NumPy array, a CPU torch tensor or anything with ``__array__``.
    /// - ``hx``: ``(h0, c0)``, ``[L·D, B, H_out]`` and ``[L·D, B, hidden_size]`` (without ``B``
    ///   when unbatched), or an :class:`LSTMState`; zeros when ``None``.
    /// - ``lengths``: one length per sequence, each in ``1..=T``, as
    ///   ``pack_padded_sequence(enforce_sorted=False)``: the output past a sequence's end is 0,
    ///   ``h_n``/``c_n`` come from its last valid step, and the output has ``max(lengths)``
    ///   steps.
    /// - ``total_length``: pads the output's time axis to this many steps, as
    ///   ``pad_packed_sequence(total_length=...)`` (batched input only).
    ///
    /// Returns ``output`` and ``(h_n, c_n)``, float32 NumPy arrays in PyTorch's shapes.
    #[pyo3(signature = (input, hx=None, lengths=None, total_length=None))]
    fn forward<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        hx: Option<&Bound<'py, PyAny>>,
        lengths: Option<&Bound<'py, PyAny>>,
        total_length: Option<usize>,
    ) -> PyResult<ForwardResult<'py>> {
        self.__call__(py, input, hx, lengths, total_length)
    }

    /// zero_state(batch=None) -> LSTMState
    ///
    /// The zero state of ``batch`` streams (``None``: one unbatched stream), to advance with
    /// :meth:`step`.
    #[pyo3(signature = (batch=None))]
    fn zero_state(&self, batch: Option<usize>) -> PyResult<PyLstmState> {
        let inner = LstmState::zeros(self.model.config(), batch).map_err(to_py_err)?;
        Ok(PyLstmState { inner })
    }

    /// step(x_t, state, out=None) -> ndarray
    ///
    /// Advances ``state`` (an :class:`LSTMState`) by one time step, in place, and returns the
    /// last layer's output ``[B, H_out]`` (``[H_out]`` for an unbatched state). ``x_t`` is
    /// ``[B, input_size]`` (or ``[input_size]``). Equal to the forward pass over the whole
    /// sequence when called once per step. ``out``: a C-contiguous float32 array of the output's
    /// shape to write into (then returned) instead of a new one. Unidirectional models only.
    #[pyo3(signature = (x_t, state, out=None))]
    fn step<'py>(
        &self,
        py: Python<'py>,
        x_t: &Bound<'py, PyAny>,
        state: &Bound<'py, PyLstmState>,
        out: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let config = self.model.config();
        let mut state = state
            .try_borrow_mut()
            .map_err(|_| value_error("state: in use by another call (one state per stream)"))?;
        let out_shape: Vec<usize> = match state.inner.batch() {
            Some(b) => vec![b, config.h_out()],
            None => vec![config.h_out()],
        };
        let in_shape: Vec<usize> = match state.inner.batch() {
            Some(b) => vec![b, config.input_size],
            None => vec![config.input_size],
        };
        let x = as_f32_array(x_t, "x_t")?;
        if x.shape() != in_shape.as_slice() {
            return Err(operand_error(
                "x_t",
                format!(
                    "x_t: expected shape {in_shape:?} (from the state's batch), found {:?}",
                    x.shape()
                ),
            ));
        }
        let x_view = x
            .try_readonly()
            .map_err(|e| operand_error("x_t", format!("x_t: {e}")))?;
        let x_data = x_view
            .as_slice()
            .map_err(|e| operand_error("x_t", format!("x_t: {e}")))?;
        let engine = &self.engines.engine;
        let inner = &mut state.inner;
        match out {
            Some(out) => {
                let array = out.cast::<PyArrayDyn<f32>>().map_err(|_| {
                    operand_error(
                        "out",
                        format!(
                            "out: expected a float32 NumPy array, found {}",
                            type_name(out)
                        ),
                    )
                })?;
                if array.shape() != out_shape.as_slice() || !array.is_c_contiguous() {
                    return Err(operand_error("out", format!(
                        "out: expected a C-contiguous float32 array of shape {out_shape:?}, found shape {:?}{}",
                        array.shape(),
                        if array.is_c_contiguous() { "" } else { " (not C-contiguous)" }
                    )));
                }
                let mut out_view = array
                    .try_readwrite()
                    .map_err(|e| operand_error("out", format!("out: {e}")))?;
                let out_data = out_view
                    .as_slice_mut()
                    .map_err(|e| operand_error("out", format!("out: {e}")))?;
                py.detach(|| engine.step(x_data, inner, out_data))
                    .map_err(to_py_err)?;
                Ok(out.clone())
            }
            None => {
                let mut output =
                    lstm::engine::try_filled_vec("output", out_shape.iter().product(), 0.0f32)
                        .map_err(to_py_err)?;
                py.detach(|| engine.step(x_data, inner, &mut output))
                    .map_err(to_py_err)?;
                array_to_py(py, out_shape, output)
            }
        }
    }

    /// grad(input, grad_output, hx=None, lengths=None, grad_h_n=None, grad_c_n=None, prefix="") -> dict
    ///
    /// The backward pass: gradients of a loss with respect to the input, the initial state
    /// and every parameter, given the loss's gradients with respect to the forward's results
    /// (what autograd computes for ``model(input, hx)`` then ``backward``).
    ///
    /// - ``input``, ``hx``, ``lengths``: as for the forward call.
    /// - ``grad_output``: dL/d(output), the output's shape (with ``lengths``: ``max(lengths)``
    ///   or ``T`` steps).
    /// - ``grad_h_n``, ``grad_c_n``: dL/d(h_n), dL/d(c_n) (zero when ``None``).
    ///
    /// Returns a dict of float32 arrays: ``"input"``, ``"h0"``, ``"c0"`` (with respect to the
    /// zero state when ``hx`` is ``None``), and one entry per parameter under its state_dict
    /// name (``prefix`` + ``"weight_ih_l0"``, ...), in PyTorch's registration order.
    #[pyo3(signature = (input, grad_output, hx=None, lengths=None, grad_h_n=None, grad_c_n=None, prefix=""))]
    #[allow(clippy::too_many_arguments)]
    fn grad<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        grad_output: &Bound<'py, PyAny>,
        hx: Option<&Bound<'py, PyAny>>,
        lengths: Option<&Bound<'py, PyAny>>,
        grad_h_n: Option<&Bound<'py, PyAny>>,
        grad_c_n: Option<&Bound<'py, PyAny>>,
        prefix: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (x, state, lengths) = self.call_args(input, hx, lengths)?;
        let gy = tensor_from_py(grad_output, "grad_output")?;
        let ghn = grad_h_n
            .map(|g| tensor_from_py(g, "grad_h_n"))
            .transpose()?;
        let gcn = grad_c_n
            .map(|g| tensor_from_py(g, "grad_c_n"))
            .transpose()?;
        let trainer = &self.engines.engine;
        let grads = py
            .detach(|| {
                let mut tape = TrainingTape::new();
                trainer.forward_train(&x, state.as_ref(), lengths.as_deref(), &mut tape)?;
                let upstream = GradOutputs {
                    grad_output: &gy,
                    grad_h_n: ghn.as_ref(),
                    grad_c_n: gcn.as_ref(),
                };
                trainer.backward(&tape, &upstream)
            })
            .map_err(to_py_err)?;
        let result = PyDict::new(py);
        for (name, tensor) in [
            ("input", &grads.grad_input),
            ("h0", &grads.grad_h0),
            ("c0", &grads.grad_c0),
        ] {
            result.set_item(
                name,
                convert::slice_to_py(py, tensor.shape(), tensor.data())?,
            )?;
        }
        for (name, shape, data) in grads.named_tensors(prefix) {
            result.set_item(name, convert::slice_to_py(py, &shape, data)?)?;
        }
        Ok(result)
    }

    /// state_dict(prefix="") -> dict
    ///
    /// The parameters as float32 arrays under their ``nn.LSTM`` state_dict names, in
    /// PyTorch's registration order (``load_state_dict`` takes them after ``torch.from_numpy``).
    #[pyo3(signature = (prefix=""))]
    fn state_dict<'py>(&self, py: Python<'py>, prefix: &str) -> PyResult<Bound<'py, PyDict>> {
        // `"encoder.rnn"` and `"encoder.rnn."` name the same module.
        let prefix = if prefix.is_empty() || prefix.ends_with('.') {
            prefix.to_string()
        } else {
            format!("{prefix}.")
        };
        let dict = PyDict::new(py);
        for (name, shape, data) in self.model.weights().named_tensors() {
            dict.set_item(
                format!("{prefix}{name}"),
                convert::slice_to_py(py, &shape, data)?,
            )?;
        }
        Ok(dict)
    }

    /// to_bytes(prefix="") -> bytes
    ///
    /// The weights as a safetensors file's bytes (F32), names under ``prefix``;
    /// :meth:`from_bytes` reads them back.
    #[pyo3(signature = (prefix=""))]
    fn to_bytes<'py>(&self, py: Python<'py>, prefix: &str) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = io::serialize_safetensors(self.model.weights(), prefix).map_err(to_py_err)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// save(path, prefix="")
    ///
    /// Writes the weights as a safetensors file (atomically: never a half-written file).
    #[pyo3(signature = (path, prefix=""))]
    fn save(&self, py: Python<'_>, path: PathBuf, prefix: &str) -> PyResult<()> {
        let model = &self.model;
        py.detach(|| model.save(&path, prefix)).map_err(to_py_err)
    }

    /// Pickling ships the weights (as safetensors bytes) and the engine options; the engine is
    /// rebuilt where the object is unpickled (another process, a Ray worker).
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let this = slf.get();
        let rebuild = py.import("lstm_kernels._native")?.getattr("_unpickle")?;
        let threads = (this.engines.kind == EngineKind::Parallel).then_some(this.engines.threads);
        let args = (
            this.to_bytes(py, "")?,
            this.model.config().batch_first,
            this.engines.kind.name(),
            threads,
            this.engines.backend.map(|b| b.name()),
            this.engines.precision.name(),
        )
            .into_pyobject(py)?;
        Ok((rebuild, args))
    }

    /// ``input_size``: features per time step.
    #[getter]
    fn input_size(&self) -> usize {
        self.model.config().input_size
    }

    /// ``hidden_size``: the size of the cell state.
    #[getter]
    fn hidden_size(&self) -> usize {
        self.model.config().hidden_size
    }

    /// ``num_layers``.
    #[getter]
    fn num_layers(&self) -> usize {
        self.model.config().num_layers
    }

    /// ``bias``: whether the model has biases.
    #[getter]
    fn bias(&self) -> bool {
        self.model.config().bias
    }

    /// ``batch_first``: input and output are ``[B, T, ·]``.
    #[getter]
    fn batch_first(&self) -> bool {
        self.model.config().batch_first
    }

    /// ``bidirectional``.
    #[getter]
    fn bidirectional(&self) -> bool {
        self.model.config().bidirectional
    }

    /// ``proj_size`` (0: no projection).
    #[getter]
    fn proj_size(&self) -> usize {
        self.model.config().proj_size
    }

    /// The engine: ``"simd"``, ``"parallel"`` or ``"naive"``.
    #[getter]
    fn engine(&self) -> &'static str {
        self.engines.kind.name()
    }

    /// The SIMD backend the engine runs (``"avx512"``, ``"avx2"``, ``"portable"``), ``None``
    /// for the naive engine.
    #[getter]
    fn backend(&self) -> Option<&'static str> {
        self.engines.backend.map(|b| b.name())
    }

    /// Threads one call uses (the parallel engine's pool; 1 for the others).
    #[getter]
    fn threads(&self) -> usize {
        self.engines.threads
    }

    /// The precision of the weights and products: ``"f32"`` (the default), or ``"bf16"``
    /// (weights rounded to bfloat16 once, at construction; products of bf16 operands
    /// accumulated in f32; state and activations f32; forward and :meth:`step` only).
    #[getter]
    fn precision(&self) -> &'static str {
        self.engines.precision.name()
    }

    /// The module prefix the LSTM was found under in its file (``""`` at top level).
    #[getter]
    fn prefix(&self) -> &str {
        self.model.prefix()
    }

    fn __repr__(&self) -> String {
        let c = self.model.config();
        let mut s = format!("LSTM({}, {}", c.input_size, c.hidden_size);
        if c.num_layers != 1 {
            s += &format!(", num_layers={}", c.num_layers);
        }
        if !c.bias {
            s += ", bias=False";
        }
        if c.batch_first {
            s += ", batch_first=True";
        }
        if c.bidirectional {
            s += ", bidirectional=True";
        }
        if c.proj_size != 0 {
            s += &format!(", proj_size={}", c.proj_size);
        }
        s += &format!(", engine='{}'", self.engines.kind);
        if let Some(b) = self.engines.backend {
            s += &format!(", backend='{b}'");
        }
        if self.engines.kind == EngineKind::Parallel {
            s += &format!(", threads={}", self.engines.threads);
        }
        if self.engines.precision != Precision::F32 {
            s += &format!(", precision='{}'", self.engines.precision);
        }
        s + ")"
    }
}

/// A model from named f32 tensors (`(name, shape, little-endian bytes)`), through the
/// safetensors loader so that the config inference, prefix search and messages are the file
/// loader's own.
fn model_from_named(
    tensors: &[(String, Vec<usize>, Vec<u8>)],
    prefix: Option<&str>,
) -> lstm::Result<Model> {
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|view| (name.as_str(), view))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bytes = safetensors::serialize(views, None)?;
    Model::from_safetensors_bytes(&bytes, prefix)
}

/// load(path, *, prefix=None, batch_first=False, engine="simd", threads=None, backend=None, precision="f32") -> LSTM
///
/// Loads the ``nn.LSTM`` of a model file (a safetensors ``state_dict``: ``safetensors.torch.
/// save_file(model.state_dict(), path)``). The config is inferred from the tensor shapes;
/// ``prefix`` picks the LSTM when the file holds several (``"encoder.rnn"``; ``""`` for the top
/// level). ``batch_first`` is not in a state_dict: pass the module's. ``engine``: ``"simd"``
/// (default), ``"parallel"`` (``threads``, default one per core) or ``"naive"``; ``backend``:
/// ``"avx512"``, ``"avx2"``, ``"portable"`` or ``"avx512bf16"`` (default: the best this CPU has
/// for the precision); ``precision``: ``"f32"`` (default) or ``"bf16"`` (bfloat16 weights and
/// product operands, f32 accumulation, state and activations: see
/// :meth:`LSTM.from_state_dict`; forward and ``step`` only).
///
/// Raises FileNotFoundError / OSError when the file cannot be read, ValueError when it holds
/// no usable LSTM.
#[pyfunction]
#[pyo3(signature = (path, *, prefix=None, batch_first=false, engine="simd", threads=None, backend=None, precision="f32"))]
// One argument per keyword of the Python signature.
#[allow(clippy::too_many_arguments)]
fn load(
    py: Python<'_>,
    path: PathBuf,
    prefix: Option<&str>,
    batch_first: bool,
    engine: &str,
    threads: Option<usize>,
    backend: Option<&str>,
    precision: &str,
) -> PyResult<Lstm> {
    let model = py
        .detach(|| Model::load_with_prefix(&path, prefix))
        .map_err(to_py_err)?;
    Lstm::build(
        model,
        batch_first,
        &EngineArgs {
            engine,
            threads,
            backend,
            precision,
        },
    )
}

/// Rebuilds a pickled [`Lstm`] (see `LSTM.__reduce__`).
#[pyfunction]
fn _unpickle(
    data: &[u8],
    batch_first: bool,
    engine: &str,
    threads: Option<usize>,
    backend: Option<&str>,
    precision: &str,
) -> PyResult<Lstm> {
    let model = Model::from_safetensors_bytes(data, Some("")).map_err(to_py_err)?;
    Lstm::build(
        model,
        batch_first,
        &EngineArgs {
            engine,
            threads,
            backend,
            precision,
        },
    )
}

/// backends(precision="f32") -> list[str]
///
/// The SIMD backends this CPU supports for weights of ``precision``, best last (``"bf16"``
/// adds ``"avx512bf16"`` where the CPU has AVX512-BF16).
#[pyfunction]
#[pyo3(signature = (precision="f32"))]
fn backends(precision: &str) -> PyResult<Vec<&'static str>> {
    let precision: Precision = precision.parse().map_err(to_py_err)?;
    Ok(Backend::all_for(precision)
        .iter()
        .map(|b| b.name())
        .collect())
}

/// The native module; `lstm_kernels/__init__.py` re-exports it.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Lstm>()?;
    m.add_class::<PyLstmState>()?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(backends, m)?)?;
    m.add_function(wrap_pyfunction!(_unpickle, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
