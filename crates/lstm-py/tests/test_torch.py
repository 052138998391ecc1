"""Random configs over every nn.LSTM option against torch.nn.LSTM itself (skipped, with the
reason, when torch is not importable): forward and gradients, on every engine, element by
element within max(2e-5, 4 x PyTorch f32's own error) of PyTorch in float64."""

import random

import numpy as np
import pytest

import lstm_kernels
from conftest import ENGINES, assert_close, needs_torch, torch

pytestmark = needs_torch

SEEDS = range(40)


def random_case(seed):
    """A config and a call: sizes (1 and odd ones included), layers, bias, batch_first,
    bidirectional, proj_size, unbatched input, initial states, lengths, total_length."""
    rng = random.Random(seed)
    hidden = rng.choice([1, 2, 5, 8, 16, 17, 33])
    case = dict(
        input_size=rng.choice([1, 3, 8, 13]),
        hidden_size=hidden,
        num_layers=rng.choice([1, 1, 2, 3]),
        bias=rng.random() < 0.8,
        batch_first=rng.random() < 0.4,
        bidirectional=rng.random() < 0.5,
        proj_size=rng.choice([0, 0, rng.randrange(hidden)]) if hidden > 1 else 0,
    )
    call = dict(
        seq_len=rng.choice([1, 2, 5, 9]),
        batch=rng.choice([1, 3, 4]),
        unbatched=rng.random() < 0.2,
        state=rng.random() < 0.5,
        final_grads=rng.random() < 0.5,
    )
    call["lengths"] = (
        [rng.randint(1, call["seq_len"]) for _ in range(call["batch"])]
        if not call["unbatched"] and rng.random() < 0.5
        else None
    )
    call["total_length"] = call["seq_len"] if call["lengths"] and rng.random() < 0.5 else None
    return case, call


def torch_run(module, x, hx, call, batch_first, upstream):
    """PyTorch's forward (through pack_padded_sequence with lengths) and, when `upstream`
    (grad_output, grad_h_n, grad_c_n) is given, autograd's gradients of
    sum(output * g_out) + sum(h_n * g_h) + sum(c_n * g_c)."""
    x = x.clone().requires_grad_(True)
    hx = tuple(t.clone().requires_grad_(True) for t in hx)
    if call["lengths"] is not None:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, torch.tensor(call["lengths"]), batch_first=batch_first, enforce_sorted=False
        )
        out, (h_n, c_n) = module(packed, hx)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(
            out, batch_first=batch_first, total_length=call["total_length"]
        )
    else:
        out, (h_n, c_n) = module(x, hx)
    result = {"output": out, "h_n": h_n, "c_n": c_n}
    if upstream is None:
        return {k: v.detach().numpy() for k, v in result.items()}
    g_out, g_h, g_c = upstream
    loss = (out * g_out).sum()
    if g_h is not None:
        loss = loss + (h_n * g_h).sum() + (c_n * g_c).sum()
    loss.backward()
    grads = {"input": x.grad, "h0": hx[0].grad, "c0": hx[1].grad}
    grads.update({name: p.grad for name, p in module.named_parameters()})
    result.update(grads)
    return {k: v.detach().numpy() for k, v in result.items()}


def tolerance(f32, f64):
    return max(2e-5, 4 * float(np.abs(f32.astype(np.float64) - f64).max(initial=0.0)))


@pytest.mark.parametrize("seed", SEEDS)
def test_random_config_matches_torch(seed):
    cfg, call = random_case(seed)
    torch.manual_seed(seed)
    ref32 = torch.nn.LSTM(**cfg).eval()
    ref64 = torch.nn.LSTM(**cfg).double().eval()
    ref64.load_state_dict({k: v.double() for k, v in ref32.state_dict().items()})

    T, B = call["seq_len"], call["batch"]
    cells = cfg["num_layers"] * (2 if cfg["bidirectional"] else 1)
    h_out = cfg["proj_size"] or cfg["hidden_size"]
    out_size = h_out * (2 if cfg["bidirectional"] else 1)
    batch_axes = [] if call["unbatched"] else [B]
    x_shape = [T] + batch_axes + [cfg["input_size"]]
    if cfg["batch_first"] and not call["unbatched"]:
        x_shape = [B, T, cfg["input_size"]]
    g = torch.Generator().manual_seed(1000 + seed)
    x = torch.randn(*x_shape, generator=g)
    h0 = torch.randn(cells, *batch_axes, h_out, generator=g) * 0.5
    c0 = torch.randn(cells, *batch_axes, cfg["hidden_size"], generator=g) * 0.5
    if not call["state"]:
        # Autograd of an explicit zero state: what model.grad reports when hx is None.
        h0, c0 = torch.zeros_like(h0), torch.zeros_like(c0)
    steps = (call["total_length"] or max(call["lengths"])) if call["lengths"] else T
    out_shape = [steps] + batch_axes + [out_size]
    if cfg["batch_first"] and not call["unbatched"]:
        out_shape = [B, steps, out_size]
    g_out = torch.randn(*out_shape, generator=g)
    g_h = torch.randn(*h0.shape, generator=g) if call["final_grads"] else None
    g_c = torch.randn(*c0.shape, generator=g) if call["final_grads"] else None

    def upstream(dtype):
        return tuple(None if t is None else t.to(dtype) for t in (g_out, g_h, g_c))

    want32 = torch_run(ref32, x, (h0, c0), call, cfg["batch_first"], upstream(torch.float32))
    want64 = torch_run(
        ref64, x.double(), (h0.double(), c0.double()), call, cfg["batch_first"],
        upstream(torch.float64),
    )
    tol = {k: tolerance(want32[k], want64[k]) for k in want64}

    hx = (h0.numpy(), c0.numpy()) if call["state"] else None
    for engine in ENGINES:
        model = lstm_kernels.LSTM.from_torch(ref32, engine=engine)
        what = f"seed {seed} {cfg} {call} {engine}"
        output, (h_n, c_n) = model(
            x.numpy(), hx, call["lengths"], total_length=call["total_length"]
        )
        for key, got in [("output", output), ("h_n", h_n), ("c_n", c_n)]:
            assert_close(got, want64[key], tol[key], f"{what}: {key}")
        grads = model.grad(
            x.numpy(),
            g_out.numpy(),
            hx=hx,
            lengths=call["lengths"],
            grad_h_n=None if g_h is None else g_h.numpy(),
            grad_c_n=None if g_c is None else g_c.numpy(),
        )
        names = ["input", "h0", "c0"] + [n for n, _ in ref32.named_parameters()]
        assert list(grads) == names, "gradient names and order"
        for key in names:
            assert_close(grads[key], want64[key], tol[key], f"{what}: grad {key}")


def test_from_torch_reads_a_module_holding_one_lstm():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.BatchNorm1d(3)  # int64 counter in the state_dict
            self.encoder = torch.nn.LSTM(3, 6, num_layers=2, batch_first=True)
            self.head = torch.nn.Linear(6, 1)

    net = Net().eval()
    model = lstm_kernels.LSTM.from_torch(net)
    assert (model.input_size, model.hidden_size, model.num_layers, model.batch_first) == (
        3, 6, 2, True,
    )
    x = torch.randn(2, 5, 3)
    with torch.no_grad():
        want, _ = net.encoder(x)
    assert_close(model(x)[0], want.numpy(), 2e-5, "module holding an LSTM")
    # The whole module's state_dict works too, with the LSTM's prefix.
    sd = lstm_kernels.LSTM.from_state_dict(net.state_dict(), batch_first=True)
    assert sd.prefix == "encoder."
    assert np.array_equal(sd(x)[0], model(x)[0])


def test_from_torch_lstmcell_is_a_one_layer_lstm():
    cell = torch.nn.LSTMCell(4, 7)
    model = lstm_kernels.LSTM.from_torch(cell)
    assert (model.num_layers, model.hidden_size) == (1, 7)
    x, h, c = torch.randn(3, 4), torch.randn(3, 7), torch.randn(3, 7)
    with torch.no_grad():
        h1, c1 = cell(x, (h, c))
    state = lstm_kernels.LSTMState(h[None].numpy(), c[None].numpy())
    y = model.step(x, state)
    assert_close(y, h1.numpy(), 2e-5, "LSTMCell h")
    assert_close(state.c[0], c1.numpy(), 2e-5, "LSTMCell c")


def test_from_torch_refuses_what_is_not_one_lstm():
    with pytest.raises(ValueError, match="no nn.LSTM"):
        lstm_kernels.LSTM.from_torch(torch.nn.GRU(3, 4))
    two = torch.nn.Sequential(torch.nn.LSTM(3, 4), torch.nn.LSTM(4, 4))
    with pytest.raises(ValueError, match="several LSTMs"):
        lstm_kernels.LSTM.from_torch(two)
    with pytest.raises(ValueError, match="torch.nn.Module"):
        lstm_kernels.LSTM.from_torch(object())


def test_torch_tensors_in_any_float_dtype():
    lstm = torch.nn.LSTM(3, 5)
    model = lstm_kernels.LSTM.from_torch(lstm)
    x = torch.randn(4, 2, 3)
    want = model(x.numpy())[0]
    assert np.array_equal(model(x)[0], want)
    assert np.array_equal(model(x.requires_grad_(True))[0], want)
    assert np.array_equal(model(x.detach().double())[0], want)
    assert model(x.detach().bfloat16())[0].dtype == np.float32
    with pytest.raises(ValueError, match="floating-point"):
        model(torch.ones(4, 2, 3, dtype=torch.int64))
    # bf16 weights are widened exactly (as Model::load does for a BF16 file).
    bf = lstm_kernels.LSTM.from_state_dict(lstm.bfloat16().state_dict())
    assert bf.hidden_size == 5
