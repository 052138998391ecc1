"""Identities that hold bit for bit: step = forward, a batch = its rows one by one, batch_first
= the transposed call, every input form of the same values = the same result, and the
engines agree with each other where the contract says they must (the parallel runner is
bit-identical to the SIMD engine)."""

import numpy as np
import pytest

import lstm_kernels
from conftest import ENGINES


def random_model(seed, engine="simd", **cfg):
    """An LSTM with random weights through from_state_dict (no torch needed)."""
    rng = np.random.default_rng(seed)
    i, h = cfg.get("input_size", 6), cfg.get("hidden_size", 9)
    layers, bi, proj = cfg.get("num_layers", 2), cfg.get("bidirectional", False), cfg.get("proj_size", 0)
    h_out = proj or h
    sd = {}
    for layer in range(layers):
        for suffix in ["", "_reverse"] if bi else [""]:
            width = i if layer == 0 else h_out * (2 if bi else 1)
            s = f"_l{layer}{suffix}"
            sd["weight_ih" + s] = rng.uniform(-0.5, 0.5, (4 * h, width)).astype(np.float32)
            sd["weight_hh" + s] = rng.uniform(-0.5, 0.5, (4 * h, h_out)).astype(np.float32)
            sd["bias_ih" + s] = rng.uniform(-0.5, 0.5, 4 * h).astype(np.float32)
            sd["bias_hh" + s] = rng.uniform(-0.5, 0.5, 4 * h).astype(np.float32)
            if proj:
                sd["weight_hr" + s] = rng.uniform(-0.5, 0.5, (proj, h)).astype(np.float32)
    return lstm_kernels.LSTM.from_state_dict(
        sd, batch_first=cfg.get("batch_first", False), engine=engine
    )


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("proj", [0, 4])
def test_step_equals_forward(engine, proj):
    model = random_model(1, engine, proj_size=proj, num_layers=3)
    x = np.random.default_rng(2).standard_normal((11, 5, model.input_size), np.float32)
    output, (h_n, c_n) = model(x)
    state = model.zero_state(5)
    out = np.empty((5, model.proj_size or model.hidden_size), np.float32)
    steps = [model.step(x_t, state, out=out).copy() for x_t in x]
    assert np.array_equal(np.stack(steps), output)
    assert np.array_equal(state.h, h_n) and np.array_equal(state.c, c_n)
    # Unbatched streams, and the returned array when no out= is given.
    state = model.zero_state()
    steps = [model.step(x_t, state) for x_t in x[:, 2]]
    assert np.array_equal(np.stack(steps), output[:, 2])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_batch_equals_rows_one_by_one(engine, bidirectional):
    model = random_model(3, engine, bidirectional=bidirectional)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((7, 9, model.input_size), np.float32)
    lengths = rng.integers(1, 8, 9)
    hx = model.zero_state(9)
    hx.h = rng.standard_normal(hx.h.shape, np.float32)
    hx.c = rng.standard_normal(hx.c.shape, np.float32)
    output, (h_n, c_n) = model(x, hx, lengths, total_length=7)
    for b in range(9):
        row_hx = (hx.h[:, b : b + 1], hx.c[:, b : b + 1])
        y, (h, c) = model(x[:, b : b + 1], row_hx, [lengths[b]], total_length=7)
        assert np.array_equal(y, output[:, b : b + 1]), b
        assert np.array_equal(h, h_n[:, b : b + 1]) and np.array_equal(c, c_n[:, b : b + 1])
        # Unbatched, the row without its padding.
        y1, (h1, c1) = model(x[: lengths[b], b], (hx.h[:, b], hx.c[:, b]))
        assert np.array_equal(y1, output[: lengths[b], b])
        assert np.array_equal(h1, h_n[:, b]) and np.array_equal(c1, c_n[:, b])


def test_batch_first_is_the_transposed_call():
    seq_first = random_model(5)
    batch_first = lstm_kernels.LSTM.from_state_dict(seq_first.state_dict(), batch_first=True)
    x = np.random.default_rng(6).standard_normal((4, 3, seq_first.input_size), np.float32)
    y, (h, c) = seq_first(x, lengths=[2, 4, 1])
    yb, (hb, cb) = batch_first(np.ascontiguousarray(x.swapaxes(0, 1)), lengths=[2, 4, 1])
    assert np.array_equal(yb, y.swapaxes(0, 1))
    assert np.array_equal(hb, h) and np.array_equal(cb, c)


def test_every_input_form_gives_the_same_bytes():
    model = random_model(7)
    x = np.random.default_rng(8).standard_normal((5, 3, model.input_size)).astype(np.float32)
    want = model(x)[0]
    fortran = np.asfortranarray(x)
    strided = np.zeros((5, 6, model.input_size), np.float32)
    strided[:, ::2] = x
    big_endian = x.astype(">f4")
    for form in [x.astype(np.float64), fortran, strided[:, ::2], big_endian, x.tolist()]:
        assert np.array_equal(model(form)[0], want)
    # Lengths as a list, a NumPy array of any int type, a tuple.
    for lengths in [[5, 2, 3], np.array([5, 2, 3]), np.array([5, 2, 3], np.int32), (5, 2, 3)]:
        assert np.array_equal(model(x, lengths=lengths)[0], model(x, lengths=[5, 2, 3])[0])


def test_parallel_is_bit_identical_to_simd():
    for seed, cfg in enumerate([dict(hidden_size=64, num_layers=1), dict(bidirectional=True)]):
        simd = random_model(seed, "simd", **cfg)
        x = np.random.default_rng(seed).standard_normal((6, 8, simd.input_size), np.float32)
        for threads in [1, 2, 3]:
            par = lstm_kernels.LSTM.from_state_dict(
                simd.state_dict(), engine="parallel", threads=threads
            )
            assert par.threads == threads
            a, b = simd(x), par(x)
            assert np.array_equal(a[0], b[0]) and np.array_equal(a[1][1], b[1][1])


def test_pickle_and_bytes_round_trip():
    import pickle

    model = random_model(9, "parallel", proj_size=3, bidirectional=True, batch_first=True)
    x = np.random.default_rng(10).standard_normal((2, 5, model.input_size), np.float32)
    for copy in [
        pickle.loads(pickle.dumps(model)),
        lstm_kernels.LSTM.from_bytes(model.to_bytes(), batch_first=True, engine="parallel"),
    ]:
        assert repr(copy) == repr(model)
        assert np.array_equal(copy(x)[0], model(x)[0])
    for name, value in model.state_dict().items():
        assert np.array_equal(value, copy.state_dict()[name])


def test_save_and_load(tmp_path):
    model = random_model(11, bidirectional=True)
    path = tmp_path / "m.safetensors"
    model.save(path, prefix="encoder.rnn")
    loaded = lstm_kernels.load(path)
    assert loaded.prefix == "encoder.rnn."
    assert list(loaded.state_dict()) == list(model.state_dict())
    x = np.ones((3, 2, model.input_size), np.float32)
    assert np.array_equal(loaded(x)[0], model(x)[0])
    assert list(model.state_dict("encoder.rnn"))[0] == "encoder.rnn.weight_ih_l0"
