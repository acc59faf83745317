"""Sliding windows over the canonical series rows: what a series model reads.

Windows are cut inside each run of one series in one split, so none crosses a split
boundary (a time split cuts a series into train, val and test stretches). When outputs
score every time step (spec.timeline), the stride may not exceed the window and a last
window is added flush with the end of each stretch, so no step goes unscored.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from seqmodels.data.config import DataConfig
from seqmodels.errors import DataError
from seqmodels.spec import ID_COLUMNS

ID_COLUMN = ID_COLUMNS["series"]


def stretches(series_id: np.ndarray, split: np.ndarray) -> np.ndarray:
    """(n, 2) row ranges [begin, end) of each run of one series in one split (rows grouped by series)."""
    change = np.flatnonzero((series_id[1:] != series_id[:-1]) | (split[1:] != split[:-1])) + 1
    bounds = np.concatenate([[0], change, [len(series_id)]])
    return np.stack([bounds[:-1], bounds[1:]], axis=1)


def window_starts(length: int, window: int, stride: int, cover_tail: bool) -> np.ndarray:
    """Starts 0, stride, 2 * stride, ... of the windows inside `length` steps, plus one flush
    with the end when `cover_tail` and the strides stop short of it."""
    starts = np.arange(0, length - window + 1, stride, dtype=np.int64)
    if cover_tail and len(starts) and starts[-1] + window < length:
        starts = np.append(starts, length - window)
    return starts


def _check_long_enough(table: pd.DataFrame, ranges: np.ndarray, window: int, cfg: DataConfig,
                       timeline: bool) -> None:
    """Every stretch must hold a window: a shorter one would silently vanish."""
    short = ranges[(ranges[:, 1] - ranges[:, 0]) < window]
    if not len(short):
        return
    named = [(table["series_id"].iat[b], table["split"].iat[b], int(e - b)) for b, e in short[:5]]
    examples = ", ".join(f"{sid} ({n} steps{f' of {split}' if timeline else ''})" for sid, split, n in named)
    in_test_file = cfg.test_source is not None and all(split == "test" for _, split, _ in named)
    raise DataError(
        f"{len(short)} series in {cfg.test_source if in_test_file else cfg.source} shorter than "
        f"data.window={window}: {examples}",
        where=f"data.test_source: {cfg.test_source}" if in_test_file else "params.yaml: data.window",
        fix=f"set data.window <= {int((ranges[:, 1] - ranges[:, 0]).min())} (the shortest stretch), "
            "supply longer series, or change data.split",
    )


def cut_windows(table: pd.DataFrame, scaled: np.ndarray, cfg: DataConfig, timeline: bool) -> pd.DataFrame:
    """Windows of every stretch over the scaled values (time-major, flattened); a window is
    labelled anomalous when any of its steps is."""
    window, stride = cfg.window, cfg.stride
    if timeline and stride > window:
        raise DataError(f"data.stride={stride} > data.window={window} leaves steps that no window "
                        "covers, and every step needs a score here", where="params.yaml: data.stride",
                        fix=f"set data.stride <= {window}")
    series_id, split = table["series_id"].to_numpy(), table["split"].to_numpy()
    ranges = stretches(series_id, split)
    _check_long_enough(table, ranges, window, cfg, timeline)
    position = table.groupby("series_id", sort=False).cumcount().to_numpy(np.int64)
    labels = table["label"].to_numpy() if "label" in table.columns else None
    rows, starts, pieces, window_labels = [], [], [], []
    for begin, end in ranges:
        offsets = window_starts(int(end - begin), window, stride, timeline)
        view = np.lib.stride_tricks.sliding_window_view(scaled[begin:end], window, axis=0)
        pieces.append(view[offsets].transpose(0, 2, 1).reshape(len(offsets), -1))
        rows.append(begin + offsets)
        starts.append(position[begin + offsets])
        if labels is not None:
            window_labels.append(np.lib.stride_tricks.sliding_window_view(labels[begin:end], window)[offsets]
                                 .max(axis=1).astype(np.int64))
    first = np.concatenate(rows)
    frame = pd.DataFrame({ID_COLUMN: np.arange(len(first), dtype=np.int64),
                          "series_id": series_id[first].astype(str), "split": split[first].astype(str),
                          "start": np.concatenate(starts)})
    frame["x"] = list(np.concatenate(pieces).astype(np.float32))
    if labels is not None:
        frame["label"] = np.concatenate(window_labels)
    return frame
