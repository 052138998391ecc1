"""lstm_kernels.ray on a real local Ray cluster (ray.init(num_cpus=2), two actors): the
distributed results are bit-identical to one process running the same rows, a worker killed
mid-job still yields every row exactly once, and bad rows fail with a message naming the row
(or go to the error column). Skipped, with the reason, when ray is not importable."""

import os
import signal

import numpy as np
import pytest

import lstm_kernels
from conftest import assert_close, torch
from test_identities import random_model

try:
    import ray
    import ray.data

    RAY_MISSING = None
except Exception as e:  # ImportError, or a broken install
    ray = None
    RAY_MISSING = f"ray is not importable ({type(e).__name__}: {e}); pip install 'ray[data]'"

from lstm_kernels.ray import LSTMPredictor, map_sequences

pytestmark = pytest.mark.skipif(ray is None, reason=RAY_MISSING or "")

ROWS = 2000


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False, ignore_reinit_error=True)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model():
    return random_model(51, input_size=8, hidden_size=16, num_layers=2, bidirectional=True)


def make_rows(n, input_size, seed=52):
    rng = np.random.default_rng(seed)
    return [
        {"id": i, "x": rng.standard_normal((int(rng.integers(1, 25)), input_size)).astype(np.float32)}
        for i in range(n)
    ]


def collect(ds, columns):
    rows = sorted(ds.take_all(), key=lambda r: r["id"])
    return {c: [r[c] for r in rows] for c in ["id"] + list(columns)}


def single_process(model, rows, outputs):
    """The same rows through the same predictor in this process, one batch."""
    predictor = LSTMPredictor(model, outputs=outputs)
    batch = {"id": np.array([r["id"] for r in rows]), "x": np.empty(len(rows), dtype=object)}
    for i, r in enumerate(rows):
        batch["x"][i] = r["x"]
    return predictor(batch)


def test_distributed_is_bit_identical_to_one_process(cluster, model):
    rows = make_rows(ROWS, model.input_size)
    outputs = ("output", "last", "h_n", "c_n")
    ds = map_sequences(ray.data.from_items(rows), model.to_bytes(), actors=2,
                       batch_size=64, id_column="id", outputs=outputs)
    got = collect(ds, outputs)
    assert got["id"] == list(range(ROWS)), "every row exactly once"
    want = single_process(model, rows, outputs)
    for i in range(ROWS):
        assert got["output"][i].shape == (rows[i]["x"].shape[0], 32)
        assert np.array_equal(got["output"][i], want["output"][i]), i
        for name in ("last", "h_n", "c_n"):
            assert np.array_equal(got[name][i], want[name][i]), (name, i)
    if torch is not None:  # and within the contract of torch.nn.LSTM in float64
        ref = torch.nn.LSTM(8, 16, num_layers=2, bidirectional=True).double()
        ref.load_state_dict({k: torch.from_numpy(v).double() for k, v in model.state_dict().items()})
        with torch.no_grad():
            for i in range(0, ROWS, 97):
                y, _ = ref(torch.from_numpy(rows[i]["x"]).double())
                assert_close(got["output"][i], y.numpy(), 2e-5, f"row {i} vs torch f64")


def test_a_killed_worker_still_yields_every_row_once(cluster, model, tmp_path):
    """The first batch any actor sees kills its worker process (SIGKILL, once per job); Ray
    Data restarts the actor and retries the batch (its defaults, which map_sequences keeps)."""
    marker = str(tmp_path / "killed")

    class CrashingPredictor(LSTMPredictor):
        def __call__(self, batch):
            if not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
            return super().__call__(batch)

    rows = make_rows(600, model.input_size, seed=53)
    ds = ray.data.from_items(rows).map_batches(
        CrashingPredictor,
        fn_constructor_kwargs=dict(model=model.to_bytes(), outputs=("last",)),
        batch_size=50, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1,
    )
    got = collect(ds, ["last"])
    assert os.path.exists(marker), "no worker was killed: the test tested nothing"
    assert got["id"] == list(range(600)), "every row exactly once"
    want = single_process(model, rows, ("last",))["last"]
    assert np.array_equal(np.stack(got["last"]), want)


def bad_rows(model):
    rows = make_rows(200, model.input_size, seed=54)
    rows[17]["x"] = rows[17]["x"][:, :5]  # wrong feature count
    rows[42]["x"] = rows[42]["x"].copy()
    rows[42]["x"][0, 3] = np.nan
    rows[99]["x"] = np.zeros((0, model.input_size), np.float32)  # no time step
    return rows, {17: "expected 8 features per step, found 5", 42: "non-finite value nan",
                  99: "length 0 outside"}


def test_a_bad_row_fails_the_job_naming_the_row(cluster, model):
    rows, reasons = bad_rows(model)
    ds = map_sequences(ray.data.from_items(rows), model, actors=2, batch_size=50,
                       id_column="id", outputs=("last",))
    with pytest.raises(Exception) as e:
        ds.take_all()
    message = str(e.value)
    assert any(f"row id={k}: x: {v}" in message for k, v in reasons.items()), message


def test_bad_rows_go_to_the_error_column(cluster, model):
    rows, reasons = bad_rows(model)
    ds = map_sequences(ray.data.from_items(rows), model, actors=2, batch_size=50,
                       id_column="id", outputs=("output", "last"), on_error="column")
    got = collect(ds, ["output", "last", "error"])
    assert got["id"] == list(range(200))
    good = [r for i, r in enumerate(rows) if i not in reasons]
    want = single_process(model, good, ("last",))["last"]
    j = 0
    for i in range(200):
        if i in reasons:
            assert reasons[i] in got["error"][i] and f"row id={i}" in got["error"][i]
            assert np.isnan(got["last"][i]).all() and got["output"][i].shape == (0, 32)
        else:
            assert got["error"][i] == ""
            assert np.array_equal(got["last"][i], want[j])
            j += 1


def test_predictor_in_process_rules():
    """What a single process sees, without Ray: fixed windows, lengths and states columns,
    and the constructor's checks."""
    model = random_model(55, input_size=4, hidden_size=6, num_layers=1, batch_first=True)
    rng = np.random.default_rng(56)
    x = rng.standard_normal((10, 7, 4)).astype(np.float32)
    lengths = rng.integers(1, 8, 10)
    h0 = rng.standard_normal((10, 1, 6)).astype(np.float32)
    c0 = rng.standard_normal((10, 1, 6)).astype(np.float32)
    p = LSTMPredictor(model, lengths_column="n", h0_column="h", c0_column="c",
                      outputs=("output", "last", "h_n", "c_n"))
    out = p({"x": x, "n": lengths, "h": h0, "c": c0})
    y, (h_n, c_n) = model(x, (h0.swapaxes(0, 1), c0.swapaxes(0, 1)), lengths)
    for i in range(10):
        assert np.array_equal(out["output"][i], y[i, : lengths[i]])
        assert np.array_equal(out["last"][i], y[i, lengths[i] - 1])
    assert np.array_equal(out["h_n"], h_n.swapaxes(0, 1))
    assert np.array_equal(out["c_n"], c_n.swapaxes(0, 1))
    fixed = LSTMPredictor(model, outputs="output")({"x": x})["output"]
    assert fixed.shape == (10, 7, 6) and fixed.dtype == np.float32
    with pytest.raises(ValueError, match="outputs"):
        LSTMPredictor(model, outputs=("logits",))
    with pytest.raises(ValueError, match="on_error"):
        LSTMPredictor(model, on_error="ignore")
    with pytest.raises(ValueError, match="model: expected a path"):
        LSTMPredictor(42)
    with pytest.raises(FileNotFoundError):
        LSTMPredictor("/no/such/model.safetensors")
    with pytest.raises(ValueError, match=r"row 1 of the batch: x: expected a 2-D array"):
        p2 = LSTMPredictor(model)
        p2({"x": np.array([x[0], x[0, 0]], dtype=object)})


def test_predictor_fixed_windows_and_bad_rows_in_process():
    """A fixed-window column is checked as one array: NaN in a row's padding (past its
    length) is fine, NaN inside it is that row's error; a ragged column gives the same bytes
    as the same rows in a window."""
    model = random_model(57, input_size=3, hidden_size=5, num_layers=1)
    rng = np.random.default_rng(58)
    x = rng.standard_normal((6, 4, 3)).astype(np.float32)
    lengths = np.array([4, 2, 3, 4, 1, 4])
    x[1, 3, 0] = np.nan  # padding of row 1: ignored
    x[4, 0, 2] = np.inf  # inside row 4
    p = LSTMPredictor(model, lengths_column="n", outputs=("output", "last"), on_error="column")
    out = p({"x": x, "n": lengths, "id": np.arange(6)})
    assert [e != "" for e in out["error"]] == [False] * 4 + [True, False]
    assert "row 4 of the batch: x: non-finite value inf at step 0, feature 2" == out["error"][4]
    ragged = np.empty(6, dtype=object)
    for i in range(6):
        ragged[i] = x[i, : lengths[i]]
    out2 = LSTMPredictor(model, outputs=("output", "last"), on_error="column")({"x": ragged})
    for i in [0, 1, 2, 3, 5]:
        assert np.array_equal(out["output"][i], out2["output"][i])
        assert np.array_equal(out["last"][i], out2["last"][i])
    assert np.isnan(out["last"][4]).all() and out["output"][4].shape == (0, 5)
    with pytest.raises(ValueError, match="row 4 of the batch: x: non-finite"):
        LSTMPredictor(model, lengths_column="n")({"x": x, "n": lengths})
    with pytest.raises(ValueError, match="the batch has no column 'n'"):
        p({"x": ragged})
    with pytest.raises(ValueError, match="row id=0: x: expected 3 features per step, found 2"):
        LSTMPredictor(model, id_column="id")({"x": x[:, :, :2].copy(), "id": np.arange(6)})


def test_the_example_job_runs_and_checks_itself(tmp_path):
    """examples/ray_batch_inference.py end to end in its own process (its own Ray instance):
    .npy shards in, Parquet out, read back and compared with a single-process run."""
    import subprocess
    import sys

    from conftest import REPO

    proc = subprocess.run(
        [sys.executable, str(REPO / "examples/ray_batch_inference.py"), "--rows", "400",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "400 sequences in" in proc.stdout and "identical" in proc.stdout
