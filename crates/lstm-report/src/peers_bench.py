"""Times the peers a user would run instead of lstm-kernels, on the shapes of a report:
PyTorch (`nn.LSTM(...).eval()` under `torch.inference_mode()`, its default oneDNN path; and
a training step `y = m(x); y.backward(g)` in train mode) and onnxruntime
(CPUExecutionProvider, one ONNX LSTM node per layer; no projection), at a thread count; and
PyTorch's bf16 path (`model.bfloat16()` on bf16 input, forward) at precision "bf16".

`lstm report` runs this script (from the lstm-report crate, `python3 -c SCRIPT --serve`) and
asks it for one measurement at a time, interleaved with its own, so that a busy neighbour
slows both sides alike. It can also be run by hand to check the numbers:

    python3 crates/lstm-report/src/peers_bench.py --probe
    python3 crates/lstm-report/src/peers_bench.py --threads 1,2 --shapes '[{"name":
        "batch-mid", "seq_len": 100, "batch": 32, "input_size": 256, "hidden_size": 256}]'

Output: JSON lines on stdout. The first is {"event": "versions", ...}. With --serve, each
request line on stdin ({"peer", "mode", "precision", "shape": {...}, "threads", "min_time",
"min_samples", "max_time"}) gets one {"event": "result", ...} line back, and an accuracy request
({"request": "accuracy", "shape", "data_dir", "precisions", "threads"}: lstm report's weights,
one raw native-endian float32 file per parameter name, and its input, input.f32) gets
{"event": "accuracy", "max_abs_err": {precision: error}, "max_abs_ref"}: the max abs error of
torch at each precision against torch in float64 on those weights and that input; by hand, every peer, mode and thread
count of every shape is measured in turn. A result holds "samples_ms" (per-call times,
sorted), "calls_per_sample" and "median_ms", or "error". The timing is `lstm report`'s
(lstm_report::timing): warm-up (at least one call and a tenth of the minimum time), samples of
enough calls to last ~2 ms, until --min-samples and --min-time are reached or --max-time runs
out (a call slower than --max-time is timed once, after one warm-up call). Needs torch;
onnxruntime and onnx are optional (their requests answer with an error when missing).
"""
import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time


def emit(obj):
    print(json.dumps(obj), flush=True)


def versions():
    out = {"event": "versions", "python": platform.python_version(), "torch": None,
           "onnxruntime": None, "notes": []}
    try:
        import torch
        out["torch"] = torch.__version__
    except Exception as e:  # noqa: BLE001 - any import failure means "no torch"
        out["notes"].append(f"torch unavailable: {type(e).__name__}: {e}")
    try:
        import onnx  # noqa: F401
        import onnxruntime
        out["onnxruntime"] = onnxruntime.__version__
    except Exception as e:  # noqa: BLE001
        out["notes"].append(f"onnxruntime unavailable: {type(e).__name__}: {e}")
    return out


def time_calls(fn, min_time, min_samples, max_time):
    start = time.perf_counter()
    fn()
    if time.perf_counter() - start >= max_time:
        # Slower than the whole budget: the warm-up call is untimed, the next one is the sample.
        t0 = time.perf_counter()
        fn()
        return [time.perf_counter() - t0], 1
    warm = 1
    while time.perf_counter() - start < min(min_time / 10, max_time / 3) and warm < 1000:
        fn()
        warm += 1
    per_call = (time.perf_counter() - start) / warm
    calls = min(max(1, int(-(-2e-3 // max(per_call, 1e-9)))), 100_000)
    samples = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - t0) / calls)
        elapsed = time.perf_counter() - start
        enough = len(samples) >= max(1, min_samples) and elapsed >= min_time
        if enough or elapsed + elapsed / len(samples) > max_time or len(samples) >= 10_000:
            break
    return sorted(samples), calls


def ort_session(m, s, threads):
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    T, B, I, H, L = s["seq_len"], s["batch"], s["input_size"], s["hidden_size"], s["num_layers"]
    dirs = 2 if s["bidirectional"] else 1

    def reorder(w):  # PyTorch gates i, f, g, o -> ONNX i, o, f, c
        i, f, g, o = np.split(w, 4, axis=0)
        return np.concatenate([i, o, f, g], axis=0)

    nodes, inits, cur = [], [], "x"
    for layer in range(L):
        ws, rs, bs = [], [], []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            ws.append(reorder(getattr(m, "weight_ih" + sfx).detach().numpy()))
            rs.append(reorder(getattr(m, "weight_hh" + sfx).detach().numpy()))
            bs.append(np.concatenate([reorder(getattr(m, "bias_ih" + sfx).detach().numpy()),
                                      reorder(getattr(m, "bias_hh" + sfx).detach().numpy())]))
        for nm, arr in (("W", ws), ("R", rs), ("B", bs)):
            inits.append(numpy_helper.from_array(np.stack(arr).astype(np.float32), f"{nm}{layer}"))
        y = f"Y{layer}"
        nodes.append(helper.make_node("LSTM", [cur, f"W{layer}", f"R{layer}", f"B{layer}"], [y],
                                      hidden_size=H,
                                      direction="bidirectional" if dirs == 2 else "forward"))
        nodes.append(helper.make_node("Transpose", [y], [y + "t"], perm=[0, 2, 1, 3]))
        inits.append(numpy_helper.from_array(np.array([0, 0, dirs * H], dtype=np.int64), f"s{layer}"))
        cur = "y" if layer == L - 1 else f"X{layer + 1}"
        nodes.append(helper.make_node("Reshape", [y + "t", f"s{layer}"], [cur]))
    g = helper.make_graph(nodes, "lstm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, B, I])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [T, B, dirs * H])],
                          initializer=inits)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.onnx")
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


class Peers:
    """The models and sessions of the shape being measured, kept between requests."""

    def __init__(self, info):
        self.info = info
        self.key = None
        self.sessions = {}

    def shape(self, s):
        import torch

        s = dict(s)
        s.setdefault("num_layers", 1)
        s.setdefault("bidirectional", False)
        s.setdefault("proj_size", 0)
        key = json.dumps(s, sort_keys=True)
        if key != self.key:
            T, B, I, H = s["seq_len"], s["batch"], s["input_size"], s["hidden_size"]
            L, bi, P = s["num_layers"], s["bidirectional"], s["proj_size"]
            torch.manual_seed(0)
            self.m = torch.nn.LSTM(I, H, L, bidirectional=bi, proj_size=P)
            self.x = torch.rand(T, B, I) * 2 - 1
            self.xg = self.x.clone().requires_grad_(True)
            self.gy = torch.rand(T, B, (P or H) * (2 if bi else 1)) * 2 - 1
            self.key, self.s, self.sessions, self.mb = key, s, {}, None
        return self.s

    def bf16(self):
        """The model in bf16 (a copy: `bfloat16()` converts in place) and the input in bf16."""
        if self.mb is None:
            self.mb = copy.deepcopy(self.m).eval().bfloat16()
            self.xb = self.x.bfloat16()
        return self.mb, self.xb

    def work(self, peer, mode, s, threads, precision="f32"):
        """The call to time."""
        import torch

        m, x = self.m, self.x
        if precision == "bf16" and peer == "torch" and mode == "forward":
            mb, xb = self.bf16()

            def fn():
                with torch.inference_mode():
                    mb(xb)
            return fn
        if precision != "f32":
            raise ValueError(f"no {precision} {mode} for peer {peer}")
        if peer == "torch" and mode == "forward":
            m.eval()

            def fn():
                with torch.inference_mode():
                    m(x)
            return fn
        if peer == "torch" and mode == "train":
            m.train()
            xg, gy = self.xg, self.gy

            def fn():
                m.zero_grad(set_to_none=True)
                xg.grad = None
                y, _ = m(xg)
                y.backward(gy)
            return fn
        if peer == "onnxruntime" and mode == "forward":
            if self.info["onnxruntime"] is None:
                raise RuntimeError("onnxruntime is not installed")
            if s["proj_size"]:
                raise RuntimeError("ONNX's LSTM has no projection")
            if threads not in self.sessions:
                self.sessions[threads] = ort_session(m, s, threads)
            sess, xn = self.sessions[threads], x.numpy()

            def fn():
                sess.run(None, {"x": xn})
            return fn
        raise ValueError(f"no {mode} for peer {peer}")

    def accuracy(self, req):
        """torch's max abs error at each precision against its own float64 run, on the
        weights and input lstm report wrote into req["data_dir"]; a failure is reported in
        the result, never raised."""
        import torch

        try:
            s = dict(req["shape"])
            s.setdefault("num_layers", 1)
            s.setdefault("bidirectional", False)
            s.setdefault("proj_size", 0)
            T, B, I, H = s["seq_len"], s["batch"], s["input_size"], s["hidden_size"]
            torch.set_num_threads(req["threads"])

            def load(name, shape):
                with open(os.path.join(req["data_dir"], name + ".f32"), "rb") as f:
                    raw = bytearray(f.read())
                return torch.frombuffer(raw, dtype=torch.float32).reshape(shape)

            m = torch.nn.LSTM(I, H, s["num_layers"], bidirectional=s["bidirectional"],
                              proj_size=s["proj_size"]).eval()
            with torch.no_grad():
                for name, p in m.named_parameters():
                    p.copy_(load(name, p.shape))
            x = load("input", (T, B, I))
            with torch.inference_mode():
                ref = copy.deepcopy(m).double()(x.double())[0]
                errors = {}
                for precision in req["precisions"]:
                    if precision == "f32":
                        y = m(x)[0]
                    elif precision == "bf16":
                        y = copy.deepcopy(m).bfloat16()(x.bfloat16())[0]
                    else:
                        raise ValueError(f"no precision {precision!r} here")
                    errors[precision] = (y.double() - ref).abs().max().item()
            return {"event": "accuracy", "shape": s["name"], "max_abs_err": errors,
                    "max_abs_ref": ref.abs().max().item()}
        except Exception as e:  # noqa: BLE001 - reported per request, the run goes on
            return {"event": "accuracy", "error": f"{type(e).__name__}: {e}"[:300]}

    def measure(self, req):
        """One measurement; a failure is reported in the result, never raised."""
        import torch

        if req.get("request") == "accuracy":
            return self.accuracy(req)
        precision = req.get("precision", "f32")
        key = {"peer": req["peer"], "mode": req["mode"], "precision": precision,
               "shape": req["shape"]["name"], "threads": req["threads"]}
        try:
            s = self.shape(req["shape"])
            torch.set_num_threads(req["threads"])
            fn = self.work(req["peer"], req["mode"], s, req["threads"], precision)
            samples, calls = time_calls(fn, req["min_time"], req["min_samples"],
                                        req["max_time"])
            return {"event": "result", **key, "samples_ms": [v * 1e3 for v in samples],
                    "calls_per_sample": calls,
                    "median_ms": statistics.median(samples) * 1e3}
        except Exception as e:  # noqa: BLE001 - reported per measurement, the run goes on
            return {"event": "result", **key, "error": f"{type(e).__name__}: {e}"[:300]}


def main():
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--probe", action="store_true", help="print the versions line and exit")
    ap.add_argument("--serve", action="store_true",
                    help="answer one JSON request per stdin line (as lstm report does)")
    ap.add_argument("--shapes", help="JSON list of shapes (keys as in a --grid file)")
    ap.add_argument("--threads", default="1", help="comma list of thread counts")
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--min-samples", type=int, default=5)
    ap.add_argument("--max-time", type=float, default=3.0)
    ap.add_argument("--no-train", action="store_true", help="skip the training step")
    ap.add_argument("--precision", default="f32",
                    help="comma list of precisions (f32, bf16: torch's bf16 forward)")
    args = ap.parse_args()

    info = versions()
    emit(info)
    if args.probe:
        return 0
    if info["torch"] is None:
        return 3
    peers = Peers(info)
    if args.serve:
        for line in sys.stdin:
            if line.strip():
                emit(peers.measure(json.loads(line)))
        return 0
    plan = {"min_time": args.min_time, "min_samples": args.min_samples,
            "max_time": args.max_time}
    for s in json.loads(args.shapes or "[]"):
        for threads in [int(t) for t in args.threads.split(",") if t.strip()]:
            precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
            runs = []
            if "f32" in precisions:
                runs += [("torch", "forward", "f32"), ("onnxruntime", "forward", "f32")]
                if s.get("train", True) and not args.no_train:
                    runs.append(("torch", "train", "f32"))
            if "bf16" in precisions:
                runs.append(("torch", "forward", "bf16"))
            for peer, mode, precision in runs:
                r = peers.measure({"peer": peer, "mode": mode, "precision": precision,
                                   "shape": s, "threads": threads, **plan})
                r.pop("samples_ms", None)
                emit(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
