#!/usr/bin/env python3
"""Makes the ONNX LSTM fixtures of crates/lstm-onnx/tests (fixtures/onnx/).

Each case is a folder with `model.onnx`, the inputs (`x.npy`, and `h0.npy`, `c0.npy`,
`lens.npy` when the case feeds them) and the expected outputs `y.npy`, `y_h.npy`, `y_c.npy`
(ONNX's shapes) from onnxruntime, or from `onnx.reference` where onnxruntime refuses the node
(`source` in the manifest says which). `manifest.json` lists the cases.

Weights are random (standard normal, scaled), so the four gate blocks differ and a gate-order
mistake cannot pass (ONNX's own node tests use all-equal blocks). Cases cover every LSTM
attribute and input: direction forward/reverse/bidirectional, B absent, P, clip, input_forget,
layout 0/1, sequence_lens (0 included), initial_h/initial_c (fed and constant), hidden_size
omitted, double weights, float16 weights through Cast, weights built by constant chains
(Constant, Slice, Concat, Unsqueeze, Split, Gather, Transpose, Reshape, Squeeze, Identity), LSTMs
inside If/Loop/Scan subgraphs, torch.onnx.export of multi-layer and bidirectional nn.LSTMs, and
an nn.LSTMCell written as torch's lstm_cell symbolic writes it (weights reordered by
Slice/Concat/Unsqueeze). `broken/` holds files every loader must refuse with one error.

    pip install onnx onnxruntime torch numpy
    python3 tools/gen_onnx_fixtures.py

Deterministic (fixed seeds); the files are small (a few KB each).
"""
import json
import os
import shutil
import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "onnx")
OPSET = 14
MANIFEST = []


def rng(seed):
    return np.random.default_rng(seed)


def lstm_weights(r, d, h, i, scale=0.5, bias=True, peep=False):
    w = (scale * r.standard_normal((d, 4 * h, i))).astype(np.float32)
    rr = (scale * r.standard_normal((d, 4 * h, h))).astype(np.float32)
    b = (scale * r.standard_normal((d, 8 * h))).astype(np.float32) if bias else None
    p = (scale * r.standard_normal((d, 3 * h))).astype(np.float32) if peep else None
    return w, rr, b, p


def run_expected(model, feeds):
    """onnxruntime, or onnx.reference when onnxruntime refuses the model."""
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, feeds), "onnxruntime"
    except Exception as e:  # noqa: BLE001 - any refusal falls back to the reference
        from onnx.reference import ReferenceEvaluator

        print(f"  onnxruntime refused ({str(e).splitlines()[0][:100]}); using onnx.reference")
        return ReferenceEvaluator(model).run(None, feeds), "onnx.reference"


def save_case(name, model, feeds, inputs, node, note, outputs=("y", "y_h", "y_c"), expected=None):
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    # (no onnx.checker: outputs are declared without shapes, which onnxruntime accepts)
    onnx.save(model, os.path.join(folder, "model.onnx"))
    results, source = expected if expected is not None else run_expected(model, feeds)
    for key, arr in inputs.items():
        np.save(os.path.join(folder, f"{key}.npy"), arr)
    for key, arr in zip(outputs, results):
        np.save(os.path.join(folder, f"{key}.npy"), np.asarray(arr, dtype=np.float32))
    MANIFEST.append(
        {
            "name": name,
            "node": node,
            "inputs": sorted(inputs),
            "source": source,
            "note": note,
        }
    )
    print(f"{name}: {source}")


def single_node_case(
    name,
    seed,
    t=5,
    b=3,
    i=4,
    h=6,
    direction="forward",
    bias=True,
    peep=False,
    clip=None,
    input_forget=0,
    layout=0,
    lens=None,
    feed_state=False,
    const_state=False,
    hidden_attr=True,
    dtype=np.float32,
    scale=0.5,
    x_scale=1.0,
):
    r = rng(seed)
    d = 2 if direction == "bidirectional" else 1
    w, rr, bb, p = lstm_weights(r, d, h, i, scale, bias, peep)
    onnx_dtype = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inits = [numpy_helper.from_array(w.astype(dtype), "W"), numpy_helper.from_array(rr.astype(dtype), "R")]
    names = ["X", "W", "R", "", "", "", "", ""]
    graph_inputs = []
    feeds, inputs = {}, {}
    x_shape = (b, t, i) if layout else (t, b, i)
    x = (x_scale * r.standard_normal(x_shape)).astype(dtype)
    graph_inputs.append(helper.make_tensor_value_info("X", onnx_dtype, list(x_shape)))
    feeds["X"], inputs["x"] = x, x.astype(np.float32)
    if bias:
        inits.append(numpy_helper.from_array(bb.astype(dtype), "B"))
        names[3] = "B"
    if lens is not None:
        names[4] = "sequence_lens"
        lens_arr = np.array(lens, dtype=np.int32)
        graph_inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [b]))
        feeds["sequence_lens"], inputs["lens"] = lens_arr, lens_arr
    s_shape = (b, d, h) if layout else (d, b, h)
    if feed_state or const_state:
        h0 = r.standard_normal(s_shape).astype(dtype)
        c0 = r.standard_normal(s_shape).astype(dtype)
        names[5], names[6] = "initial_h", "initial_c"
        if feed_state:
            for n, v in (("initial_h", h0), ("initial_c", c0)):
                graph_inputs.append(helper.make_tensor_value_info(n, onnx_dtype, list(s_shape)))
                feeds[n] = v
            inputs["h0"], inputs["c0"] = h0.astype(np.float32), c0.astype(np.float32)
        else:
            inits += [numpy_helper.from_array(h0, "initial_h"), numpy_helper.from_array(c0, "initial_c")]
    if peep:
        inits.append(numpy_helper.from_array(p.astype(dtype), "P"))
        names[7] = "P"
    while names and names[-1] == "":
        names.pop()
    attrs = {"direction": direction}
    if hidden_attr:
        attrs["hidden_size"] = h
    if clip is not None:
        attrs["clip"] = clip
    if input_forget:
        attrs["input_forget"] = input_forget
    if layout:
        attrs["layout"] = layout
    node = helper.make_node("LSTM", names, ["Y", "Y_h", "Y_c"], name="lstm", **attrs)
    outs = [helper.make_tensor_value_info(n, onnx_dtype, None) for n in ("Y", "Y_h", "Y_c")]
    graph = helper.make_graph([node], name, graph_inputs, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    expected = None
    if layout:
        # onnxruntime refuses layout=1 and onnx.reference ignores clip, input_forget and
        # sequence_lens: run the layout-0 twin in onnxruntime on transposed data instead.
        twin_attrs = {k: v for k, v in attrs.items() if k != "layout"}
        twin_node = helper.make_node("LSTM", names, ["Y", "Y_h", "Y_c"], name="lstm", **twin_attrs)
        twin_inputs = []
        for vi in graph_inputs:
            dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
            if vi.name in ("X", "initial_h", "initial_c"):
                dims[0], dims[1] = dims[1], dims[0]
            twin_inputs.append(helper.make_tensor_value_info(vi.name, vi.type.tensor_type.elem_type, dims))
        twin = helper.make_model(
            helper.make_graph([twin_node], name + "_twin", twin_inputs, outs, inits),
            opset_imports=[helper.make_opsetid("", OPSET)],
        )
        twin_feeds = {k: (np.ascontiguousarray(v.swapaxes(0, 1)) if k in ("X", "initial_h", "initial_c") else v) for k, v in feeds.items()}
        (y, yh, yc), src = run_expected(twin, twin_feeds)
        expected = ([y.transpose(2, 0, 1, 3), yh.swapaxes(0, 1), yc.swapaxes(0, 1)], src + " (layout-0 twin)")
    save_case(name, model, feeds, inputs, "lstm", f"single node: {attrs}", expected=expected)


def chained_weights_case():
    """W, R, B built from Constant nodes through shape ops, some weights float16 + Cast."""
    r = rng(40)
    t, b, i, h = 4, 2, 3, 5
    w, rr, bb, _ = lstm_weights(r, 1, h, i)
    nodes, inits = [], []

    def const(name, arr):
        nodes.append(helper.make_node("Constant", [], [name], name=f"const_{name}", value=numpy_helper.from_array(arr, name)))

    def ints(name, vals):
        const(name, np.array(vals, dtype=np.int64))

    # W: stored as [4h, i] transposed to [i, 4h] (Constant), Transpose back, Split into the four
    # gate blocks, Concat them in ONNX order again, Unsqueeze to [1, 4h, i].
    const("w_t", np.ascontiguousarray(w[0].T))
    nodes.append(helper.make_node("Transpose", ["w_t"], ["w_2d"], perm=[1, 0]))
    ints("split_sizes", [h, h, h, h])
    nodes.append(helper.make_node("Split", ["w_2d", "split_sizes"], ["wi", "wo", "wf", "wc"], axis=0))
    nodes.append(helper.make_node("Concat", ["wi", "wo", "wf", "wc"], ["w_cat"], axis=0))
    ints("axis0", [0])
    nodes.append(helper.make_node("Unsqueeze", ["w_cat", "axis0"], ["W"]))
    # R: a float16 initializer of shape [2, 4h, h] whose row 1 is used: Gather index 1
    # (keeping the axis via a 1-element index), Cast to float, Identity.
    r_both = np.stack([r.standard_normal((4 * h, h)).astype(np.float16), rr[0].astype(np.float16)])
    inits.append(numpy_helper.from_array(r_both, "r_both"))
    ints("one", [1])
    nodes.append(helper.make_node("Gather", ["r_both", "one"], ["r_g"], axis=0))
    nodes.append(helper.make_node("Cast", ["r_g"], ["r_f"], to=TensorProto.FLOAT))
    nodes.append(helper.make_node("Identity", ["r_f"], ["R"]))
    # B: [8h] flat Constant, Slice into halves (opset 10+ Slice with inputs), Concat, Reshape
    # to [1, 1, 8h], Squeeze axis 0.
    const("b_flat", bb[0])
    ints("s0", [0]), ints("s1", [4 * h]), ints("s2", [8 * h])
    nodes.append(helper.make_node("Slice", ["b_flat", "s0", "s1"], ["b_w"]))
    nodes.append(helper.make_node("Slice", ["b_flat", "s1", "s2"], ["b_r"]))
    nodes.append(helper.make_node("Concat", ["b_w", "b_r"], ["b_cat"], axis=0))
    ints("shape118", [1, 1, 8 * h])
    nodes.append(helper.make_node("Reshape", ["b_cat", "shape118"], ["b_3d"]))
    nodes.append(helper.make_node("Squeeze", ["b_3d", "axis0"], ["B"]))
    nodes.append(helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y", "Y_h", "Y_c"], name="lstm", hidden_size=h))
    x = r.standard_normal((t, b, i)).astype(np.float32)
    graph = helper.make_graph(
        nodes,
        "chained",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [t, b, i])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Y_h", "Y_c")],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    save_case("constant_chains", model, {"X": x}, {"x": x}, "lstm", "W, R, B from Constant/shape-op chains, R float16 + Cast")


def lstm_cell_case():
    """An nn.LSTMCell written as torch's lstm_cell symbolic writes it, nested in two If
    branches with Constant weights (the pattern of streaming voice-activity detectors)."""
    import torch

    torch.manual_seed(7)
    i, h, b = 4, 6, 2
    cell = torch.nn.LSTMCell(i, h).eval()
    sd = {k: v.detach().numpy() for k, v in cell.state_dict().items()}
    x = torch.randn(b, i)
    h0, c0 = torch.randn(b, h), torch.randn(b, h)
    with torch.no_grad():
        h1, c1 = cell(x, (h0, c0))

    def reform(prefix, w, nodes):
        # PyTorch i, f, g, o → ONNX i, o, f, c by Slice + Concat, as torch's reform_weights.
        def sl(tag, a, z):
            for n, v in (("s", a), ("e", z)):
                nodes.append(helper.make_node("Constant", [], [f"{prefix}_{tag}_{n}"], value=numpy_helper.from_array(np.array([v], np.int64))))
            nodes.append(helper.make_node("Slice", [w, f"{prefix}_{tag}_s", f"{prefix}_{tag}_e"], [f"{prefix}_{tag}"]))
            return f"{prefix}_{tag}"

        parts = [sl("i", 0, h), sl("o", 3 * h, 4 * h), sl("fc", h, 3 * h)]
        nodes.append(helper.make_node("Concat", parts, [f"{prefix}_re"], axis=0))
        return f"{prefix}_re"

    def branch(depth):
        nodes = []
        for key in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            nodes.append(helper.make_node("Constant", [], [f"{key}_{depth}"], value=numpy_helper.from_array(sd[key], f"{key}_{depth}")))
        wi = reform(f"wi{depth}", f"weight_ih_{depth}", nodes)
        wh = reform(f"wh{depth}", f"weight_hh_{depth}", nodes)
        bi = reform(f"bi{depth}", f"bias_ih_{depth}", nodes)
        bh = reform(f"bh{depth}", f"bias_hh_{depth}", nodes)
        nodes.append(helper.make_node("Concat", [bi, bh], [f"b_{depth}"], axis=0))
        nodes.append(helper.make_node("Constant", [], [f"ax_{depth}"], value=numpy_helper.from_array(np.array([0], np.int64))))
        for src, dst in ((wi, "W"), (wh, "R"), (f"b_{depth}", "B"), ("x", "X"), ("h", "H0"), ("c", "C0")):
            nodes.append(helper.make_node("Unsqueeze", [src, f"ax_{depth}"], [f"{dst}_{depth}"]))
        nodes.append(
            helper.make_node(
                "LSTM",
                [f"X_{depth}", f"W_{depth}", f"R_{depth}", f"B_{depth}", "", f"H0_{depth}", f"C0_{depth}"],
                [f"Y_{depth}", f"Yh_{depth}", f"Yc_{depth}"],
                name=f"decoder/rnn/LSTM_{depth}",
                hidden_size=h,
            )
        )
        nodes.append(helper.make_node("Squeeze", [f"Yh_{depth}", f"ax_{depth}"], [f"hout_{depth}"]))
        return nodes, f"hout_{depth}"

    inner_nodes, inner_out = branch("inner")
    inner_then = helper.make_graph(inner_nodes, "inner_then", [], [helper.make_tensor_value_info(inner_out, TensorProto.FLOAT, None)])
    inner_else = helper.make_graph(
        [helper.make_node("Identity", ["h"], ["h_copy"])], "inner_else", [], [helper.make_tensor_value_info("h_copy", TensorProto.FLOAT, None)]
    )
    outer_then = helper.make_graph(
        [helper.make_node("If", ["flag"], ["inner_res"], name="If_1", then_branch=inner_then, else_branch=inner_else)],
        "outer_then",
        [],
        [helper.make_tensor_value_info("inner_res", TensorProto.FLOAT, None)],
    )
    outer_else = helper.make_graph(
        [helper.make_node("Identity", ["h"], ["h_copy2"])], "outer_else", [], [helper.make_tensor_value_info("h_copy2", TensorProto.FLOAT, None)]
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["out"], name="If_0", then_branch=outer_then, else_branch=outer_else)],
        "lstm_cell",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [b, i]),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, [b, h]),
            helper.make_tensor_value_info("c", TensorProto.FLOAT, [b, h]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    feeds = {"x": x.numpy(), "h": h0.numpy(), "c": c0.numpy(), "flag": np.array(True)}
    folder = os.path.join(OUT, "lstm_cell_nested_if")
    os.makedirs(folder, exist_ok=True)
    # (no onnx.checker: outputs are declared without shapes, which onnxruntime accepts)
    onnx.save(model, os.path.join(folder, "model.onnx"))
    import onnxruntime as ort

    (ort_h,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert np.allclose(ort_h, h1.numpy(), atol=1e-5), "onnxruntime and nn.LSTMCell disagree"
    # As an LSTM node over one step: X [1, B, I], states [1, B, H].
    np.save(os.path.join(folder, "x.npy"), x.numpy()[None])
    np.save(os.path.join(folder, "h0.npy"), h0.numpy()[None])
    np.save(os.path.join(folder, "c0.npy"), c0.numpy()[None])
    np.save(os.path.join(folder, "y.npy"), h1.numpy()[None, None])
    np.save(os.path.join(folder, "y_h.npy"), np.asarray(ort_h, np.float32)[None])
    np.save(os.path.join(folder, "y_c.npy"), c1.numpy()[None])
    # The same cell's state_dict, for the nn.LSTMCell state_dict loader.
    from safetensors.numpy import save_file

    save_file({f"cell.{k}": v for k, v in sd.items()}, os.path.join(folder, "cell.safetensors"))
    MANIFEST.append(
        {
            "name": "lstm_cell_nested_if",
            "node": "decoder/rnn/LSTM_inner",
            "inputs": ["c0", "h0", "x"],
            "source": "onnxruntime",
            "note": "nn.LSTMCell as torch's lstm_cell symbolic writes it, inside If/If, Constant weights; y = LSTMCell h1, y_c = c1 (torch)",
        }
    )
    print("lstm_cell_nested_if: onnxruntime (checked against nn.LSTMCell)")


def subgraph_case(kind):
    """An LSTM inside a Loop body (one iteration) or a Scan body, weights from the outer graph."""
    r = rng(50 if kind == "Loop" else 51)
    t, b, i, h = 3, 2, 3, 4
    w, rr, bb, _ = lstm_weights(r, 1, h, i)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(rr, "R"), numpy_helper.from_array(bb, "B")]
    x = r.standard_normal((t, b, i)).astype(np.float32)
    lstm = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y_in", "Yh_in", "Yc_in"], name="inner_lstm", hidden_size=h)
    if kind == "Loop":
        body = helper.make_graph(
            [lstm, helper.make_node("Identity", ["cond_in"], ["cond_out"])],
            "body",
            [
                helper.make_tensor_value_info("iter", TensorProto.INT64, []),
                helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            ],
            [
                helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                helper.make_tensor_value_info("Y_in", TensorProto.FLOAT, None),
                helper.make_tensor_value_info("Yh_in", TensorProto.FLOAT, None),
                helper.make_tensor_value_info("Yc_in", TensorProto.FLOAT, None),
            ],
        )
        inits += [numpy_helper.from_array(np.array(1, np.int64), "trip"), numpy_helper.from_array(np.array(True), "cond")]
        loop = helper.make_node("Loop", ["trip", "cond"], ["Y_all", "Yh_all", "Yc_all"], name="Loop_0", body=body)
        nodes = [loop]
        ax = numpy_helper.from_array(np.array([0], np.int64), "ax")
        inits.append(ax)
        nodes += [helper.make_node("Squeeze", [f"{n}_all", "ax"], [n]) for n in ("Y", "Yh", "Yc")]
        outs = ("Y", "Yh", "Yc")
    else:
        body = helper.make_graph(
            [lstm, helper.make_node("Identity", ["s_in"], ["s_out"])],
            "body",
            [helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [1]), helper.make_tensor_value_info("unused", TensorProto.FLOAT, [1])],
            [
                helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [1]),
                helper.make_tensor_value_info("Y_in", TensorProto.FLOAT, None),
                helper.make_tensor_value_info("Yh_in", TensorProto.FLOAT, None),
                helper.make_tensor_value_info("Yc_in", TensorProto.FLOAT, None),
            ],
        )
        inits += [numpy_helper.from_array(np.zeros(1, np.float32), "s0"), numpy_helper.from_array(np.zeros((1, 1), np.float32), "scan_in")]
        scan = helper.make_node("Scan", ["s0", "scan_in"], ["s_final", "Y_all", "Yh_all", "Yc_all"], name="Scan_0", body=body, num_scan_inputs=1)
        ax = numpy_helper.from_array(np.array([0], np.int64), "ax")
        inits.append(ax)
        nodes = [scan] + [helper.make_node("Squeeze", [f"{n}_all", "ax"], [n]) for n in ("Y", "Yh", "Yc")]
        outs = ("Y", "Yh", "Yc")
    graph = helper.make_graph(
        nodes,
        kind,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [t, b, i])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outs],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    save_case(f"inside_{kind.lower()}", model, {"X": x}, {"x": x}, "inner_lstm", f"LSTM inside a {kind} body, weights from the outer graph")


def torch_export_case(name, num_layers, bidirectional, batch_first=False, seed=60):
    import torch

    torch.manual_seed(seed)
    i, h, t, b = 3, 5, 6, 2
    m = torch.nn.LSTM(i, h, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first).eval()
    x = torch.randn((b, t, i) if batch_first else (t, b, i))
    d = 2 if bidirectional else 1
    h0 = torch.randn(num_layers * d, b, h)
    c0 = torch.randn(num_layers * d, b, h)
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "model.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x, (h0, c0)), path, dynamo=False, input_names=["x", "h0", "c0"], output_names=["y", "hn", "cn"], opset_version=OPSET)
    import onnxruntime as ort

    model = onnx.load(path)
    y, hn, cn = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy(), "h0": h0.numpy(), "c0": c0.numpy()})
    with torch.no_grad():
        ty, (thn, tcn) = m(x, (h0, c0))
    assert np.allclose(y, ty.numpy(), atol=1e-5)
    first = next(n.name for n in model.graph.node if n.op_type == "LSTM")
    # Expected in ONNX's layout of the last node: Y [T, D, B, H] (layout 0); torch gives
    # [T, B, D*H] ([B, T, D*H] batch_first; the exporter transposes, the nodes keep layout 0).
    ty = ty.numpy()
    if batch_first:
        ty = ty.transpose(1, 0, 2)
    y_onnx = ty.reshape(t, b, d, h).transpose(0, 2, 1, 3)
    x_np = x.numpy().transpose(1, 0, 2) if batch_first else x.numpy()
    np.save(os.path.join(folder, "x.npy"), np.ascontiguousarray(x_np))
    np.save(os.path.join(folder, "h0.npy"), h0.numpy())
    np.save(os.path.join(folder, "c0.npy"), c0.numpy())
    np.save(os.path.join(folder, "y.npy"), np.ascontiguousarray(y_onnx))
    np.save(os.path.join(folder, "y_h.npy"), np.asarray(hn, np.float32))
    np.save(os.path.join(folder, "y_c.npy"), np.asarray(cn, np.float32))
    MANIFEST.append(
        {
            "name": name,
            "node": first,
            "inputs": ["c0", "h0", "x"],
            "source": "onnxruntime",
            "layers": num_layers,
            "note": f"torch.onnx.export of nn.LSTM(num_layers={num_layers}, bidirectional={bidirectional}, batch_first={batch_first}); the chain loads as one model",
        }
    )
    print(f"{name}: onnxruntime = torch")


def broken_files():
    folder = os.path.join(OUT, "broken")
    os.makedirs(folder, exist_ok=True)
    good = onnx.load(os.path.join(OUT, "forward", "model.onnx"))
    data = good.SerializeToString()
    with open(os.path.join(folder, "truncated.onnx"), "wb") as f:
        f.write(data[: len(data) // 2])

    def variant(name, edit):
        m = onnx.ModelProto()
        m.CopyFrom(good)
        edit(m)
        with open(os.path.join(folder, f"{name}.onnx"), "wb") as f:
            f.write(m.SerializeToString())

    def lying(m):
        w = next(t for t in m.graph.initializer if t.name == "W")
        w.dims[2] = 400  # the raw data holds far fewer elements

    def huge(m):
        w = next(t for t in m.graph.initializer if t.name == "W")
        w.dims[1] = 1 << 40

    def missing(m):
        keep = [t for t in m.graph.initializer if t.name != "R"]
        del m.graph.initializer[:]
        m.graph.initializer.extend(keep)

    def set_attr(name, value):
        def edit(m):
            m.graph.node[0].attribute.append(helper.make_attribute(name, value))

        return edit

    def dynamic(m):
        # Its W, for `lstm run --bind W=dynamic_weights_W.npy` (ONNX's node tests feed weights so).
        w = next(t for t in m.graph.initializer if t.name == "W")
        np.save(os.path.join(folder, "dynamic_weights_W.npy"), numpy_helper.to_array(w))
        keep = [t for t in m.graph.initializer if t.name != "W"]
        del m.graph.initializer[:]
        m.graph.initializer.extend(keep)
        m.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, [1, 24, 4]))

    def int_weights(m):
        w = next(t for t in m.graph.initializer if t.name == "W")
        arr = numpy_helper.to_array(w).astype(np.int32)
        w.CopyFrom(numpy_helper.from_array(arr, "W"))

    def cycle(m):
        keep = [t for t in m.graph.initializer if t.name != "W"]
        del m.graph.initializer[:]
        m.graph.initializer.extend(keep)
        m.graph.node.extend(
            [helper.make_node("Identity", ["W2"], ["W"], name="a"), helper.make_node("Identity", ["W"], ["W2"], name="b")]
        )

    variant("lying_size", lying)
    variant("huge_dims", huge)
    variant("missing_initializer", missing)
    variant("activations", set_attr("activations", ["Relu", "Tanh", "Tanh"]))
    variant("activation_alpha", set_attr("activation_alpha", [0.5]))
    variant("dynamic_weights", dynamic)
    variant("int_weights", int_weights)
    variant("cycle", cycle)
    with open(os.path.join(folder, "not_onnx.onnx"), "wb") as f:
        f.write(b"\xff\xff\xff\xff garbage that is no protobuf")
    print("broken/: " + ", ".join(sorted(os.listdir(folder))))


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    single_node_case("forward", 1)
    single_node_case("reverse", 2, direction="reverse")
    single_node_case("bidirectional", 3, direction="bidirectional")
    single_node_case("no_bias", 4, bias=False)
    single_node_case("peepholes", 5, peep=True)
    single_node_case("peepholes_bidirectional", 6, peep=True, direction="bidirectional")
    single_node_case("clip", 7, clip=0.7, scale=1.5, x_scale=2.0)
    single_node_case("input_forget", 8, input_forget=1)
    single_node_case("layout1", 9, layout=1, direction="bidirectional", feed_state=True)
    single_node_case("sequence_lens", 10, direction="bidirectional", lens=[5, 0, 2], feed_state=True)
    single_node_case("const_state", 11, const_state=True, direction="reverse")
    single_node_case("no_hidden_size_attr", 12, hidden_attr=False)
    single_node_case("double", 13, dtype=np.float64, direction="bidirectional")
    single_node_case("one_unit", 14, h=1, i=1, t=7, b=1)
    single_node_case(
        "all_options",
        15,
        direction="bidirectional",
        peep=True,
        clip=1.1,
        input_forget=1,
        lens=[4, 2, 0],
        feed_state=True,
        scale=1.2,
    )
    single_node_case("all_options_reverse_layout1", 16, direction="reverse", peep=True, clip=0.9, layout=1, lens=[5, 3, 1], feed_state=True, scale=1.2)
    chained_weights_case()
    lstm_cell_case()
    subgraph_case("Loop")
    subgraph_case("Scan")
    torch_export_case("torch_2layer", 2, False)
    torch_export_case("torch_2layer_bidirectional", 2, True, seed=61)
    torch_export_case("torch_3layer_bidirectional_batch_first", 3, True, batch_first=True, seed=62)
    broken_files()
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(MANIFEST, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
