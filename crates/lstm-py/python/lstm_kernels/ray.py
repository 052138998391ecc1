"""Batch inference on Ray Data: an LSTM loaded once per actor, mapped over batches of sequences.

``ray`` is not a dependency of ``lstm_kernels``; this module imports it only in
:func:`map_sequences` (the :class:`LSTMPredictor` itself is plain Python and NumPy, so it can
also be called on a batch directly, which is what a single-process run does).

::

    import ray, lstm_kernels.ray as lkr
    ray.init()                                           # or ray.init(address="auto") on a cluster
    ds = ray.data.read_parquet("s3://bucket/windows/")   # a column "x": one [T, I] array per row
    out = lkr.map_sequences(ds, "model.safetensors", outputs=("last",), actors=4)
    out.write_parquet("s3://bucket/predictions/")

Rows: the input column holds one ``[T, input_size]`` float array per row (``T`` may differ
between rows: a variable-shaped tensor column) or the whole column is one ``[N, T, I]`` array (a
fixed window). Rows of a batch are padded to the longest and run as one call with per-row
lengths, which gives each row exactly what it gets alone (bit for bit), and each output comes
back in the row's own length.

Outputs (``outputs=``): ``"output"`` (``[T_row, D·H_out]`` per row), ``"last"`` (the output at
the row's last valid step, ``[D·H_out]``: what a classifier or a forecaster reads), ``"h_n"``
and ``"c_n"`` (``[L·D, H_out]`` / ``[L·D, H]`` per row). Every other column of the batch passes
through unchanged.

Bad rows (a wrong feature count, NaN or infinite values, no time step, not a 2-D array): with
``on_error="raise"`` (default) the batch fails with a ``ValueError`` naming the row (its
``id_column`` value, or its index in the batch) and what is wrong, and Ray fails the job with
that message; with ``on_error="column"`` the bad rows get an ``error`` column message (``""``
for good rows), NaN in the fixed-size outputs and a ``[0, D·H_out]`` array as ``output``, and
the job goes on.
"""

import os

import numpy as np

from . import LSTM, load

OUTPUTS = ("output", "last", "h_n", "c_n")


class LSTMPredictor:
    """A callable class for ``Dataset.map_batches``: the model is built once per actor.

    - ``model``: a path every node can read (``lstm_kernels.load``), the bytes of a
      safetensors file (``LSTM.to_bytes()``, shipped with the task), or an :class:`LSTM`
      (pickled with the task, rebuilt on the actor).
    - ``prefix``, ``batch_first``: as for :func:`lstm_kernels.load` (a path or bytes).
    - ``threads``: threads per actor (1: the simd engine on the actor's thread; more: the
      parallel engine with that many).
    - ``precision``: ``"f32"`` (default) or ``"bf16"``, as for :func:`lstm_kernels.load`, for
      a path or bytes; an :class:`LSTM` keeps its own (``None``, or its precision).
    - ``input_column``, ``lengths_column`` (optional: per-row valid lengths, for rows stored
      padded), ``h0_column`` / ``c0_column`` (optional: per-row initial states ``[L·D, H_out]``
      / ``[L·D, H]``), ``id_column`` (names rows in error messages).
    - ``outputs``: any of ``"output"``, ``"last"``, ``"h_n"``, ``"c_n"``.
    - ``on_error``: ``"raise"`` or ``"column"`` (see the module documentation);
      ``error_column``: the name of the error column.
    """

    def __init__(
        self,
        model,
        *,
        prefix=None,
        batch_first=False,
        threads=1,
        precision=None,
        input_column="x",
        lengths_column=None,
        h0_column=None,
        c0_column=None,
        id_column=None,
        outputs=("output",),
        on_error="raise",
        error_column="error",
    ):
        engine = dict(engine="parallel", threads=threads) if threads > 1 else dict(engine="simd")
        if isinstance(model, LSTM):
            if precision is not None and precision != model.precision:
                raise ValueError(
                    f"precision: the LSTM given runs {model.precision!r}, asked for "
                    f"{precision!r}; build it with precision={precision!r}, or pass its bytes"
                )
            self.model = model
        elif isinstance(model, (bytes, bytearray, memoryview)):
            self.model = LSTM.from_bytes(bytes(model), prefix=prefix, batch_first=batch_first,
                                         precision=precision or "f32", **engine)
        elif isinstance(model, (str, os.PathLike)):
            self.model = load(model, prefix=prefix, batch_first=batch_first,
                              precision=precision or "f32", **engine)
        else:
            raise ValueError(
                f"model: expected a path, safetensors bytes or an LSTM, found {type(model).__name__}"
            )
        outputs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        unknown = [o for o in outputs if o not in OUTPUTS]
        if unknown or not outputs:
            raise ValueError(f"outputs: expected some of {OUTPUTS}, found {outputs}")
        if on_error not in ("raise", "column"):
            raise ValueError(f"on_error: expected 'raise' or 'column', found {on_error!r}")
        self.input_column, self.lengths_column = input_column, lengths_column
        self.h0_column, self.c0_column, self.id_column = h0_column, c0_column, id_column
        self.outputs, self.on_error, self.error_column = outputs, on_error, error_column
        m = self.model
        self.out_size = (m.proj_size or m.hidden_size) * (2 if m.bidirectional else 1)
        cells = m.num_layers * (2 if m.bidirectional else 1)
        self.h_shape = (cells, m.proj_size or m.hidden_size)
        self.c_shape = (cells, m.hidden_size)

    def _row_name(self, batch, i):
        if self.id_column is not None and self.id_column in batch:
            value = batch[self.id_column][i]
            value = value.item() if isinstance(value, np.generic) else value
            return f"row {self.id_column}={value!r}"
        return f"row {i} of the batch"

    def _check_row(self, x, length):
        """Why row `x` (with its valid `length`, or None) cannot run, or None."""
        if not isinstance(x, np.ndarray):
            x = np.asarray(x)
        if x.ndim != 2:
            return f"expected a 2-D array [T, {self.model.input_size}], found shape {x.shape}"
        if x.shape[1] != self.model.input_size:
            return (
                f"expected {self.model.input_size} features per step, found {x.shape[1]} "
                f"(shape {x.shape})"
            )
        steps = x.shape[0] if length is None else length
        if steps < 1 or steps > x.shape[0]:
            return f"length {steps} outside 1..={x.shape[0]} (shape {x.shape})"
        if x.dtype.kind != "f":
            return f"expected float values, found dtype {x.dtype}"
        if not np.isfinite(x[:steps]).all():
            bad = np.argwhere(~np.isfinite(x[:steps]))[0]
            return f"non-finite value {x[tuple(bad)]} at step {bad[0]}, feature {bad[1]}"
        return None

    def __call__(self, batch):
        for column in (self.input_column, self.lengths_column, self.h0_column, self.c0_column):
            if column is not None and column not in batch:
                raise ValueError(f"the batch has no column {column!r} (columns: {sorted(batch)})")
        xs = batch[self.input_column]
        n = len(xs)
        lengths_in = None
        if self.lengths_column is not None:
            lengths_in = np.asarray(batch[self.lengths_column]).astype(np.int64)
        if isinstance(xs, np.ndarray) and xs.dtype.kind == "f" and xs.ndim == 3:
            errors = self._check_window(xs, lengths_in)
        else:
            errors = self._check_rows(xs, lengths_in)
        good = [i for i in range(n) if errors[i] is None]
        if len(good) < n:
            first = next(i for i in range(n) if errors[i] is not None)
            message = lambda i: f"{self._row_name(batch, i)}: {self.input_column}: {errors[i]}"  # noqa: E731
            if self.on_error == "raise":
                raise ValueError(message(first))
            errors = ["" if e is None else message(i) for i, e in enumerate(errors)]
        result = {k: v for k, v in batch.items() if k != self.input_column}
        if len(good) == n and isinstance(xs, np.ndarray) and xs.ndim == 3:
            rows = xs  # a fixed window: no per-row copies
        else:
            rows = [np.asarray(xs[i]) for i in good]
        results = self._run(
            rows,
            None if lengths_in is None else lengths_in[good],
            None if self.h0_column is None else np.asarray([batch[self.h0_column][i] for i in good], np.float32),
            None if self.c0_column is None else np.asarray([batch[self.c0_column][i] for i in good], np.float32),
        )
        for name in self.outputs:
            result[name] = self._column(name, n, good, results.get(name))
        if self.on_error == "column":
            result[self.error_column] = np.array(
                ["" if e is None else e for e in errors], dtype=object
            )
        return result

    def _check_window(self, xs, lengths):
        """Per-row reasons (None: good) for a fixed window [N, T, I], checked as one array."""
        n, t, features = xs.shape
        if features != self.model.input_size:
            return [self._check_row(xs[i], None) for i in range(n)]
        if t < 1:
            return [f"length 0 outside 1..={t} (shape {xs.shape[1:]})"] * n
        finite = np.isfinite(xs).all(axis=2)  # [N, T]
        if lengths is not None:
            finite |= np.arange(t)[None, :] >= lengths[:, None]  # padding may hold anything
            bad_length = (lengths < 1) | (lengths > t)
        else:
            bad_length = np.zeros(n, bool)
        bad = bad_length | ~finite.all(axis=1)
        errors = [None] * n
        for i in np.flatnonzero(bad):
            errors[i] = self._check_row(xs[i], None if lengths is None else int(lengths[i]))
        return errors

    def _check_rows(self, xs, lengths):
        errors = []
        for i in range(len(xs)):
            try:
                errors.append(self._check_row(xs[i], None if lengths is None else int(lengths[i])))
            except Exception as e:  # an object that is not an array at all
                errors.append(f"cannot read the row as an array: {e}")
        return errors

    def _run(self, rows, lengths, h0, c0):
        """One padded, length-aware call over the good rows (a [B, T, I] array or a list of
        [T_b, I] arrays): per-row outputs."""
        b = len(rows)
        if b == 0:
            return {}
        if isinstance(rows, np.ndarray):
            steps = rows.shape[1]
            lengths = np.full(b, steps) if lengths is None else lengths
            x = rows.astype(np.float32, copy=False)
        else:
            lengths = np.array([r.shape[0] for r in rows]) if lengths is None else lengths
            steps = int(lengths.max())
            x = np.zeros((b, steps, self.model.input_size), np.float32)
            for j, (r, t) in enumerate(zip(rows, lengths)):
                x[j, :t] = r[:t]
        hx = None
        if h0 is not None or c0 is not None:
            zeros = lambda shape: np.zeros((shape[0], b, shape[1]), np.float32)  # noqa: E731
            hx = (zeros(self.h_shape) if h0 is None else h0.swapaxes(0, 1),
                  zeros(self.c_shape) if c0 is None else c0.swapaxes(0, 1))
        if not self.model.batch_first:
            x = x.swapaxes(0, 1)  # the binding makes it contiguous (one copy)
        output, (h_n, c_n) = self.model(x, hx, lengths)
        if not self.model.batch_first:
            output = output.swapaxes(0, 1)  # [B, T', F]
        out = {}
        if "output" in self.outputs:
            out["output"] = [output[j, :t] for j, t in enumerate(lengths)]
        if "last" in self.outputs:
            out["last"] = output[np.arange(b), np.asarray(lengths) - 1]
        if "h_n" in self.outputs:
            out["h_n"] = np.ascontiguousarray(h_n.swapaxes(0, 1))
        if "c_n" in self.outputs:
            out["c_n"] = np.ascontiguousarray(c_n.swapaxes(0, 1))
        return out

    def _column(self, name, n, good, values):
        """The output column `name` for all n rows: the good rows' values, placeholders for
        the bad ones."""
        if name == "output":
            column = np.empty(n, dtype=object)
            for i in range(n):
                column[i] = np.zeros((0, self.out_size), np.float32)
            for j, i in enumerate(good):
                column[i] = np.ascontiguousarray(values[j])
            if good and len(good) == n and len({v.shape for v in values}) == 1:
                return np.stack(values)  # a fixed window: one [N, T, F] array
            return column
        shape = {"last": (self.out_size,), "h_n": self.h_shape, "c_n": self.c_shape}[name]
        column = np.full((n,) + shape, np.nan, np.float32)
        if good:
            column[good] = values
        return column


def default_actors(threads_per_actor=1):
    """One actor per `threads_per_actor` CPUs of the cluster, less one CPU left to the rest of
    the pipeline (reading and writing run as tasks that need a CPU too: with every CPU held by
    an actor, a job that reads files would wait forever); at least one actor."""
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, (cpus - 1) // max(1, threads_per_actor))


def map_sequences(dataset, model, *, actors=None, threads_per_actor=1, batch_size=256,
                  **predictor_kwargs):
    """``dataset.map_batches`` with an :class:`LSTMPredictor` per actor.

    ``actors``: how many actors (default: :func:`default_actors`, one per ``threads_per_actor``
    CPUs of the cluster but one, which the reading and writing tasks need); each reserves ``threads_per_actor`` CPUs and runs that many engine threads. An actor that
    dies is restarted and its batches retried (Ray Data's defaults for actor pools:
    ``max_restarts=-1``, ``max_task_retries=-1``), so every row comes out exactly once. Other
    keyword arguments go to :class:`LSTMPredictor`.
    """
    import ray.data

    actors = actors or default_actors(threads_per_actor)
    kwargs = dict(
        fn_constructor_kwargs=dict(model=model, threads=threads_per_actor, **predictor_kwargs),
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=threads_per_actor,
    )
    kwargs["compute"] = ray.data.ActorPoolStrategy(size=actors)
    return dataset.map_batches(LSTMPredictor, **kwargs)
