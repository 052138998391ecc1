#!/usr/bin/env python3
"""Generate the PyTorch autograd fixtures for the backward pass (BPTT) of lstm-kernels.

Regenerate (deterministic: every case seeds torch from a stable hash of its name):

    pip install torch numpy safetensors
    python3 tools/gen_grad_fixtures.py [--out fixtures/pytorch-grad]

The output directory is deleted and rewritten, then every file is reloaded and checked
against the manifest.

What is computed
----------------
For each case, an ``nn.LSTM`` in eval mode (dropout off) runs on an input (and an initial
state, and per-sequence lengths through ``pack_padded_sequence(enforce_sorted=False)`` then
``pad_packed_sequence``), and autograd computes the gradients of

    L = sum(output * grad_output) + sum(h_n * grad_hn) + sum(c_n * grad_cn)

(the last two terms only in cases with ``has_final_grads``) with respect to the input, the
initial state and every parameter: exactly what ``output.backward(grad_output)`` gives for
the given upstream gradients. When a case has no initial state, the zero state is passed
explicitly with ``requires_grad`` so that its gradient is defined (the forward is the same as
with ``None``); lstm-kernels returns that gradient too.

Format
------
``<out>/manifest.json``::

    {"generator": "tools/gen_grad_fixtures.py", "torch_version": "...", "cases": [case, ...]}

each case::

    {"name": "bidir_proj_2layer_state_final",
     "config": {"input_size": 5, ..., "proj_size": 3},       # as nn.LSTM's arguments
     "prefix": "",                                            # module prefix of the tensors
     "unbatched": false, "has_state": true, "has_lengths": false, "has_final_grads": true,
     "tolerance": {"grad_input": 2e-05, "grad_h0": ..., "grad_c0": ...,
                   "params": {"weight_ih_l0": 2e-05, ...}},     # names with the prefix
     "torch_f32_error": {same keys}}

``tolerance`` = max(2e-5, 4 * torch_f32_error) per tensor, where ``torch_f32_error`` is the max
abs difference between PyTorch's float32 autograd (weights and inputs as stored) and its float64
autograd.

Files in ``<out>/<name>/`` (float arrays are C-contiguous):

- ``model.safetensors``: F32 state_dict (names under the prefix; the prefix case also holds an
  unrelated ``head.weight``).
- ``input.npy`` (f32): [T, B, I] ([B, T, I] batch_first, [T, I] unbatched); with lengths the
  padding steps hold random values.
- ``h0.npy``, ``c0.npy`` (f32, only with has_state).
- ``lengths.npy`` (int64, only with has_lengths): unsorted, includes 1.
- ``grad_output.npy`` (f32): the upstream gradient, shaped like the output (with lengths:
  max(lengths) steps, as pad_packed_sequence gives); random values at padded steps too, which
  autograd ignores.
- ``grad_hn.npy``, ``grad_cn.npy`` (f32, only with has_final_grads): shaped like h_n, c_n.
- ``expected_grad_input.npy``, ``expected_grad_h0.npy``, ``expected_grad_c0.npy`` (f64): the
  float64 autograd gradients (h0/c0 ones with respect to the zero state when no state given).
- ``expected_grad_weights.safetensors``: F64, one tensor per parameter, named as in the model.
"""

import argparse
import json
import math
import os
import shutil
import sys
import warnings
import zlib

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

MIN_TOL = 2e-5
TOL_FACTOR = 4.0


def C(name, I=4, H=6, L=1, T=5, B=3, bias=True, batch_first=False, bidir=False, P=0, prefix="",
      unbatched=False, state=False, lengths=False, short_lengths=False, final=False,
      input_scale=1.0, weight_range=None, forget_bias=0.0, ig_bias=0.0):
    """One case. final: the loss also uses h_n and c_n (grad_hn, grad_cn given).
    short_lengths: every length < T, so the output has max(lengths) < T steps."""
    return dict(
        name=name,
        config=dict(input_size=I, hidden_size=H, num_layers=L, bias=bias, batch_first=batch_first,
                    dropout=0.0, bidirectional=bidir, proj_size=P),
        T=T, B=B, prefix=prefix, unbatched=unbatched, state=state, lengths=lengths,
        short_lengths=short_lengths, final=final, input_scale=input_scale,
        weight_range=weight_range, forget_bias=forget_bias, ig_bias=ig_bias,
    )


CASES = [
    # basics and odd sizes
    C("default_1layer"),
    C("final_grads_1layer", final=True),
    C("odd_i5_h7", I=5, H=7, T=6, B=3),
    C("hidden1_input1", I=1, H=1, T=4, B=2, final=True),
    C("seq_len1_batch1_bidir_state", I=3, H=5, T=1, B=1, bidir=True, state=True, final=True),
    # layers
    C("layers2", I=5, H=7, L=2, T=5, B=3),
    C("layers3_state_final", I=4, H=5, L=3, T=4, B=2, state=True, final=True),
    # bidirectional
    C("bidir_1layer", I=5, H=7, bidir=True, T=6, B=3),
    C("bidir_2layer_state_final", I=4, H=5, L=2, bidir=True, T=5, B=2, state=True, final=True),
    # no bias
    C("nobias", I=5, H=7, bias=False, final=True),
    C("nobias_bidir_proj_2layer_state", I=4, H=5, L=2, bias=False, bidir=True, P=2, state=True,
      final=True),
    # projection
    C("proj_1layer", I=5, H=7, P=3, final=True),
    C("proj1_2layer_state", I=4, H=5, L=2, P=1, T=6, B=2, state=True, final=True),
    C("bidir_proj_2layer_state_final", I=5, H=7, L=2, bidir=True, P=3, state=True, final=True),
    # batch_first
    C("batch_first", I=5, H=7, batch_first=True, T=6, B=3, final=True),
    C("batch_first_bidir_2layer", I=4, H=5, L=2, bidir=True, batch_first=True, T=5, B=2),
    # unbatched
    C("unbatched", I=5, H=7, unbatched=True, T=6, final=True),
    C("unbatched_bidir_proj_2layer_state", I=5, H=7, L=2, bidir=True, P=3, unbatched=True,
      state=True, final=True, T=6),
    # initial states
    C("state_1layer", I=5, H=7, state=True),
    # lengths (h_n/c_n gradients enter at each sequence's last valid step)
    C("lengths_uni_final", I=5, H=7, lengths=True, T=7, B=4, final=True),
    C("lengths_bidir_2layer_state_final", I=3, H=5, L=2, bidir=True, lengths=True, state=True,
      final=True, T=6, B=4),
    C("lengths_proj_uni_state", I=4, H=6, P=2, lengths=True, state=True, final=True, T=6, B=3),
    C("lengths_short_bidir_bf_state", I=3, H=6, bidir=True, batch_first=True, lengths=True,
      short_lengths=True, state=True, final=True, T=6, B=4),
    C("lengths_bf_bidir_proj_2layer", I=4, H=5, L=2, bidir=True, P=2, batch_first=True,
      lengths=True, T=5, B=3, final=True),
    # saturating / large cell states
    C("saturating_wide", I=5, H=7, T=16, B=3, input_scale=30.0, weight_range=3.0, final=True),
    C("saturating_bidir_2layer_lengths_state", I=4, H=6, L=2, bidir=True, T=10, B=3,
      input_scale=30.0, weight_range=3.0, lengths=True, state=True, final=True),
    C("long_t60_forget_bias", I=3, H=5, T=60, B=2, weight_range=0.5, forget_bias=5.0,
      ig_bias=3.0, final=True),
    # prefix
    C("prefix_encoder_rnn_bidir_proj", I=4, H=6, L=2, bidir=True, P=3, prefix="encoder.rnn.",
      state=True, final=True, T=4, B=2),
]


def seed_of(name):
    return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF


class Holder(nn.Module):
    pass


def build_wrapper(lstm, prefix, cfg):
    """A module whose state_dict names carry `prefix` for the LSTM, plus an unrelated head."""
    if not prefix:
        return lstm
    parts = prefix.rstrip(".").split(".")
    root = Holder()
    cur = root
    for p in parts[:-1]:
        child = Holder()
        setattr(cur, p, child)
        cur = child
    setattr(cur, parts[-1], lstm)
    d = 2 if cfg["bidirectional"] else 1
    root.head = nn.Linear(d * (cfg["proj_size"] or cfg["hidden_size"]), 3)
    return root


def make_weights(case):
    cfg = case["config"]
    lstm = nn.LSTM(**cfg, dtype=torch.float32)
    H = cfg["hidden_size"]
    with torch.no_grad():
        if case["weight_range"] is not None:
            r = case["weight_range"]
            for p in lstm.parameters():
                p.uniform_(-r, r)
        for name, p in lstm.named_parameters():
            if name.startswith("bias_ih"):
                p[H:2 * H] += case["forget_bias"]
                p[0:H] += case["ig_bias"]
                p[2 * H:3 * H] += case["ig_bias"]
    return lstm


def lstm_from_stored(stored, case, dtype):
    cfg = case["config"]
    prefix = case["prefix"]
    sd = {k[len(prefix):]: v.to(dtype) for k, v in stored.items() if k.startswith(prefix)}
    lstm = nn.LSTM(**cfg, dtype=dtype)
    lstm.load_state_dict(sd, strict=True)
    lstm.eval()
    return lstm


def make_lengths(gen, T, B, short):
    assert B >= 3 and T >= 3
    longest = T - 1 if short else T
    while True:
        rest = torch.randint(1, longest + 1, (B - 2,), generator=gen).tolist()
        ls = [longest, 1] + rest
        perm = torch.randperm(B, generator=gen).tolist()
        ls = [ls[i] for i in perm]
        if ls != sorted(ls, reverse=True):
            return np.asarray(ls, dtype=np.int64)


def ceil_sig(x, digits=3):
    """Round x up to `digits` significant digits (readable, never below x)."""
    if x <= 0:
        return 0.0
    e = math.floor(math.log10(x)) - (digits - 1)
    return math.ceil(x / 10.0 ** e) * 10.0 ** e


def save_npy(path, arr):
    np.save(path, np.ascontiguousarray(arr), allow_pickle=False)


def autograd(lstm, x, h0, c0, lengths, bf, gy, ghn, gcn):
    """Gradients of sum(out*gy) + sum(hn*ghn) + sum(cn*gcn) w.r.t. x, h0, c0 and parameters."""
    x = x.clone().requires_grad_(True)
    h0 = h0.clone().requires_grad_(True)
    c0 = c0.clone().requires_grad_(True)
    lstm.zero_grad(set_to_none=True)
    if lengths is not None:
        packed = pack_padded_sequence(x, torch.as_tensor(lengths), batch_first=bf,
                                      enforce_sorted=False)
        out, (hn, cn) = lstm(packed, (h0, c0))
        out, _ = pad_packed_sequence(out, batch_first=bf)
    else:
        out, (hn, cn) = lstm(x, (h0, c0))
    assert out.shape == gy.shape, (out.shape, gy.shape)
    loss = (out * gy).sum()
    if ghn is not None:
        loss = loss + (hn * ghn).sum() + (cn * gcn).sum()
    loss.backward()
    params = {n: p.grad.detach().clone() for n, p in lstm.named_parameters()}
    return {"grad_input": x.grad.detach(), "grad_h0": h0.grad.detach(),
            "grad_c0": c0.grad.detach()}, params


def generate_case(case, out_dir):
    name = case["name"]
    cfg = case["config"]
    torch.manual_seed(seed_of(name))
    gen = torch.Generator().manual_seed(seed_of(name) ^ 0x6AAD)

    lstm = make_weights(case)
    wrapper = build_wrapper(lstm, case["prefix"], cfg)
    sd = {k: v.detach().to(torch.float32).contiguous() for k, v in wrapper.state_dict().items()}
    cdir = os.path.join(out_dir, name)
    os.makedirs(cdir)
    st_path = os.path.join(cdir, "model.safetensors")
    save_file(sd, st_path)
    stored = load_file(st_path)

    T, B = case["T"], case["B"]
    I, H, L = cfg["input_size"], cfg["hidden_size"], cfg["num_layers"]
    D = 2 if cfg["bidirectional"] else 1
    H_out = cfg["proj_size"] or H
    bf, unb = cfg["batch_first"], case["unbatched"]

    xshape = (T, I) if unb else ((B, T, I) if bf else (T, B, I))
    x32 = (torch.randn(xshape, generator=gen) * case["input_scale"]).to(torch.float32)
    save_npy(os.path.join(cdir, "input.npy"), x32.numpy())

    hshape = (L * D, H_out) if unb else (L * D, B, H_out)
    cshape = (L * D, H) if unb else (L * D, B, H)
    if case["state"]:
        h0 = (torch.randn(hshape, generator=gen) * 0.5).to(torch.float32)
        c0 = (torch.randn(cshape, generator=gen) * 0.5).to(torch.float32)
        save_npy(os.path.join(cdir, "h0.npy"), h0.numpy())
        save_npy(os.path.join(cdir, "c0.npy"), c0.numpy())
    else:
        h0, c0 = torch.zeros(hshape), torch.zeros(cshape)

    lengths = None
    if case["lengths"]:
        assert not unb
        lengths = make_lengths(gen, T, B, case["short_lengths"])
        save_npy(os.path.join(cdir, "lengths.npy"), lengths)

    T_out = T if lengths is None else int(lengths.max())
    oshape = (T_out, D * H_out) if unb else ((B, T_out, D * H_out) if bf else (T_out, B, D * H_out))
    gy = torch.randn(oshape, generator=gen).to(torch.float32)
    save_npy(os.path.join(cdir, "grad_output.npy"), gy.numpy())
    ghn = gcn = None
    if case["final"]:
        ghn = torch.randn(hshape, generator=gen).to(torch.float32)
        gcn = torch.randn(cshape, generator=gen).to(torch.float32)
        save_npy(os.path.join(cdir, "grad_hn.npy"), ghn.numpy())
        save_npy(os.path.join(cdir, "grad_cn.npy"), gcn.numpy())

    m64 = lstm_from_stored(stored, case, torch.float64)
    m32 = lstm_from_stored(stored, case, torch.float32)
    d = lambda t: None if t is None else t.double()
    g64, p64 = autograd(m64, x32.double(), h0.double(), c0.double(), lengths, bf, gy.double(),
                        d(ghn), d(gcn))
    g32, p32 = autograd(m32, x32, h0, c0, lengths, bf, gy, ghn, gcn)

    files = {"grad_input": "expected_grad_input.npy", "grad_h0": "expected_grad_h0.npy",
             "grad_c0": "expected_grad_c0.npy"}
    err, tol = {}, {}
    for k, f in files.items():
        save_npy(os.path.join(cdir, f), g64[k].numpy().astype(np.float64))
        e = float((g32[k].double() - g64[k]).abs().max()) if g64[k].numel() else 0.0
        err[k] = e
        tol[k] = max(MIN_TOL, ceil_sig(TOL_FACTOR * e))
    prefix = case["prefix"]
    save_file({prefix + n: g.contiguous() for n, g in p64.items()},
              os.path.join(cdir, "expected_grad_weights.safetensors"))
    err["params"], tol["params"] = {}, {}
    for n in p64:
        e = float((p32[n].double() - p64[n]).abs().max())
        err["params"][prefix + n] = e
        tol["params"][prefix + n] = max(MIN_TOL, ceil_sig(TOL_FACTOR * e))

    entry = {
        "name": name,
        "config": dict(cfg),
        "prefix": prefix,
        "unbatched": unb,
        "has_state": case["state"],
        "has_lengths": lengths is not None,
        "has_final_grads": case["final"],
        "tolerance": tol,
        "torch_f32_error": err,
    }
    gmax = max(float(g.abs().max()) for g in p64.values())
    return entry, dict(T=T, B="-" if unb else B, gmax=gmax)


def verify(out_dir):
    """Reload every file and check names, dtypes, shapes and the manifest's tolerances."""
    with open(os.path.join(out_dir, "manifest.json")) as f:
        man = json.load(f)
    for case in man["cases"]:
        cdir = os.path.join(out_dir, case["name"])
        cfg = case["config"]
        I, H, L = cfg["input_size"], cfg["hidden_size"], cfg["num_layers"]
        D = 2 if cfg["bidirectional"] else 1
        H_out = cfg["proj_size"] or H
        model = load_file(os.path.join(cdir, "model.safetensors"))
        grads = load_file(os.path.join(cdir, "expected_grad_weights.safetensors"))
        pre = case["prefix"]
        lstm_names = {k for k in model if k.startswith(pre) and "head" not in k}
        assert set(grads) == lstm_names, (case["name"], sorted(grads), sorted(lstm_names))
        for k, g in grads.items():
            assert g.dtype == torch.float64 and g.shape == model[k].shape, k
            assert k in case["tolerance"]["params"]
        x = np.load(os.path.join(cdir, "input.npy"))
        gx = np.load(os.path.join(cdir, "expected_grad_input.npy"))
        assert x.dtype == np.float32 and gx.dtype == np.float64 and gx.shape == x.shape
        sb = () if case["unbatched"] else ((x.shape[0],) if cfg["batch_first"] else (x.shape[1],))
        gh0 = np.load(os.path.join(cdir, "expected_grad_h0.npy"))
        gc0 = np.load(os.path.join(cdir, "expected_grad_c0.npy"))
        assert gh0.shape == (L * D,) + sb + (H_out,) and gc0.shape == (L * D,) + sb + (H,)
        for f in ("h0.npy", "c0.npy"):
            assert os.path.exists(os.path.join(cdir, f)) == case["has_state"]
        for f in ("grad_hn.npy", "grad_cn.npy"):
            assert os.path.exists(os.path.join(cdir, f)) == case["has_final_grads"]
        if case["has_lengths"]:
            lengths = np.load(os.path.join(cdir, "lengths.npy"))
            bf = cfg["batch_first"]
            for b, n in enumerate(lengths):
                pad = gx[b, n:] if bf else gx[n:, b]
                assert not pad.any(), (case["name"], "padded steps must get zero gradient")
        tol, err = case["tolerance"], case["torch_f32_error"]
        for k in ("grad_input", "grad_h0", "grad_c0"):
            assert tol[k] >= max(MIN_TOL, TOL_FACTOR * err[k])
        for k in tol["params"]:
            assert tol["params"][k] >= max(MIN_TOL, TOL_FACTOR * err["params"][k])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="fixtures/pytorch-grad")
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="LSTM with projections is not supported")
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    entries = []
    for case in CASES:
        entry, info = generate_case(case, args.out)
        entries.append(entry)
        cfg, tol = entry["config"], entry["tolerance"]
        worst_param = max(tol["params"].values())
        print(f"{entry['name']:40s} I={cfg['input_size']:<2} H={cfg['hidden_size']:<2} "
              f"L={cfg['num_layers']} D={2 if cfg['bidirectional'] else 1} "
              f"P={cfg['proj_size']} T={info['T']:<3} B={info['B']} "
              f"|dW|max={info['gmax']:8.3g} tol x={tol['grad_input']:.3g} "
              f"h0={tol['grad_h0']:.3g} c0={tol['grad_c0']:.3g} params<={worst_param:.3g}")
    manifest = {"generator": "tools/gen_grad_fixtures.py", "torch_version": torch.__version__,
                "cases": entries}
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    verify(args.out)
    print(f"wrote and verified {len(entries)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
