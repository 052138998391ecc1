"""The README examples run as written (they build the model from torch.nn.LSTM, so they need
torch; skipped with the reason otherwise)."""

import re

import pytest

from conftest import REPO, needs_torch


def first_python_block(path, after):
    text = path.read_text()
    text = text[text.index(after):]
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


@needs_torch
@pytest.mark.parametrize(
    "path, after",
    [(REPO / "README.md", "## Use it from Python"), (REPO / "crates/lstm-py/README.md", "# lstm-kernels for Python")],
)
def test_readme_example_runs(path, after):
    scope = {}
    exec(compile(first_python_block(path, after), str(path), "exec"), scope)
    assert scope["output"].shape[0] == 16
