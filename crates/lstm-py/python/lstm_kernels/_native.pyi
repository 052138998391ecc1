"""Type stubs of the native module (re-exported by ``lstm_kernels``)."""

import os
from typing import Any, Dict, Literal, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

# A NumPy float array, a CPU torch tensor, or anything with __array__ / __dlpack__.
ArrayLike = Any
Lengths = Union[Sequence[int], npt.NDArray[np.integer], Any]
F32Array = npt.NDArray[np.float32]
PathLike = Union[str, "os.PathLike[str]"]
# The precision of the weights and products: "f32", or "bf16" (bfloat16 weights and product
# operands, f32 accumulation, state and activations; forward and step only).
Precision = Literal["f32", "bf16"]

class LSTMState:
    """The ``(h, c)`` of a stream, advanced in place by :meth:`LSTM.step`."""

    def __init__(self, h: ArrayLike, c: ArrayLike) -> None: ...
    @property
    def h(self) -> F32Array: ...
    @h.setter
    def h(self, value: ArrayLike) -> None: ...
    @property
    def c(self) -> F32Array: ...
    @c.setter
    def c(self, value: ArrayLike) -> None: ...
    @property
    def batch(self) -> Optional[int]: ...
    def reset(self) -> None: ...
    def copy(self) -> "LSTMState": ...
    def as_tuple(self) -> Tuple[F32Array, F32Array]: ...

class LSTM:
    """An ``nn.LSTM`` (eval mode) run by the lstm-kernels engines."""

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, ArrayLike],
        *,
        prefix: Optional[str] = None,
        batch_first: bool = False,
        engine: str = "simd",
        threads: Optional[int] = None,
        backend: Optional[str] = None,
        precision: Precision = "f32",
    ) -> "LSTM": ...
    @classmethod
    def from_torch(
        cls,
        module: Any,
        *,
        engine: str = "simd",
        threads: Optional[int] = None,
        backend: Optional[str] = None,
        precision: Precision = "f32",
    ) -> "LSTM": ...
    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        prefix: Optional[str] = None,
        batch_first: bool = False,
        engine: str = "simd",
        threads: Optional[int] = None,
        backend: Optional[str] = None,
        precision: Precision = "f32",
    ) -> "LSTM": ...
    def __call__(
        self,
        input: ArrayLike,
        hx: Union[Tuple[ArrayLike, ArrayLike], LSTMState, None] = None,
        lengths: Optional[Lengths] = None,
        total_length: Optional[int] = None,
    ) -> Tuple[F32Array, Tuple[F32Array, F32Array]]: ...
    def forward(
        self,
        input: ArrayLike,
        hx: Union[Tuple[ArrayLike, ArrayLike], LSTMState, None] = None,
        lengths: Optional[Lengths] = None,
        total_length: Optional[int] = None,
    ) -> Tuple[F32Array, Tuple[F32Array, F32Array]]: ...
    def zero_state(self, batch: Optional[int] = None) -> LSTMState: ...
    def step(
        self, x_t: ArrayLike, state: LSTMState, out: Optional[F32Array] = None
    ) -> F32Array: ...
    def grad(
        self,
        input: ArrayLike,
        grad_output: ArrayLike,
        hx: Union[Tuple[ArrayLike, ArrayLike], LSTMState, None] = None,
        lengths: Optional[Lengths] = None,
        grad_h_n: Optional[ArrayLike] = None,
        grad_c_n: Optional[ArrayLike] = None,
        prefix: str = "",
    ) -> Dict[str, F32Array]: ...
    def state_dict(self, prefix: str = "") -> Dict[str, F32Array]: ...
    def to_bytes(self, prefix: str = "") -> bytes: ...
    def save(self, path: PathLike, prefix: str = "") -> None: ...
    @property
    def input_size(self) -> int: ...
    @property
    def hidden_size(self) -> int: ...
    @property
    def num_layers(self) -> int: ...
    @property
    def bias(self) -> bool: ...
    @property
    def batch_first(self) -> bool: ...
    @property
    def bidirectional(self) -> bool: ...
    @property
    def proj_size(self) -> int: ...
    @property
    def engine(self) -> str: ...
    @property
    def backend(self) -> Optional[str]: ...
    @property
    def threads(self) -> int: ...
    @property
    def precision(self) -> Precision: ...
    @property
    def prefix(self) -> str: ...

def load(
    path: PathLike,
    *,
    prefix: Optional[str] = None,
    batch_first: bool = False,
    engine: str = "simd",
    threads: Optional[int] = None,
    backend: Optional[str] = None,
    precision: Precision = "f32",
) -> LSTM: ...
def backends(precision: Precision = "f32") -> list[str]: ...
