"""One LSTM shared by many threads gives the same bytes as one thread, and the GIL is really
released while it computes."""

import threading
import time

import numpy as np

import lstm_kernels
from test_identities import random_model


def run_threads(n, fn):
    errors, results = [], [None] * n

    def body(i):
        try:
            results[i] = fn(i)
        except BaseException as e:  # reported below, never lost in a thread
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def test_shared_model_same_bytes_as_one_thread():
    for engine in ["simd", "parallel", "naive"]:
        model = random_model(21, engine, hidden_size=48, bidirectional=True)
        rng = np.random.default_rng(22)
        inputs = [rng.standard_normal((9, 4, model.input_size), np.float32) for _ in range(8)]
        want = [model(x) for x in inputs]

        def work(i):
            out = []
            for round_ in range(6):
                k = (i + round_) % len(inputs)
                out.append((k, model(inputs[k], lengths=None)))
            return out

        for results in run_threads(6, work):
            for k, (y, (h, c)) in results:
                assert np.array_equal(y, want[k][0])
                assert np.array_equal(h, want[k][1][0]) and np.array_equal(c, want[k][1][1])


def test_streams_in_threads_same_bytes_as_one_thread():
    model = random_model(23, hidden_size=32)
    rng = np.random.default_rng(24)
    x = rng.standard_normal((30, 2, model.input_size), np.float32)
    state = model.zero_state(2)
    want = np.stack([model.step(x_t, state) for x_t in x])

    def stream(_):
        s, out = model.zero_state(2), np.empty((2, 32), np.float32)
        return np.stack([model.step(x_t, s, out=out).copy() for x_t in x])

    for got in run_threads(4, stream):
        assert np.array_equal(got, want)


def test_gradients_in_threads_same_bytes_as_one_thread():
    model = random_model(25)
    rng = np.random.default_rng(26)
    x = rng.standard_normal((5, 3, model.input_size), np.float32)
    g = rng.standard_normal((5, 3, model.hidden_size), np.float32)
    want = model.grad(x, g)
    for got in run_threads(4, lambda _: model.grad(x, g)):
        assert list(got) == list(want)
        for k in want:
            assert np.array_equal(got[k], want[k]), k


def test_the_gil_is_released_during_a_call():
    """While one thread is inside a long forward call, another thread runs Python code: it
    records many timestamps strictly inside the call. With the GIL held it could record none
    there. (A functional check, not a timing threshold: the call lasts >= ~50 ms and the
    other thread sleeps 1 ms between stamps.)"""
    model = random_model(27, hidden_size=256, input_size=256, num_layers=1)
    x = np.random.default_rng(28).standard_normal((100, 16, 256), np.float32)
    model(x)  # warm up
    stamps, call = [], {}
    done = threading.Event()

    def ticker():
        while not done.is_set():
            stamps.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    time.sleep(0.01)
    for _ in range(3):
        call["start"] = time.perf_counter()
        model(x)
        call["end"] = time.perf_counter()
        inside = [s for s in stamps if call["start"] < s < call["end"]]
        if len(inside) >= 3:
            break
    done.set()
    t.join()
    assert len(inside) >= 3, (
        f"only {len(inside)} stamps from the other thread during a "
        f"{(call['end'] - call['start']) * 1e3:.1f} ms call: the GIL was held"
    )


def test_one_state_in_two_calls_at_once_is_an_error_not_a_race():
    model = random_model(29, hidden_size=256, input_size=256, num_layers=1)
    state = model.zero_state(64)
    x = np.zeros((64, 256), np.float32)
    seen = []

    def stepper(_):
        for _ in range(200):
            try:
                model.step(x, state)
            except ValueError as e:
                seen.append(str(e))
        return None

    run_threads(2, stepper)
    assert all("in use by another call" in m for m in seen)
