"""Run PyTorch ``nn.LSTM`` models on the CPU with the lstm-kernels engines.

>>> import numpy as np, lstm_kernels
>>> model = lstm_kernels.load("model.safetensors")          # doctest: +SKIP
>>> output, (h_n, c_n) = model(np.zeros((10, 4, model.input_size), np.float32))  # doctest: +SKIP

- :func:`load` reads a safetensors ``state_dict``; :meth:`LSTM.from_torch` takes an
  ``nn.LSTM`` (or ``nn.LSTMCell``, or a module holding one); :meth:`LSTM.from_state_dict` a
  mapping of names to arrays.
- ``model(x, hx=None, lengths=None, total_length=None)`` is ``nn.LSTM``'s forward in eval mode,
  with its shapes; ``model.zero_state`` / ``model.step`` stream one time step at a time;
  ``model.grad`` is the backward pass (gradients keyed by state_dict names).
- ``precision="bf16"`` (every constructor) runs bfloat16 weights and product operands with
  f32 accumulation and state (forward and ``step``; ``grad`` needs the default ``"f32"``).
- Every computation releases the GIL, and one model may be shared by many threads.
- Errors are ``ValueError`` (shapes, arguments, invalid model files), ``FileNotFoundError`` /
  ``OSError`` (files) or ``MemoryError``, with the library's one-line message.

torch is never imported by this package; ``from_torch`` only reads the module it is given.
"""

from ._native import LSTM, LSTMState, __version__, backends, load

__all__ = ["LSTM", "LSTMState", "load", "backends", "__version__"]
