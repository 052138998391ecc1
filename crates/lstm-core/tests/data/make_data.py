"""Generates the small reference files read by ../npy_numpy.rs.

Run from this directory:  python3 make_data.py
Needs numpy, torch and safetensors. The outputs are committed; rerunning gives the same bytes
(fixed seeds), except that the safetensors header order may differ between library versions.
"""

import numpy as np
import torch
from safetensors.torch import save_file

# --- .npy files written by numpy itself -------------------------------------------------------
c = np.arange(24, dtype=np.float32).reshape(2, 3, 4) * 0.5 - 3.0
np.save("c_f32.npy", c)                                   # '<f4', C order
np.save("fortran_f32.npy", np.asfortranarray(c))          # fortran_order: True
np.save("transposed_f64.npy", np.arange(6, dtype=np.float64).reshape(2, 3).T)  # a.T: Fortran
np.save("big_endian_f8.npy", (np.arange(6, dtype=np.float64) / 8).reshape(3, 2).astype(">f8"))
np.save("big_endian_i4_fortran.npy", np.asfortranarray((np.arange(12).reshape(3, 4) - 5).astype(">i4")))
np.save("lengths_i8.npy", np.array([5, 3, 1], dtype=np.int64))
np.save("lengths_i4.npy", np.array([2, 2], dtype=np.int32))
np.save("scalar_f64.npy", np.array(0.1))                  # 0-d
np.save("scalar_f32.npy", np.array(1.5, dtype=np.float32))  # 0-d, no growth padding
np.save("vector_f32.npy", np.array([1.0, -2.0, 0.25], dtype=np.float32))  # shape (3,)
np.save("empty_f32.npy", np.zeros((0, 3), dtype=np.float32))
np.save("uint16.npy", np.arange(3, dtype=np.uint16))      # unsupported dtype

# --- a state_dict saved by safetensors.torch --------------------------------------------------
torch.manual_seed(0)
lstm = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2)
head = torch.nn.Linear(4, 1)
state = {f"encoder.rnn.{k}": v.detach().contiguous() for k, v in lstm.state_dict().items()}
state.update({f"head.{k}": v.detach().contiguous() for k, v in head.state_dict().items()})
save_file(state, "lstm_bi_proj.safetensors")
np.save("weight_hr_l1_reverse.npy", lstm.weight_hr_l1_reverse.detach().numpy())
np.save("weight_ih_l0.npy", lstm.weight_ih_l0.detach().numpy())

# The same kind of model in bfloat16 and float16: values must match torch's own conversion.
torch.manual_seed(1)
small = torch.nn.LSTM(2, 3)
save_file({k: v.to(torch.bfloat16) for k, v in small.state_dict().items()}, "lstm_bf16.safetensors")
save_file({k: v.to(torch.float16) for k, v in small.state_dict().items()}, "lstm_f16.safetensors")
np.save("lstm_bf16_weight_hh_l0.npy", small.weight_hh_l0.detach().to(torch.bfloat16).float().numpy())
np.save("lstm_f16_weight_hh_l0.npy", small.weight_hh_l0.detach().to(torch.float16).float().numpy())
