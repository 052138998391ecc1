"""Writes the small example model that README.md's `lstm run` command uses.

    pip install torch numpy safetensors
    python3 tools/make_example.py

Produces, in examples/tiny/:
  model.safetensors  state_dict of nn.LSTM(8, 16, num_layers=2), saved by safetensors.torch
  input.npy          float32 input [T=12, B=3, I=8]
  torch_output.npy   PyTorch's own float32 output, to compare with `lstm run`'s
"""
import os

import numpy as np
import torch
from safetensors.torch import save_file

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "tiny")
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
lstm = torch.nn.LSTM(8, 16, num_layers=2).eval()
x = torch.randn(12, 3, 8)
with torch.no_grad():
    y, _ = lstm(x)
save_file({k: v.contiguous() for k, v in lstm.state_dict().items()}, os.path.join(out, "model.safetensors"))
np.save(os.path.join(out, "input.npy"), x.numpy())
np.save(os.path.join(out, "torch_output.npy"), y.numpy())
print("wrote", out)
