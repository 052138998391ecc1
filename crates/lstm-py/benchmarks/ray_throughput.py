"""Rows per second of a Ray Data batch-inference job with lstm_kernels as the per-actor model,
against the same pipeline with torch.nn.LSTM (what a Ray user would write today), side by side
in one run, with 1 and 2 actors (a script, not a test).

    pip install ./crates/lstm-py "ray[data]" torch
    python crates/lstm-py/benchmarks/ray_throughput.py [--rows 20000] [--rounds 2]

The pipeline: `ray.data.from_items` of the rows (materialized once, so reading is not timed),
`map_batches` with one model per actor (batches of 256 rows, `batch_format="numpy"`), keep the
last valid step's output (a forecaster's input), `materialize()`. Both models get the same
weights, the same batches, the same threads per actor (1) and the same actors. Two workloads:
- `window`: the seeds' windowed time series, every row [6, 23], nn.LSTM(23, 256): torch runs
  its fastest path (no packing);
- `variable`: rows of 1-60 steps of 23 features: the padded batch goes through
  `pack_padded_sequence` in torch (as it must for per-row lengths) and through per-row lengths
  here.
A third column runs the same pipeline with no model at all: the floor that the pipeline itself
(scheduling, Arrow conversions, object store) costs. Each figure is the median of `--rounds`
runs (alternating); the load average is printed with them.
"""

import argparse
import statistics
import time

import numpy as np
import ray
import ray.data

from lstm_kernels.ray import LSTMPredictor

FEATURES, HIDDEN = 23, 256


class TorchPredictor:
    """The same job with torch.nn.LSTM per actor: pad, pack by lengths, run, take each row's
    last valid output."""

    def __init__(self, state_dict, threads=1):
        import torch

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = torch.nn.LSTM(FEATURES, HIDDEN).eval()
        self.model.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})

    def __call__(self, batch):
        torch = self.torch
        xs = batch["x"]
        rows = [np.asarray(r, np.float32) for r in xs]
        lengths = [r.shape[0] for r in rows]
        fixed = len(set(lengths)) == 1
        with torch.inference_mode():
            if fixed:
                x = torch.from_numpy(np.stack(rows, axis=1))  # [T, B, I]
                y, _ = self.model(x)
                last = y[-1]
            else:
                x = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(r) for r in rows])
                packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
                y, _ = self.model(packed)
                y, _ = torch.nn.utils.rnn.pad_packed_sequence(y)
                last = y[torch.tensor(lengths) - 1, torch.arange(len(rows))]
        return {"id": batch["id"], "last": last.numpy()}


class PassThrough:
    """No model at all: what the pipeline itself costs (the floor any model adds to)."""

    def __init__(self, out_size=HIDDEN):
        self.out_size = out_size

    def __call__(self, batch):
        return {"id": batch["id"], "last": np.zeros((len(batch["id"]), self.out_size), np.float32)}


def state_dict(seed=0):
    rng = np.random.default_rng(seed)
    k = 1 / np.sqrt(HIDDEN)
    return {
        "weight_ih_l0": rng.uniform(-k, k, (4 * HIDDEN, FEATURES)).astype(np.float32),
        "weight_hh_l0": rng.uniform(-k, k, (4 * HIDDEN, HIDDEN)).astype(np.float32),
        "bias_ih_l0": rng.uniform(-k, k, 4 * HIDDEN).astype(np.float32),
        "bias_hh_l0": rng.uniform(-k, k, 4 * HIDDEN).astype(np.float32),
    }


def rows(kind, n, seed=1):
    rng = np.random.default_rng(seed)
    steps = (lambda: 6) if kind == "window" else (lambda: int(rng.integers(1, 61)))
    return [{"id": i, "x": rng.standard_normal((steps(), FEATURES)).astype(np.float32)}
            for i in range(n)]


def run(ds, cls, kwargs, actors):
    start = time.perf_counter()
    out = ds.map_batches(cls, fn_constructor_kwargs=kwargs, batch_size=256, batch_format="numpy",
                         compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1).materialize()
    elapsed = time.perf_counter() - start
    assert out.count() == ds.count()
    return ds.count() / elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    sd = state_dict()
    from lstm_kernels import LSTM

    ours = (LSTMPredictor, dict(model=LSTM.from_state_dict(sd).to_bytes(), outputs=("last",)))
    theirs = (TorchPredictor, dict(state_dict=sd))
    with open("/proc/loadavg") as f:
        print(f"load average before: {' '.join(f.read().split()[:3])}")
    print("| workload | actors | lstm_kernels rows/s | torch.nn.LSTM rows/s | ratio | no model (pipeline floor) rows/s |")
    print("|---|---|---|---|---|---|")
    for kind in ["window", "variable"]:
        ds = ray.data.from_items(rows(kind, args.rows)).materialize()
        for actors in [1, 2]:
            a, b, c = [], [], []
            for _ in range(args.rounds):
                a.append(run(ds, *ours, actors))
                b.append(run(ds, *theirs, actors))
                c.append(run(ds, PassThrough, {}, actors))
            a, b, c = statistics.median(a), statistics.median(b), statistics.median(c)
            print(f"| {kind} | {actors} | {a:.0f} | {b:.0f} | {a / b:.2f} | {c:.0f} |", flush=True)
    with open("/proc/loadavg") as f:
        print(f"load average after: {' '.join(f.read().split()[:3])}")
    ray.shutdown()


if __name__ == "__main__":
    main()
