"""Held-out random calls through the CLI, checked against the tolerance model of the property
tests: each call draws a config over every option (layers, bidirectional, proj_size, bias,
batch_first, unbatched, lengths, an initial state), weights of PyTorch's init scaled by 1, 2 or 4,
inputs and states of spread 0.01, 1 or 10 (the domain of `CaseSpace::reduced_precision`), runs
`lstm run --precision P --hn --cn` and checks the three outputs with the `check_run` example of
lstm-validate (the f64 reference on the rounded weights, the f32 rule and the operand model:
docs/numerics.md, "The operand model").

Usage:
  cargo build --release -p lstm-cli && cargo build --release -p lstm-validate --example check_run
  python3 tools/precision_heldout.py target/release/lstm target/release/examples/check_run \\
      [CALLS] [PRECISIONS]          # default 200 calls, bf16,int8
Needs: pip install torch numpy safetensors. Deterministic (seed 2024); prints one line per
failure and a summary; exit code 1 if any call failed."""
import os, random, subprocess, sys, tempfile
import numpy as np
import torch
from safetensors.torch import save_file

lstm, check = sys.argv[1], sys.argv[2]
calls = int(sys.argv[3]) if len(sys.argv) > 3 else 200
precisions = sys.argv[4].split(",") if len(sys.argv) > 4 else ["bf16", "int8"]
rng = random.Random(2024)
torch.manual_seed(2024)
SIZES = [1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33]


def draw():
    """One call: (nn.LSTM, flags for both commands, files to write)."""
    I, H, L = rng.choice(SIZES), rng.choice(SIZES), rng.choice([1, 1, 2, 3])
    bi, bias, bf = rng.random() < 0.3, rng.random() < 0.85, rng.random() < 0.3
    P = rng.randrange(1, H) if H > 1 and rng.random() < 0.25 else 0
    unbatched = rng.random() < 0.15
    T, B = rng.choice([1, 2, 5, 8, 20, 60]), rng.choice([1, 2, 3])
    m = torch.nn.LSTM(I, H, L, bias=bias, batch_first=bf, bidirectional=bi, proj_size=P).eval()
    with torch.no_grad():
        gain = rng.choice([1.0, 1.0, 2.0, 4.0])
        for p in m.parameters():
            p.mul_(gain)
    xs, hs = rng.choice([0.01, 1.0, 1.0, 1.0, 10.0]), rng.choice([0.01, 1.0, 1.0, 10.0])
    D, Hout = 2 if bi else 1, P or H
    if unbatched:
        x = (torch.rand(T, I) * 2 - 1) * xs
    else:
        x = (torch.rand(B, T, I) if bf else torch.rand(T, B, I)) * 2 * xs - xs
    files, flags = {"x.npy": x}, []
    if rng.random() < 0.3:
        lead = (L * D,) if unbatched else (L * D, B)
        files["h0.npy"] = (torch.rand(*lead, Hout) * 2 - 1) * hs
        files["c0.npy"] = (torch.rand(*lead, H) * 2 - 1) * 4 * hs
        flags += ["--h0", "{d}/h0.npy", "--c0", "{d}/c0.npy"]
    if not unbatched and rng.random() < 0.3:
        lengths = [rng.randint(1, T) for _ in range(B)]
        lengths[rng.randrange(B)] = T  # the output keeps T steps (PyTorch pads to max(lengths))
        files["lengths.npy"] = np.asarray(lengths, dtype=np.int64)
        flags += ["--lengths", "{d}/lengths.npy"]
    if bf:
        flags.append("--batch-first")
    desc = (f"I={I} H={H} L={L} bidir={bi} proj={P} bias={bias} batch_first={bf} "
            f"unbatched={unbatched} T={T} B={B} weights x{gain:g} x~{xs:g} "
            f"state={'h0.npy' in files} lengths={'lengths.npy' in files}")
    return m, flags, files, desc


failed = total = 0
for n in range(calls):
    m, flags, files, desc = draw()
    with tempfile.TemporaryDirectory() as d:
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, f"{d}/m.safetensors")
        for name, v in files.items():
            np.save(f"{d}/{name}", v.numpy() if isinstance(v, torch.Tensor) else v)
        f = [a.format(d=d) for a in flags]
        for p in precisions:
            io = ["--model", f"{d}/m.safetensors", "--input", f"{d}/x.npy", "--output",
                  f"{d}/y.npy", "--hn", f"{d}/hn.npy", "--cn", f"{d}/cn.npy", "--precision", p]
            r = subprocess.run([lstm, "run"] + io + f, capture_output=True, text=True)
            if r.returncode != 0:
                print(f"call {n} {p}: lstm run failed: {r.stderr.strip()} [{desc}]")
                failed += 1
                continue
            c = subprocess.run([check] + io + f, capture_output=True, text=True)
            total += 1
            if c.returncode != 0:
                failed += 1
                print(f"call {n} {p}: {(c.stdout + c.stderr).strip()} [{desc}]", flush=True)
print(f"{total - failed} of {total} calls within the tolerance model ({calls} configs, "
      f"precisions {','.join(precisions)})")
sys.exit(1 if failed else 0)
