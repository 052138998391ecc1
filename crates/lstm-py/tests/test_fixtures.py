"""Every committed PyTorch fixture (fixtures/pytorch: forward; fixtures/pytorch-grad:
gradients, from float64 autograd through torch.nn.LSTM) through the Python API, on every
engine, within the case's tolerance: max(2e-5, 4 x PyTorch f32's own error), element by
element."""

import numpy as np
import pytest

import lstm_kernels
from conftest import ENGINES, FIXTURES, assert_close, manifest, read_f64_safetensors

FORWARD = manifest("pytorch")
GRAD = manifest("pytorch-grad")


def _inputs(case, kind):
    d = FIXTURES / kind / case["name"]
    x = np.load(d / "input.npy")
    hx = (np.load(d / "h0.npy"), np.load(d / "c0.npy")) if case["has_state"] else None
    lengths = np.load(d / "lengths.npy") if case["has_lengths"] else None
    return d, x, hx, lengths


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", FORWARD, ids=[c["name"] for c in FORWARD])
def test_forward_fixture(case, engine):
    d, x, hx, lengths = _inputs(case, "pytorch")
    model = lstm_kernels.load(
        d / "model.safetensors",
        prefix=case["prefix"],
        batch_first=case["config"]["batch_first"],
        engine=engine,
    )
    output, (h_n, c_n) = model(x, hx, lengths, total_length=case["total_length"])
    assert output.dtype == h_n.dtype == c_n.dtype == np.float32
    for got, file, key in [
        (output, "expected_output.npy", "output"),
        (h_n, "expected_hn.npy", "h_n"),
        (c_n, "expected_cn.npy", "c_n"),
    ]:
        assert_close(got, np.load(d / file), case["tolerance"][key], f"{case['name']}: {key}")


@pytest.mark.parametrize("case", FORWARD, ids=[c["name"] for c in FORWARD])
def test_fixture_config_and_prefix_found(case):
    """load() without a prefix finds the one LSTM of each file, with the manifest's config."""
    model = lstm_kernels.load(FIXTURES / "pytorch" / case["name"] / "model.safetensors")
    cfg = case["config"]
    assert model.prefix == case["prefix"]
    for key in ["input_size", "hidden_size", "num_layers", "bias", "bidirectional", "proj_size"]:
        assert getattr(model, key) == cfg[key], key


STREAMABLE = [
    c for c in FORWARD if not c["config"]["bidirectional"] and not c["has_lengths"]
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", STREAMABLE, ids=[c["name"] for c in STREAMABLE])
def test_step_fixture(case, engine):
    """step() once per time step reproduces PyTorch's output at every step and its final
    state."""
    d, x, hx, _ = _inputs(case, "pytorch")
    batch_first = case["config"]["batch_first"]
    model = lstm_kernels.load(d / "model.safetensors", prefix=case["prefix"], engine=engine)
    want = np.load(d / "expected_output.npy")
    if batch_first and not case["unbatched"]:
        x, want = x.swapaxes(0, 1), want.swapaxes(0, 1)
    if hx is not None:
        state = lstm_kernels.LSTMState(*hx)
    else:
        state = model.zero_state(None if case["unbatched"] else x.shape[1])
    out = np.empty(want.shape[1:], np.float32)
    steps = []
    for x_t in x:
        steps.append(model.step(x_t, state, out=out).copy())
    tol = case["tolerance"]
    assert_close(np.stack(steps), want, tol["output"], f"{case['name']}: step output")
    assert_close(state.h, np.load(d / "expected_hn.npy"), tol["h_n"], "step h")
    assert_close(state.c, np.load(d / "expected_cn.npy"), tol["c_n"], "step c")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", GRAD, ids=[c["name"] for c in GRAD])
def test_grad_fixture(case, engine):
    d, x, hx, lengths = _inputs(case, "pytorch-grad")
    model = lstm_kernels.load(
        d / "model.safetensors",
        prefix=case["prefix"],
        batch_first=case["config"]["batch_first"],
        engine=engine,
    )
    final = case["has_final_grads"]
    grads = model.grad(
        x,
        np.load(d / "grad_output.npy"),
        hx=hx,
        lengths=lengths,
        grad_h_n=np.load(d / "grad_hn.npy") if final else None,
        grad_c_n=np.load(d / "grad_cn.npy") if final else None,
        prefix=case["prefix"],
    )
    tol = case["tolerance"]
    for key, file in [("input", "grad_input"), ("h0", "grad_h0"), ("c0", "grad_c0")]:
        assert_close(grads[key], np.load(d / f"expected_{file}.npy"), tol[file], key)
    want = read_f64_safetensors(d / "expected_grad_weights.safetensors")
    params = {k: v for k, v in grads.items() if k not in ("input", "h0", "c0")}
    assert sorted(params) == sorted(want), "parameter names"
    for name, value in params.items():
        assert_close(value, want[name], tol["params"][name], f"{case['name']}: {name}")
