"""Per-call cost of lstm_kernels from Python, side by side in one run with torch.nn.LSTM,
onnxruntime and the Rust `lstm bench` (a script, not a test: it measures, it asserts nothing).

    pip install ./crates/lstm-py torch onnx onnxruntime
    cargo build --release -p lstm-cli
    python crates/lstm-py/benchmarks/bench.py [--lstm target/release/lstm] [--shapes a,b] [--rounds 3]

Three tables:
1. One tiny step (H = 64, I = 64, batch 1): `model.step(x, state, out=out)`, `model.step(x,
   state)`, a T = 1 forward call `model(x)`; `lstm bench` on the same shape (Rust, no Python);
   `nn.LSTM` under `torch.inference_mode()`; onnxruntime's `session.run`. Median per call.
2. The grid's shapes (../../../shared/PERFORMANCE.md): a Python call `model(x)` on a float32
   array against `lstm bench`'s median forward on the same shape, with torch and onnxruntime.
3. Two Python threads sharing one model on batch-mid: throughput against one thread.

Every peer runs at one thread (torch.set_num_threads(1), onnxruntime intra_op_num_threads=1,
the simd engine). Rounds alternate the contenders so that the machine's noise hits all alike;
each figure is the median over rounds of a median over samples, taken the way `lstm bench`
takes its own (samples of ~2 ms of calls). Peers that are not installed
are reported as such and skipped. The machine's load average is printed with the results:
other work on the cores changes absolute numbers, less so ratios measured in one run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

import lstm_kernels

# name, T, B, I, H, layers, bidirectional
GRID = [
    ("stream-small", 100, 1, 256, 256, 1, False),
    ("stream-large", 100, 1, 1024, 1024, 1, False),
    ("batch-mid", 100, 32, 256, 256, 1, False),
    ("batch-large", 50, 64, 512, 512, 1, False),
    ("crnn-ocr", 64, 32, 512, 256, 2, True),
    ("speech", 200, 16, 80, 320, 3, True),
    ("timeseries-window", 6, 100, 23, 256, 1, False),
    ("tiny-latency", 1, 1, 64, 64, 1, False),
]
DEFAULT_SHAPES = "stream-small,batch-mid,batch-large,crnn-ocr,timeseries-window"


def per_call(fn, min_s=1.0):
    """Median seconds per call, by `lstm bench`'s own method (crates/lstm-cli/src/bench.rs):
    warm up for min_s / 10 (at least 3 calls), then samples of ~2 ms of calls each until
    min_s has passed (at least 10 samples); the median of the samples' per-call times. The
    same method on both sides keeps a noisy machine from biasing the comparison."""
    start, warm = time.perf_counter(), 0
    while warm < 3 or (time.perf_counter() - start < min_s / 10 and warm < 1000):
        fn()
        warm += 1
    estimate = (time.perf_counter() - start) / warm
    calls = min(max(int(np.ceil(2e-3 / max(estimate, 1e-9))), 1), 100_000)
    samples, start = [], time.perf_counter()
    while len(samples) < 10 or (time.perf_counter() - start < min_s and len(samples) < 10_000):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - t0) / calls)
    return statistics.median(samples)


def random_state_dict(I, H, layers, bidirectional, seed=0):
    rng = np.random.default_rng(seed)
    k = 1 / np.sqrt(H)  # nn.LSTM's init range
    sd = {}
    for layer in range(layers):
        for suffix in ["", "_reverse"] if bidirectional else [""]:
            width = I if layer == 0 else H * (2 if bidirectional else 1)
            s = f"_l{layer}{suffix}"
            sd["weight_ih" + s] = rng.uniform(-k, k, (4 * H, width)).astype(np.float32)
            sd["weight_hh" + s] = rng.uniform(-k, k, (4 * H, H)).astype(np.float32)
            sd["bias_ih" + s] = rng.uniform(-k, k, 4 * H).astype(np.float32)
            sd["bias_hh" + s] = rng.uniform(-k, k, 4 * H).astype(np.float32)
    return sd


def rust_bench(binary, T, B, I, H, layers, bidirectional, min_time):
    cmd = [binary, "bench", "--engine", "simd", "--seq-len", str(T), "--batch", str(B),
           "--input-size", str(I), "--hidden-size", str(H), "--num-layers", str(layers),
           "--min-time", str(min_time), "--json"]
    if bidirectional:
        cmd.append("--bidirectional")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip()[-300:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])["median_ms"] / 1e3


def torch_model(sd, I, H, layers, bidirectional):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    m = torch.nn.LSTM(I, H, layers, bidirectional=bidirectional).eval()
    m.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    return m


def torch_call(m, x):
    import torch

    xt = torch.from_numpy(x)

    def call():
        with torch.inference_mode():
            return m(xt)

    return call


def ort_call(sd, x, H, layers, bidirectional):
    """onnxruntime on one ONNX LSTM node per layer (gates reordered i,f,g,o -> i,o,f,c)."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    T, B, I = x.shape
    dirs = 2 if bidirectional else 1

    def reorder(w):
        i, f, g, o = np.split(w, 4, axis=0)
        return np.concatenate([i, o, f, g], axis=0)

    nodes, inits, cur = [], [], "x"
    for layer in range(layers):
        Ws, Rs, Bs = [], [], []
        for d in range(dirs):
            s = f"_l{layer}" + ("_reverse" if d else "")
            Ws.append(reorder(sd["weight_ih" + s]))
            Rs.append(reorder(sd["weight_hh" + s]))
            Bs.append(np.concatenate([reorder(sd["bias_ih" + s]), reorder(sd["bias_hh" + s])]))
        for name, arrays in (("W", Ws), ("R", Rs), ("B", Bs)):
            inits.append(numpy_helper.from_array(np.stack(arrays), f"{name}{layer}"))
        y = f"Y{layer}"
        nodes.append(helper.make_node(
            "LSTM", [cur, f"W{layer}", f"R{layer}", f"B{layer}"], [y], hidden_size=H,
            direction="bidirectional" if bidirectional else "forward"))
        nodes.append(helper.make_node("Transpose", [y], [y + "t"], perm=[0, 2, 1, 3]))
        inits.append(numpy_helper.from_array(np.array([0, 0, dirs * H], np.int64), f"s{layer}"))
        cur = "y" if layer == layers - 1 else f"X{layer + 1}"
        nodes.append(helper.make_node("Reshape", [y + "t", f"s{layer}"], [cur]))
    graph = helper.make_graph(
        nodes, "lstm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, B, I])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [T, B, dirs * H])],
        initializer=inits)
    path = os.path.join(tempfile.mkdtemp(), "lstm.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feed = {"x": x}
    return lambda: sess.run(None, feed)


def fmt(seconds, unit):
    if seconds is None:
        return "n/a"
    return f"{seconds * (1e6 if unit == 'us' else 1e3):.{2 if unit == 'us' else 3}f}"


def tiny_step(binary, rounds):
    I = H = 64
    sd = random_state_dict(I, H, 1, False)
    model = lstm_kernels.LSTM.from_state_dict(sd)
    x_t = np.random.default_rng(1).uniform(-1, 1, (1, I)).astype(np.float32)
    x = x_t[None]
    state, out = model.zero_state(1), np.empty((1, H), np.float32)
    tm, ort = torch_model(sd, I, H, 1, False), ort_call(sd, x, H, 1, False)
    contenders = {
        "lstm_kernels step(out=)": lambda: model.step(x_t, state, out=out),
        "lstm_kernels step": lambda: model.step(x_t, state),
        "lstm_kernels model(x), T=1": lambda: model(x),
    }
    if tm is not None:
        contenders["torch nn.LSTM, T=1"] = torch_call(tm, x)
    if ort is not None:
        contenders["onnxruntime session.run, T=1"] = ort
    times = {k: [] for k in contenders}
    rust = []
    for _ in range(rounds):
        for name, fn in contenders.items():
            times[name].append(per_call(fn, min_s=1.0))
        if binary:
            rust.append(rust_bench(binary, 1, 1, I, H, 1, False, 1.0))
    med = {k: statistics.median(v) for k, v in times.items()}
    if rust:
        med["Rust lstm bench (forward, T=1, no Python)"] = statistics.median(rust)
    base = med["lstm_kernels step(out=)"]
    print("\n### One tiny step: H = 64, I = 64, batch 1 (median per call)\n")
    print("| contender | µs per call | × lstm_kernels step(out=) |")
    print("|---|---|---|")
    for name, t in med.items():
        print(f"| {name} | {fmt(t, 'us')} | {t / base:.2f} |")
    return med


def grid(binary, names, rounds, min_s):
    print("\n### Grid shapes, one thread: a Python call against `lstm bench` (median ms per call)\n")
    print("| shape | lstm_kernels model(x) | Rust lstm bench | Python / Rust (median of rounds) | torch | onnxruntime |")
    print("|---|---|---|---|---|---|")
    rows = {}
    for name, T, B, I, H, layers, bi in GRID:
        if name not in names:
            continue
        sd = random_state_dict(I, H, layers, bi)
        model = lstm_kernels.LSTM.from_state_dict(sd)
        x = np.random.default_rng(2).uniform(-1, 1, (T, B, I)).astype(np.float32)
        tm, ort = torch_model(sd, I, H, layers, bi), ort_call(sd, x, H, layers, bi)
        tt = torch_call(tm, x) if tm is not None else None
        ours, rust, torch_t, ort_t = [], [], [], []
        for _ in range(rounds):
            ours.append(per_call(lambda: model(x), min_s=min_s))
            if binary:
                rust.append(rust_bench(binary, T, B, I, H, layers, bi, min_s))
            if tt is not None:
                torch_t.append(per_call(tt, min_s=min_s))
            if ort is not None:
                ort_t.append(per_call(ort, min_s=min_s))
        m = lambda v: statistics.median(v) if v else None  # noqa: E731
        o, r = m(ours), m(rust)
        # The ratio of each round (measured back to back), then their median: noise that
        # lasts longer than a round hits both sides of it alike.
        ratio = m([a / b for a, b in zip(ours, rust)]) if rust else None
        rows[name] = dict(python=o, rust=r, torch=m(torch_t), ort=m(ort_t), ratio=ratio)
        ratio = f"{ratio:.3f}" if ratio else "n/a"
        print(f"| {name} | {fmt(o, 'ms')} | {fmt(r, 'ms')} | {ratio} | "
              f"{fmt(m(torch_t), 'ms')} | {fmt(m(ort_t), 'ms')} |", flush=True)
    return rows


def two_threads(rounds, calls=20):
    name, T, B, I, H, layers, bi = GRID[2]  # batch-mid
    model = lstm_kernels.LSTM.from_state_dict(random_state_dict(I, H, layers, bi))
    xs = [np.random.default_rng(s).uniform(-1, 1, (T, B, I)).astype(np.float32) for s in range(2)]
    model(xs[0])

    def work(i):
        for _ in range(calls):
            model(xs[i])

    ratios = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        work(0)
        one = calls / (time.perf_counter() - t0)
        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        two = 2 * calls / (time.perf_counter() - t0)
        ratios.append((one, two, two / one))
    one, two, ratio = (statistics.median(r[k] for r in ratios) for k in range(3))
    print(f"\n### Two Python threads sharing one model on {name} (simd engine)\n")
    print(f"one thread: {one:.1f} calls/s; two threads: {two:.1f} calls/s; "
          f"ratio {ratio:.2f}x (rounds: {', '.join(f'{r[2]:.2f}' for r in ratios)})")
    return ratio


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lstm", default="target/release/lstm",
                    help="the `lstm` binary (cargo build --release -p lstm-cli); '' to skip")
    ap.add_argument("--shapes", default=DEFAULT_SHAPES,
                    help=f"comma list of grid shapes (default {DEFAULT_SHAPES}; 'all')")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=1.0,
                    help="seconds per contender per round on the grid shapes (as lstm bench's)")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: tiny,grid,threads")
    args = ap.parse_args()
    binary = args.lstm if args.lstm and os.path.exists(args.lstm) else None
    if args.lstm and binary is None:
        print(f"note: {args.lstm} not found; the Rust column is skipped", file=sys.stderr)
    names = {g[0] for g in GRID} if args.shapes == "all" else set(args.shapes.split(","))
    skip = set(args.skip.split(",")) if args.skip else set()
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[:3]
    peers = []
    for mod in ["torch", "onnxruntime"]:
        try:
            peers.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            peers.append(f"{mod}: not installed (skipped)")
    print(f"lstm_kernels {lstm_kernels.__version__} (backend {lstm_kernels.backends()[-1]}); "
          f"{'; '.join(peers)}; load average before: {' '.join(load_before)}")
    if "tiny" not in skip:
        tiny_step(binary, args.rounds)
    if "grid" not in skip:
        grid(binary, names, args.rounds, args.min_time)
    if "threads" not in skip:
        two_threads(max(args.rounds, 3))
    with open("/proc/loadavg") as f:
        print(f"\nload average after: {' '.join(f.read().split()[:3])}")


if __name__ == "__main__":
    main()
