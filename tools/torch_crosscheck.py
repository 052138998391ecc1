#!/usr/bin/env python3
"""Randomized differential test of the `lstm` binary against PyTorch `torch.nn.LSTM`.

    cargo build --release -p lstm-cli
    python3 tools/torch_crosscheck.py [--cases 200] [--seed 0] [--bin target/release/lstm]
    python3 tools/torch_crosscheck.py --broken        # ~75 broken inputs, error handling only
    python3 tools/torch_crosscheck.py --precision bf16 [--engine simd|parallel]

Random mode
-----------
Each case draws an `nn.LSTM` configuration (input_size 1..20, hidden_size 1..24, num_layers
1..3, bias on/off, bidirectional, proj_size 0 or 1..H-1, batch_first, dropout 0/0.3) and a call
(T 1..12, B 1..5 or an unbatched [T, I] input; optional (h0, c0) written as f32 or f64 .npy;
optional int32/int64 lengths, unsorted, each in 1..T, sometimes all < T). Some cases saturate
(input x20, weights uniform in +-3), some wrap the LSTM in nested modules (so the names carry a
prefix, sometimes beside unrelated tensors such as a Linear head), some store the weights as
F16/BF16/F64. The model is saved with `safetensors.torch.save_file`, run through
`lstm run --hn --cn` (plus --h0/--c0/--lengths/--batch-first/--prefix as applicable) and the
three outputs are compared element by element with PyTorch run in float64 (weights as stored,
converted to float64; inputs the float64 value of the arrays written). Lengths go through
pack_padded_sequence(enforce_sorted=False) -> LSTM -> pad_packed_sequence, with
total_length=T (and `--total-length T`) in half of those cases, PyTorch's default (the longest
length) in the others.

Tolerance per tensor: max(2e-5, 4 * max|PyTorch f32 - PyTorch f64|), the f32 run using the
stored weights cast to float32 on the same inputs.

`--precision bf16` runs `lstm run --precision bf16` (engine simd unless --engine says
otherwise) against PyTorch in float64 on the weights rounded to bfloat16 as the engine rounds
them (W_ih, W_hh, W_hr via float32, to nearest even; biases kept): "same weights, exact
arithmetic", docs/numerics.md. The tolerance adds to the f32 one the operand term of the bf16
tolerance model there: OPERAND_SIGMAS * 2^-8 / sqrt(3) * gate_rss per step (gate_rss: the
largest root-sum-square of a gate row's products at the data bounds: max|x|, |h| <= 1 or the
projection's row sum, and max|h0|), times (1.75 + max|c|/4) through the gates (max|c| bounded by
max|c0| + T), over sqrt(T * L) steps. A loose bound (the property tests of lstm-validate hold
the engines to the full model); it catches operands paired wrongly when the error is large.
A precision silently ignored is caught apart: the run fails unless the output moved away from
PyTorch's float64 on the unrounded weights by more than the f32 tolerance in at least half the
cases whose weights are not stored as BF16 already.

`--exotic` additionally draws valid-but-unusual files (Fortran-order or big-endian .npy,
extra int64/0-d tensors such as BatchNorm buffers, sibling modules whose names extend the
LSTM's prefix) -- legal inputs a careful loader should accept.

Broken mode (`--broken`)
------------------------
Feeds the binary corrupt, truncated and lying safetensors/.npy files, inconsistent tensor
sets, wrong shapes/dtypes, bad lengths/states, ambiguous or unknown prefixes and unwritable
outputs, and asserts for each: non-zero exit (not a signal), stderr exactly one non-empty
line, no "panicked" in it, and the output directory left exactly as it was (no output file,
no stray temporary file; a pre-existing output file unchanged).

Exit status: 0 when every case passes, 1 otherwise. Temporary files live in a fresh directory
per run (removed at the end unless --keep; failing random cases are kept for reproduction).
"""

import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

warnings.filterwarnings("ignore")
torch.set_num_threads(1)

MIN_TOL = 2e-5
TOL_FACTOR = 4.0
# The bf16 tolerance model (crates/lstm-validate/src/tolerance.rs, docs/numerics.md).
BF16_U = 2.0 ** -8
OPERAND_SIGMAS = 6.0
DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16,
          "BF16": torch.bfloat16}
NAMES = ["encoder", "rnn", "lstm", "model", "net", "backbone", "seq", "core", "body", "enc"]


class Holder(nn.Module):
    pass


# ------------------------------------------------------------------------------------------
# random cases


def draw_case(rng, exotic):
    I = rng.randint(1, 20)
    H = rng.randint(1, 24)
    L = rng.randint(1, 3)
    P = 0
    if H >= 2 and rng.random() < 0.35:
        P = rng.randint(1, H - 1)
    cfg = dict(input_size=I, hidden_size=H, num_layers=L, bias=rng.random() < 0.75,
               batch_first=rng.random() < 0.35, dropout=rng.choice([0.0, 0.0, 0.3]),
               bidirectional=rng.random() < 0.5, proj_size=P)
    unbatched = rng.random() < 0.2
    T = rng.randint(1, 12)
    B = 1 if unbatched else rng.randint(1, 5)
    state = rng.random() < 0.4
    state_dtype = rng.choice(["f32", "f64"])
    lengths = None
    lengths_kind = None
    if not unbatched and rng.random() < 0.35:
        lengths_kind = rng.choice(["i32", "i64"])
        if T >= 2 and rng.random() < 0.3:
            lengths = [rng.randint(1, T - 1) for _ in range(B)]  # all < T
        else:
            lengths = [rng.randint(1, T) for _ in range(B)]
            if B >= 2 and rng.random() < 0.5:
                lengths[rng.randrange(B)] = T
        if B >= 2 and lengths == sorted(lengths, reverse=True) and len(set(lengths)) > 1:
            rng.shuffle(lengths)  # unsorted most of the time
    saturate = rng.random() < 0.15
    dtype = rng.choices(["F32", "F64", "F16", "BF16"], weights=[0.6, 0.14, 0.13, 0.13])[0]

    # module prefix
    prefix_kind = rng.choices(["none", "nested", "sequential", "modulelist"],
                              weights=[0.55, 0.3, 0.08, 0.07])[0]
    extras = []
    if prefix_kind != "none" and rng.random() < 0.5:
        extras = rng.sample(["linear_head", "embedding_sibling", "buffer"], rng.randint(1, 2))
        if exotic and rng.random() < 0.5:
            extras.append(rng.choice(["batchnorm_i64", "scalar_0d", "similar_name"]))
    depth = rng.randint(1, 3)
    path = [rng.choice(NAMES) for _ in range(depth)]
    pass_prefix = rng.random() < (0.5 if prefix_kind != "none" else 0.2)
    prefix_dot = rng.random() < 0.5
    input_f64 = rng.random() < 0.15
    exotic_npy = None
    if exotic and rng.random() < 0.3:
        exotic_npy = rng.choice(["fortran_input", "bigendian_input", "fortran_state",
                                 "bigendian_state", "bigendian_lengths"])
    threads = rng.choice([None, None, None, 1, 3])
    return dict(cfg=cfg, T=T, B=B, unbatched=unbatched, state=state, state_dtype=state_dtype,
                lengths=lengths, lengths_kind=lengths_kind, saturate=saturate, dtype=dtype,
                prefix_kind=prefix_kind, path=path, extras=extras, pass_prefix=pass_prefix,
                prefix_dot=prefix_dot, input_f64=input_f64, exotic_npy=exotic_npy,
                threads=threads)


def build_module(case, lstm):
    """Return (root module, prefix string ending in '.' or '')."""
    kind = case["prefix_kind"]
    cfg = case["cfg"]
    if kind == "none":
        return lstm, ""
    D = 2 if cfg["bidirectional"] else 1
    h_out = cfg["proj_size"] or cfg["hidden_size"]
    root = Holder()
    cur = root
    names = []
    for p in case["path"][:-1]:
        child = Holder()
        setattr(cur, p, child)
        names.append(p)
        cur = child
    last = case["path"][-1]
    if kind == "nested":
        setattr(cur, last, lstm)
        names.append(last)
    elif kind == "sequential":
        seq = nn.Sequential(nn.Identity(), lstm)  # Identity has no tensors: index 1
        setattr(cur, last, seq)
        names += [last, "1"]
    else:  # modulelist: the LSTM is element 0, a Linear element 1
        ml = nn.ModuleList([lstm, nn.Linear(3, 2)])
        setattr(cur, last, ml)
        names += [last, "0"]
    for e in case["extras"]:
        if e == "linear_head":
            root.head = nn.Linear(D * h_out, 3)
        elif e == "embedding_sibling":
            setattr(cur, "embedding", nn.Embedding(11, cfg["input_size"]))
        elif e == "buffer":
            root.register_buffer("step_count", torch.tensor([7.0]))
        elif e == "batchnorm_i64":
            root.norm = nn.BatchNorm1d(D * h_out)  # num_batches_tracked is int64
        elif e == "scalar_0d":
            root.register_buffer("temperature", torch.tensor(0.5))
        elif e == "similar_name" and kind == "nested":
            # a sibling whose name extends the LSTM's own name: "<lstm>_head.weight"
            setattr(cur, last + "_head", nn.Linear(D * h_out, 2))
    return root, ".".join(names) + "."


def make_lstm(case, gen):
    cfg = case["cfg"]
    gen_dtype = torch.float64 if case["dtype"] == "F64" else torch.float32
    lstm = nn.LSTM(**cfg, dtype=gen_dtype)
    with torch.no_grad():
        for p in lstm.parameters():
            if case["saturate"]:
                p.uniform_(-3.0, 3.0, generator=gen)
            else:
                k = 1.0 / max(cfg["hidden_size"], 1) ** 0.5
                p.uniform_(-k, k, generator=gen)
    return lstm


def bf16_rounded(name, v):
    """A weight matrix as a bf16 engine multiplies by it: to float32 (as the loader reads every
    dtype), then to the nearest bfloat16; biases stay."""
    if name.rsplit(".", 1)[-1].startswith("weight"):
        return v.to(torch.float32).to(torch.bfloat16)
    return v


def lstm_from_stored(stored, prefix, cfg, dtype, precision="f32"):
    # the LSTM's own tensors: those under the prefix (a sibling "<name>_head." is not)
    sd = {k[len(prefix):]: (bf16_rounded(k, v) if precision == "bf16" else v).to(dtype)
          for k, v in stored.items() if k.startswith(prefix)}
    m = nn.LSTM(**cfg, dtype=dtype)
    m.load_state_dict(sd, strict=True)
    m.eval()
    return m


def run_torch(m, x, state, lengths, batch_first, total_length):
    with torch.no_grad():
        if lengths is not None:
            packed = pack_padded_sequence(x, torch.as_tensor(lengths, dtype=torch.int64),
                                          batch_first=batch_first, enforce_sorted=False)
            out, (hn, cn) = m(packed, state)
            out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=total_length)
        else:
            out, (hn, cn) = m(x, state)
    return out, hn, cn


def bf16_allowance(m, cfg, x, state, T):
    """The operand term of the bf16 tolerance model (see the module docs) for model `m` (its
    rounded weights), input `x`, initial `state` (or None) and T steps."""
    L, proj = cfg["num_layers"], cfg["proj_size"]
    dirs = ["", "_reverse"] if cfg["bidirectional"] else [""]
    h0_max = float(state[0].abs().max()) if state is not None and state[0].numel() else 0.0
    c0_max = float(state[1].abs().max()) if state is not None and state[1].numel() else 0.0
    p = dict(m.named_parameters())

    def h_bound(layer):
        if not proj:
            return 1.0
        return max(float(p[f"weight_hr_l{layer}{d}"].double().abs().sum(1).max()) for d in dirs)

    gate_rss = 0.0
    for layer in range(L):
        x_max = float(x.abs().max()) if layer == 0 and x.numel() else h_bound(max(layer - 1, 0))
        h_max = max(h_bound(layer), h0_max)
        for d in dirs:
            w_ih = p[f"weight_ih_l{layer}{d}"].double() * x_max
            w_hh = p[f"weight_hh_l{layer}{d}"].double() * h_max
            rss = ((w_ih ** 2).sum(1) + (w_hh ** 2).sum(1)).sqrt().max()
            gate_rss = max(gate_rss, float(rss))
    per_step = OPERAND_SIGMAS * BF16_U / 3 ** 0.5 * gate_rss * (1.75 + 0.25 * (c0_max + T))
    return per_step * (T * L) ** 0.5


def save_npy(path, arr, order="C", big_endian=False):
    if big_endian:
        arr = arr.astype(arr.dtype.newbyteorder(">"))
    if order == "F":
        arr = np.asfortranarray(arr)
    else:
        arr = np.ascontiguousarray(arr)
    np.save(path, arr, allow_pickle=False)


def describe(case):
    c = case["cfg"]
    s = (f"I={c['input_size']} H={c['hidden_size']} L={c['num_layers']} bias={c['bias']} "
         f"bidir={c['bidirectional']} P={c['proj_size']} bf={c['batch_first']} "
         f"dropout={c['dropout']} | T={case['T']} "
         f"B={'unbatched' if case['unbatched'] else case['B']}")
    s += f" state={case['state_dtype'] if case['state'] else 'none'}"
    if case["lengths"] is not None:
        s += f" lengths={case['lengths_kind']}:{case['lengths']}"
    s += f" sat={case['saturate']} dtype={case['dtype']}"
    if case["prefix_kind"] != "none":
        s += f" prefix={case['prefix']!r}({case['prefix_kind']}) extras={case['extras']}"
    if case.get("prefix_arg") is not None:
        s += f" --prefix {case['prefix_arg']!r}"
    if case["input_f64"]:
        s += " input=f64"
    if case["exotic_npy"]:
        s += f" npy={case['exotic_npy']}"
    if case["threads"]:
        s += f" threads={case['threads']}"
    return s


def run_case(idx, case, seed, args, work):
    cdir = os.path.join(work, f"case{idx:04d}")
    odir = os.path.join(cdir, "out")
    os.makedirs(odir)
    gen = torch.Generator().manual_seed((seed * 1000003 + idx) & 0x7FFFFFFF)
    cfg = case["cfg"]
    I, H, L = cfg["input_size"], cfg["hidden_size"], cfg["num_layers"]
    D = 2 if cfg["bidirectional"] else 1
    H_out = cfg["proj_size"] or H
    T, B = case["T"], case["B"]
    bf, unb = cfg["batch_first"], case["unbatched"]
    store = DTYPES[case["dtype"]]

    lstm = make_lstm(case, gen)
    root, prefix = build_module(case, lstm)
    case["prefix"] = prefix
    sd = {}
    for k, v in root.state_dict().items():
        v = v.detach()
        if v.is_floating_point():
            v = v.to(store)
        sd[k] = v.contiguous()
    model_path = os.path.join(cdir, "model.safetensors")
    save_file(sd, model_path)
    stored = load_file(model_path)

    # inputs
    xshape = (T, I) if unb else ((B, T, I) if bf else (T, B, I))
    scale = 20.0 if case["saturate"] else 1.0
    x32 = (torch.randn(xshape, generator=gen) * scale).to(torch.float32)
    ex = case["exotic_npy"]
    x_np = x32.numpy().astype(np.float64) if case["input_f64"] else x32.numpy()
    save_npy(os.path.join(cdir, "input.npy"), x_np,
             order="F" if ex == "fortran_input" else "C",
             big_endian=(ex == "bigendian_input"))
    x64 = x32.double()

    state64 = state32 = None
    extra_args = []
    if case["state"]:
        hshape = (L * D, H_out) if unb else (L * D, B, H_out)
        cshape = (L * D, H) if unb else (L * D, B, H)
        if case["state_dtype"] == "f64":
            h0 = torch.randn(hshape, generator=gen, dtype=torch.float64) * 0.5
            c0 = torch.randn(cshape, generator=gen, dtype=torch.float64) * 0.5
        else:
            h0 = (torch.randn(hshape, generator=gen) * 0.5).to(torch.float32)
            c0 = (torch.randn(cshape, generator=gen) * 0.5).to(torch.float32)
        for nm, t in (("h0", h0), ("c0", c0)):
            save_npy(os.path.join(cdir, nm + ".npy"), t.numpy(),
                     order="F" if ex == "fortran_state" else "C",
                     big_endian=(ex == "bigendian_state"))
        state64 = (h0.double(), c0.double())
        state32 = (h0.float(), c0.float())
        extra_args += ["--h0", os.path.join(cdir, "h0.npy"), "--c0", os.path.join(cdir, "c0.npy")]

    lengths = case["lengths"]
    if lengths is not None:
        la = np.asarray(lengths, dtype=np.int32 if case["lengths_kind"] == "i32" else np.int64)
        if ex == "bigendian_lengths":
            la = la.astype(la.dtype.newbyteorder(">"))
        np.save(os.path.join(cdir, "lengths.npy"), la, allow_pickle=False)
        extra_args += ["--lengths", os.path.join(cdir, "lengths.npy")]
    # Half the cases with lengths ask for total_length=T (--total-length); the others get
    # pad_packed_sequence's default, max(lengths) steps. Chosen without drawing from rng, so
    # the rest of each seed's cases stay as they were.
    total_length = T if lengths is not None and sum(lengths) % 2 == 0 else None
    if total_length is not None:
        extra_args += ["--total-length", str(total_length)]
    if bf:
        extra_args.append("--batch-first")
    case["prefix_arg"] = None
    if case["pass_prefix"]:
        pa = prefix if case["prefix_dot"] else prefix.rstrip(".")
        case["prefix_arg"] = pa
        extra_args += ["--prefix", pa]
    if case["threads"]:
        extra_args += ["--threads", str(case["threads"])]
    if args.precision != "f32":
        extra_args += ["--precision", args.precision]

    # reference (bf16: on the weights the engine rounds to)
    m64 = lstm_from_stored(stored, prefix, cfg, torch.float64, args.precision)
    m32 = lstm_from_stored(stored, prefix, cfg, torch.float32, args.precision)
    o64, hn64, cn64 = run_torch(m64, x64, state64, lengths, bf, total_length)
    o32, hn32, cn32 = run_torch(m32, x32, state32, lengths, bf, total_length)
    bf16_tol = 0.0
    unrounded = {}
    if args.precision == "bf16":
        bf16_tol = bf16_allowance(m64, cfg, x64, state64, T)
        m64f = lstm_from_stored(stored, prefix, cfg, torch.float64)
        unrounded = dict(zip(("output", "h_n", "c_n"),
                             run_torch(m64f, x64, state64, lengths, bf, total_length)))
    exp = {"output": o64, "h_n": hn64, "c_n": cn64}
    t32 = {"output": o32, "h_n": hn32, "c_n": cn32}

    outs = {"output": os.path.join(odir, "output.npy"), "h_n": os.path.join(odir, "hn.npy"),
            "c_n": os.path.join(odir, "cn.npy")}
    cmd = [args.bin, "run", "--model", model_path, "--input", os.path.join(cdir, "input.npy"),
           "--output", outs["output"], "--hn", outs["h_n"], "--cn", outs["c_n"],
           "--engine", args.engine] + extra_args
    case["cmd"] = cmd
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    problems = []
    if p.returncode != 0:
        problems.append(f"exit {p.returncode}: {p.stderr.strip()}")
        return problems, cdir
    if p.stderr.strip():
        problems.append(f"stderr on success: {p.stderr.strip()!r}")
    left = sorted(os.listdir(odir))
    if left != sorted(os.path.basename(v) for v in outs.values()):
        problems.append(f"out dir holds {left}")
    for k in ("output", "h_n", "c_n"):
        try:
            got = np.load(outs[k], allow_pickle=False)
        except Exception as e:  # noqa: BLE001
            problems.append(f"{k}: cannot load ({e})")
            continue
        want = exp[k].numpy()
        if got.dtype != np.float32:
            problems.append(f"{k}: dtype {got.dtype}, want float32")
        if got.shape != want.shape:
            problems.append(f"{k}: shape {got.shape}, want {want.shape}")
            continue
        e32 = float((t32[k].double() - exp[k]).abs().max()) if want.size else 0.0
        tol = max(MIN_TOL, TOL_FACTOR * e32) + bf16_tol
        diff = np.abs(got.astype(np.float64) - want)
        if want.size == 0:
            continue
        if not np.all(np.isfinite(got)):
            problems.append(f"{k}: non-finite values")
            continue
        err = float(diff.max())
        if k == "output" and unrounded:
            moved = float(np.abs(got.astype(np.float64) - unrounded[k].numpy()).max())
            case["bf16_moved"] = moved > max(MIN_TOL, TOL_FACTOR * e32)
        if err > tol:
            where = np.unravel_index(int(diff.argmax()), diff.shape)
            nbad = int((diff > tol).sum())
            problems.append(f"{k}: max err {err:.3e} > tol {tol:.3e} (torch f32 err {e32:.3e}) "
                            f"at {tuple(int(i) for i in where)} got {got[where]:.8g} "
                            f"want {want[where]:.8g}; {nbad}/{diff.size} elements off")
    return problems, cdir


def random_mode(args):
    work = tempfile.mkdtemp(prefix="lstm_crosscheck_")
    keep_dir = os.path.join(work, "failures")
    failed = passed = 0
    moved = movable = 0
    try:
        for seed in args.seed:
            rng = random.Random(seed)
            torch.manual_seed(seed)
            for idx in range(args.cases):
                case = draw_case(rng, args.exotic)
                try:
                    problems, cdir = run_case(idx, case, seed, args, work)
                except subprocess.TimeoutExpired:
                    problems, cdir = ["timeout"], os.path.join(work, f"case{idx:04d}")
                if problems:
                    failed += 1
                    dest = os.path.join(keep_dir, f"seed{seed}_case{idx:04d}")
                    shutil.copytree(cdir, dest)
                    print(f"FAIL seed={seed} case={idx}: {describe(case)} || {problems[0]}")
                    for pr in problems[1:]:
                        print(f"    {pr}")
                    print(f"    files kept in {dest}")
                    print("    cmd: " + " ".join(repr(c) if (" " in c or c == "") else c
                                             for c in case.get("cmd", [])))
                else:
                    passed += 1
                if args.precision == "bf16" and case["dtype"] != "BF16":
                    movable += 1
                    moved += bool(case.get("bf16_moved"))
                shutil.rmtree(cdir, ignore_errors=True)
        print(f"{passed} passed, {failed} failed")
        if args.precision == "bf16":
            print(f"bf16 moved the output off the unrounded weights' in {moved} of {movable} "
                  "cases not stored as BF16")
            if 2 * moved < movable:
                print("FAIL: --precision bf16 looks ignored (the output barely moved)")
                failed += 1
    finally:
        if failed == 0 and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            # keep only the failures (and everything with --keep)
            for e in os.listdir(work):
                if e != "failures" and not args.keep:
                    shutil.rmtree(os.path.join(work, e), ignore_errors=True)
            print(f"work dir kept: {work}")
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------
# broken inputs


def npy_bytes(dtype_descr, shape, data, fortran=False, version=1):
    hdr = "{'descr': %r, 'fortran_order': %s, 'shape': %s, }" % (
        dtype_descr, "True" if fortran else "False", repr(tuple(shape)))
    pre = 10 if version == 1 else 12
    total = pre + len(hdr) + 1
    pad = (64 - total % 64) % 64
    hdr = hdr + " " * pad + "\n"
    if version == 1:
        head = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr))
    else:
        head = b"\x93NUMPY\x02\x00" + struct.pack("<I", len(hdr))
    return head + hdr.encode("latin1") + data


def st_bytes(tensors, mutate=None, raw_header=None, header_len=None, extra_data=b""):
    """tensors: {name: np.ndarray or (dtype_str, shape, bytes)}; mutate(header dict)."""
    header = {}
    blob = b""
    np2st = {np.dtype("float32"): "F32", np.dtype("float64"): "F64",
             np.dtype("float16"): "F16", np.dtype("int64"): "I64", np.dtype("int32"): "I32",
             np.dtype("int8"): "I8", np.dtype("uint8"): "U8"}
    for name, t in tensors.items():
        if isinstance(t, tuple):
            dt, shape, data = t
        else:
            a = np.ascontiguousarray(t)
            dt, shape, data = np2st[a.dtype], list(a.shape), a.tobytes()
        header[name] = {"dtype": dt, "shape": list(shape),
                        "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    if mutate is not None:
        mutate(header)
    h = raw_header if raw_header is not None else json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    n = len(h) if header_len is None else header_len
    return struct.pack("<Q", n) + h + blob + extra_data


def base_state_dict(seed=7, I=3, H=4, L=2, bidir=True, P=0):
    torch.manual_seed(seed)
    m = nn.LSTM(I, H, num_layers=L, bidirectional=bidir, proj_size=P)
    return {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}, m


def broken_mode(args):
    work = tempfile.mkdtemp(prefix="lstm_broken_")
    I, H, L, T, B = 3, 4, 2, 5, 3
    D = 2
    sd, _ = base_state_dict(I=I, H=H, L=L)
    inp = os.path.join(work, "in")
    os.makedirs(inp)

    def wfile(name, data):
        path = os.path.join(inp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def wnpy(name, arr, **kw):
        path = os.path.join(inp, name)
        np.save(path, arr, allow_pickle=kw.get("pickle", False))
        return path

    good_model = wfile("good.safetensors", st_bytes(sd))
    rs = np.random.RandomState(3)
    x = rs.randn(T, B, I).astype(np.float32)
    good_in = wnpy("x.npy", x)
    good_h0 = wnpy("h0.npy", rs.randn(L * D, B, H).astype(np.float32))
    good_c0 = wnpy("c0.npy", rs.randn(L * D, B, H).astype(np.float32))
    good_len = wnpy("len.npy", np.array([5, 2, 3], dtype=np.int64))
    good_bytes = open(good_model, "rb").read()
    hdr_n = struct.unpack("<Q", good_bytes[:8])[0]

    def sd_without(*names):
        return {k: v for k, v in sd.items() if k not in names}

    def sd_with(**repl):
        d = dict(sd)
        d.update(repl)
        return d

    def prefixed(pfx, d=None):
        return {pfx + k: v for k, v in (d or sd).items()}

    cases = []  # (name, model, input, extra args, options)

    def add(name, model=None, inp_=None, extra=(), **opt):
        cases.append((name, model or good_model, inp_ or good_in, list(extra), opt))

    # --- safetensors: corrupt / truncated / lying headers
    add("st_empty_file", wfile("empty.safetensors", b""))
    add("st_5_bytes", wfile("five.safetensors", good_bytes[:5]))
    add("st_header_len_huge", wfile("hlen_huge.safetensors",
                                    struct.pack("<Q", 1 << 62) + good_bytes[8:]))
    add("st_header_len_past_eof", wfile("hlen_eof.safetensors",
                                        struct.pack("<Q", len(good_bytes)) + good_bytes[8:]))
    add("st_header_not_json", wfile("notjson.safetensors",
                                    st_bytes(sd, raw_header=b"{\"weight_ih_l0\": [not json")))
    add("st_header_json_array", wfile("jsonarr.safetensors", st_bytes(sd, raw_header=b"[1,2,3]")))
    add("st_header_not_utf8", wfile("notutf8.safetensors", st_bytes(sd, raw_header=b"{\xff\xfe}")))
    add("st_truncated_in_header", wfile("trunc_hdr.safetensors", good_bytes[:8 + hdr_n // 2]))
    add("st_truncated_in_data", wfile("trunc_data.safetensors",
                                      good_bytes[:8 + hdr_n + (len(good_bytes) - 8 - hdr_n) // 2]))
    add("st_truncated_last_byte", wfile("trunc1.safetensors", good_bytes[:-1]))

    def m_offsets_past_end(h):
        k = "bias_hh_l1_reverse"
        a, b = h[k]["data_offsets"]
        h[k]["data_offsets"] = [a + 4096, b + 4096]
    add("st_offsets_past_end", wfile("off_end.safetensors", st_bytes(sd, m_offsets_past_end)))

    def m_offsets_size_mismatch(h):
        h["weight_ih_l0"]["shape"] = [16, 4]  # 64 elements but 48 elements of data
    add("st_shape_vs_offsets_mismatch", wfile("off_size.safetensors",
                                              st_bytes(sd, m_offsets_size_mismatch)))

    def m_overlap(h):
        h["bias_ih_l0"]["data_offsets"] = list(h["bias_hh_l0"]["data_offsets"])
    add("st_overlapping_offsets", wfile("overlap.safetensors", st_bytes(sd, m_overlap)))

    def m_unknown_dtype(h):
        h["weight_hh_l0"]["dtype"] = "Q4"
    add("st_unknown_dtype", wfile("dtype_q4.safetensors", st_bytes(sd, m_unknown_dtype)))

    def m_reversed_offsets(h):
        a, b = h["bias_ih_l0"]["data_offsets"]
        h["bias_ih_l0"]["data_offsets"] = [b, a]
    add("st_reversed_offsets", wfile("rev_off.safetensors", st_bytes(sd, m_reversed_offsets)))

    # --- tensor sets
    add("st_int_weights", wfile("int_w.safetensors", st_bytes(sd_with(
        weight_ih_l0=(sd["weight_ih_l0"] * 100).astype(np.int32)))))
    add("st_i64_weights_all", wfile("i64_all.safetensors", st_bytes(
        {k: (v * 100).astype(np.int64) for k, v in sd.items()})))
    add("st_missing_weight_hh_l0", wfile("miss_hh.safetensors", st_bytes(sd_without("weight_hh_l0"))))
    add("st_missing_bias_hh_only", wfile("miss_bhh.safetensors", st_bytes(sd_without("bias_hh_l0"))))
    add("st_missing_reverse_layer1", wfile("miss_rev1.safetensors", st_bytes(sd_without(
        "weight_ih_l1_reverse", "weight_hh_l1_reverse", "bias_ih_l1_reverse",
        "bias_hh_l1_reverse"))))
    add("st_layer_gap", wfile("gap.safetensors", st_bytes(
        {k.replace("_l1", "_l2"): v for k, v in sd.items()} | {
            k: v for k, v in sd.items() if "_l0" in k})))
    add("st_weight_hh_wrong_shape", wfile("hh_shape.safetensors", st_bytes(sd_with(
        weight_hh_l0=np.zeros((4 * H, H + 1), np.float32)))))
    add("st_layer1_input_inconsistent", wfile("l1_in.safetensors", st_bytes(sd_with(
        weight_ih_l1=np.zeros((4 * H, H), np.float32),
        weight_ih_l1_reverse=np.zeros((4 * H, H), np.float32)))))
    add("st_reverse_shape_differs", wfile("rev_shape.safetensors", st_bytes(sd_with(
        weight_ih_l0_reverse=np.zeros((4 * H, I + 1), np.float32)))))
    add("st_rows_not_multiple_of_4", wfile("rows.safetensors", st_bytes({
        "weight_ih_l0": np.zeros((10, I), np.float32), "weight_hh_l0": np.zeros((10, 2), np.float32)})))
    add("st_bias_wrong_len", wfile("bias_len.safetensors", st_bytes(sd_with(
        bias_ih_l1=np.zeros(4 * H + 1, np.float32)))))
    add("st_weight_hr_one_layer_only", wfile("hr_one.safetensors", st_bytes(sd_with(
        weight_hr_l0=np.zeros((2, H), np.float32)))))
    sdp, _ = base_state_dict(I=I, H=H, L=1, bidir=False, P=2)
    add("st_proj_ge_hidden", wfile("proj_ge.safetensors", st_bytes({
        "weight_ih_l0": np.zeros((4 * H, I), np.float32),
        "weight_hh_l0": np.zeros((4 * H, H), np.float32),
        "weight_hr_l0": np.zeros((H, H), np.float32)})))
    add("st_weight_1d", wfile("w1d.safetensors", st_bytes(sd_with(
        weight_ih_l0=sd["weight_ih_l0"].reshape(-1)))))
    add("st_no_lstm_tensors", wfile("nolstm.safetensors", st_bytes({
        "head.weight": np.zeros((3, 4), np.float32), "head.bias": np.zeros(3, np.float32)})))
    sd2, _ = base_state_dict(seed=8, I=I, H=H, L=1, bidir=False)
    two = prefixed("encoder.", sd) | prefixed("decoder.", sd2)
    add("st_two_lstms_no_prefix", wfile("two.safetensors", st_bytes(two)))
    add("st_unknown_prefix", wfile("pfx.safetensors", st_bytes(prefixed("encoder.rnn.", sd))),
        extra=["--prefix", "decoder.rnn"])
    add("st_prefix_partial_segment", wfile("pfx2.safetensors", st_bytes(prefixed("encoder.rnn.", sd))),
        extra=["--prefix", "encoder.rn"])
    add("st_model_missing_file", os.path.join(inp, "does_not_exist.safetensors"))
    add("st_model_is_directory", inp)

    # --- input npy
    xb = x.tobytes()
    add("npy_input_missing", inp_=os.path.join(inp, "nope.npy"))
    add("npy_bad_magic", inp_=wfile("badmagic.npy", b"\x93NUMPX" + open(good_in, "rb").read()[6:]))
    add("npy_truncated_data", inp_=wfile("trunc.npy", open(good_in, "rb").read()[:-7]))
    add("npy_truncated_header", inp_=wfile("trunc_hdr.npy", open(good_in, "rb").read()[:40]))
    add("npy_header_len_lies", inp_=wfile("hlen.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", 60000)
                                          + open(good_in, "rb").read()[10:]))
    add("npy_shape_lies_bigger", inp_=wfile("shape_big.npy", npy_bytes("<f4", (T + 4, B, I), xb)))
    add("npy_garbage_header", inp_=wfile("garbage_hdr.npy", npy_bytes("<f4", (T, B, I), xb)
                                         .replace(b"'descr'", b"'dexcr'")))
    add("npy_int32_input", inp_=wnpy("xi.npy", (x * 10).astype(np.int32)))
    add("npy_f16_input", inp_=wnpy("xh.npy", x.astype(np.float16)))
    add("npy_complex_input", inp_=wnpy("xc.npy", x.astype(np.complex64)))
    add("npy_object_pickle", inp_=wnpy("xo.npy", np.array([x, 1], dtype=object), pickle=True))
    add("npy_1d_input", inp_=wnpy("x1.npy", x.reshape(-1)))
    add("npy_4d_input", inp_=wnpy("x4.npy", x.reshape(1, T, B, I)))
    add("npy_wrong_feature_size", inp_=wnpy("xI.npy", rs.randn(T, B, I + 2).astype(np.float32)))
    add("npy_T_zero", inp_=wnpy("x0.npy", np.zeros((0, B, I), np.float32)))

    # --- states
    add("h0_wrong_shape", extra=["--h0", wnpy("h0b.npy", np.zeros((L * D, B + 1, H), np.float32)),
                                 "--c0", good_c0])
    add("c0_wrong_shape", extra=["--h0", good_h0,
                                 "--c0", wnpy("c0b.npy", np.zeros((L * D - 1, B, H), np.float32))])
    add("h0_int_dtype", extra=["--h0", wnpy("h0i.npy", np.zeros((L * D, B, H), np.int32)),
                               "--c0", good_c0])
    add("h0_truncated", extra=["--h0", wfile("h0t.npy", open(good_h0, "rb").read()[:-4]),
                               "--c0", good_c0])
    add("h0_unbatched_for_batched_input", extra=["--h0", wnpy("h0u.npy", np.zeros((L * D, H), np.float32)),
                                                 "--c0", wnpy("c0u.npy", np.zeros((L * D, H), np.float32))])
    add("h0_without_c0 (usage)", extra=["--h0", good_h0])
    add("h0_missing_file", extra=["--h0", os.path.join(inp, "nope_h0.npy"), "--c0", good_c0])

    # --- lengths
    add("lengths_zero", extra=["--lengths", wnpy("l0.npy", np.array([5, 0, 3], np.int64))])
    add("lengths_gt_T", extra=["--lengths", wnpy("l6.npy", np.array([5, 6, 3], np.int64))])
    add("lengths_wrong_count", extra=["--lengths", wnpy("lc.npy", np.array([5, 3], np.int32))])
    add("lengths_negative", extra=["--lengths", wnpy("ln.npy", np.array([5, -1, 3], np.int32))])
    add("lengths_float", extra=["--lengths", wnpy("lf.npy", np.array([5.0, 2.0, 3.0], np.float32))])
    add("lengths_2d", extra=["--lengths", wnpy("l2.npy", np.array([[5, 2, 3]], np.int64))])
    add("lengths_huge_i64", extra=["--lengths", wnpy("lh.npy", np.array([5, 2**40 + 2, 3], np.int64))])
    # PyTorch cannot pack an unbatched [T, I] input (pack_padded_sequence reads it as [T, B=I]
    # and the LSTM then fails); accepting it as a batch of one is a policy choice: advisory only
    add("lengths_unbatched_input", inp_=wnpy("xu.npy", x[:, 0, :].copy()),
        extra=["--lengths", wnpy("l1.npy", np.array([3], np.int64))], advisory=True)

    # --- outputs
    add("output_dir_missing", out_name=os.path.join("missing_dir", "y.npy"))
    add("hn_dir_missing", extra=["--hn", "OUT/nodir/hn.npy", "--cn", "OUT/cn.npy"])
    add("output_is_directory", out_name="adir", pre_dir="adir")
    add("existing_output_untouched_on_error", extra=["--lengths", wnpy("lz.npy", np.array([0, 1, 1], np.int64))],
        pre_file="y.npy")
    add("hn_dir_missing_existing_output_kept", extra=["--hn", "OUT/nodir/hn.npy"], pre_file="y.npy")
    add("threads_zero", extra=["--threads", "0"])
    add("st_trailing_garbage", wfile("trail.safetensors", good_bytes + b"\0" * 16))
    add("st_metadata_not_strings", wfile("meta.safetensors", st_bytes(
        sd, lambda h: h.__setitem__("__metadata__", {"format": 1}))))
    add("st_top_level_and_prefixed_lstm", wfile("toptwo.safetensors", st_bytes(
        dict(sd) | prefixed("enc.", sd2))))
    add("h0_f16_dtype", extra=["--h0", wnpy("h0h.npy", np.zeros((L * D, B, H), np.float16)),
                               "--c0", good_c0])
    add("lengths_batch_first_wrong_count", extra=["--batch-first", "--lengths", good_len])

    failed = passed = advisory = 0
    # sanity: the base case must succeed
    sdir = os.path.join(work, "sanity")
    os.makedirs(sdir)
    p = subprocess.run([args.bin, "run", "--model", good_model, "--input", good_in,
                        "--output", os.path.join(sdir, "y.npy"), "--h0", good_h0, "--c0", good_c0,
                        "--lengths", good_len, "--engine", args.engine],
                       capture_output=True, text=True)
    if p.returncode != 0:
        print(f"FAIL sanity: the unbroken base case fails: {p.stderr.strip()}")
        failed += 1

    for i, (name, model, inp_, extra, opt) in enumerate(cases):
        odir = os.path.join(work, f"out{i:03d}")
        os.makedirs(odir)
        out_rel = opt.get("out_name", "y.npy")
        sentinel = b"SENTINEL-do-not-touch"
        if opt.get("pre_file"):
            with open(os.path.join(odir, opt["pre_file"]), "wb") as f:
                f.write(sentinel)
        if opt.get("pre_dir"):
            os.makedirs(os.path.join(odir, opt["pre_dir"]))
        before = snapshot(odir)
        extra = [e.replace("OUT/", odir + os.sep) for e in extra]
        if "--hn" not in extra:
            extra += ["--hn", os.path.join(odir, "hn.npy"), "--cn", os.path.join(odir, "cn.npy")]
        cmd = [args.bin, "run", "--model", model, "--input", inp_,
               "--output", os.path.join(odir, out_rel), "--engine", args.engine] + extra
        try:
            p = subprocess.run(cmd, capture_output=True, timeout=60)
            rc, err = p.returncode, p.stderr.decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            rc, err = None, "TIMEOUT"
        problems = []
        if rc is None:
            problems.append("timeout (60 s)")
        elif rc == 0:
            problems.append("exit status 0")
        elif rc < 0:
            problems.append(f"killed by signal {-rc}")
        lines = err.rstrip("\n").split("\n") if err.strip() else []
        if not lines:
            problems.append("empty stderr")
        elif len(lines) != 1 or err.count("\n") > 1:
            problems.append(f"stderr has {len(err.rstrip(chr(10)).splitlines())} lines")
        if "panicked" in err or "RUST_BACKTRACE" in err:
            problems.append("panic")
        if lines and not lines[0].startswith("error: "):
            problems.append("stderr does not start with 'error: '")
        after = snapshot(odir)
        if after != before:
            problems.append(f"out dir changed: before {sorted(before)} after {sorted(after)}")
        if problems and opt.get("advisory"):
            advisory += 1
            print(f"WARN broken/{name} (advisory, not counted): rc={rc}; " + "; ".join(problems))
        elif problems:
            failed += 1
            print(f"FAIL broken/{name}: rc={rc}; " + "; ".join(problems))
            print(f"    stderr: {err.strip()[:600]!r}")
            print("    cmd: " + " ".join(cmd))
        else:
            passed += 1
            if args.verbose:
                print(f"ok   broken/{name}: rc={rc} {err.strip()}")
    if advisory:
        print(f"({advisory} advisory case(s) did not error; not counted)")
    print(f"{passed} passed, {failed} failed")
    if failed == 0 and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work dir kept: {work}")
    return 1 if failed else 0


def snapshot(d):
    res = {}
    for root, dirs, files in os.walk(d):
        for n in dirs:
            res[os.path.relpath(os.path.join(root, n), d) + "/"] = None
        for n in files:
            p = os.path.join(root, n)
            with open(p, "rb") as f:
                res[os.path.relpath(p, d)] = f.read()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=200, help="random cases per seed (default 200)")
    ap.add_argument("--seed", type=int, nargs="+", default=[0],
                    help="one or more seeds (each runs --cases cases)")
    ap.add_argument("--bin", default="target/release/lstm", help="the lstm binary")
    ap.add_argument("--engine", default=None,
                    help="the engine (default: naive; simd with --precision bf16)")
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16"],
                    help="`lstm run --precision` (bf16: against the bf16-rounded weights, see above)")
    ap.add_argument("--broken", action="store_true", help="run the broken-input suite instead")
    ap.add_argument("--exotic", action="store_true",
                    help="also draw unusual-but-valid files (Fortran/big-endian npy, int64 extras)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if not os.path.isfile(args.bin):
        sys.exit(f"error: binary {args.bin} not found (cargo build --release -p lstm-cli)")
    args.bin = os.path.abspath(args.bin)
    if args.engine is None:
        args.engine = "simd" if args.precision == "bf16" else "naive"
    sys.exit(broken_mode(args) if args.broken else random_mode(args))


if __name__ == "__main__":
    main()
