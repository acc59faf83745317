"""Run a command and trace its process tree's memory over time: every 0.5 s, each process's
PSS split into anonymous, file-backed and shared memory (/proc/PID/smaps_rollup), and the
tree's totals. PeakMemory (infer_throughput.py) gives one peak; this says *where* and
*when*. For example, whether a Ray stage's growth is its own heap or object-store pages that
its workers map (shared memory), and whether that growth levels off.

    .venv/bin/python benchmarks/memory_trace.py -- .venv/bin/python pipelines/infer.py \\
        --params params.yaml --set ray.data_memory_limit_mb=256

Prints the command's exit code and wall time, the tree's (seconds, PSS MiB, shared MiB)
every 2 s, and the processes at the tree's peak. With --json FILE the whole trace is also
written there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import psutil

FIELDS = {"Pss:": "pss", "Pss_Anon:": "anon", "Pss_File:": "file", "Pss_Shmem:": "shmem"}


def rollup(pid: int) -> dict[str, int]:
    """The process's PSS parts in MiB; empty once it has gone."""
    parts: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as file:
            for line in file:
                words = line.split()
                if words and words[0] in FIELDS:
                    parts[FIELDS[words[0]]] = int(words[1]) // 1024
    except OSError:
        return {}
    return parts


def snapshot(root: psutil.Process) -> dict[str, dict[str, int]]:
    """Each live process of the tree by "pid command", with its PSS parts."""
    members = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            name = " ".join(process.cmdline())[:70] or process.name()
        except psutil.Error:
            continue
        parts = rollup(process.pid)
        if parts:
            members[f"{process.pid} {name}"] = parts
    return members


def trace(command: list[str], interval_s: float = 0.5) -> dict:
    started = time.perf_counter()
    process = subprocess.Popen(command)
    root = psutil.Process(process.pid)
    series, peak, at_peak = [], 0, {}
    while process.poll() is None:
        try:
            members = snapshot(root)
        except psutil.NoSuchProcess:
            break
        total = sum(parts.get("pss", 0) for parts in members.values())
        shared = sum(parts.get("shmem", 0) for parts in members.values())
        series.append((round(time.perf_counter() - started, 1), total, shared))
        if total > peak:
            peak, at_peak = total, members
        time.sleep(interval_s)
    process.wait()
    return {"exit_code": process.returncode, "seconds": round(time.perf_counter() - started, 1),
            "peak_pss_mib": peak, "series_s_pss_shmem_mib": series,
            "at_peak": dict(sorted(at_peak.items(), key=lambda item: -item[1].get("pss", 0)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the whole trace here")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to trace after --")
    result = trace(command)
    every = max(1, round(2 / 0.5))
    print(f"exit {result['exit_code']}, {result['seconds']} s, peak {result['peak_pss_mib']} MiB")
    print("(s, PSS MiB, shared MiB):", result["series_s_pss_shmem_mib"][::every])
    for name, parts in list(result["at_peak"].items())[:10]:
        print(f"  at the peak: {parts} {name}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    raise SystemExit(result["exit_code"])


if __name__ == "__main__":
    main()
