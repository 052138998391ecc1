#!/usr/bin/env python3
"""Regenerates the seed corpora in fuzz/corpus/ (small valid files, each under 4 KB).

    python3 fuzz/make_corpus.py

Needs torch, safetensors and numpy. Regression seeds (files named `regression-*`) are kept;
every other seed is rewritten.
"""
import io
import os

import numpy as np
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ST = os.path.join(HERE, "corpus", "safetensors_loader")
NPY = os.path.join(HERE, "corpus", "npy_reader")
LIMIT = 4096


def check(path):
    size = os.path.getsize(path)
    assert size < LIMIT, f"{path} is {size} bytes"


def save_lstm(name, modules, dtype=torch.float32):
    """`modules`: {prefix: nn.Module}; the state_dicts are merged under their prefixes."""
    tensors = {}
    for prefix, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[prefix + key] = value.detach().to(dtype).contiguous()
    path = os.path.join(ST, name + ".safetensors")
    save_file(tensors, path, metadata={"format": "pt"})
    check(path)


def safetensors_seeds():
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
    buf = io.BytesIO()
    if fortran:
        array = np.asfortranarray(array)
    np.lib.format.write_array(buf, array, version=version, allow_pickle=False)
    path = os.path.join(NPY, name + ".npy")
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    check(path)


def npy_seeds():
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


if __name__ == "__main__":
    os.makedirs(ST, exist_ok=True)
    os.makedirs(NPY, exist_ok=True)
    safetensors_seeds()
    npy_seeds()
