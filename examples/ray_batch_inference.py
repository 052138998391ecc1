"""Batch inference with Ray Data: variable-length multivariate time series read from files, run
through an nn.LSTM with lstm_kernels on every actor, written to Parquet, read back and checked.

    pip install ./crates/lstm-py "ray[data]"
    python examples/ray_batch_inference.py [--rows 5000] [--actors N] [--threads-per-actor 1] [--out DIR]

What it does (the seeds' windowed time series: 23 features per step):
1. Makes a model (nn.LSTM(23, 256) weights, saved as model.safetensors) and a few thousand
   sequences of 1-60 steps, stored as .npy shards (one object array of [T, 23] windows and one
   of ids per shard): the shape a night of sensor windows takes on disk.
2. Reads the shards into a Ray Dataset, maps batches through `lstm_kernels.ray.map_sequences`
   (one LSTMPredictor per actor: the model is loaded once per actor), keeps each sequence's
   last valid output (what a forecaster's head reads), and writes Parquet.
3. Reads the Parquet back and checks every row against the same model run in this process.

On a real cluster, change only where things live:
- `ray.init(address="auto")` (or `ray://head:10001`) instead of `ray.init()`;
- the package reaches the workers with the job: `ray.init(runtime_env={"pip":
  ["/shared/wheels/lstm_kernels-0.1.0-cp39-abi3-linux_x86_64.whl"]})` (a wheel built once with
  `pip wheel ./crates/lstm-py`), or install it in the workers' image;
- the model reaches the actors either as a path on storage every node mounts (pass the path:
  each actor reads it once), or as bytes shipped with the task (pass `model.to_bytes()`, as
  here: nothing to mount, a few MB per actor);
- inputs and outputs on shared storage (`s3://...`, `gs://...`, NFS) for `read_*` / `write_parquet`.
"""

import argparse
import glob
import os
import tempfile
import time

import numpy as np
import ray

import lstm_kernels
from lstm_kernels.ray import map_sequences

FEATURES, HIDDEN = 23, 256


def make_model(path, seed=0):
    rng = np.random.default_rng(seed)
    k = 1 / np.sqrt(HIDDEN)  # nn.LSTM's initialisation range
    sd = {
        "weight_ih_l0": rng.uniform(-k, k, (4 * HIDDEN, FEATURES)),
        "weight_hh_l0": rng.uniform(-k, k, (4 * HIDDEN, HIDDEN)),
        "bias_ih_l0": rng.uniform(-k, k, 4 * HIDDEN),
        "bias_hh_l0": rng.uniform(-k, k, 4 * HIDDEN),
    }
    model = lstm_kernels.LSTM.from_state_dict(sd)
    model.save(path)
    return model


def make_shards(folder, rows, per_shard=1000, seed=1):
    rng = np.random.default_rng(seed)
    for start in range(0, rows, per_shard):
        ids = np.arange(start, min(rows, start + per_shard))
        windows = np.empty(len(ids), dtype=object)
        for j in range(len(ids)):
            windows[j] = rng.standard_normal((int(rng.integers(1, 61)), FEATURES)).astype(np.float32)
        np.save(os.path.join(folder, f"shard-{start:08d}-x.npy"), windows, allow_pickle=True)
        np.save(os.path.join(folder, f"shard-{start:08d}-id.npy"), ids)


def read_shards(folder):
    """The shards as a Dataset of rows {"id", "x"} (one read task per shard)."""

    def read(row):
        x = np.load(row["path"], allow_pickle=True)
        ids = np.load(row["path"].replace("-x.npy", "-id.npy"))
        return [{"id": int(i), "x": w} for i, w in zip(ids, x)]

    paths = sorted(glob.glob(os.path.join(folder, "*-x.npy")))
    return ray.data.from_items([{"path": p} for p in paths]).flat_map(read)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--actors", type=int, default=None,
                    help="default: one per CPU but one, which reading and writing need")
    ap.add_argument("--threads-per-actor", type=int, default=1)
    ap.add_argument("--out", default=None, help="output folder (default: a temporary one)")
    args = ap.parse_args()
    work = args.out or tempfile.mkdtemp(prefix="ray-lstm-")
    os.makedirs(os.path.join(work, "shards"), exist_ok=True)

    model = make_model(os.path.join(work, "model.safetensors"))
    make_shards(os.path.join(work, "shards"), args.rows)

    ray.init()  # on a cluster: ray.init(address="auto", runtime_env=...), see above
    start = time.perf_counter()
    ds = read_shards(os.path.join(work, "shards"))
    predictions = map_sequences(
        ds, model.to_bytes(), actors=args.actors, threads_per_actor=args.threads_per_actor,
        outputs=("last",), id_column="id", batch_size=256,
    )
    out_dir = os.path.join(work, "predictions")
    predictions.write_parquet(out_dir)
    elapsed = time.perf_counter() - start

    # Read the results back and check every row against this process's own run.
    back = sorted(ray.data.read_parquet(out_dir).take_all(), key=lambda r: r["id"])
    assert [r["id"] for r in back] == list(range(args.rows)), "every row exactly once"
    rows = sorted(read_shards(os.path.join(work, "shards")).take_all(), key=lambda r: r["id"])
    for r, b in zip(rows, back):
        y, _ = model(r["x"])
        assert np.array_equal(np.asarray(b["last"], np.float32), y[-1]), r["id"]
    print(f"{args.rows} sequences in {elapsed:.2f} s ({args.rows / elapsed:.0f} rows/s); "
          f"results in {out_dir}, checked against a single-process run: identical")
    ray.shutdown()


if __name__ == "__main__":
    main()
