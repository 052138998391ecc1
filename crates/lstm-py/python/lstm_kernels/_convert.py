"""Conversions to C-contiguous float32 NumPy arrays (the slow path: the native module reads a
C-contiguous float32 array directly)."""

import numpy as np

_LSTM_PARAM_STEMS = ("weight_ih_l", "weight_hh_l", "bias_ih_l", "bias_hh_l", "weight_hr_l")


def _to_numpy(obj, what):
    if isinstance(obj, np.ndarray):
        return obj
    if hasattr(obj, "detach") and hasattr(obj, "is_floating_point"):  # a torch.Tensor
        tensor = obj.detach()
        if getattr(tensor, "device", None) is not None and tensor.device.type != "cpu":
            tensor = tensor.cpu()
        if not tensor.is_floating_point():
            raise ValueError(
                f"{what}: expected a floating-point tensor, found dtype {tensor.dtype}"
            )
        try:
            return tensor.numpy()
        except TypeError:  # bfloat16 has no NumPy dtype
            return tensor.float().numpy()
    if not hasattr(obj, "__array__") and hasattr(obj, "__dlpack__"):
        return np.from_dlpack(obj)
    return np.asarray(obj)


def _is_float(value):
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return True  # a list or the like: as_float32 decides
    if isinstance(getattr(dtype, "is_floating_point", None), bool):  # a torch.dtype
        return dtype.is_floating_point
    try:
        return np.dtype(dtype).kind == "f"
    except TypeError:
        return True


def as_float32(obj, what):
    """``obj`` as a C-contiguous float32 array; ValueError naming ``what`` otherwise."""
    try:
        array = _to_numpy(obj, what)
    except Exception as e:  # ragged lists, a tensor that needs grad, a failing __array__, ...
        if isinstance(e, ValueError) and str(e).startswith(f"{what}:"):
            raise
        raise ValueError(f"{what}: cannot be read as a float array: {e}") from e
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{what}: cannot be read as a float array ({type(obj).__name__})")
    if array.dtype.kind != "f":
        raise ValueError(
            f"{what}: expected floating-point values (float32, or float64/float16 converted), "
            f"found dtype {array.dtype}"
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def float_items(state_dict):
    """The float entries of a state_dict-like mapping as ``(name, value)`` pairs; non-float
    entries (a BatchNorm's ``num_batches_tracked``) are skipped unless named like an LSTM
    parameter."""
    if not hasattr(state_dict, "items"):
        raise ValueError(
            f"state_dict: expected a mapping of names to arrays, found {type(state_dict).__name__}"
        )
    items = []
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise ValueError(f"state_dict: keys must be strings, found {name!r}")
        if _is_float(value):
            items.append((name, value))
        elif name.rsplit(".", 1)[-1].startswith(_LSTM_PARAM_STEMS):
            raise ValueError(f"{name}: expected a floating-point tensor, found dtype {value.dtype}")
    return items
