"""precision="bf16": every engine and bf16 backend against float64 on the bf16-rounded weights
("same weights, exact arithmetic"), within the tolerance model of docs/numerics.md ("bf16
weights"): the rounding of each product's data operand (u = 2^-8) moves a gate pre-activation by
at most OPERAND_SIGMAS·u/√3·gate_rss, a step moves h by (1.75 + ¼·max|c|) times that, and the
steps add like a random walk over √(T·L). The reference is torch in float64 when torch is
importable, and the naive engine (f64 arithmetic, f32 results) otherwise. bf16 is checked to
differ from f32 (a precision silently ignored fails), and its option to be typed, pickled and
passed on by the Ray predictor.

The model is a bound, loose by design (6σ, |h| ≤ 1, worst-case gate slopes: here several
hundred times the errors measured); what holds the bf16 arithmetic tight is the comparison
with torch's own bf16 path on the same weights and input (ours keeps c, h and the output in
f32: its error may not exceed torch's by more than half) and with the f32 engine (bf16 must
differ from it)."""

import math
import pickle

import numpy as np
import pytest

import lstm_kernels
from conftest import needs_torch, torch
from lstm_kernels.ray import LSTMPredictor

BF16_U = 2.0**-8
# crates/lstm-validate/src/tolerance.rs: OPERAND_SIGMAS.
OPERAND_SIGMAS = 6.0
# What the f32 arithmetic around the products may add (far below the bf16 term).
F32_ATOL = 2e-5

CONFIGS = [
    dict(input_size=8, hidden_size=16, num_layers=1),
    dict(input_size=5, hidden_size=12, num_layers=2, bidirectional=True),
    dict(input_size=7, hidden_size=10, num_layers=2, proj_size=4),
    dict(input_size=6, hidden_size=9, num_layers=1, bidirectional=True, batch_first=True),
]


def engines():
    """(engine, threads, backend) of every bf16 configuration this CPU runs."""
    out = [("simd", None, b) for b in lstm_kernels.backends("bf16")]
    out.append(("parallel", 2, None))
    return out


def state_dict(cfg, seed):
    """Random weights in PyTorch's init range, U(-1/√H, 1/√H)."""
    rng = np.random.default_rng(seed)
    i, h = cfg["input_size"], cfg["hidden_size"]
    proj = cfg.get("proj_size", 0)
    bi = cfg.get("bidirectional", False)
    h_out = proj or h
    k = 1 / math.sqrt(h)
    sd = {}
    for layer in range(cfg["num_layers"]):
        for suffix in ["", "_reverse"] if bi else [""]:
            width = i if layer == 0 else h_out * (2 if bi else 1)
            s = f"_l{layer}{suffix}"
            sd["weight_ih" + s] = rng.uniform(-k, k, (4 * h, width)).astype(np.float32)
            sd["weight_hh" + s] = rng.uniform(-k, k, (4 * h, h_out)).astype(np.float32)
            sd["bias_ih" + s] = rng.uniform(-k, k, 4 * h).astype(np.float32)
            sd["bias_hh" + s] = rng.uniform(-k, k, 4 * h).astype(np.float32)
            if proj:
                sd["weight_hr" + s] = rng.uniform(-k, k, (proj, h)).astype(np.float32)
    return sd


def bf16_round(a):
    """Round to the nearest bfloat16, ties to even (as the engines do), as float32."""
    bits = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return bits.astype(np.uint32).view(np.float32)


def rounded(sd):
    """The weights a bf16 engine multiplies by: W_ih, W_hh, W_hr rounded; biases f32."""
    return {k: bf16_round(v) if k.startswith("weight") else v for k, v in sd.items()}


def allowance(sd, cfg, x, steps):
    """The bf16 operand term of docs/numerics.md for inputs bounded by max|x| and a zero
    initial state, plus F32_ATOL; max|c| is bounded by the number of steps (|Δc| ≤ 1)."""
    proj = cfg.get("proj_size", 0)
    bi = cfg.get("bidirectional", False)
    dirs = ["", "_reverse"] if bi else [""]

    def h_bound(layer):
        if not proj:
            return 1.0
        return max(np.abs(sd[f"weight_hr_l{layer}{d}"]).sum(axis=1).max() for d in dirs)

    gate_rss = 0.0
    for layer in range(cfg["num_layers"]):
        x_max = float(np.abs(x).max()) if layer == 0 else h_bound(layer - 1)
        h_max = h_bound(layer)
        for d in dirs:
            w_ih = sd[f"weight_ih_l{layer}{d}"].astype(np.float64) * x_max
            w_hh = sd[f"weight_hh_l{layer}{d}"].astype(np.float64) * h_max
            rss = np.sqrt((w_ih**2).sum(axis=1) + (w_hh**2).sum(axis=1)).max()
            gate_rss = max(gate_rss, float(rss))
    per_step = OPERAND_SIGMAS * BF16_U / math.sqrt(3) * gate_rss * (1.75 + 0.25 * steps)
    return per_step * math.sqrt(steps * cfg["num_layers"]) + F32_ATOL


def call_input(cfg, seed, seq_len=9, batch=3):
    rng = np.random.default_rng(seed)
    shape = (batch, seq_len) if cfg.get("batch_first") else (seq_len, batch)
    return rng.uniform(-1, 1, shape + (cfg["input_size"],)).astype(np.float32)


def build(sd, cfg, **engine):
    return lstm_kernels.LSTM.from_state_dict(
        sd, batch_first=cfg.get("batch_first", False), **engine
    )


def max_abs(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def torch_f64(sd, cfg, x):
    """torch.nn.LSTM in float64 on `sd`: (output, h_n, c_n)."""
    m = torch.nn.LSTM(**cfg).double().eval()
    m.load_state_dict({k: torch.from_numpy(v.astype(np.float64)) for k, v in sd.items()})
    with torch.no_grad():
        y, (h, c) = m(torch.from_numpy(x.astype(np.float64)))
    return y.numpy(), h.numpy(), c.numpy()


@pytest.mark.parametrize("engine,threads,backend", engines())
@pytest.mark.parametrize("k", range(len(CONFIGS)))
def test_bf16_within_the_tolerance_model(k, engine, threads, backend):
    cfg = CONFIGS[k]
    sd, x = state_dict(cfg, 10 + k), call_input(cfg, 20 + k)
    steps = x.shape[1] if cfg.get("batch_first") else x.shape[0]
    model = build(sd, cfg, engine=engine, threads=threads, backend=backend, precision="bf16")
    assert model.precision == "bf16"
    y, (h_n, c_n) = model(x)
    if torch is not None:
        want = torch_f64(rounded(sd), cfg, x)
    else:  # the naive engine: the same arithmetic in f64, each result rounded to f32 once
        ref_y, (ref_h, ref_c) = build(rounded(sd), cfg, engine="naive")(x)
        want = ref_y, ref_h, ref_c
    atol = allowance(sd, cfg, x, steps)
    for name, got, ref in zip(("output", "h_n", "c_n"), (y, h_n, c_n), want):
        err = max_abs(got, ref)
        assert err <= atol, f"{name}: max abs error {err:.3e} > allowed {atol:.3e}"

    # Not the f32 engine: the rounded weights move the output by far more than f32's error.
    y32, _ = build(sd, cfg, engine=engine, threads=threads)(x)
    assert max_abs(y, y32) > 1e-5  # 100× the f32 engine's error at these sizes


@needs_torch
@pytest.mark.parametrize("k", range(len(CONFIGS)))
def test_bf16_against_the_f32_model_in_float64(k):
    """Against torch float64 on the unrounded weights (what a user compares with), ours bf16
    stays within the weight rounding's effect (the same allowance with the weights' own
    rounding added: each weight moves by ≤ 2^-8 of itself, as each data operand does) and
    is no worse than torch's own bf16 path (model.bfloat16() on bf16 input) by more than 50%."""
    cfg = CONFIGS[k]
    sd, x = state_dict(cfg, 30 + k), call_input(cfg, 40 + k)
    steps = x.shape[1] if cfg.get("batch_first") else x.shape[0]
    y, _ = build(sd, cfg, precision="bf16")(x)
    ref = torch_f64(sd, cfg, x)[0]
    err = max_abs(y, ref)
    assert err <= 2 * allowance(sd, cfg, x, steps), err
    m = torch.nn.LSTM(**cfg).eval()
    m.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    with torch.no_grad():
        yt = m.bfloat16()(torch.from_numpy(x).bfloat16())[0].double().numpy()
    assert err <= 1.5 * max_abs(yt, ref), (err, max_abs(yt, ref))


def test_bf16_streams_step_by_step():
    cfg = CONFIGS[0]
    sd, x = state_dict(cfg, 5), call_input(cfg, 6)
    model = build(sd, cfg, precision="bf16")
    y, _ = model(x)
    state = model.zero_state(x.shape[1])
    steps = np.stack([model.step(x[t], state) for t in range(x.shape[0])])
    assert max_abs(steps, y) <= allowance(sd, cfg, x, x.shape[0])


def test_precision_is_an_engine_option():
    cfg = CONFIGS[1]
    sd = state_dict(cfg, 1)
    f32 = build(sd, cfg)
    assert f32.precision == "f32" and "precision" not in repr(f32)
    bf16 = build(sd, cfg, engine="parallel", threads=2, precision="bf16")
    assert "precision='bf16'" in repr(bf16)
    assert bf16.backend == lstm_kernels.backends("bf16")[-1]
    again = pickle.loads(pickle.dumps(bf16))
    assert (again.precision, again.engine, again.threads) == ("bf16", "parallel", 2)
    x = call_input(cfg, 2)
    assert np.array_equal(again(x)[0], bf16(x)[0])
    assert lstm_kernels.LSTM.from_bytes(bf16.to_bytes(), precision="bf16").precision == "bf16"
    assert set(lstm_kernels.backends()) <= set(lstm_kernels.backends("bf16"))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(precision="f16"), "unknown precision `f16`"),
        (dict(precision="BF16"), "expected one of"),
        (dict(precision="bf16", engine="naive"), "naive engine runs f32 only"),
    ],
)
def test_bad_precisions(kwargs, message):
    cfg = CONFIGS[0]
    with pytest.raises(ValueError, match=message):
        build(state_dict(cfg, 1), cfg, **kwargs)
    with pytest.raises(ValueError, match="unknown precision"):
        lstm_kernels.backends("int3")


def test_bf16_refuses_to_train():
    cfg = CONFIGS[0]
    model = build(state_dict(cfg, 1), cfg, precision="bf16")
    x = call_input(cfg, 2)
    y, _ = model(x)
    with pytest.raises(ValueError, match="f32"):
        model.grad(x, np.ones_like(y))


def test_ray_predictor_takes_the_precision():
    cfg = CONFIGS[0]
    f32 = build(state_dict(cfg, 1), cfg)
    assert LSTMPredictor(f32.to_bytes(), precision="bf16").model.precision == "bf16"
    assert LSTMPredictor(f32.to_bytes()).model.precision == "f32"
    assert LSTMPredictor(f32).model is f32
    with pytest.raises(ValueError, match="runs 'f32', asked for 'bf16'"):
        LSTMPredictor(f32, precision="bf16")
