"""`seqmodels score` against the in-process Detector on the same detector and input, and
the command's peak memory at N and 10 x N windows.

Same detector folder (a conv model, window 64, stride 1, one feature), same raw series
file (Parquet: series_id, t, value; stride 1 makes one window per step after the first 63):

  detector   `Detector.load(folder).score(file)` in a fresh process: the same chunked
             reading, Pandera validation and windowing, the model in one process with all
             torch threads, per-step scores; nothing written
  score      `seqmodels score --model folder --input file --output dir` in a fresh process:
             the same, with the windows streamed through Ray Data's predictor actors
             (infer.concurrency of them), written, checked and published with a manifest

Both are timed from outside, so interpreter start, imports and (for score) Ray's start-up
count: what a user waits for. Throughput is windows/s; the ratio is score / detector.
Peak memory is the largest PSS summed over the command's process tree (its Ray daemons
and workers included), sampled every 0.2 s (benchmarks/infer_throughput.PeakMemory), for
N and 10 x N windows; streaming means the second must stay within 1.2 x the first.

    .venv/bin/python benchmarks/score_throughput.py                      # 1M windows, memory 1M/10M
    .venv/bin/python benchmarks/score_throughput.py --windows 100000 --memory-windows 100000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml
from infer_throughput import PeakMemory  # a sibling script: benchmarks/ is sys.path[0]

from seqmodels.config import config_from_mapping
from seqmodels.detector import Detector
from seqmodels.evaluation import Threshold
from seqmodels.models import build_model
from seqmodels.spec import DataSpec
from seqmodels.thresholds import Thresholds

RESULTS = Path(__file__).parent / "results" / "score_throughput.json"
WINDOW, SERIES = 64, 100
DETECTOR_RUN = """
import sys
from seqmodels.detector import Detector
scores = Detector.load(sys.argv[1]).score(sys.argv[2])
print(len(scores.windows), len(scores.steps))
"""


def write_series(path: Path, windows: int, seed: int = 0) -> int:
    """SERIES noisy sines whose stride-1 windows number `windows`; returns the steps."""
    rng = np.random.default_rng(seed)
    length = windows // SERIES + WINDOW - 1
    writer = None
    for index in range(SERIES):
        t = np.arange(length, dtype=np.int64)
        value = np.sin(2 * np.pi * t / 16 + rng.uniform(0, 2 * np.pi)) + rng.normal(0, 0.05, length)
        table = pa.table({"series_id": pa.array([f"s{index:03d}"] * length), "t": t, "value": value})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()
    return SERIES * length


def make_detector(folder: Path) -> Detector:
    """A seeded conv detector (untrained: the speed of scoring does not depend on the weights)."""
    spec = DataSpec(kind="series", input_shape=(WINDOW, 1), features=("value",), stride=1)
    cfg = config_from_mapping({"model": {"kind": "conv", "hidden_size": 16, "latent_dim": 8}})
    torch.manual_seed(0)
    model = build_model(cfg.model, spec)
    card = {"model": cfg.model.model_dump(mode="json"), "data_spec": spec.to_dict(),
            "scaler": {"features": ["value"], "mean": [0.0], "std": [0.7]}}
    detector = Detector(model, card, Thresholds(Threshold(value=1.0, method="fixed", fitted_on="none")))
    detector.save(folder)
    return detector


def timed(command: list[str], memory: bool = False) -> dict:
    started = time.perf_counter()
    if memory:
        with PeakMemory() as peak:
            subprocess.run(command, check=True, capture_output=True, text=True)
        return {"seconds": round(time.perf_counter() - started, 1),
                "peak_pss_mib": round(peak.peak / 2**20), "peak_pss_top_mib": peak.top()}
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return {"seconds": round(time.perf_counter() - started, 1), "stdout": done.stdout.strip()[-200:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=1_000_000)
    parser.add_argument("--memory-windows", type=int, default=1_000_000,
                        help="N of the N vs 10 x N memory runs")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 1,
                        help="predictor actors of `score` (default: one per core, as the Detector "
                             "uses every core)")
    parser.add_argument("--batch-size", type=int, default=4096)
    args = parser.parse_args()
    result: dict = {"window": WINDOW, "stride": 1, "series": SERIES, "model": "conv hidden 16 latent 8",
                    "infer": {"batch_size": args.batch_size, "concurrency": args.concurrency}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_detector(root / "detector")
        params = root / "params.yaml"
        params.write_text(yaml.safe_dump({"infer": {"batch_size": args.batch_size,
                                                    "concurrency": args.concurrency}}))
        score = [sys.executable, "-m", "seqmodels.cli", "score", "--params", str(params), "--model",
                 str(root / "detector")]
        inputs = {}
        for windows in sorted({args.windows, args.memory_windows, 10 * args.memory_windows}):
            inputs[windows] = root / f"series-{windows}.parquet"
            steps = write_series(inputs[windows], windows)
            print(f"wrote {windows} windows ({steps} steps)", flush=True)

        result["throughput"] = {}
        sizes = sorted({args.windows, 10 * args.memory_windows})
        for windows in sizes:
            detector = timed([sys.executable, "-c", DETECTOR_RUN, str(root / "detector"),
                              str(inputs[windows])])
            command = timed([*score, "--input", str(inputs[windows]), "--output", str(root / "out")])
            rows = pq.ParquetDataset(root / "out" / "windows").read(columns=["score"]).num_rows
            assert rows == windows, f"score wrote {rows} windows for {windows}"
            result["throughput"][str(windows)] = {
                "detector": {**detector, "windows_per_s": round(windows / detector["seconds"])},
                "score": {**command, "windows_per_s": round(windows / command["seconds"])},
                "score_vs_detector": round(detector["seconds"] / command["seconds"], 3)}
            print(windows, json.dumps(result["throughput"][str(windows)]), flush=True)
        small, large = (result["throughput"][str(n)] for n in (sizes[0], sizes[-1]))
        # what each side costs per window once started: the difference of the two sizes' times
        extra = sizes[-1] - sizes[0]
        if extra > 0:
            result["marginal_windows_per_s"] = {
                side: round(extra / (large[side]["seconds"] - small[side]["seconds"]))
                for side in ("detector", "score")}
            result["fixed_seconds"] = {
                side: round(small[side]["seconds"] - sizes[0] / result["marginal_windows_per_s"][side], 1)
                for side in ("detector", "score")}

        memory = {}
        for windows in (args.memory_windows, 10 * args.memory_windows):
            memory[windows] = timed([*score, "--input", str(inputs[windows]), "--output",
                                     str(root / f"memory-{windows}")], memory=True)
            print(windows, memory[windows], flush=True)
        result["peak_memory"] = {str(windows): run for windows, run in memory.items()}
        result["peak_memory_10x_vs_1x"] = round(
            memory[10 * args.memory_windows]["peak_pss_mib"] / memory[args.memory_windows]["peak_pss_mib"], 3)
    print(json.dumps(result, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
