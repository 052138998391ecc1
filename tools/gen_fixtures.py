#!/usr/bin/env python3
"""Generate the PyTorch reference fixtures for the lstm-kernels test suite.

Regenerate (deterministic: every case seeds torch from a stable hash of its name):

    pip install torch numpy safetensors
    python3 tools/gen_fixtures.py [--out fixtures/pytorch]

The output directory is deleted and rewritten. After writing, the script reloads every
file from disk, checks it against the manifest, and re-derives every expected tensor
with an independent float64 NumPy implementation of the LSTM contract
(the nn.LSTM equations, gate order i, f, g, o) as a cross-check of the fixtures.

Format
------
``<out>/manifest.json``::

    {"generator": "tools/gen_fixtures.py", "torch_version": "...", "cases": [case, ...]}

each case::

    {"name": "bidir_proj_2layer",          # also the directory <out>/<name>/
     "config": {"input_size": 5, "hidden_size": 7, "num_layers": 2, "bias": true,
                "batch_first": false, "dropout": 0.0, "bidirectional": true, "proj_size": 3},
     "prefix": "",                         # module prefix of the LSTM tensors ("" or "encoder.rnn.")
     "dtype": "F32",                       # weight dtype in the file: F32, F64, F16 or BF16
     "unbatched": false,
     "has_state": true, "has_lengths": false,
     "total_length": null,                 # with lengths: pad_packed_sequence's total_length
     "tolerance": {"output": 2e-05, "h_n": 2e-05, "c_n": 2e-05},
     "torch_f32_error": {"output": 1.2e-07, "h_n": ..., "c_n": ...}}

``tolerance`` = max(2e-5, 4 * torch_f32_error) per tensor, where ``torch_f32_error`` is the
max abs difference between PyTorch run in float32 (weights as stored, cast to f32) and the
float64 reference.

Files in ``<out>/<name>/``:

- ``model.safetensors``: state_dict of the LSTM (or of a wrapper module, so names carry the
  prefix; some prefix cases also hold unrelated tensors such as ``head.weight``), stored in
  the case's dtype.
- ``input.npy``: float32, [T, B, I] ([B, T, I] when batch_first, [T, I] when unbatched).
  With lengths, the padding steps hold random (non-zero) values that must be ignored.
- ``h0.npy``/``c0.npy`` (float32, only when has_state): [L*D, B, H_out] / [L*D, B, H]
  (no B axis when unbatched).
- ``lengths.npy`` (only when has_lengths): [B], int64 or int32; unsorted, includes 1 and T
  (or, in the ``lengths_short_*`` cases, T - 1 as the longest).
- ``expected_output.npy``, ``expected_hn.npy``, ``expected_cn.npy``: float64, PyTorch run in
  float64 (weights as stored, converted to f64) on the f64 value of the f32 inputs. With
  lengths: pack_padded_sequence(enforce_sorted=False) -> LSTM -> pad_packed_sequence(
  total_length=<the case's total_length>): the output has max(lengths) steps by default (T
  when total_length is T); output steps >= length are 0.
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

DTYPES = {
    "F32": torch.float32,
    "F64": torch.float64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}
MIN_TOL = 2e-5
TOL_FACTOR = 4.0


def C(name, I=4, H=6, L=1, T=5, B=3, bias=True, batch_first=False, dropout=0.0, bidir=False,
      P=0, prefix="", dtype="F32", unbatched=False, state=False, lengths=None, extras=False,
      input_scale=1.0, weight_range=None, forget_bias=0.0, ig_bias=0.0, short_lengths=False,
      total_length=False):
    """One case. lengths: None, "i64" or "i32". short_lengths: every length < T (so the default
    pad_packed_sequence output has max(lengths) < T steps); total_length: pad it back to T."""
    return dict(
        name=name,
        config=dict(input_size=I, hidden_size=H, num_layers=L, bias=bias, batch_first=batch_first,
                    dropout=dropout, bidirectional=bidir, proj_size=P),
        T=T, B=B, prefix=prefix, dtype=dtype, unbatched=unbatched, state=state, lengths=lengths,
        extras=extras, input_scale=input_scale, weight_range=weight_range,
        forget_bias=forget_bias, ig_bias=ig_bias, short_lengths=short_lengths,
        total_length=total_length,
    )


CASES = [
    # basics and odd sizes
    C("default_1layer"),
    C("input_size1", I=1, H=5, T=6, B=2),
    C("hidden1", I=3, H=1, T=5, B=3),
    C("hidden1_input1", I=1, H=1, T=4, B=2),
    C("odd_i5_h7", I=5, H=7, T=7, B=3),
    C("odd_i13_h9", I=13, H=9, T=6, B=2),
    C("hidden17", I=6, H=17, T=4, B=5),
    C("hidden33", I=11, H=33, T=5, B=2),
    C("seq_len1", I=5, H=7, T=1, B=3),
    C("batch1", I=5, H=7, T=6, B=1),
    C("seq_len1_batch1_bidir", I=3, H=5, T=1, B=1, bidir=True, state=True),
    # layers
    C("layers2", I=5, H=7, L=2, T=5, B=3),
    C("layers3", I=4, H=6, L=3, T=4, B=2),
    C("dropout_half_layers2_eval", I=5, H=7, L=2, dropout=0.5, T=5, B=2),
    # bidirectional
    C("bidir_1layer", I=5, H=7, bidir=True, T=6, B=3),
    C("bidir_2layer", I=5, H=7, L=2, bidir=True, T=5, B=2),
    C("bidir_3layer", I=3, H=4, L=3, bidir=True, T=4, B=3),
    # no bias
    C("nobias", I=5, H=7, bias=False),
    C("nobias_bidir_2layer_state", I=4, H=5, L=2, bias=False, bidir=True, state=True),
    # projection
    C("proj_1layer", I=5, H=7, P=3),
    C("proj1_1layer", I=4, H=5, P=1, T=6, B=2),
    C("proj_2layer", I=6, H=9, L=2, P=4, T=5, B=2),
    C("bidir_proj_1layer", I=5, H=7, P=2, bidir=True),
    C("bidir_proj_2layer", I=5, H=7, L=2, bidir=True, P=3, state=True),
    # batch_first
    C("batch_first", I=5, H=7, batch_first=True, T=6, B=3),
    C("batch_first_bidir_2layer", I=4, H=5, L=2, bidir=True, batch_first=True, T=5, B=2),
    C("batch_first_lengths", I=5, H=7, batch_first=True, lengths="i64", T=7, B=4),
    C("batch_first_bidir_lengths_state", I=3, H=6, bidir=True, batch_first=True, lengths="i32",
      state=True, T=6, B=4),
    # unbatched 2-D input
    C("unbatched", I=5, H=7, unbatched=True, T=6),
    C("unbatched_state", I=4, H=6, unbatched=True, state=True, T=5),
    # batch_first is ignored for 2-D input: input stays [T, I], output [T, D*H_out]
    C("unbatched_batch_first", I=3, H=5, batch_first=True, unbatched=True, T=4),
    C("unbatched_bidir", I=4, H=5, bidir=True, unbatched=True, T=5),
    C("unbatched_bidir_proj_2layer_state", I=5, H=7, L=2, bidir=True, P=3, unbatched=True,
      state=True, T=6),
    # initial state
    C("state_1layer", I=5, H=7, state=True),
    C("state_bidir_proj_3layer", I=4, H=6, L=3, bidir=True, P=2, state=True, T=4, B=2),
    # variable lengths
    C("lengths_uni", I=5, H=7, lengths="i64", T=7, B=4),
    C("lengths_bidir", I=4, H=6, bidir=True, lengths="i32", T=6, B=5),
    C("lengths_bidir_2layer_state", I=3, H=5, L=2, bidir=True, lengths="i64", state=True,
      T=6, B=4),
    C("lengths_proj_bidir_2layer", I=4, H=7, L=2, bidir=True, P=3, lengths="i32", T=5, B=3),
    C("lengths_proj_uni_state", I=4, H=6, P=2, lengths="i64", state=True, T=6, B=3),
    # every length < T: pad_packed_sequence's default output stops at the longest sequence;
    # with total_length=T it is padded back to T
    C("lengths_short_uni", I=4, H=5, lengths="i64", T=7, B=4, short_lengths=True),
    C("lengths_short_bidir_bf_state", I=3, H=6, bidir=True, batch_first=True, lengths="i32",
      state=True, T=6, B=4, short_lengths=True),
    C("lengths_short_total_length", I=4, H=5, L=2, bidir=True, lengths="i64", T=7, B=3,
      short_lengths=True, total_length=True),
    C("lengths_short_total_length_bf", I=2, H=3, P=2, batch_first=True, lengths="i64", T=5, B=3,
      short_lengths=True, total_length=True),
    # saturating / large cell states
    C("saturating_wide", I=5, H=7, T=20, B=3, input_scale=30.0, weight_range=3.0),
    C("saturating_wide_bidir_2layer_lengths", I=4, H=6, L=2, bidir=True, T=12, B=3,
      input_scale=30.0, weight_range=3.0, lengths="i64", state=True),
    C("long_t200_forget_bias", I=3, H=5, T=200, B=2, weight_range=0.5, forget_bias=5.0,
      ig_bias=3.0),
    C("long_t150_forget_bias_bidir_lengths_bf", I=2, H=4, T=150, B=3, bidir=True,
      batch_first=True, lengths="i32", weight_range=0.5, forget_bias=5.0, ig_bias=3.0),
    # prefixes
    C("prefix_encoder_rnn", I=5, H=7, L=2, prefix="encoder.rnn."),
    C("prefix_model_lstm_extras", I=4, H=6, bidir=True, P=3, prefix="model.lstm.",
      extras=True, state=True),
    # weight dtypes
    C("dtype_f64", I=5, H=7, L=2, dtype="F64", state=True),
    C("dtype_f16", I=5, H=7, bidir=True, dtype="F16"),
    C("dtype_bf16", I=4, H=6, L=2, P=3, dtype="BF16", prefix="encoder.rnn."),
]


def seed_of(name):
    return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF


class Holder(nn.Module):
    pass


def build_wrapper(lstm, prefix, extras, cfg):
    """Module whose state_dict names carry `prefix` for the LSTM tensors."""
    if not prefix:
        assert not extras
        return lstm
    parts = prefix.rstrip(".").split(".")
    root = Holder()
    cur = root
    for p in parts[:-1]:
        child = Holder()
        setattr(cur, p, child)
        cur = child
    setattr(cur, parts[-1], lstm)
    if extras:
        d = 2 if cfg["bidirectional"] else 1
        h_out = cfg["proj_size"] or cfg["hidden_size"]
        # a sibling of the LSTM under the same parent, and a top-level head
        setattr(cur, "embedding", nn.Embedding(11, cfg["input_size"]))
        root.head = nn.Linear(d * h_out, 3)
        root.register_buffer("step_count", torch.tensor([7.0]))
    return root


def make_weights(case, torch_dtype):
    cfg = case["config"]
    gen_dtype = torch.float64 if case["dtype"] == "F64" else torch.float32
    lstm = nn.LSTM(**cfg, dtype=gen_dtype)
    H = cfg["hidden_size"]
    with torch.no_grad():
        if case["weight_range"] is not None:
            r = case["weight_range"]
            for p in lstm.parameters():
                p.uniform_(-r, r)
        # push gate biases (rows i | f | g | o): f -> 1 keeps c, i*g -> 1 feeds it, so c grows
        for name, p in lstm.named_parameters():
            if name.startswith("bias_ih"):
                p[H:2 * H] += case["forget_bias"]
                p[0:H] += case["ig_bias"]
                p[2 * H:3 * H] += case["ig_bias"]
    return lstm


def run_lstm(lstm, x, state, lengths, batch_first, total_length):
    with torch.no_grad():
        if lengths is not None:
            packed = pack_padded_sequence(x, torch.as_tensor(lengths, dtype=torch.int64),
                                          batch_first=batch_first, enforce_sorted=False)
            out, (hn, cn) = lstm(packed, state)
            out, out_len = pad_packed_sequence(out, batch_first=batch_first,
                                               total_length=total_length)
            assert out_len.tolist() == [int(v) for v in lengths]
        else:
            out, (hn, cn) = lstm(x, state)
    return out, hn, cn


def lstm_from_stored(stored, case, dtype):
    cfg = case["config"]
    prefix = case["prefix"]
    sd = {k[len(prefix):]: v.to(dtype) for k, v in stored.items() if k.startswith(prefix)}
    lstm = nn.LSTM(**cfg, dtype=dtype)
    lstm.load_state_dict(sd, strict=True)
    lstm.eval()
    return lstm


def make_lengths(rng_gen, T, B, kind, short=False):
    assert B >= 3 and T >= 3
    longest = T - 1 if short else T
    while True:
        rest = torch.randint(1, longest + 1, (B - 2,), generator=rng_gen).tolist()
        ls = [longest, 1] + rest
        perm = torch.randperm(B, generator=rng_gen).tolist()
        ls = [ls[i] for i in perm]
        if ls != sorted(ls, reverse=True):
            break
    return np.asarray(ls, dtype=np.int64 if kind == "i64" else np.int32)


def ceil_sig(x, digits=3):
    """Round x up to `digits` significant digits (readable, never below x)."""
    if x <= 0:
        return 0.0
    e = math.floor(math.log10(x)) - (digits - 1)
    return math.ceil(x / 10.0 ** e) * 10.0 ** e


def save_npy(path, arr):
    np.save(path, np.ascontiguousarray(arr), allow_pickle=False)


def generate_case(case, out_dir):
    name = case["name"]
    cfg = case["config"]
    torch.manual_seed(seed_of(name))
    gen = torch.Generator().manual_seed(seed_of(name) ^ 0x5EED)
    store_dtype = DTYPES[case["dtype"]]

    lstm = make_weights(case, store_dtype)
    wrapper = build_wrapper(lstm, case["prefix"], case["extras"], cfg)
    sd = {k: v.detach().to(store_dtype).contiguous() for k, v in wrapper.state_dict().items()}
    cdir = os.path.join(out_dir, name)
    os.makedirs(cdir)
    st_path = os.path.join(cdir, "model.safetensors")
    save_file(sd, st_path)
    stored = load_file(st_path)  # exactly what the Rust side will see

    T, B = case["T"], case["B"]
    I, H, L = cfg["input_size"], cfg["hidden_size"], cfg["num_layers"]
    D = 2 if cfg["bidirectional"] else 1
    H_out = cfg["proj_size"] or H
    bf = cfg["batch_first"]
    unb = case["unbatched"]

    if unb:
        xshape = (T, I)
    elif bf:
        xshape = (B, T, I)
    else:
        xshape = (T, B, I)
    x32 = (torch.randn(xshape, generator=gen) * case["input_scale"]).to(torch.float32)
    save_npy(os.path.join(cdir, "input.npy"), x32.numpy())

    state32 = None
    if case["state"]:
        hshape = (L * D, H_out) if unb else (L * D, B, H_out)
        cshape = (L * D, H) if unb else (L * D, B, H)
        h0 = (torch.randn(hshape, generator=gen) * 0.5).to(torch.float32)
        c0 = (torch.randn(cshape, generator=gen) * 0.5).to(torch.float32)
        save_npy(os.path.join(cdir, "h0.npy"), h0.numpy())
        save_npy(os.path.join(cdir, "c0.npy"), c0.numpy())
        state32 = (h0, c0)

    lengths = None
    if case["lengths"]:
        assert not unb
        lengths = make_lengths(gen, T, B, case["lengths"], case["short_lengths"])
        save_npy(os.path.join(cdir, "lengths.npy"), lengths)

    m64 = lstm_from_stored(stored, case, torch.float64)
    m32 = lstm_from_stored(stored, case, torch.float32)
    state64 = None if state32 is None else tuple(s.double() for s in state32)
    total_length = T if case["total_length"] else None
    o64, hn64, cn64 = run_lstm(m64, x32.double(), state64, lengths, bf, total_length)
    o32, hn32, cn32 = run_lstm(m32, x32, state32, lengths, bf, total_length)
    assert o64.dtype == torch.float64 and o32.dtype == torch.float32

    exp = {"output": o64, "h_n": hn64, "c_n": cn64}
    got32 = {"output": o32, "h_n": hn32, "c_n": cn32}
    files = {"output": "expected_output.npy", "h_n": "expected_hn.npy", "c_n": "expected_cn.npy"}
    err, tol = {}, {}
    for k in exp:
        save_npy(os.path.join(cdir, files[k]), exp[k].numpy().astype(np.float64))
        e = float((got32[k].double() - exp[k]).abs().max())
        err[k] = e
        tol[k] = max(MIN_TOL, ceil_sig(TOL_FACTOR * e))

    entry = {
        "name": name,
        "config": dict(cfg),
        "prefix": case["prefix"],
        "dtype": case["dtype"],
        "unbatched": unb,
        "has_state": case["state"],
        "has_lengths": lengths is not None,
        "total_length": total_length,
        "tolerance": tol,
        "torch_f32_error": err,
    }
    info = dict(T=T, B="-" if unb else B, lengths=None if lengths is None else lengths.tolist(),
                cmax=float(cn64.abs().max()), shapes={k: tuple(v.shape) for k, v in exp.items()})
    return entry, info


# ----------------------------------------------------------------------------------------
# verification: reload from disk, check shapes/dtypes, recompute with plain NumPy in f64


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_lstm(params, cfg, x, h0, c0, lengths):
    """x: [T, B, I] f64; h0 [L*D, B, H_out]; c0 [L*D, B, H]; lengths [B]. Contract semantics."""
    T, B, _ = x.shape
    H, L = cfg["hidden_size"], cfg["num_layers"]
    D = 2 if cfg["bidirectional"] else 1
    P = cfg["proj_size"]
    H_out = P or H
    lens = np.full(B, T) if lengths is None else np.asarray(lengths)
    hn = np.zeros((L * D, B, H_out))
    cn = np.zeros((L * D, B, H))
    inp = x
    for layer in range(L):
        out = np.zeros((T, B, D * H_out))
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
            Wih, Whh = params["weight_ih" + sfx], params["weight_hh" + sfx]
            b = np.zeros(4 * H)
            if cfg["bias"]:
                b = params["bias_ih" + sfx] + params["bias_hh" + sfx]
            Whr = params.get("weight_hr" + sfx)
            for bi in range(B):
                h = h0[layer * D + d, bi].copy()
                c = c0[layer * D + d, bi].copy()
                n = int(lens[bi])
                steps = range(n) if d == 0 else range(n - 1, -1, -1)
                for t in steps:
                    z = Wih @ inp[t, bi] + Whh @ h + b
                    i, f = sigmoid(z[:H]), sigmoid(z[H:2 * H])
                    g, o = np.tanh(z[2 * H:3 * H]), sigmoid(z[3 * H:])
                    c = f * c + i * g
                    h = o * np.tanh(c)
                    if Whr is not None:
                        h = Whr @ h
                    out[t, bi, d * H_out:(d + 1) * H_out] = h
                hn[layer * D + d, bi] = h
                cn[layer * D + d, bi] = c
        inp = out
    return inp, hn, cn


def verify(out_dir):
    with open(os.path.join(out_dir, "manifest.json")) as f:
        man = json.load(f)
    worst = 0.0
    for case in man["cases"]:
        cdir = os.path.join(out_dir, case["name"])
        cfg = case["config"]
        H, L, I = cfg["hidden_size"], cfg["num_layers"], cfg["input_size"]
        D = 2 if cfg["bidirectional"] else 1
        H_out = cfg["proj_size"] or H
        unb, bf = case["unbatched"], cfg["batch_first"]
        x = np.load(os.path.join(cdir, "input.npy"))
        assert x.dtype == np.float32 and x.flags.c_contiguous
        assert x.ndim == (2 if unb else 3) and x.shape[-1] == I
        T = x.shape[0] if (unb or not bf) else x.shape[1]
        B = 1 if unb else (x.shape[0] if bf else x.shape[1])
        # weights as stored
        stored = load_file(os.path.join(cdir, "model.safetensors"))
        pre = case["prefix"]
        for k, v in stored.items():
            assert v.dtype == DTYPES[case["dtype"]], (k, v.dtype)
        params = {k[len(pre):]: v.to(torch.float64).numpy() for k, v in stored.items()
                  if k.startswith(pre)}
        n_expected = L * D * ((4 if cfg["bias"] else 2) + (1 if cfg["proj_size"] else 0))
        assert len(params) == n_expected, (case["name"], sorted(params))
        sb = () if unb else (B,)
        if case["has_state"]:
            h0 = np.load(os.path.join(cdir, "h0.npy"))
            c0 = np.load(os.path.join(cdir, "c0.npy"))
            assert h0.dtype == np.float32 and c0.dtype == np.float32
            assert h0.shape == (L * D,) + sb + (H_out,), h0.shape
            assert c0.shape == (L * D,) + sb + (H,), c0.shape
        else:
            assert not os.path.exists(os.path.join(cdir, "h0.npy"))
            h0 = np.zeros((L * D,) + sb + (H_out,), np.float32)
            c0 = np.zeros((L * D,) + sb + (H,), np.float32)
        lengths = None
        if case["has_lengths"]:
            lengths = np.load(os.path.join(cdir, "lengths.npy"))
            assert lengths.dtype in (np.int32, np.int64) and lengths.shape == (B,)
            assert lengths.min() == 1
            assert lengths.max() == (T - 1 if case["name"].startswith("lengths_short") else T)
            assert list(lengths) != sorted(lengths, reverse=True)
        else:
            assert not os.path.exists(os.path.join(cdir, "lengths.npy"))
        eo = np.load(os.path.join(cdir, "expected_output.npy"))
        eh = np.load(os.path.join(cdir, "expected_hn.npy"))
        ec = np.load(os.path.join(cdir, "expected_cn.npy"))
        for a in (eo, eh, ec):
            assert a.dtype == np.float64 and a.flags.c_contiguous
        # pad_packed_sequence pads to the longest sequence unless total_length is given
        T_out = T if lengths is None or case["total_length"] else int(lengths.max())
        if unb:
            assert eo.shape == (T, D * H_out)
        elif bf:
            assert eo.shape == (B, T_out, D * H_out)
        else:
            assert eo.shape == (T_out, B, D * H_out)
        assert eh.shape == (L * D,) + sb + (H_out,)
        assert ec.shape == (L * D,) + sb + (H,)
        # independent recomputation in [T, B, *] layout
        xs = x.astype(np.float64)
        if unb:
            xs, h0b, c0b = xs[:, None, :], h0[:, None, :], c0[:, None, :]
        else:
            h0b, c0b = h0, c0
            if bf:
                xs = xs.transpose(1, 0, 2)
        ro, rh, rc = np_lstm(params, cfg, xs, h0b.astype(np.float64), c0b.astype(np.float64),
                             lengths)
        ro = ro[:T_out]
        if unb:
            ro, rh, rc = ro[:, 0], rh[:, 0], rc[:, 0]
        elif bf:
            ro = ro.transpose(1, 0, 2)
        scale = max(1.0, float(np.abs(ec).max()))
        for got, ref, what in ((eo, ro, "output"), (eh, rh, "h_n"), (ec, rc, "c_n")):
            d = float(np.abs(got - ref).max())
            worst = max(worst, d / scale)
            assert d <= 1e-10 * scale, (case["name"], what, d)
        if lengths is not None:
            for bi, n in enumerate(lengths):
                pad = eo[n:, bi] if not bf else eo[bi, n:]
                assert not pad.any()
        for k in ("output", "h_n", "c_n"):
            assert case["tolerance"][k] >= max(MIN_TOL, TOL_FACTOR * case["torch_f32_error"][k])
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="fixtures/pytorch")
    ap.add_argument("--no-verify", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    # f32 CPU LSTMs without projection may go through oneDNN; with projection torch warns
    # that it falls back to its default implementation. Harmless here.
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
        cfg = entry["config"]
        tol = entry["tolerance"]
        print(f"{entry['name']:40s} I={cfg['input_size']:<2} H={cfg['hidden_size']:<2} "
              f"L={cfg['num_layers']} D={2 if cfg['bidirectional'] else 1} "
              f"P={cfg['proj_size']} T={info['T']:<3} B={info['B']} {entry['dtype']:4s} "
              f"|c|max={info['cmax']:8.3g}  tol out={tol['output']:.3g} "
              f"h_n={tol['h_n']:.3g} c_n={tol['c_n']:.3g}")
    manifest = {"generator": "tools/gen_fixtures.py", "torch_version": torch.__version__,
                "cases": entries}
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    if not args.no_verify:
        worst = verify(args.out)
        print(f"verified {len(entries)} cases against an independent NumPy f64 LSTM "
              f"(worst relative diff {worst:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
