#!/usr/bin/env python3
"""Regenerates the seed corpora in fuzz/corpus/ (small valid files, each under 4 KB).

    python3 fuzz/make_corpus.py                 # every corpus
    python3 fuzz/make_corpus.py differential    # only the differential target's (no torch)

The safetensors and .npy seeds need torch, safetensors and numpy. Regression seeds (files
named `regression-*`) are kept; every other seed is rewritten.
"""
import io
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ST = os.path.join(HERE, "corpus", "safetensors_loader")
NPY = os.path.join(HERE, "corpus", "npy_reader")
DIFF = os.path.join(HERE, "corpus", "differential")
LIMIT = 4096


def check(path):
    size = os.path.getsize(path)
    assert size < LIMIT, f"{path} is {size} bytes"


def save_lstm(name, modules, dtype=None):
    """`modules`: {prefix: nn.Module}; the state_dicts are merged under their prefixes."""
    import torch
    from safetensors.torch import save_file

    dtype = dtype or torch.float32
    tensors = {}
    for prefix, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[prefix + key] = value.detach().to(dtype).contiguous()
    path = os.path.join(ST, name + ".safetensors")
    save_file(tensors, path, metadata={"format": "pt"})
    check(path)


def safetensors_seeds():
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    L = torch.nn.LSTM
    save_lstm("plain", {"": L(3, 4)})
    save_lstm("two_layers", {"": L(2, 3, num_layers=2)})
    save_lstm("bidirectional", {"": L(2, 2, bidirectional=True)})
    save_lstm("proj", {"": L(2, 4, proj_size=2)})
    save_lstm("no_bias", {"": L(2, 3, num_layers=2, bias=False)})
    save_lstm("prefix", {"encoder.rnn.": L(2, 3), "encoder.linear.": torch.nn.Linear(3, 2)})
    save_lstm("f16", {"": L(3, 4)}, torch.float16)
    save_lstm("bf16", {"": L(2, 3)}, torch.bfloat16)
    save_lstm("f64", {"": L(2, 2)}, torch.float64)
    save_lstm(
        "bi_proj_nobias_2layers_f16",
        {"m.": L(2, 3, num_layers=2, bidirectional=True, proj_size=2, bias=False)},
        torch.float16,
    )
    save_lstm("two_lstms", {"a.": L(1, 1), "b.": L(1, 2)})
    save_lstm("nested", {"": L(1, 1), "sub.": L(1, 1)})
    save_lstm("tiny", {"": L(1, 1, bias=False)})
    # Odd dtypes beside the LSTM, and an unsupported dtype inside it.
    tensors = {k: v.contiguous() for k, v in L(1, 2).state_dict().items()}
    tensors["step"] = torch.tensor(3, dtype=torch.int64)
    tensors["mask"] = torch.tensor([1, 0, 1], dtype=torch.uint8)
    save_file(tensors, os.path.join(ST, "extra_tensors.safetensors"))
    tensors = {k: v.contiguous() for k, v in L(1, 1).state_dict().items()}
    tensors["weight_hh_l0"] = tensors["weight_hh_l0"].to(torch.int32)
    save_file(tensors, os.path.join(ST, "int_weight.safetensors"))


def save_npy(name, array, version=None, fortran=False):
    import numpy as np

    buf = io.BytesIO()
    if fortran:
        array = np.asfortranarray(array)
    np.lib.format.write_array(buf, array, version=version, allow_pickle=False)
    path = os.path.join(NPY, name + ".npy")
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    check(path)


def npy_seeds():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3))
    for order in "<>":
        for code in ["f4", "f8"]:
            save_npy(f"{code}_{'le' if order == '<' else 'be'}", x.astype(order + code))
        for code in ["i4", "i8"]:
            save_npy(f"{code}_{'le' if order == '<' else 'be'}", np.array([5, 3, 1], dtype=order + code))
    save_npy("f4_fortran_2d", x.astype("<f4"), fortran=True)
    save_npy("f8_be_fortran_3d", rng.standard_normal((2, 3, 4)).astype(">f8"), fortran=True)
    save_npy("i8_fortran_2d", np.arange(6, dtype="<i8").reshape(2, 3), fortran=True)
    save_npy("f4_0d", np.array(1.5, dtype="<f4"))
    save_npy("f4_empty", np.zeros((0, 3), dtype="<f4"))
    save_npy("f4_input_tbi", rng.standard_normal((3, 2, 2)).astype("<f4"))
    save_npy("i4_lengths_0d", np.array(4, dtype="<i4"))
    save_npy("i8_negative", np.array([2, -1], dtype="<i8"))
    save_npy("f4_v2", x.astype("<f4"), version=(2, 0))
    save_npy("f8_v3", x.astype("<f8"), version=(3, 0))
    # Refused dtypes, for the error paths.
    save_npy("f2_unsupported", x.astype("<f2"))
    save_npy("structured", np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]))


# The differential target's byte layout (crates/lstm-validate/src/fuzz.rs, DiffCase::decode).
SIZES = [1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33]
WEIGHT_SCALES = ["pytorch", "wider2", "wider4", "sat2", "sat5", "sat20"]
DATA_SCALES = [1.0, 0.01, 10.0, 1000.0]
SPECIALS = ["nan", "inf", "-inf", "zero"]
BROKEN = [
    "input_features", "input_rank", "no_steps", "h0_shape", "c0_shape", "length_count",
    "length_range", "lengths_unbatched", "step_bidirectional", "step_input", "step_output",
    "step_state", "config", "weight_length",
]


def diff_case(input_size=3, hidden=4, layers=1, seq_len=3, batch=2, bidirectional=False,
              bias=True, batch_first=False, unbatched=False, state=False, lengths=None,
              proj=0, weights="pytorch", forget_bias=0.0, x_scale=1.0, state_scale=1.0,
              seed=1, broken=None, values=(), special=None):
    """The bytes DiffCase::decode reads back as this call. `values`: i8 data bytes (input,
    then h0 and c0); `special`: (kind, index, in_state), which needs every value given."""
    flags = (bidirectional << 0) | ((not bias) << 1) | (batch_first << 2) | (unbatched << 3)
    flags |= (state << 4) | ((lengths is not None) << 5) | ((proj > 0) << 6)
    flags |= (broken is not None) << 7
    out = [flags, SIZES.index(input_size), SIZES.index(hidden)]
    out.append(next(b for b in range(256) if b % 3 == layers - 1 and (b >> 2) % 8 == seq_len - 1))
    if not unbatched:
        out.append(batch)
    out.append(proj - 1 if proj > 0 else 0)
    fb = [0.0, 3.0, 8.0].index(forget_bias)
    out.append(next(b for b in range(256)
                    if b % 6 == WEIGHT_SCALES.index(weights) and (b >> 3) % 3 == fb))
    ds = DATA_SCALES.index(x_scale) | (DATA_SCALES.index(state_scale) << 2)
    out.append(ds | (0x30 if special else 0))
    out += list(seed.to_bytes(8, "big"))
    out.append(BROKEN.index(broken) if broken else 0)
    if lengths is not None and not unbatched:
        assert len(lengths) == batch
        out += [seq_len - n for n in lengths]
    out += [v & 0xFF for v in values]
    if special:
        kind, at, in_state = special
        out += [SPECIALS.index(kind), at >> 8, at & 0xFF, int(in_state)]
    return bytes(out)


def n_values(input_size=3, hidden=4, layers=1, seq_len=3, batch=2, bidirectional=False,
             unbatched=False, state=False, proj=0, **_):
    b = 1 if unbatched else batch
    cells = layers * (2 if bidirectional else 1)
    h_out = proj or hidden
    n = seq_len * b * input_size
    if state:
        n += cells * b * (h_out + hidden)
    return n


def differential_seeds():
    os.makedirs(DIFF, exist_ok=True)
    for name in os.listdir(DIFF):
        if not name.startswith("regression-"):
            os.remove(os.path.join(DIFF, name))
    seeds = {
        "plain": {},
        "one_unit": dict(input_size=1, hidden=1, seq_len=1, batch=1),
        "batch_zero": dict(batch=0),
        "three_layers_no_bias": dict(layers=3, bias=False, hidden=5),
        "bidirectional_lengths": dict(bidirectional=True, batch=3, seq_len=5, lengths=[5, 2, 4]),
        "batch_first_lengths_state": dict(batch_first=True, batch=4, seq_len=6, state=True,
                                          lengths=[1, 6, 3, 6]),
        "proj_state": dict(hidden=9, proj=4, state=True, layers=2),
        "bi_proj_2layers": dict(hidden=17, proj=16, bidirectional=True, layers=2, input_size=8),
        "unbatched_state": dict(unbatched=True, state=True, seq_len=4),
        "saturating_large_input": dict(weights="sat20", x_scale=1000.0, seq_len=8),
        "forget_bias_long": dict(forget_bias=8.0, seq_len=8, hidden=16, state=True,
                                 state_scale=10.0),
        "wider_small_input": dict(weights="wider4", x_scale=0.01, hidden=31),
        "chaotic_proj": dict(input_size=33, hidden=33, proj=8, weights="sat5", forget_bias=3.0,
                             seq_len=7, unbatched=True, state=True, x_scale=0.01),
    }
    for h in [7, 8, 9, 15, 16, 17, 31, 32, 33]:
        seeds[f"hidden_{h}"] = dict(hidden=h, input_size=SIZES[h % len(SIZES)], batch=3,
                                    seed=h)
    for name, kw in seeds.items():
        write_diff(name, diff_case(**kw))
    # Input and state values from bytes, with a planted special value.
    kw = dict(state=True, seq_len=2, batch=2, hidden=8, input_size=2)
    vals = [(k * 37) % 256 - 128 for k in range(n_values(**kw))]
    for kind, in_state in [("nan", False), ("inf", False), ("-inf", True), ("zero", True),
                           ("inf", True)]:
        write_diff(f"special_{kind.replace('-', 'neg')}_{'h0' if in_state else 'x'}",
                   diff_case(values=vals, special=(kind, 5, in_state), **kw))
    write_diff("zero_state_values", diff_case(state=True, values=[0] * n_values(state=True)))
    for b in BROKEN:
        kw = dict(broken=b, state=b in ("h0_shape", "c0_shape"), unbatched=b == "lengths_unbatched")
        if b == "length_range":
            kw.update(lengths=[3, 2])
        write_diff(f"broken_{b}", diff_case(**kw))


def write_diff(name, data):
    path = os.path.join(DIFF, name)
    with open(path, "wb") as f:
        f.write(data)
    check(path)


if __name__ == "__main__":
    if sys.argv[1:] == ["differential"]:
        differential_seeds()
    else:
        os.makedirs(ST, exist_ok=True)
        os.makedirs(NPY, exist_ok=True)
        safetensors_seeds()
        npy_seeds()
        differential_seeds()
