#!/usr/bin/env python3
"""Expected outputs for one LSTM node of the pretrained streaming VAD model shipped in the
`silero-vad` pip package (fixtures/onnx-silero/; the model itself is not committed).

The node sits inside nested If branches and its weights are built from Constants by
Slice/Concat/Unsqueeze. This script folds those weights on its own, with `onnx.reference`
(independently of the Rust loader), puts them in a one-node LSTM model, and runs onnxruntime on
random X, initial_h, initial_c. The Rust test (crates/lstm-onnx/tests/silero.rs) loads the
package's model, picks the same node and compares; it skips when the package is absent.

    pip install silero-vad onnx onnxruntime numpy
    python3 tools/gen_silero_check.py
"""
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import silero_vad

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "onnx-silero")
MODEL = os.path.join(os.path.dirname(silero_vad.__file__), "data", "silero_vad.onnx")


def find_lstm(graph, scopes, path):
    scopes = scopes + [graph]
    for node in graph.node:
        if node.op_type == "LSTM":
            yield node, scopes, path
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from find_lstm(a.g, scopes, f"{path}/{node.name}.{a.name}")


def fold(value, scopes):
    """Evaluates `value` from the constant nodes and initializers in `scopes` (innermost last)."""
    producers, inits = {}, {}
    for g in scopes:
        for t in g.initializer:
            inits[t.name] = t
        for n in g.node:
            for o in n.output:
                producers[o] = n
    needed, order, init_used = set(), [], {}

    def visit(name):
        if name in needed or not name:
            return
        needed.add(name)
        if name in inits and name not in producers:
            init_used[name] = inits[name]
            return
        node = producers[name]
        for i in node.input:
            visit(i)
        if node not in order:
            order.append(node)

    visit(value)
    g = helper.make_graph(order, "fold", [], [helper.make_tensor_value_info(value, onnx.TensorProto.FLOAT, None)], list(init_used.values()))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 16)])
    return ReferenceEvaluator(m).run(None, {})[0]


def main():
    model = onnx.load(MODEL)
    nodes = list(find_lstm(model.graph, [], "main"))
    node, scopes, path = nodes[0]
    w, r, b = (fold(node.input[k], scopes) for k in (1, 2, 3))
    h = int(next(a.i for a in node.attribute if a.name == "hidden_size"))
    rng = np.random.default_rng(2024)
    t, batch = 6, 2
    x = rng.standard_normal((t, batch, w.shape[2])).astype(np.float32)
    h0 = (0.5 * rng.standard_normal((1, batch, h))).astype(np.float32)
    c0 = (0.5 * rng.standard_normal((1, batch, h))).astype(np.float32)
    single = helper.make_model(
        helper.make_graph(
            [helper.make_node("LSTM", ["X", "W", "R", "B", "", "H0", "C0"], ["Y", "Yh", "Yc"], hidden_size=h)],
            "silero_lstm",
            [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, list(v.shape)) for n, v in (("X", x), ("H0", h0), ("C0", c0))],
            [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in ("Y", "Yh", "Yc")],
            [numpy_helper.from_array(np.asarray(v, np.float32), n) for n, v in (("W", w), ("R", r), ("B", b))],
        ),
        opset_imports=[helper.make_opsetid("", 16)],
    )
    y, yh, yc = ort.InferenceSession(single.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x, "H0": h0, "C0": c0})
    os.makedirs(OUT, exist_ok=True)
    for name, arr in (("x", x), ("h0", h0), ("c0", c0), ("y", y), ("y_h", yh), ("y_c", yc)):
        np.save(os.path.join(OUT, f"{name}.npy"), np.asarray(arr, np.float32))
    info = {
        "package": "silero-vad",
        "version": silero_vad.__version__ if hasattr(silero_vad, "__version__") else "",
        "model": "data/silero_vad.onnx",
        "node": node.name,
        "path": path,
        "lstm_nodes": len(nodes),
        "hidden_size": h,
        "input_size": int(w.shape[2]),
    }
    with open(os.path.join(OUT, "info.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    print(info)


if __name__ == "__main__":
    main()
