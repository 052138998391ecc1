"""The nn.LSTM-shaped surface: properties, repr, docstrings, shapes for every option."""

import numpy as np
import pytest

import lstm_kernels
from conftest import FIXTURES
from test_identities import random_model


def test_properties_and_repr():
    model = random_model(41, "parallel", input_size=5, hidden_size=7, num_layers=2,
                         bidirectional=True, proj_size=3, batch_first=True)
    assert (model.input_size, model.hidden_size, model.num_layers) == (5, 7, 2)
    assert (model.bidirectional, model.proj_size, model.batch_first, model.bias) == (True, 3, True, True)
    assert model.engine == "parallel" and model.backend in lstm_kernels.backends()
    assert model.threads >= 1
    assert repr(model).startswith(
        "LSTM(5, 7, num_layers=2, batch_first=True, bidirectional=True, proj_size=3, engine='parallel'"
    )
    naive = lstm_kernels.load(FIXTURES / "pytorch" / "nobias" / "model.safetensors", engine="naive")
    assert naive.backend is None and naive.threads == 1 and not naive.bias
    assert "bias=False" in repr(naive) and "backend" not in repr(naive)
    simd = lstm_kernels.load(FIXTURES / "pytorch" / "nobias" / "model.safetensors", backend="portable")
    assert simd.backend == "portable" and simd.engine == "simd"


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_output_shapes_match_pytorch(batch_first, bidirectional):
    model = random_model(42, input_size=3, hidden_size=6, num_layers=2, proj_size=2,
                         bidirectional=bidirectional, batch_first=batch_first)
    d = 2 if bidirectional else 1
    x = np.zeros((4, 5, 3), np.float32)  # [T, B] or [B, T]
    t, b = (5, 4) if batch_first else (4, 5)
    y, (h, c) = model(x)
    assert y.shape == (x.shape[0], x.shape[1], d * 2)
    assert h.shape == (2 * d, b, 2) and c.shape == (2 * d, b, 6)
    lengths = [1] * b
    lengths[0] = 2
    y, _ = model(x, lengths=lengths)
    assert (y.shape[1] if batch_first else y.shape[0]) == 2  # max(lengths) steps
    y, _ = model(x, lengths=lengths, total_length=7)
    assert (y.shape[1] if batch_first else y.shape[0]) == 7
    y, (h, c) = model(np.zeros((4, 3), np.float32))  # unbatched
    assert y.shape == (4, d * 2) and h.shape == (2 * d, 2) and c.shape == (2 * d, 6)


def test_state_object():
    model = random_model(43, input_size=3, hidden_size=6)
    state = model.zero_state(3)
    assert state.batch == 3 and state.h.shape == (2, 3, 6) and state.c.shape == (2, 3, 6)
    assert model.zero_state().batch is None
    model.step(np.ones((3, 3), np.float32), state)
    copy = state.copy()
    assert np.array_equal(copy.h, state.h) and np.abs(state.h).sum() > 0
    state.reset()
    assert not state.h.any() and not state.c.any() and copy.h.any()
    h, c = copy.as_tuple()
    y1 = model(np.ones((2, 3, 3), np.float32), (h, c))[0]
    y2 = model(np.ones((2, 3, 3), np.float32), copy)[0]
    assert np.array_equal(y1, y2)
    assert "LSTMState(h: [2, 3, 6]" in repr(state)


def test_gradient_keys_are_state_dict_names():
    model = random_model(44, proj_size=3, bidirectional=True)
    x = np.zeros((2, 1, model.input_size), np.float32)
    grads = model.grad(x, np.zeros((2, 1, 6), np.float32))
    assert list(grads)[:3] == ["input", "h0", "c0"]
    assert list(grads)[3:] == list(model.state_dict())
    for name, value in model.state_dict().items():
        assert grads[name].shape == value.shape
    assert "encoder.weight_ih_l0" in model.grad(x, np.zeros((2, 1, 6), np.float32), prefix="encoder")


def test_docstrings_explain_every_argument():
    for doc in [lstm_kernels.LSTM.__doc__, lstm_kernels.LSTM.forward.__doc__]:
        for word in ["hx", "lengths", "total_length", "batch_first", "h_n"]:
            assert word in doc, word
    for method, words in [
        (lstm_kernels.load, ["prefix", "batch_first", "engine", "threads", "backend", "FileNotFoundError"]),
        (lstm_kernels.LSTM.step, ["x_t", "state", "out"]),
        (lstm_kernels.LSTM.grad, ["grad_output", "grad_h_n", "grad_c_n", "state_dict"]),
        (lstm_kernels.LSTM.from_torch, ["nn.LSTMCell", "batch_first"]),
        (lstm_kernels.LSTM.from_state_dict, ["prefix", "engine"]),
    ]:
        for word in words:
            assert word in method.__doc__, (method, word)
    assert lstm_kernels.__doc__ and "GIL" in lstm_kernels.__doc__


def test_stubs_ship_with_the_package():
    from importlib import resources

    files = resources.files("lstm_kernels")
    assert files.joinpath("py.typed").is_file()
    stub = files.joinpath("_native.pyi").read_text()
    for name in ["class LSTM", "class LSTMState", "def load", "def step", "def grad", "def from_torch"]:
        assert name in stub, name
