"""Per-epoch training metrics as a DVCLive log, so `dvc plots show` and `dvc exp show` see them.

The log is written by the Ray Train controller as each epoch is reported. Ray Train V2
pins the controller to the driver's node, so the log lands in the project checkout even
when the workers run on other machines, and nothing is written from inside a worker.

The live log is a progress view. When the stage finishes, `write_history` rewrites it from
the history stored inside the final checkpoint, which is the authoritative record: a stage
killed between persisting a checkpoint and logging its epoch would otherwise leave a gap.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

# DVCLive's step is the 1-based epoch, matching the console progress line.
STEP = "epoch"
_NOT_LOGGED = {"epoch"}


def _open(directory: str | Path, resume: bool):
    from dvclive import Live

    # dvcyaml=False: dvc.yaml is ours and already declares this folder; save_dvc_exp=False:
    # `dvc exp run` records the experiment itself.
    return Live(str(directory), resume=resume, report=None, save_dvc_exp=False, dvcyaml=False)


def log_epoch(live: Any, metrics: dict[str, Any]) -> None:
    live.step = int(metrics["epoch"]) + 1
    for name, value in metrics.items():
        if name not in _NOT_LOGGED and isinstance(value, (int, float)) and math.isfinite(value):
            live.log_metric(name, float(value))
    live.next_step()


def write_history(directory: str | Path, history: list[dict[str, float]]) -> None:
    """Replace the log with `history` (one dict per epoch, 0-based `epoch`)."""
    live = _open(directory, resume=False)
    for metrics in history:
        log_epoch(live, metrics)


def read_history(directory: str | Path) -> pd.DataFrame:
    """The log as one frame, one row per epoch (1-based `epoch`), one column per metric."""
    frames = []
    for tsv in sorted((Path(directory) / "plots" / "metrics").glob("*.tsv")):
        frame = pd.read_csv(tsv, sep="\t").drop(columns=["timestamp"], errors="ignore")
        frames.append(frame.drop_duplicates("step", keep="last").set_index("step"))
    if not frames:
        return pd.DataFrame(columns=[STEP])
    return pd.concat(frames, axis=1).rename_axis(STEP).reset_index()


def live_callback(directory: str | Path, resume: bool):
    """A Ray Train UserCallback logging rank 0's report of each epoch to `directory`."""
    from ray.train import UserCallback

    class LiveMetrics(UserCallback):
        def __init__(self) -> None:
            self._live = None

        def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
            if not metrics or "epoch" not in metrics[0]:
                return
            if self._live is None:  # opened in the controller process, not pickled across
                self._live = _open(directory, resume=resume)
            log_epoch(self._live, metrics[0])  # ranks report identical all-reduced figures

    return LiveMetrics()
