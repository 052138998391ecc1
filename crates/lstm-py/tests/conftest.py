"""Shared helpers of the lstm_kernels test suite: where the committed fixtures are, and torch
(optional: the tests that compare with torch.nn.LSTM live skip with the reason when it is not
importable; the fixture tests always run)."""

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
FIXTURES = Path(os.environ.get("LSTM_FIXTURES", REPO / "fixtures"))
ENGINES = ["simd", "naive", "parallel"]

try:
    import torch

    TORCH_MISSING = None
except Exception as e:  # ImportError, or a broken install
    torch = None
    TORCH_MISSING = (
        f"torch is not importable ({type(e).__name__}: {e}); the random-config checks "
        "against torch.nn.LSTM need it (pip install torch). The fixture tests still run."
    )

needs_torch = pytest.mark.skipif(torch is None, reason=TORCH_MISSING or "")


def pytest_report_header(config):
    if torch is None:
        return f"torch: SKIPPING the checks against torch.nn.LSTM: {TORCH_MISSING}"
    return f"torch: {torch.__version__} (checks against torch.nn.LSTM run)"


def manifest(kind):
    """The cases of fixtures/<kind>/manifest.json (kind: pytorch or pytorch-grad)."""
    path = FIXTURES / kind / "manifest.json"
    cases = json.loads(path.read_text())["cases"]
    assert len(cases) >= 20, f"{path}: expected the full fixture set, found {len(cases)} cases"
    return cases


def read_f64_safetensors(path):
    """The tensors of a safetensors file as float64 arrays, by name (a minimal reader: 8-byte
    little-endian header length, JSON header, little-endian data)."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    dtypes = {"F64": "<f8", "F32": "<f4"}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(body[start:end], dtype=dtypes[info["dtype"]]).reshape(
            info["shape"]
        ).astype(np.float64)
    return out


def assert_close(got, want, atol, what):
    """|got - want| <= atol element by element, naming the worst element."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    if got.size == 0:
        return 0.0
    err = np.abs(got - want)
    worst = int(np.argmax(err))
    assert err.flat[worst] <= atol, (
        f"{what}: element {np.unravel_index(worst, got.shape)} = {got.flat[worst]}, "
        f"reference {want.flat[worst]} (error {err.flat[worst]:.3e} > {atol:.3e})"
    )
    return float(err.flat[worst] / atol)
