"""Every stage of the pipeline at N and at 10 x N rows: each stage's time and peak memory, and
prepare's rows/s against a plain single-process pyarrow/numpy pass over the same file.

The input is what an operations team has: one canonical Parquet file (series_id, t, four
sensor features, a per-step anomaly label) of series 1,000 steps long, each a noisy mix of
two periods with a few labelled incidents (a level shift or a burst of noise), written a
row group at a time so that 100M rows need no more memory than 1M. The pipeline runs on it
with window 100, stride 50, split by series, per-step scores (data.labels=points), a small
conv model trained for one epoch by one Ray Train worker (the speed of every stage but
train does not depend on the weights).

Each stage is its own `python pipelines/<stage>.py --params params.yaml` in a fresh process,
as `dvc repro` runs it; its peak memory is the largest PSS summed over that process tree
(Ray's daemons and workers included; this script's own process is not), sampled every 0.2 s
(benchmarks/infer_throughput.PeakMemory). Streaming means a stage's peak at 10 x N stays
within 1.2 x its peak at N (issue 19).

The plain pass (`plain_prepare`) does prepare's work by hand on the same file: it reads it
a row group at a time, standardises the features with the train series' mean and standard
deviation, cuts each series' stride-50 windows and writes them as fixed-size-list Parquet;
no validation, no Ray, no splits file. prepare's rows/s over the plain pass's is the ratio.

    .venv/bin/python benchmarks/pipeline_scale.py                          # 1M and 10M rows
    .venv/bin/python benchmarks/pipeline_scale.py --rows 100000 --scale 10 --stages prepare validate
    .venv/bin/python benchmarks/pipeline_scale.py --rows 100000000 --scale 1  # the 100M run
    .venv/bin/python benchmarks/pipeline_scale.py --bad-row 9876543 --kill     # a bad row, kills at 10M
    .venv/bin/python benchmarks/pipeline_scale.py --rows 100000000 --scale 1 --dvc  # `dvc repro` at 100M

`--dvc` runs `dvc repro` itself instead, in a clone of this repository's last commit whose
params.yaml is the repository's with the benchmark's values set: every stage of dvc.yaml
(score@heldout too) and DVC's hashing and caching of every output between them. Each stage's
peak is the PSS of the tree under its `pipelines/<stage>.py` process, its time the span it
was seen running; DVC's own process is reported apart. The clone's DVC cache links its
files (cache.type hardlink) rather than copying them, as DVC advises for large data: the
stages publish a new file each run (seqmodels.publish), so no cached file is written in place.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from infer_throughput import PeakMemory  # a sibling script: benchmarks/ is sys.path[0]

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "pipeline_scale.json"
STAGES = ("prepare", "validate", "train", "infer", "detector", "evaluate")
LENGTH, FEATURES, WINDOW, STRIDE = 1_000, ("f0", "f1", "f2", "f3"), 100, 50
SERIES_PER_GROUP = 100  # 100k rows per row group
TEST_FRACTION, VAL_FRACTION = 0.3, 0.15


def write_series(path: Path, rows: int, seed: int = 0) -> int:
    """rows // LENGTH series of LENGTH steps; one in five has an incident, labelled per step.
    Returns the number of series."""
    n_series = max(rows // LENGTH, 1)
    rng = np.random.default_rng(seed)
    t = np.arange(LENGTH, dtype=np.int64)
    with pq.ParquetWriter(path, schema(), compression="zstd") as writer:
        for first in range(0, n_series, SERIES_PER_GROUP):
            ids, values, labels = [], [], []
            for index in range(first, min(first + SERIES_PER_GROUP, n_series)):
                phase, period = rng.uniform(0, 2 * np.pi, 2), rng.uniform(20, 80, 2)
                x = (np.sin(2 * np.pi * t[:, None] / period + phase)[:, [0, 1, 0, 1]]
                     * np.array([1.0, 0.5, -0.8, 0.3]) + rng.normal(0, 0.1, (LENGTH, len(FEATURES))))
                label = np.zeros(LENGTH, np.int8)
                if index % 5 == 4:
                    start, width = int(rng.integers(100, LENGTH - 150)), int(rng.integers(20, 80))
                    x[start:start + width] += rng.choice([2.0, -2.0]) if index % 2 else rng.normal(
                        0, 1.5, (width, len(FEATURES)))
                    label[start:start + width] = 1
                ids.append(np.full(LENGTH, f"s{index:07d}"))
                values.append(x)
                labels.append(label)
            x = np.concatenate(values)
            columns = {"series_id": np.concatenate(ids), "t": np.tile(t, len(ids)),
                       **{name: x[:, i] for i, name in enumerate(FEATURES)}, "label": np.concatenate(labels)}
            writer.write_table(pa.table(columns, schema=schema()))
    return n_series


def schema() -> pa.Schema:
    return pa.schema([("series_id", pa.string()), ("t", pa.int64()),
                      *((name, pa.float64()) for name in FEATURES), ("label", pa.int8())])


def params(source: Path) -> dict:
    """The pipeline's parameters for the benchmark project (every path relative to it)."""
    return {
        "seed": 0,
        "data": {"kind": "series", "source": str(source), "labels": "points", "window": WINDOW,
                 "stride": STRIDE, "split": {"by": "series", "val": VAL_FRACTION, "test": TEST_FRACTION}},
        "model": {"kind": "conv", "hidden_size": 16, "num_layers": 2, "latent_dim": 8},
        "train": {"workers": 1, "epochs": 1, "batch_size": 256, "lr": 0.005},
        "infer": {"batch_size": 1024, "concurrency": 1},
        "ray": {"num_cpus": 2},
    }


def overridden(values: dict, overrides: list[str]) -> dict:
    """`values` with each KEY=VALUE (a dotted key, a YAML value) set."""
    for override in overrides:
        key, _, raw = override.partition("=")
        *parents, leaf = key.split(".")
        node = values
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = yaml.safe_load(raw)
    return values


def run_stage(stage: str, project: Path) -> dict:
    started = time.perf_counter()
    with PeakMemory(include_self=False) as peak:
        done = subprocess.run([sys.executable, str(REPO / "pipelines" / f"{stage}.py"), "--params",
                               "params.yaml"], cwd=project, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{stage} failed in {project}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return {"seconds": round(time.perf_counter() - started, 1), "peak_pss_mib": round(peak.peak / 2**20),
            "peak_pss_top_mib": peak.top(4)}


def spoil_row(source: Path, row: int) -> None:
    """Make feature f1 of data row `row` infinite, rewriting the file a row group at a time."""
    spoiled = source.with_name("spoiled.parquet")
    file, seen = pq.ParquetFile(source), 0
    with pq.ParquetWriter(spoiled, file.schema_arrow, compression="zstd") as writer:
        for group in range(file.num_row_groups):
            table = file.read_row_group(group)
            if seen <= row < seen + table.num_rows:
                values = table.column("f1").to_numpy().copy()
                values[row - seen] = np.inf
                table = table.set_column(table.schema.get_field_index("f1"), "f1", pa.array(values))
            writer.write_table(table)
            seen += table.num_rows
    spoiled.replace(source)


def bad_row_run(project: Path, row: int) -> dict:
    """prepare on a file with one bad value at `row`: it must fail naming the row and the
    file, in the memory of a good run."""
    source = project / "series.parquet"
    spoil_row(source, row)
    prepared = project / "data" / "prepared"
    stamps = lambda: {path.name: path.stat().st_mtime_ns for path in prepared.iterdir()}  # noqa: E731
    before = stamps()
    started = time.perf_counter()
    with PeakMemory(include_self=False) as peak:
        done = subprocess.run([sys.executable, str(REPO / "pipelines" / "prepare.py"), "--params",
                               "params.yaml"], cwd=project, capture_output=True, text=True)
    message = done.stderr.strip().splitlines()[0] if done.stderr.strip() else ""
    return {"row": row, "exit_code": done.returncode, "seconds": round(time.perf_counter() - started, 1),
            "peak_pss_mib": round(peak.peak / 2**20), "names_row": str(row) in done.stderr,
            "names_file": str(source) in done.stderr, "message": message[:300],
            "previous_prepared_kept": before == stamps()}


PUBLISHED = ("data", "models", "outputs", "reports", "metrics")  # the project's folders of stage outputs


def published(project: Path) -> dict[str, int]:
    """Every published file's modification time (staging folders, .<name>.staging-*, left out)."""
    return {str(path.relative_to(project)): path.stat().st_mtime_ns
            for folder in PUBLISHED if (project / folder).exists()
            for path in (project / folder).rglob("*")
            if path.is_file() and ".staging-" not in str(path) and ".retired-" not in str(path)}


def kill_run(stage: str, project: Path, seconds: float, rng: np.random.Generator) -> dict:
    """Run `stage` again, SIGKILL its process group at a random point of its usual time, check
    that every published output is as it was, then rerun it to completion."""
    before = published(project)
    at = float(rng.uniform(0.2, 0.8) * seconds)
    process = subprocess.Popen([sys.executable, str(REPO / "pipelines" / f"{stage}.py"), "--params",
                                "params.yaml"], cwd=project, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        process.wait(timeout=at)
        finished = True
    except subprocess.TimeoutExpired:
        tree = psutil.Process(process.pid).children(recursive=True)  # its Ray daemons and workers too
        os.killpg(process.pid, signal.SIGKILL)
        for child in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        process.wait()
        finished = False
    intact = published(project) == before
    rerun = subprocess.run([sys.executable, str(REPO / "pipelines" / f"{stage}.py"), "--params",
                            "params.yaml"], cwd=project, capture_output=True, text=True)
    return {"killed_at_s": round(at, 1), "finished_before_the_kill": finished, "outputs_intact": intact,
            "rerun_exit_code": rerun.returncode}


def plain_prepare(source: Path, target: Path, n_series: int, seed: int = 0) -> dict:
    """prepare's reading, scaling and windowing in one process, a row group at a time."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_series)
    n_test, n_val = round(n_series * TEST_FRACTION), round(n_series * VAL_FRACTION)
    train = np.zeros(n_series, bool)
    train[order[n_test + n_val:]] = True
    file = pq.ParquetFile(source)
    total, square, count = np.zeros(len(FEATURES)), np.zeros(len(FEATURES)), 0
    for group in range(file.num_row_groups):  # pass 1: the train series' mean and std
        table = file.read_row_group(group, columns=["series_id", *FEATURES])
        index = np.char.lstrip(table.column("series_id").to_numpy(zero_copy_only=False).astype(str), "s")
        keep = train[index.astype(np.int64)]
        x = np.column_stack([table.column(name).to_numpy() for name in FEATURES])[keep]
        total, square, count = total + x.sum(0), square + (x * x).sum(0), count + len(x)
    mean = total / count
    std = np.sqrt(square / count - mean**2)
    starts = np.arange(0, LENGTH - WINDOW + 1, STRIDE)
    windows = 0
    out_schema = pa.schema([("series_id", pa.string()), ("start", pa.int64()),
                            ("x", pa.list_(pa.float32(), WINDOW * len(FEATURES)))])
    with pq.ParquetWriter(target, out_schema) as writer:
        for group in range(file.num_row_groups):  # pass 2: scale, cut, write
            table = file.read_row_group(group, columns=["series_id", *FEATURES])
            x = ((np.column_stack([table.column(name).to_numpy() for name in FEATURES]) - mean) / std)
            per_series = x.astype(np.float32).reshape(-1, LENGTH, len(FEATURES))
            cut = np.lib.stride_tricks.sliding_window_view(per_series, WINDOW, axis=1)[:, starts]
            cut = cut.transpose(0, 1, 3, 2).reshape(-1, WINDOW * len(FEATURES))
            ids = table.column("series_id").to_numpy(zero_copy_only=False)[::LENGTH]
            writer.write_table(pa.table({
                "series_id": np.repeat(ids, len(starts)), "start": np.tile(starts, len(ids)),
                "x": pa.FixedSizeListArray.from_arrays(pa.array(cut.ravel()), WINDOW * len(FEATURES))}))
            windows += len(cut)
    return {"seconds": round(time.perf_counter() - started, 1), "windows": windows}


class StagePeaks(PeakMemory):
    """While `dvc repro` runs: each stage's peak PSS (its `pipelines/<stage>.py` process and
    every process under it: Ray's daemons and workers) and the span it was seen running."""

    def __init__(self, root: psutil.Process, interval_s: float = 0.5):
        super().__init__(interval_s)
        self.root, self.stages, self.dvc_peak = root, {}, 0

    @staticmethod
    def _pss(process: psutil.Process) -> int:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            return process.memory_full_info().pss
        return 0

    @staticmethod
    def _stage_of(process: psutil.Process) -> str | None:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            words = process.cmdline()
            for index, word in enumerate(words):
                if word.startswith("pipelines/") and word.endswith(".py"):
                    stage = word.removeprefix("pipelines/").removesuffix(".py")
                    batch = words[index + 2] if words[index + 1:index + 2] == ["--batch"] else None
                    return f"{stage}@{batch}" if batch else stage
        return None

    def record(self) -> None:
        now = time.perf_counter()
        with contextlib.suppress(psutil.NoSuchProcess):
            self.dvc_peak = max(self.dvc_peak, self._pss(self.root))
            for process in self.root.children(recursive=True):
                stage = self._stage_of(process)
                if stage is None:
                    continue
                with contextlib.suppress(psutil.NoSuchProcess):
                    pss = sum(self._pss(member) for member in [process, *process.children(recursive=True)])
                    seen = self.stages.setdefault(stage, {"first": now, "last": now, "peak": 0})
                    seen["last"], seen["peak"] = now, max(seen["peak"], pss)

    def report(self) -> dict:
        return {stage: {"seconds": round(seen["last"] - seen["first"], 1),
                        "peak_pss_mib": round(seen["peak"] / 2**20)} for stage, seen in self.stages.items()}


def repository_params(source: Path, overrides: list[str]) -> dict:
    """The repository's params.yaml with the benchmark's values (and `overrides`) set over it:
    dvc.yaml interpolates keys (paths, score.batches) the benchmark's own file leaves out."""
    values = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, settings in params(source).items():
        if isinstance(settings, dict):
            values.setdefault(section, {}).update(settings)
        else:
            values[section] = settings
    return overridden(values, overrides)


def dvc_run(root: Path, rows: int, overrides: list[str]) -> dict:
    """`dvc repro` on `rows` rows in a clone of this repository's last commit."""
    project = root / f"dvc-rows-{rows}"
    subprocess.run(["git", "clone", "-q", str(REPO), str(project)], check=True)
    source = project / "series.parquet"
    n_series = write_series(source, rows)
    values = repository_params(source, overrides)
    (project / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    dvc = [str(Path(sys.executable).with_name("dvc"))]
    subprocess.run([*dvc, "config", "--local", "cache.type", "hardlink"], cwd=project, check=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(project)}  # the clone's package, not an editable install's
    started = time.perf_counter()
    process = subprocess.Popen([*dvc, "repro"], cwd=project, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    with StagePeaks(psutil.Process(process.pid)) as peaks:
        log, _ = process.communicate()
    seconds = round(time.perf_counter() - started, 1)
    (project / "dvc-repro.log").write_text(log)
    if process.returncode:
        raise SystemExit(f"dvc repro failed in {project} (exit {process.returncode}):\n{log[-4000:]}")
    status = subprocess.run([*dvc, "status"], cwd=project, env=env, capture_output=True, text=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=project, capture_output=True,
                            text=True)
    return {"rows": rows, "series": n_series, "file_mib": round(source.stat().st_size / 2**20),
            "commit": commit.stdout.strip(),
            "dvc_repro_seconds": seconds, "dvc_process_peak_pss_mib": round(peaks.dvc_peak / 2**20),
            "stages": peaks.report(), "dvc_status": status.stdout.strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="N, the smaller size")
    parser.add_argument("--scale", type=int, default=10, help="the larger size is scale x N (1: one size)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                        help="the stages to measure, in pipeline order (each needs the ones before)")
    parser.add_argument("--keep", type=Path, help="build the projects here and keep them")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="where the figures go (default: %(default)s)")
    parser.add_argument("--kill", action="store_true",
                        help="on the larger size, kill each measured stage at a random point, check its "
                             "published outputs are intact, then rerun it")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a parameter of the benchmark's params.yaml, e.g. ray.spread_reads=never")
    parser.add_argument("--bad-row", type=int, metavar="ROW",
                        help="afterwards, spoil data row ROW of the larger file and run prepare on it")
    parser.add_argument("--dvc", action="store_true",
                        help="run `dvc repro` itself on the larger size, in a clone of this repository")
    args = parser.parse_args()
    if args.dvc:
        with contextlib.ExitStack() as stack:
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
            root = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
            result = dvc_run(root, args.rows * args.scale, args.overrides)
        print(json.dumps(result, indent=2))
        target = args.results if args.results != RESULTS else RESULTS.with_name("pipeline_scale_dvc.json")
        target.write_text(json.dumps(result, indent=2) + "\n")
        return
    stages = [stage for stage in STAGES if stage in args.stages]
    needed = STAGES[:STAGES.index(stages[-1]) + 1]
    result: dict = {"length": LENGTH, "features": len(FEATURES), "window": WINDOW, "stride": STRIDE,
                    "train": "1 epoch, 1 worker", "overrides": args.overrides, "sizes": {}}
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
        root = args.keep or Path(tmp)
        for rows in sorted({args.rows, args.rows * args.scale}):
            project = root / f"rows-{rows}"
            project.mkdir(parents=True, exist_ok=True)
            source = project / "series.parquet"
            n_series = write_series(source, rows)
            (project / "params.yaml").write_text(yaml.safe_dump(overridden(params(source), args.overrides),
                                                                sort_keys=False))
            size: dict = {"series": n_series, "file_mib": round(source.stat().st_size / 2**20)}
            plain = plain_prepare(source, project / "plain-windows.parquet", n_series)
            size["plain_prepare"] = {**plain, "rows_per_s": round(n_series * LENGTH / plain["seconds"])}
            for stage in needed:
                measured = run_stage(stage, project)
                if stage in stages:
                    size[stage] = measured
                print(rows, stage, json.dumps(measured), flush=True)
            if "prepare" in size:
                size["prepare"]["rows_per_s"] = round(n_series * LENGTH / size["prepare"]["seconds"])
                size["prepare_vs_plain"] = round(plain["seconds"] / size["prepare"]["seconds"], 3)
            result["sizes"][str(rows)] = size
            if args.kill and rows == args.rows * args.scale:
                rng = np.random.default_rng(19)
                result["kill"] = {stage: kill_run(stage, project, size[stage]["seconds"], rng)
                                  for stage in stages}
                print("kill", json.dumps(result["kill"]), flush=True)
            if args.bad_row is not None and rows == args.rows * args.scale:
                result["bad_row"] = bad_row_run(project, args.bad_row)
                print("bad row", json.dumps(result["bad_row"]), flush=True)
    if args.scale > 1:
        small, large = (result["sizes"][str(n)] for n in (args.rows, args.rows * args.scale))
        result["peak_memory_large_vs_small"] = {
            stage: round(large[stage]["peak_pss_mib"] / small[stage]["peak_pss_mib"], 3) for stage in stages}
    print(json.dumps(result, indent=2))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
