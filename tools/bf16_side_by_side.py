"""bf16 speed and accuracy, side by side in one run: our `lstm bench --precision bf16`, our f32
and PyTorch's bf16 path (`m.bfloat16()` on bf16 input, oneDNN), on the grid of
/work/shared/PERFORMANCE.md, rounds interleaved (torch bf16, ours bf16, ours f32) so machine
noise hits all alike; the ratios are medians of per-round ratios.

With --growth it prints instead how the max abs error (ours bf16, PyTorch bf16, ours f32, vs
float64) grows with T (10, 100, 1000) and with saturation (weights scaled 1x, 3x, 10x of
PyTorch's init), on nn.LSTM(256, 256), B=8.

With --int8 it compares int8 instead: our `--precision int8` and PyTorch's dynamic int8 LSTM
(`torch.ao.quantization.quantize_dynamic(m, {nn.LSTM}, dtype=torch.qint8)` on f32 input).

With --accuracy it also runs each shape once through `lstm run --precision bf16` (and f32) and
PyTorch bf16 on the same input and weights, and prints the max abs error of each against
PyTorch in float64.

Usage: python3 tools/bf16_side_by_side.py target/release/lstm THREADS [SHAPES] [--accuracy] [--int8]
Needs: pip install torch numpy safetensors. PERF_ROUNDS sets the rounds (default 3)."""
import json, os, statistics, subprocess, sys, tempfile, time
import numpy as np
import torch

args = [a for a in sys.argv[1:] if not a.startswith("--")]
accuracy = "--accuracy" in sys.argv
growth = "--growth" in sys.argv
RED = "int8" if "--int8" in sys.argv else "bf16"


def torch_reduced(m):
    """PyTorch's path at RED, and how it takes an f32 input."""
    if RED == "int8":
        # quantize_dynamic swaps submodules only: the LSTM goes in a container.
        q = torch.ao.quantization.quantize_dynamic(
            torch.nn.Sequential(m), {torch.nn.LSTM}, dtype=torch.qint8)
        assert type(q[0]).__module__.startswith("torch.ao.nn.quantized"), type(q[0])
        return q, lambda x: x
    return m.bfloat16(), lambda x: x.bfloat16()
binary, threads = args[0], int(args[1])
only = set(args[2].split(",")) if len(args) > 2 else None
ROUNDS = int(os.environ.get("PERF_ROUNDS", "3"))
engine = "simd" if threads == 1 else "parallel"

# name, T, B, I, H, L, bidir, proj (the grid of PERFORMANCE.md)
SHAPES = [
    ("stream-small", 100, 1, 256, 256, 1, False, 0),
    ("stream-large", 100, 1, 1024, 1024, 1, False, 0),
    ("batch-mid", 100, 32, 256, 256, 1, False, 0),
    ("batch-large", 50, 64, 512, 512, 1, False, 0),
    ("crnn-ocr", 64, 32, 512, 256, 2, True, 0),
    ("speech", 200, 16, 80, 320, 3, True, 0),
    ("timeseries-window", 6, 100, 23, 256, 1, False, 0),
    ("tiny-latency", 1, 1, 64, 64, 1, False, 0),
]


# On a machine shared with other builders the median counts their time too; STAT=min reports
# instead the fastest of many short samples (~2 ms each, for 1 s) on every side: the samples
# that no neighbour disturbed.
STAT = os.environ.get("STAT", "median")


def timeit(fn, min_s=0.3):
    fn(); fn()
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n): fn()
        dt = time.perf_counter() - t0
        if dt >= (2e-3 if STAT == "min" else min_s / 3): break
        n *= 2
    runs, start = [], time.perf_counter()
    while len(runs) < 3 or (STAT == "min" and time.perf_counter() - start < 1.0):
        t0 = time.perf_counter()
        for _ in range(n): fn()
        runs.append((time.perf_counter() - t0) / n)
    return min(runs) if STAT == "min" else statistics.median(runs)


def ours(shape, precision):
    _, T, B, I, H, L, bi, P = shape
    cmd = [binary, "bench", "--engine", engine, "--seq-len", str(T), "--batch", str(B),
           "--input-size", str(I), "--hidden-size", str(H), "--num-layers", str(L),
           "--threads", str(threads), "--precision", precision, "--json"]
    if STAT == "min": cmd += ["--min-time", "1"]
    if bi: cmd.append("--bidirectional")
    if P: cmd += ["--proj-size", str(P)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return r["min_ms" if STAT == "min" else "median_ms"] / 1e3, r["backend"]


def errors(shape, m, x=None):
    """Max abs error vs float64 of ours (bf16, f32 through `lstm run`) and of torch bf16."""
    from safetensors.torch import save_file
    _, T, B, I, H, L, bi, P = shape
    d = tempfile.mkdtemp()
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, f"{d}/m.safetensors")
    x = torch.randn(T, B, I) if x is None else x
    np.save(f"{d}/x.npy", x.numpy())
    import copy
    with torch.inference_mode():
        ref = copy.deepcopy(m).double()(x.double())[0].numpy()
        mt, cast = torch_reduced(copy.deepcopy(m))
        tb = mt(cast(x))[0].float().double().numpy()
    out = {f"torch {RED}": np.abs(tb - ref).max()}
    for prec in (RED, "f32"):
        subprocess.run([binary, "run", "--model", f"{d}/m.safetensors", "--input", f"{d}/x.npy",
                        "--output", f"{d}/y_{prec}.npy", "--engine", "simd", "--precision", prec],
                       check=True, capture_output=True)
        out[f"ours {prec}"] = np.abs(np.load(f"{d}/y_{prec}.npy").astype(np.float64) - ref).max()
    out["max |ref|"] = np.abs(ref).max()
    return out


torch.set_num_threads(threads)
torch.manual_seed(0)
if growth:
    print(f"| T | weight scale | err ours {RED} | err torch {RED} | err ours f32 | max abs ref |")
    print("|---|---|---|---|---|---|")
    for scale in (1.0, 3.0, 10.0):
        for T in (10, 100, 1000):
            m = torch.nn.LSTM(256, 256).eval()
            with torch.no_grad():
                for p in m.parameters():
                    p.mul_(scale)
            e = errors(("growth", T, 8, 256, 256, 1, False, 0), m)
            print(f"| {T} | {scale:g}x | {e[f'ours {RED}']:.2e} | {e[f'torch {RED}']:.2e} "
                  f"| {e['ours f32']:.2e} | {e['max |ref|']:.3f} |", flush=True)
    sys.exit(0)
print(f"threads {threads}; {STAT} of the samples; `uptime`: {os.popen('uptime').read().strip()}")
print(f"| shape | torch {RED} ms | ours {RED} ms | ours f32 ms | {RED} vs our f32 "
      f"| {RED} vs torch {RED} |"
      + (f" err ours {RED} | err torch {RED} | err ours f32 | max abs ref |" if accuracy else ""))
print("|---|---|---|---|---|---|" + ("---|---|---|---|" if accuracy else ""))
for shape in SHAPES:
    name, T, B, I, H, L, bi, P = shape
    if only and name not in only: continue
    m = torch.nn.LSTM(I, H, L, bidirectional=bi, proj_size=P).eval()
    mb = torch.nn.LSTM(I, H, L, bidirectional=bi, proj_size=P).eval()
    mb.load_state_dict(m.state_dict())
    mb, cast = torch_reduced(mb)
    xb = cast(torch.randn(T, B, I))
    vs_f32, vs_torch, tt, tb, tf = [], [], [], [], []
    for _ in range(ROUNDS):
        with torch.inference_mode():
            t_t = timeit(lambda: mb(xb))
        t_b, backend = ours(shape, RED)
        t_f, _ = ours(shape, "f32")
        tt.append(t_t); tb.append(t_b); tf.append(t_f)
        vs_f32.append(t_f / t_b); vs_torch.append(t_t / t_b)
    row = (f"| {name} | {statistics.median(tt)*1e3:.3f} | {statistics.median(tb)*1e3:.3f} "
           f"| {statistics.median(tf)*1e3:.3f} | {statistics.median(vs_f32):.2f}x "
           f"({min(vs_f32):.2f}-{max(vs_f32):.2f}) | {statistics.median(vs_torch):.2f}x "
           f"({min(vs_torch):.2f}-{max(vs_torch):.2f}) |")
    if accuracy:
        e = errors(shape, m)
        row += (f" {e[f'ours {RED}']:.2e} | {e[f'torch {RED}']:.2e} | {e['ours f32']:.2e} "
                f"| {e['max |ref|']:.3f} |")
    print(row + f" <!-- {backend} -->", flush=True)
print(f"`uptime` after: {os.popen('uptime').read().strip()}")
