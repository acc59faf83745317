"""Per-step timeline aggregation: peak memory and time of seqmodels.timeline.aggregate_outputs.

Writes the inference output of one long series (default 10,000,000 steps, W=128, S=64:
156,249 windows ending exactly at the series end; columns series_id, start, score,
step_score as fixed_size_list<float32>[W]) to a Parquet file in a temp dir, in chunks with
a ParquetWriter. Then each measurement runs in a fresh Python process, which reports its
peak RSS (getrusage ru_maxrss) and the aggregation's wall time:

  baseline        imports numpy, pyarrow, pandas and seqmodels.timeline; reads nothing
  mean/max        aggregate_outputs over ParquetFile(path).iter_batches(batch_size=8192)
  window          the same, reading only series_id, start and score (no step_score needed)
  mean, in memory pq.read_table(path) first, then the same aggregation: the reference for
                  what materialising the windows costs

The figure that matters is "extra over baseline": what aggregating adds to a process that
has the libraries imported. It asserts nothing. Raw results go to
benchmarks/results/timeline_memory.json.

    .venv/bin/python benchmarks/timeline_memory.py              # 10M steps, ~1 min
    .venv/bin/python benchmarks/timeline_memory.py --steps 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "timeline_memory.json"
REPO = Path(__file__).resolve().parent.parent
SERIES = "series-0"
RUNS = ("baseline", "mean", "max", "window", "mean, in memory")


def window_starts(steps: int, window: int, stride: int):
    """0, S, 2S, ... and a tail window ending exactly at the series end."""
    import numpy as np

    starts = np.arange(0, steps - window + 1, stride, dtype=np.int64)
    if starts[-1] != steps - window:
        starts = np.append(starts, steps - window)
    return starts


def write_outputs(path: Path, steps: int, window: int, stride: int, chunk: int = 8192) -> int:
    """Write random inference rows for one series, `chunk` windows at a time; the row count."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    starts = window_starts(steps, window, stride)
    rng = np.random.default_rng(0)
    schema = pa.schema([("series_id", pa.string()), ("start", pa.int64()), ("score", pa.float64()),
                        ("step_score", pa.list_(pa.float32(), window))])
    with pq.ParquetWriter(path, schema, use_dictionary=["series_id"]) as writer:
        for first in range(0, len(starts), chunk):
            part = starts[first:first + chunk]
            steps_flat = pa.array(rng.random(len(part) * window, dtype=np.float32))
            writer.write_batch(pa.record_batch([
                pa.array([SERIES] * len(part)), pa.array(part), pa.array(rng.random(len(part))),
                pa.FixedSizeListArray.from_arrays(steps_flat, window)], schema=schema))
    return len(starts)


def measure(run: str, path: Path, steps: int, window: int) -> dict:
    """Aggregate (or not, for the baseline) in this process; its peak RSS and wall time."""
    import numpy  # noqa: F401  (the baseline's imports: what any caller has loaded)
    import pandas  # noqa: F401
    import pyarrow.parquet as pq

    from seqmodels.timeline import aggregate_outputs

    seconds = 0.0
    if run != "baseline":
        how = run.split(",")[0]
        started = time.perf_counter()
        if run.endswith("in memory"):
            batches = pq.read_table(path).to_batches()
        else:
            columns = ["series_id", "start", "score"] if how == "window" else None
            batches = pq.ParquetFile(path).iter_batches(batch_size=8192, columns=columns)
        scores = aggregate_outputs(batches, {SERIES: steps}, window, how)
        seconds = time.perf_counter() - started
        assert scores[SERIES].shape == (steps,)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"run": run, "seconds": seconds, "peak_rss_mib": peak_kib / 1024,
            "vm_hwm_mib": vm_hwm_kib() / 1024}


def vm_hwm_kib() -> int:
    """This process's own peak RSS from /proc (a check on ru_maxrss, which an exec'd child
    can inherit from its parent's memory at the fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def run_fresh(*args: str) -> dict:
    """This script with `args` in a fresh Python process (each peak its own); its JSON line.
    The parent imports no numpy or pyarrow, so its own small RSS is below every child's."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True,
                          text=True, cwd=REPO, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(results: list[dict], windows: int, window: int) -> None:
    baseline = results[0]["peak_rss_mib"]
    print(f"{'how':<18}{'seconds':>9}{'peak RSS MiB':>14}{'extra over baseline MiB':>25}"
          f"{'VmHWM MiB':>11}")
    for row in results:
        row["extra_mib"] = row["peak_rss_mib"] - baseline
        print(f"{row['run']:<18}{row['seconds']:>9.2f}{row['peak_rss_mib']:>14.0f}"
              f"{row['extra_mib']:>25.0f}{row['vm_hwm_mib']:>11.0f}")
    in_memory = windows * window * 4 / 2**20
    print(f"\nall step_score vectors in memory (windows x W x 4 bytes): {windows:,} x {window} x 4 = "
          f"{in_memory:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000_000)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--stride", type=int, default=64)
    parser.add_argument("--write", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", choices=RUNS, help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = ["--steps", str(args.steps), "--window", str(args.window), "--stride", str(args.stride)]
    if args.write:
        print(json.dumps({"windows": write_outputs(args.file, args.steps, args.window, args.stride)}))
    elif args.measure:
        print(json.dumps(measure(args.measure, args.file, args.steps, args.window)))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "outputs.parquet"
            started = time.perf_counter()
            windows = run_fresh("--write", "--file", str(path), *sizes)["windows"]
            print(f"wrote {windows:,} windows ({path.stat().st_size / 2**20:.0f} MiB of Parquet) "
                  f"in {time.perf_counter() - started:.1f} s")
            results = [run_fresh("--measure", run, "--file", str(path), *sizes) for run in RUNS]
        report(results, windows, args.window)
        RESULTS.write_text(json.dumps({"steps": args.steps, "window": args.window,
                                       "stride": args.stride, "windows": windows,
                                       "runs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
