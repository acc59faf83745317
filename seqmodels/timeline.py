"""One anomaly score per time step of a long series, from the scores of its sliding windows.

Inference scores windows: each window (`start`, length W, stride S <= W) gets one `score`
and a `step_score` vector of W per-step reconstruction errors. Point metrics, plots and
alerts need one value per time step instead, and with S < W every step lies in up to W / S
windows, so the windows' values have to be aggregated per step. `how` picks the rule
(POINT_SCORES):

  mean     mean over the covering windows of that step's per-step error
  max      max over the covering windows of that step's per-step error
  window   mean of the covering windows' per-window scores (no step_score needed)

Steps that no window covers get NaN, never 0: a 0 would read as "normal".

Why an accumulator and not a table: a 10M-step series with W=128, S=64 has 156k windows,
and holding their step_score vectors (plus a long (window, step) table to group by) costs
several times the series. StepScores keeps O(length) state (float64 sums or maxima, int32
coverage counts as a difference array) and takes windows in batches, in any order, so
`aggregate_outputs` can stream Parquet record batches and never hold more than one.

The events part turns per-step flags (score above a threshold) into events: runs of
consecutive flagged steps, reported per series (`events_table`) and scored against labelled
events (`event_precision_recall`). Events never cross a series boundary: for several series
pass lists of per-series arrays, which are counted separately and then summed.

Plain numpy, pyarrow and pandas; nothing of the rest of the package.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from seqmodels.data.tables import fixed_list, vectors
from seqmodels.point_metrics import runs

POINT_SCORES = ("mean", "max", "window")
"""The ways a step's score is aggregated over the windows covering it (see the module doc)."""

OUTPUT_COLUMNS = ("series_id", "start", "score")
"""Columns every inference batch needs; "mean" and "max" need `step_score` as well."""


class StepScores:
    """One series' per-step scores, accumulated from batches of windows in any order."""

    def __init__(self, length: int, window: int, how: str) -> None:
        if how not in POINT_SCORES:
            raise ValueError(f"how must be one of {POINT_SCORES}, got {how!r}")
        if length < 0 or window < 1:
            raise ValueError(f"need length >= 0 and window >= 1, got length={length}, window={window}")
        self.length, self.window, self.how = int(length), int(window), how
        self._count_diff = np.zeros(self.length + 1, dtype=np.int32)
        if how == "max":
            self._acc = np.full(self.length, -np.inf)
        else:  # mean: sums per step; window: a difference array of window scores
            self._acc = np.zeros(self.length + (how == "window"))
        self._offsets = np.arange(self.window)

    def add(self, starts: np.ndarray, window_scores: np.ndarray,
            step_scores: np.ndarray | None = None) -> None:
        """Add n windows: their starts (n,), per-window scores (n,) and, for "mean" and
        "max", per-step scores (n, window). step_scores is ignored for "window". Every input
        is checked before anything is added, so a refused call adds nothing."""
        starts = self._checked_starts(starts)
        window_scores = np.asarray(window_scores, dtype=np.float64)
        if window_scores.shape != starts.shape:
            raise ValueError(f"{len(starts)} starts but window_scores of shape {window_scores.shape}")
        steps = None if self.how == "window" else self._checked_steps(step_scores, len(starts))
        np.add.at(self._count_diff, starts, 1)
        np.add.at(self._count_diff, starts + self.window, -1)
        if steps is None:
            np.add.at(self._acc, starts, window_scores)
            np.add.at(self._acc, starts + self.window, -window_scores)
            return
        index = (starts[:, None] + self._offsets).ravel()
        ufunc = np.maximum if self.how == "max" else np.add
        ufunc.at(self._acc, index, steps.ravel())

    @property
    def coverage(self) -> np.ndarray:
        """How many of the windows added so far cover each step (int32, shape (length,))."""
        return np.cumsum(self._count_diff[:-1], dtype=np.int32)

    def result(self) -> np.ndarray:
        """The per-step scores (float64, shape (length,)); NaN where no window covers a step."""
        count = self.coverage
        out = np.cumsum(self._acc[:-1]) if self.how == "window" else self._acc.copy()
        uncovered = count == 0
        if self.how != "max":  # in place: one float64 array of transient memory, not two
            np.divide(out, count, out=out, where=~uncovered)
        out[uncovered] = np.nan
        return out

    def _checked_starts(self, starts: np.ndarray) -> np.ndarray:
        starts = np.asarray(starts)
        if starts.ndim != 1 or not (starts.size == 0 or np.issubdtype(starts.dtype, np.integer)):
            raise ValueError(f"starts must be a 1-D integer array, got {starts.dtype} "
                             f"of shape {starts.shape}")
        starts = starts.astype(np.int64, copy=False)
        if starts.size and starts.min() < 0:
            raise ValueError(f"a window starts at {starts.min()}, before the series start (0)")
        if starts.size and starts.max() + self.window > self.length:
            raise ValueError(f"the window starting at {starts.max()} runs past the series end "
                             f"(length {self.length}, window {self.window})")
        return starts

    def _checked_steps(self, step_scores: np.ndarray | None, n: int) -> np.ndarray:
        if step_scores is None:
            raise ValueError(f"how={self.how!r} needs step_scores (n, {self.window}): the per-step "
                             "errors of each window; how='window' uses the window scores alone")
        steps = np.asarray(step_scores, dtype=np.float64)
        if steps.shape != (n, self.window):
            raise ValueError(f"step_scores must have shape ({n}, {self.window}), got {steps.shape}")
        return steps


def aggregate_outputs(batches: Iterable[pa.RecordBatch], lengths: Mapping[str, int],
                      window: int, how: str) -> dict[str, np.ndarray]:
    """Per-step scores of every series in `lengths`, streamed from inference output batches.

    Each batch has columns series_id (string), start (int64), score (float) and, for "mean"
    and "max", step_score (fixed_size_list<float32>[window]). Batches are consumed one at a
    time; a series in `lengths` without any window gets all NaN.
    """
    if how not in POINT_SCORES:
        raise ValueError(f"how must be one of {POINT_SCORES}, got {how!r}")
    scores: dict[str, StepScores] = {}
    for batch in batches:
        for series_id, rows in _rows_by_series(batch, how):
            if series_id not in scores:
                scores[series_id] = _new_scores(series_id, lengths, window, how)
            scores[series_id].add(*_window_arrays(rows, window, how))
    out = {}
    for series_id, length in lengths.items():
        seen = scores.pop(series_id, None)
        out[series_id] = seen.result() if seen else np.full(int(length), np.nan)
    return out


def series_in_order(batches: Iterable[pa.RecordBatch], lengths: Mapping[str, int], window: int,
                    how: str) -> Iterator[tuple[str, np.ndarray]]:
    """(series_id, per-step scores) of outputs grouped by series, each series as soon as the
    next begins: memory holds one series, however many there are. A series seen again
    after another is refused (its windows must be together)."""
    current: str | None = None
    scores: StepScores | None = None
    done: set[str] = set()
    for batch in batches:
        for series_id, rows in _rows_in_order(batch, how):
            if series_id != current:
                if scores is not None:
                    yield current, scores.result()
                    done.add(current)
                if series_id in done:
                    raise ValueError(f"the windows of series {series_id!r} are not together in the outputs")
                current, scores = series_id, _new_scores(series_id, lengths, window, how)
            scores.add(*_window_arrays(rows, window, how))
    if scores is not None:
        yield current, scores.result()


def series_runs(ids: pa.Array) -> Iterator[tuple[str, int, int]]:
    """(series_id, begin, end) of each run of one series in a batch of the canonical table,
    found on Arrow's dictionary codes (as Python strings, a million ids took 300 MiB)."""
    encoded = pc.dictionary_encode(ids)
    codes, names = encoded.indices.to_numpy(zero_copy_only=False), encoded.dictionary.to_pylist()
    bounds = np.concatenate([[0], np.flatnonzero(codes[1:] != codes[:-1]) + 1, [len(codes)]])
    for begin, end in itertools.pairwise(bounds.tolist()):
        yield str(names[codes[begin]]), begin, end


def _rows_in_order(batch: pa.RecordBatch, how: str) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Runs of one series in a batch, in row order (unlike _rows_by_series, which groups)."""
    ids = batch.column("series_id").to_numpy(zero_copy_only=False)
    change = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    bounds = np.concatenate([[0], change, [len(ids)]])
    for begin, end in itertools.pairwise(bounds):
        yield from _rows_by_series(batch.slice(begin, end - begin), how)


def output_steps(outputs: pads.Dataset, lengths: pd.Series, window: int, how: str,
                 batch_rows: int = 8192) -> np.ndarray:
    """Every step's score from a dataset of inference outputs, read `batch_rows` at a time,
    concatenated in the order of `lengths`."""
    columns = [*OUTPUT_COLUMNS, *(["step_score"] if how != "window" else [])]
    batches = outputs.to_batches(columns=columns, batch_size=batch_rows)
    return in_row_order(aggregate_outputs(batches, lengths, window, how), lengths)


def aggregate_windows(series_id: np.ndarray, start: np.ndarray, score: np.ndarray,
                      step_score: np.ndarray | None, lengths: pd.Series, window: int, how: str) -> np.ndarray:
    """In-memory windows (one entry per window) -> the score of every step, concatenated in
    the order of `lengths` (series_id -> steps): what evaluate does for its baselines and a
    benchmark for in-process models, through the same streaming aggregation."""
    columns = {"series_id": pa.array(np.asarray(series_id).astype(str)), "start": pa.array(start),
               "score": pa.array(np.asarray(score, dtype=np.float64))}
    if step_score is not None:
        columns["step_score"] = fixed_list(np.asarray(step_score))
    # a Table: pyarrow may return a large column (10M series ids) as a ChunkedArray
    per_series = aggregate_outputs(pa.Table.from_pydict(columns).to_batches(), lengths, window, how)
    return in_row_order(per_series, lengths)


def in_row_order(per_series: Mapping[str, np.ndarray], lengths: pd.Series) -> np.ndarray:
    """Per-series step arrays concatenated in the order of `lengths`' index."""
    return np.concatenate([per_series[str(s)] for s in lengths.index])


def _new_scores(series_id: str, lengths: Mapping[str, int], window: int, how: str) -> StepScores:
    if series_id not in lengths:
        raise ValueError(f"series_id {series_id!r} is in the inference output but not in lengths "
                         f"({len(lengths)} series known)")
    return StepScores(lengths[series_id], window, how)


def _rows_by_series(batch: pa.RecordBatch, how: str) -> Iterator[tuple[str, pa.RecordBatch]]:
    needed = OUTPUT_COLUMNS + (() if how == "window" else ("step_score",))
    missing = [c for c in needed if c not in batch.schema.names]
    if missing:
        raise ValueError(f"inference batch lacks column(s) {missing} needed for how={how!r}")
    ids = batch.column("series_id")
    if ids.null_count:
        raise ValueError(f"{ids.null_count} rows have no series_id")
    encoded = ids if pa.types.is_dictionary(ids.type) else ids.dictionary_encode()
    names = encoded.dictionary.to_pylist()
    if len(names) == 1:
        yield names[0], batch
        return
    codes = encoded.indices.to_numpy()
    for code in np.unique(codes):
        yield names[code], batch.filter(pa.array(codes == code))


def _window_arrays(rows: pa.RecordBatch, window: int,
                   how: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    starts = rows.column("start").to_numpy(zero_copy_only=False)
    window_scores = rows.column("score").to_numpy(zero_copy_only=False)
    steps = None if how == "window" else _step_vectors(rows.column("step_score"), window)
    return starts, window_scores, steps


def _step_vectors(column: pa.Array, window: int) -> np.ndarray:
    if not pa.types.is_fixed_size_list(column.type) or column.type.list_size != window:
        raise ValueError(f"step_score must be fixed_size_list<float32>[{window}], got {column.type}")
    if column.null_count:
        raise ValueError(f"{column.null_count} rows have no step_score")
    return vectors(column)


def merge_events(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and stop (exclusive) indices of each run of consecutive True in a 1-D `flags`."""
    return runs(_as_flags(flags, "flags"))


def events_table(series_id: str, t: np.ndarray, flags: np.ndarray, score: np.ndarray,
                 labels: np.ndarray | None = None) -> pd.DataFrame:
    """One row per event (run of flagged steps) of one series.

    Columns: series_id; start and end (the `t` of the first and last step); steps; peak_score
    and peak_t (the highest score inside, and where; the first NaN if any); overlaps_anomaly
    (pandas boolean: any labelled step inside; <NA> when labels is None).
    """
    starts, stops = merge_events(flags)
    t, score = np.asarray(t), np.asarray(score, dtype=np.float64)
    _same_length(flags=flags, t=t, score=score, labels=labels)
    peaks = np.array([s + np.argmax(score[s:e]) for s, e in zip(starts, stops, strict=True)],
                     dtype=np.int64)
    if labels is None:
        overlaps = pd.array([pd.NA] * len(starts), dtype="boolean")
    else:
        overlaps = pd.array(_any_inside(_as_flags(labels, "labels"), starts, stops), dtype="boolean")
    return pd.DataFrame({
        "series_id": pd.Series([series_id] * len(starts), dtype=object),
        "start": t[starts], "end": t[stops - 1], "steps": (stops - starts).astype(np.int64),
        "peak_score": score[peaks], "peak_t": t[peaks], "overlaps_anomaly": overlaps,
    })


def event_precision_recall(flags: np.ndarray | Sequence[np.ndarray],
                           labels: np.ndarray | Sequence[np.ndarray]) -> dict:
    """Event-level precision and recall of flagged events against labelled events.

    An event is a run of consecutive True. precision = flagged events overlapping a labelled
    event / flagged events (None when nothing is flagged); recall = labelled events overlapped
    by a flagged event / labelled events (None when nothing is labelled); f1 their harmonic
    mean (None if either is None, 0.0 when both are 0). `flags` and `labels` are one series'
    1-D arrays, or lists of them, one per series: events never merge across series.
    """
    totals = np.zeros(4, dtype=np.int64)
    for series_flags, series_labels in _per_series(flags, labels):
        totals += event_counts(series_flags, series_labels)
    return event_summary(totals)


def event_summary(totals: np.ndarray) -> dict:
    """event_precision_recall from the sum of every series' `event_counts`, for callers that
    meet the series one at a time and keep only the four counts."""
    flagged, hits, labelled, found = (int(x) for x in totals)
    precision = hits / flagged if flagged else None
    recall = found / labelled if labelled else None
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {"flagged_events": flagged, "flagged_overlapping": hits, "labelled_events": labelled,
            "labelled_found": found, "precision": precision, "recall": recall, "f1": f1}


def _per_series(flags: np.ndarray | Sequence[np.ndarray],
                labels: np.ndarray | Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    if isinstance(flags, np.ndarray) != isinstance(labels, np.ndarray):
        raise ValueError("flags and labels must both be one series' arrays or both lists of them")
    if isinstance(flags, np.ndarray):
        return [(flags, labels)]
    if len(flags) != len(labels):
        raise ValueError(f"{len(flags)} series of flags but {len(labels)} series of labels")
    return list(zip(flags, labels, strict=True))


def event_counts(flags: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One series' [flagged events, of them overlapping a label, labelled events, of them found]."""
    flags, labels = _as_flags(flags, "flags"), _as_flags(labels, "labels")
    _same_length(flags=flags, labels=labels)
    flag_starts, flag_stops = merge_events(flags)
    label_starts, label_stops = merge_events(labels)
    hits = _any_inside(labels, flag_starts, flag_stops).sum()
    found = _any_inside(flags, label_starts, label_stops).sum()
    return np.array([len(flag_starts), hits, len(label_starts), found])


def _any_inside(mask: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """For each [start, stop): does `mask` hold any True there?"""
    running = np.concatenate(([0], np.cumsum(mask, dtype=np.int64)))
    return running[stops] - running[starts] > 0


def _as_flags(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one series), got shape {values.shape}")
    if values.dtype != bool and not np.isin(values, (0, 1)).all():
        raise ValueError(f"{name} must be booleans or 0/1")
    return values.astype(bool, copy=False)


def _same_length(**arrays: np.ndarray | None) -> None:
    sizes = {name: len(a) for name, a in arrays.items() if a is not None}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"arrays differ in length: {sizes}")
