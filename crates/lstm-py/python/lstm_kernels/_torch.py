"""Finding the LSTM in a PyTorch module, without importing torch (the module is the caller's)."""


def _kind(module):
    name = type(module).__name__
    if name == "LSTMCell" or (
        getattr(module, "hidden_size", None) is not None
        and hasattr(module, "weight_ih")
        and not hasattr(module, "weight_ih_l0")
        and name.endswith("LSTMCell")
    ):
        return "cell"
    if getattr(module, "mode", None) == "LSTM" and hasattr(module, "weight_ih_l0"):
        return "lstm"
    return None


def lstm_state_dict(module):
    """``(state_dict, batch_first)`` of the nn.LSTM (or nn.LSTMCell, as a one-layer LSTM) that
    ``module`` is or holds; ValueError when it holds none or several."""
    if not hasattr(module, "state_dict"):
        raise ValueError(
            f"from_torch: expected a torch.nn.Module, found {type(module).__name__}"
        )
    found = []
    if _kind(module) is not None:
        found = [("", module)]
    elif hasattr(module, "named_modules"):
        found = [(n, m) for n, m in module.named_modules() if _kind(m) is not None]
    if not found:
        raise ValueError(
            f"from_torch: no nn.LSTM or nn.LSTMCell in {type(module).__name__}"
        )
    if len(found) > 1:
        names = [n or "(top level)" for n, _ in found]
        raise ValueError(
            f"from_torch: several LSTMs in {type(module).__name__} ({names}); pass the one to run"
        )
    _, lstm = found[0]
    state = {k: v.detach() for k, v in lstm.state_dict().items()}
    if _kind(lstm) == "cell":
        # nn.LSTMCell's parameters are those of layer 0 of a one-layer nn.LSTM.
        state = {f"{k}_l0": v for k, v in state.items()}
        return state, False
    return state, bool(getattr(lstm, "batch_first", False))
