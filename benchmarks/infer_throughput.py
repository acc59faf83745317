"""Batch inference: the Ray Data pipeline against a plain PyTorch loop, and its peak memory.

Same exported model, same Parquet in, Parquet out, same batch size:

  plain    pyarrow iter_batches -> Predictor (no_grad) -> ParquetWriter, in one fresh process
  ray      seqmodels.distributed.infer.predict_to_parquet (read_parquet -> map_batches
           actor pool -> write_parquet), as the infer stage runs it

Throughput is rows/s over the whole run (reading, the model, writing): the median of
--repeats runs, plain and Ray alternating so that both see the same machine (this VM's
speed drifts by 20% over minutes). Peak memory is the largest proportional set size (PSS:
shared pages such as Ray's object store split across the processes mapping them) summed
over this process and all its descendants, sampled every 0.2 s, for the Ray run on N and
on 10 x N rows: streaming means the second must not need 10 x the memory. Those memory
runs are separate from the timed ones: one sample costs ~0.1 s of CPU, which slowed a
timed 1M run by 2-5 s on 2 cores.

Two setups, each giving the model the same cores on both sides:

  1 core     the plain loop with one torch thread; Ray with one predictor actor of one CPU
             (Ray's reads and writes still run in other processes, on the other core)
  N cores    the plain loop with N torch threads; Ray with N predictor actors (N = --cores,
             default this machine's CPU count)

The Ray run pays a fixed cost (Ray Data's planning, worker and actor start-up with torch's
import and the model load) that the plain loop does not; given two --rows sizes the
script also reports that fixed cost and the marginal rows/s, so a ratio can be read for any
size. The memory runs go first and also start Ray Data's own actors, so the timed runs
see the warm local Ray a stage would share with a cluster. For the memory figures it also
records which processes held the most at the peak.

    .venv/bin/python benchmarks/infer_throughput.py       # 1M windows, memory at 1M and 10M: ~25 min
    .venv/bin/python benchmarks/infer_throughput.py --rows 100000 --rows 1000000
    .venv/bin/python benchmarks/infer_throughput.py --rows 100000 --memory-rows 100000 --repeats 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from seqmodels.checkpoints import export_model
from seqmodels.config import config_from_mapping
from seqmodels.data.tables import examples_to_arrow, parquet_write_options
from seqmodels.distributed.infer import Predictor, model_source, predict_to_parquet
from seqmodels.models import build_model
from seqmodels.spec import DataSpec

RESULTS = Path(__file__).parent / "results" / "infer_throughput.json"
WINDOW = 64


def write_windows(path: Path, rows: int, seed: int = 0, chunk: int = 200_000) -> None:
    """`rows` windows in the prepared examples layout, written in chunks (bounded memory)."""
    rng = np.random.default_rng(seed)
    t = np.arange(WINDOW)
    writer = None
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        phase = rng.uniform(0, 2 * np.pi, (n, 1))
        x = np.sin(2 * np.pi * t / 16 + phase) + rng.normal(0, 0.05, (n, WINDOW))
        ids = np.arange(start, start + n)
        frame = {"window_id": ids, "series_id": [f"s{i // 10:07d}" for i in ids],
                 "split": np.where(ids % 10 < 8, "train", "test"), "start": (ids % 10) * WINDOW,
                 "x": list(x.astype(np.float32))}
        table = examples_to_arrow(pd.DataFrame(frame), WINDOW)
        writer = writer or pq.ParquetWriter(path, table.schema, **parquet_write_options(table.schema))
        writer.write_table(table)
    writer.close()


class PeakMemory:
    """Largest PSS of this process tree, sampled on a thread, and who held it at the peak.
    `include_self=False` leaves out this process: only the commands it runs count."""

    def __init__(self, interval_s: float = 0.2, include_self: bool = True):
        self.interval_s, self.peak, self.at_peak, self._stop = interval_s, 0, {}, threading.Event()
        self.include_self = include_self

    def _sample(self) -> dict[str, int]:
        """PSS by process title (Ray names its workers ray::<task or actor>)."""
        root = psutil.Process()
        by_title: dict[str, int] = {}
        for process in [root] * self.include_self + root.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                title = " ".join(process.cmdline())[:40] or process.name()
                by_title[title] = by_title.get(title, 0) + process.memory_full_info().pss
        return by_title

    def record(self) -> None:
        """One sample (the sampling thread calls it every interval_s)."""
        sample = self._sample()
        if sum(sample.values()) > self.peak:
            self.peak, self.at_peak = sum(sample.values()), sample

    def __enter__(self) -> PeakMemory:
        def loop() -> None:
            while not self._stop.is_set():
                self.record()
                time.sleep(self.interval_s)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def top(self, n: int = 6) -> dict[str, int]:
        """The n largest holders at the peak, MiB."""
        ranked = sorted(self.at_peak.items(), key=lambda item: -item[1])[:n]
        return {title: round(pss / 2**20) for title, pss in ranked}


def run_plain(model_dir: str | Path, source: str | Path, target: str | Path, batch_size: int) -> None:
    predictor = Predictor(model_source(model_dir, ship_files=False), use_gpu=False,
                          write_reconstructions=True)
    writer = None
    for batch in pq.ParquetFile(source).iter_batches(batch_size=batch_size):
        result = predictor(pa.Table.from_batches([batch]))
        writer = writer or pq.ParquetWriter(target, result.schema, **parquet_write_options(result.schema))
        writer.write_table(result)
    writer.close()


PLAIN_RUN = """
import sys, time, torch
sys.path.insert(0, sys.argv[1])
from infer_throughput import run_plain
torch.set_num_threads(int(sys.argv[6]))
started = time.perf_counter()
run_plain(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
print(time.perf_counter() - started)
"""


def timed_plain(model_dir: Path, source: Path, target: Path, batch_size: int, rows: int,
                threads: int) -> dict:
    """The plain loop in a fresh process, as a plain-PyTorch stage would run, timed from
    inside it (its interpreter start and imports are not counted; Ray's actor start-up is).
    It inherits the malloc settings init_ray put in this environment, as Ray's workers do.
    Run in this process instead, the loop took 24.6-26.3 s for 1M windows in one run and
    32-34 s in a run where this process had first generated a 10M-window input."""
    done = subprocess.run([sys.executable, "-c", PLAIN_RUN, str(Path(__file__).parent), str(model_dir),
                           str(source), str(target), str(batch_size), str(threads)],
                          capture_output=True, text=True, check=True)
    seconds = float(done.stdout.split()[-1])
    return {"seconds": round(seconds, 1), "rows_per_s": round(rows / seconds)}


def timed_ray(cfg, model_dir: Path, source: Path, target: Path, rows: int) -> dict:
    shutil.rmtree(target, ignore_errors=True)
    started = time.perf_counter()
    predict_to_parquet(cfg, model_dir, source, target)
    seconds = time.perf_counter() - started
    written = pq.ParquetDataset(target).read(columns=["window_id"]).num_rows
    assert written == rows, f"ray wrote {written} rows for {rows}"
    return {"seconds": round(seconds, 1), "rows_per_s": round(rows / seconds),
            "files": len(list(target.glob("*.parquet")))}


def ray_peak_memory(cfg, model_dir: Path, source: Path, target: Path) -> dict:
    shutil.rmtree(target, ignore_errors=True)
    with PeakMemory() as memory:
        predict_to_parquet(cfg, model_dir, source, target)
    return {"peak_pss_mib": round(memory.peak / 2**20), "peak_pss_top_mib": memory.top()}


def median_run(runs: list[dict]) -> dict:
    """The run of median seconds, with every run's seconds beside it."""
    ranked = sorted(runs, key=lambda run: run["seconds"])
    return ranked[len(ranked) // 2] | {"all_seconds": [run["seconds"] for run in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", default=None,
                        help="windows for a throughput comparison (repeatable; default 1,000,000)")
    parser.add_argument("--memory-rows", type=int, default=1_000_000,
                        help="N for the memory comparison (N vs 10 x N); N must be large enough that "
                             "Ray Data's capped buffers fill, as they do at 1M windows but not 100k")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs per size and side, plain and Ray alternating (median kept)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1,
                        help="the all-cores setup: torch threads of the plain loop = predictor actors")
    args = parser.parse_args()
    throughput_sizes = sorted(set(args.rows or [1_000_000]))
    # (torch threads of the plain loop, Ray predictor actors of one CPU each)
    setups = {"1 core": (1, 1)}
    if args.cores > 1:
        setups[f"{args.cores} cores"] = (args.cores, args.cores)

    spec = DataSpec(kind="series", input_shape=(WINDOW, 1), features=("value",))
    base = config_from_mapping({"ray": {"num_cpus": 2 * args.cores, "data_cpu_limit": 1}}, "infer benchmark")
    model_cfg = base.model.model_copy(update={"kind": "conv", "hidden_size": 16, "latent_dim": 8})
    torch.manual_seed(0)
    model = build_model(model_cfg, spec)
    result: dict = {"window": WINDOW, "batch_size": args.batch_size, "model": "conv hidden 16 latent 8",
                    "repeats": args.repeats, "setups": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        export_model(root / "model", model.state_dict(), model_cfg, spec)
        memory_sizes = [args.memory_rows, 10 * args.memory_rows]
        for rows in sorted({*memory_sizes, *throughput_sizes}):
            write_windows(root / f"in-{rows}.parquet", rows)

        from seqmodels.distributed.runtime import init_ray

        init_ray(base.ray)  # every run shares the machine with the same idle Ray daemons
        for name, (threads, actors) in setups.items():
            torch.set_num_threads(threads)
            cfg = base.model_copy(update={"infer": base.infer.model_copy(
                update={"batch_size": args.batch_size, "concurrency": actors})})
            if actors == 1:
                memory = {rows: ray_peak_memory(cfg, root / "model", root / f"in-{rows}.parquet",
                                                root / "ray-memory") for rows in memory_sizes}
                print(name, "memory", memory, flush=True)
                result["peak_memory"] = {str(rows): run for rows, run in memory.items()}
                result["peak_memory_10x_vs_1x"] = round(
                    memory[memory_sizes[1]]["peak_pss_mib"] / memory[memory_sizes[0]]["peak_pss_mib"], 3)
            plain_runs: dict[int, list] = {rows: [] for rows in throughput_sizes}
            ray_runs: dict[int, list] = {rows: [] for rows in throughput_sizes}
            for _ in range(args.repeats):
                for rows in throughput_sizes:
                    source = root / f"in-{rows}.parquet"
                    plain_runs[rows].append(timed_plain(root / "model", source, root / "plain.parquet",
                                                        args.batch_size, rows, threads))
                    ray_runs[rows].append(timed_ray(cfg, root / "model", source, root / "ray", rows))
                    print(name, rows, "plain", plain_runs[rows][-1], "ray", ray_runs[rows][-1], flush=True)
            plain = {rows: median_run(runs) for rows, runs in plain_runs.items()}
            ray = {rows: median_run(runs) for rows, runs in ray_runs.items()}
            result["setups"][name] = {
                "plain_torch_threads": threads, "ray_predictor_actors": actors,
                "plain": {str(rows): run for rows, run in plain.items()},
                "ray": {str(rows): run for rows, run in ray.items()},
                "ray_vs_plain_throughput": {
                    str(rows): round(ray[rows]["rows_per_s"] / plain[rows]["rows_per_s"], 3)
                    for rows in throughput_sizes},
            }
            if len(ray) > 1:
                small, large = min(ray), max(ray)
                marginal = (large - small) / (ray[large]["seconds"] - ray[small]["seconds"])
                result["setups"][name] |= {
                    "ray_marginal_rows_per_s": round(marginal),
                    "ray_fixed_seconds": round(ray[small]["seconds"] - small / marginal, 1)}
    print(json.dumps(result, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
