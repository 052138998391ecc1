"""Bad inputs raise a Python exception with the library's message naming what was wrong;
none panics or aborts the interpreter."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lstm_kernels
from conftest import FIXTURES
from test_identities import random_model

MODEL_FILE = FIXTURES / "pytorch" / "layers2" / "model.safetensors"


@pytest.fixture(scope="module")
def model():
    return random_model(31, input_size=3, hidden_size=4, num_layers=2)


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((2, 3, 4, 3), np.float32), "found a 4-D array"),
        (np.zeros(3, np.float32), "found a 1-D array"),
        (np.zeros((5, 2, 7), np.float32), "expected shape [5, 2, 3], found [5, 2, 7]"),
        (np.zeros((0, 2, 3), np.float32), "sequence length must be at least 1"),
        (np.zeros((5, 2, 3), np.int64), "found dtype int64"),
        (np.zeros((5, 2, 3), np.complex64), "found dtype complex64"),
        (np.zeros((5, 2, 3), bool), "found dtype bool"),
        ("hello", "found dtype <U5"),
        (None, "found dtype object"),
        ([[1.0, 2.0], [3.0]], "input"),
        (object(), "input"),
    ],
)
def test_bad_input(model, x, message):
    with pytest.raises(ValueError) as e:
        model(x)
    assert message in str(e.value)


def test_nan_propagates_and_empty_batch_works(model):
    x = np.full((4, 2, 3), np.nan, np.float32)
    y, (h, c) = model(x)
    assert np.isnan(y).all() and np.isnan(c).all()
    y, (h, c) = model(np.zeros((4, 0, 3), np.float32))  # B = 0, as PyTorch allows
    assert y.shape == (4, 0, 4) and h.shape == (2, 0, 4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hx=(np.zeros((2, 2, 4)), np.zeros((2, 3, 4)))), "c0: expected shape [2, 2, 4], found [2, 3, 4]"),
        (dict(hx=(np.zeros((1, 2, 4)), np.zeros((2, 2, 4)))), "h0: expected shape [2, 2, 4]"),
        (dict(hx=np.zeros((2, 2, 4))), "hx: expected a tuple (h0, c0)"),
        (dict(hx=(np.zeros((2, 2, 4)),)), "hx: expected a tuple (h0, c0)"),
        (dict(lengths=[5, 0]), "length of sequence 1 is 0"),
        (dict(lengths=[6, 1]), "length of sequence 0 is 6; each length must lie in 1..=5"),
        (dict(lengths=[3, -1]), "length of sequence 1 is -1"),
        (dict(lengths=[3]), "expected 2 lengths"),
        (dict(lengths=[1.5, 2]), "expected a sequence of integers"),
        (dict(lengths="ab"), "expected a sequence of integers"),
        (dict(lengths=[2, 3], total_length=2), "total_length"),
    ],
)
def test_bad_call_arguments(model, kwargs, message):
    with pytest.raises(ValueError) as e:
        model(np.zeros((5, 2, 3), np.float32), **kwargs)
    assert message in str(e.value)


def test_bad_unbatched_arguments(model):
    x = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError, match="need batched input"):
        model(x, lengths=[3])
    with pytest.raises(ValueError, match="total_length"):
        model(x, total_length=6)


def test_bad_step_arguments(model):
    state = model.zero_state(2)
    with pytest.raises(ValueError, match=r"x_t: expected shape \[2, 3\]"):
        model.step(np.zeros((3, 3), np.float32), state)
    with pytest.raises(ValueError, match=r"x_t: expected shape \[2, 3\]"):
        model.step(np.zeros(3, np.float32), state)
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"out: expected a C-contiguous float32 array of shape \[2, 4\]"):
        model.step(x, state, out=np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="out: expected a float32 NumPy array"):
        model.step(x, state, out=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="not C-contiguous"):
        model.step(x, state, out=np.zeros((4, 2), np.float32).T)
    readonly = np.zeros((2, 4), np.float32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        model.step(x, state, out=readonly)
    with pytest.raises(TypeError):
        model.step(x, (np.zeros((2, 2, 4)), np.zeros((2, 2, 4))))
    # A state of another model.
    other = random_model(32, input_size=3, hidden_size=5, num_layers=2)
    with pytest.raises(ValueError, match="state.h: expected shape"):
        model.step(x, other.zero_state(2))
    bidir = random_model(33, bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional"):
        bidir.step(np.zeros((1, bidir.input_size), np.float32), bidir.zero_state(1))
    with pytest.raises(OverflowError):
        model.zero_state(-1)


def test_bad_state_objects():
    with pytest.raises(ValueError, match="state: expected h"):
        lstm_kernels.LSTMState(np.zeros((2, 3, 4)), np.zeros((2, 4, 4)))
    state = lstm_kernels.LSTMState(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match=r"state.h: expected shape \[2, 3, 4\]"):
        state.h = np.zeros((2, 3, 5))


def test_bad_gradient_arguments(model):
    x = np.zeros((5, 2, 3), np.float32)
    with pytest.raises(ValueError, match="grad_output"):
        model.grad(x, np.zeros((5, 2, 5), np.float32))
    with pytest.raises(ValueError, match="grad_h_n"):
        model.grad(x, np.zeros((5, 2, 4), np.float32), grad_h_n=np.zeros((1, 2, 4)))


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-file.safetensors"):
        lstm_kernels.load(tmp_path / "no-such-file.safetensors")
    with pytest.raises(OSError):
        lstm_kernels.load(tmp_path)  # a directory
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(MODEL_FILE.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt.safetensors"):
        lstm_kernels.load(corrupt)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="invalid safetensors"):
        lstm_kernels.load(garbage)
    with pytest.raises(ValueError, match="prefix `decoder.` holds no LSTM"):
        lstm_kernels.load(MODEL_FILE, prefix="decoder")
    with pytest.raises(ValueError, match="invalid safetensors"):
        lstm_kernels.LSTM.from_bytes(b"not a model")
    if os.geteuid() != 0:  # root reads any file
        locked = tmp_path / "locked.safetensors"
        locked.write_bytes(MODEL_FILE.read_bytes())
        locked.chmod(0)
        with pytest.raises(PermissionError):
            lstm_kernels.load(locked)


def test_bad_engine_options():
    with pytest.raises(ValueError, match="unknown engine `gpu`"):
        lstm_kernels.load(MODEL_FILE, engine="gpu")
    with pytest.raises(ValueError, match="backend"):
        lstm_kernels.load(MODEL_FILE, backend="sse9")
    with pytest.raises(ValueError, match="naive engine has no SIMD backend"):
        lstm_kernels.load(MODEL_FILE, engine="naive", backend="portable")
    with pytest.raises(ValueError, match="at least 1"):
        lstm_kernels.load(MODEL_FILE, engine="parallel", threads=0)
    with pytest.raises(ValueError, match="only the parallel engine takes a thread count"):
        lstm_kernels.load(MODEL_FILE, threads=2)
    missing = [b for b in ["avx512", "avx2"] if b not in lstm_kernels.backends()]
    for backend in missing:
        with pytest.raises(ValueError, match="lacks"):
            lstm_kernels.load(MODEL_FILE, backend=backend)


def test_bad_state_dicts():
    sd = random_model(34).state_dict()
    with pytest.raises(ValueError, match="missing tensor `weight_hh_l1`"):
        lstm_kernels.LSTM.from_state_dict({k: v for k, v in sd.items() if k != "weight_hh_l1"})
    with pytest.raises(ValueError, match="weight_ih_l0"):
        lstm_kernels.LSTM.from_state_dict({**sd, "weight_ih_l0": sd["weight_ih_l0"][:5]})
    with pytest.raises(ValueError, match="no LSTM found"):
        lstm_kernels.LSTM.from_state_dict({"linear.weight": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="expected a floating-point tensor"):
        lstm_kernels.LSTM.from_state_dict({**sd, "weight_ih_l0": sd["weight_ih_l0"].astype(int)})
    with pytest.raises(ValueError, match="expected a mapping"):
        lstm_kernels.LSTM.from_state_dict([1, 2, 3])
    with pytest.raises(ValueError, match="keys must be strings"):
        lstm_kernels.LSTM.from_state_dict({1: np.zeros(3)})
    # Non-float entries that are not LSTM parameters are ignored.
    model = lstm_kernels.LSTM.from_state_dict({**sd, "bn.num_batches_tracked": np.int64(3)})
    assert model.num_layers == 2


def test_garbage_never_kills_the_interpreter():
    """Everything at once in a child interpreter: each call must raise an ordinary exception
    (never a panic, an abort or a segfault), and the child exits normally."""
    script = textwrap.dedent(
        f"""
        import itertools, numpy as np, lstm_kernels
        m = lstm_kernels.load({str(MODEL_FILE)!r})
        values = [None, 0, -1, 2**70, 1.5, float("nan"), "x", b"x", [], [[]], {{}}, object(),
                  np.zeros(0), np.zeros((0, 0, 0)), np.zeros((1, 1, 5)), np.zeros((2, 0, 5)),
                  np.zeros((1,) * 6), np.full((2, 1, 5), np.inf), np.zeros((2, 1, 5), ">f8"),
                  np.zeros((2, 1, 5), np.float16), np.zeros((2, 1, 5), np.uint8),
                  (np.zeros(1), np.zeros(1)), m.zero_state(1), m.zero_state()]
        survived = 0
        for a, b in itertools.product(values, repeat=2):
            for call in [lambda: m(a, b), lambda: m(np.zeros((2, 1, 5), np.float32), a, b),
                         lambda: m(np.zeros((2, 1, 5), np.float32), None, a, b),
                         lambda: m.step(a, b), lambda: m.step(np.zeros((1, 5), np.float32), m.zero_state(1), a),
                         lambda: m.grad(a, b), lambda: m.zero_state(a),
                         lambda: lstm_kernels.LSTM.from_state_dict(a),
                         lambda: lstm_kernels.LSTMState(a, b), lambda: lstm_kernels.load(a)]:
                try:
                    call()
                except (ValueError, TypeError, OverflowError, OSError, MemoryError):
                    pass
                survived += 1
        print("survived", survived)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "survived" in proc.stdout
    assert "panicked" not in proc.stderr and "PanicException" not in proc.stderr


def test_errors_name_the_parameter_at_fault(model):
    """ValueError.operand names the Python parameter an error is about (the library's typed
    operand, or the binding's own check)."""
    x = np.zeros((5, 2, 3), np.float32)
    state = model.zero_state(2)
    cases = [
        (lambda: model(np.zeros((5, 2, 7), np.float32)), "input"),
        (lambda: model(np.zeros((5, 2, 3), np.int32)), "input"),
        (lambda: model(np.zeros((0, 2, 3), np.float32)), "input"),
        (lambda: model(x, (np.zeros((1, 2, 4)), np.zeros((2, 2, 4)))), "h0"),
        (lambda: model(x, (np.zeros((2, 2, 4)), np.zeros((2, 2, 5)))), "c0"),
        (lambda: model(x, (np.zeros((2, 2, 4)), "c")), "c0"),
        (lambda: model(x, 3), "hx"),
        (lambda: model(x, lengths=[9, 1]), "lengths"),
        (lambda: model(x, lengths=[1]), "lengths"),
        (lambda: model(x, lengths="ab"), "lengths"),
        (lambda: model(x, lengths=[2, 3], total_length=1), "total_length"),
        (lambda: model(x[:, 0], total_length=9), "total_length"),
        (lambda: model.step(np.zeros((2, 5), np.float32), state), "x_t"),
        (lambda: model.step(np.zeros((2, 3), np.float32), state, out=np.zeros(3, np.float32)), "out"),
        (lambda: model.grad(x, np.zeros((5, 2, 9), np.float32)), "grad_output"),
        (lambda: model.grad(x, np.zeros((5, 2, 4), np.float32), grad_c_n=np.zeros(3)), "grad_c_n"),
    ]
    for call, operand in cases:
        with pytest.raises(ValueError) as e:
            call()
        assert getattr(e.value, "operand", None) == operand, (operand, str(e.value))
