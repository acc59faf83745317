"""Training throughput: Ray Train (1 and 2 workers) against the plain PyTorch loop.

One script, one process, same model, data, global batch size and epochs, so the ratios
are not skewed by machine load drifting between runs:

  plain    seqmodels.training.fit over in-memory tensors (no Ray, no DDP)
  ray-1    train_distributed with 1 worker (Ray Data shard -> iter_torch_batches)
  ray-2    train_distributed with 2 workers (DDP, global batch split in two)

Throughput is the training phase's samples/s per epoch (as logged by every run), median
over the epochs after the first (which pays for warm-up). Wall time per run, Ray start-up,
validation and per-epoch checkpointing included, is reported beside it.

    .venv/bin/python benchmarks/train_throughput.py             # ~1.5 min on 2 cores
    .venv/bin/python benchmarks/train_throughput.py --gpu       # use_gpu for the Ray runs
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from seqmodels.config import Config, config_from_mapping
from seqmodels.data.tables import read_spec
from seqmodels.distributed.runtime import init_ray
from seqmodels.models import build_model
from seqmodels.spec import EXAMPLES_FILE
from seqmodels.stages import prepare
from seqmodels.training import fit, in_memory_batches, make_optimizer, make_scheduler, seed_everything

RESULTS = Path(__file__).parent / "results" / "train_throughput.json"


def write_series(path: Path, n_series: int, length: int, seed: int = 0) -> None:
    """Noisy multi-frequency sines: enough rows that an epoch takes seconds, not milliseconds."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    phase = rng.uniform(0, 2 * np.pi, (n_series, 1))
    freq = rng.uniform(0.02, 0.08, (n_series, 1))
    values = np.sin(2 * np.pi * freq * t + phase) + rng.normal(0, 0.05, (n_series, length))
    pd.DataFrame({"series_id": np.repeat([f"s{i:05d}" for i in range(n_series)], length),
                  "t": np.tile(t, n_series), "value": values.reshape(-1)}).to_csv(path, index=False)


def benchmark_config(root: Path, args: argparse.Namespace, workers: int) -> Config:
    return config_from_mapping({
        "seed": 0,
        "data": {"source": str(root / "series.csv"), "window": 150, "stride": 50,
                 "split": {"val": 0.1, "test": 0.1}},
        "model": {"kind": args.model, "hidden_size": 32, "latent_dim": 8},
        "train": {"workers": workers, "epochs": args.epochs, "batch_size": args.batch_size, "lr": 0.003,
                  "use_gpu": args.gpu, "storage": str(root / f"runs-{workers}")},
        "ray": {"num_cpus": 4, "data_cpu_limit": 1},
        "paths": {"prepared": str(root / "prepared"), "validation_report": str(root / "validation.json"),
                  "train_live": str(root / f"live-{workers}")},
    }, "train_throughput benchmark")


def steady(history: list[dict]) -> float:
    return statistics.median(epoch["samples_per_s"] for epoch in history[1:])


def run_plain(cfg: Config) -> tuple[list[dict], float]:
    spec = read_spec(cfg.paths.prepared)
    examples = pq.read_table(Path(cfg.paths.prepared) / EXAMPLES_FILE, columns=["x", "split"]).to_pandas()
    tensors = {split: {"x": torch.from_numpy(np.stack(examples.loc[examples["split"] == split, "x"])
                                             .astype(np.float32))} for split in ("train", "val")}
    device = torch.device("cuda" if cfg.train.use_gpu else "cpu")
    seed_everything(cfg.seed)
    model = build_model(cfg.model, spec).to(device)
    optimizer = make_optimizer(model, cfg.train)
    started = time.perf_counter()
    state = fit(model, optimizer, make_scheduler(optimizer, cfg.train),
                in_memory_batches(tensors["train"], cfg.train.batch_size, shuffle=True, seed=cfg.seed),
                in_memory_batches(tensors["val"], cfg.train.batch_size, shuffle=False),
                cfg.train, cfg.model, device=device, log=None)
    return state.history, time.perf_counter() - started


def run_ray(cfg: Config) -> tuple[list[dict], float]:
    from seqmodels.distributed.train import train_distributed

    started = time.perf_counter()
    outcome = train_distributed(cfg)
    return outcome.history, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=3000, help="generated series of 300 steps")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--model", default="conv")
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a Ray Train worker holding 1 CPU runs torch on 1 thread too

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_series(root / "series.csv", args.series, 300)
        base = benchmark_config(root, args, workers=1)
        prepare.run(base)
        train_rows = int((pq.read_table(Path(base.paths.prepared) / EXAMPLES_FILE,
                                        columns=["split"]).column(0).to_numpy() == "train").sum())
        # Ray is started first so the plain loop shares the machine with the same idle Ray
        # daemons (raylet, GCS, dashboard) the Ray runs do: the ratio is the training path's.
        init_ray(base.ray)
        runs = {"plain": run_plain(base), "ray-1": run_ray(base)}
        if not args.gpu or torch.cuda.device_count() >= 2:
            runs["ray-2"] = run_ray(benchmark_config(root, args, workers=2))

    rows = {name: {"samples_per_s": round(steady(history), 1), "wall_s": round(wall, 1),
                   "final_train_loss": round(history[-1]["train_loss"], 5)}
            for name, (history, wall) in runs.items()}
    plain = rows["plain"]["samples_per_s"]
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), "
                   f"{'GPU ' + torch.cuda.get_device_name() if args.gpu else 'CPU'}",
        "train_rows": train_rows, "epochs": args.epochs, "batch_size": args.batch_size, "model": args.model,
        "runs": rows,
        "ray1_vs_plain": round(rows["ray-1"]["samples_per_s"] / plain, 3),
    }
    if "ray-2" in rows:
        result["ray2_vs_ray1"] = round(rows["ray-2"]["samples_per_s"] / rows["ray-1"]["samples_per_s"], 3)
    print(json.dumps(result, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    name = RESULTS.with_name(f"train_throughput{'_gpu' if args.gpu else ''}.json")
    name.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
