"""Series scored per time step (spec.timeline): one score per step, its metrics, its events.

The model's per-window outputs are folded into one score per time step (model.point_score,
seqmodels.timeline). The same is done for two baselines on the same windows: PCA of the
model's latent size (per-step errors, like the model) and the distance to the nearest
training window (a classic k-NN detector). Each is measured on the test steps with TSB-AD's
metrics (VUS-PR is the headline); the model's steps are flagged at a threshold fitted on
validation steps, and runs of flags become events.

Everything streams one series at a time, in the canonical table's order: the table, the
outputs and the examples are each read a batch at a time and met series by series, the
timeline is written as it comes, and the plot keeps only the series it may draw. The
metrics pool every test step of every series (exact TSB-AD figures rank them all): each
test step's three scores and its label go to files as the series go by, and are read back
one detector at a time, 9 bytes a test step in memory (TestSteps).
"""

from __future__ import annotations

import collections
import itertools
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from seqmodels import plots
from seqmodels.config import Config
from seqmodels.data.tables import fixed_list, streaming_parquet, vectors
from seqmodels.errors import DataError
from seqmodels.evaluation import Baselines, FlagCounts, Threshold
from seqmodels.periods import MAX_POINTS, dominant_period
from seqmodels.point_metrics import point_metrics
from seqmodels.publish import MANIFEST, build_manifest, write_json_atomic, write_text_atomic
from seqmodels.spec import SERIES_FILE
from seqmodels.stages.evaluate.inputs import Evaluation, example_batches
from seqmodels.thresholds import Thresholds
from seqmodels.timeline import (
    event_counts,
    event_summary,
    events_table,
    series_in_order,
    series_runs,
)

OUTPUT_BATCH_ROWS = 8192
SERIES_BATCH_ROWS = 65_536
TIMELINE_FILE = "part-0.parquet"
TIMELINE_ROW_GROUP = 1 << 20
DETECTORS = ("model", "pca", "knn")
EVENT_COLUMNS = ["series_id", "split", "start", "end", "steps", "peak_score", "peak_t", "overlaps_anomaly"]


@dataclass
class SeriesSteps:
    """One series' steps as the canonical table holds them (the first few feature columns,
    unscaled), with each detector's score (NaN where no window covers the step)."""

    series_id: str
    t: np.ndarray
    split: np.ndarray
    label: np.ndarray | None
    values: np.ndarray  # (steps, at most 3)
    scores: dict[str, np.ndarray]


def series_lengths(path: Path) -> dict[str, int]:
    """Every series' step count, in table order, from its series_id column alone."""
    lengths: dict[str, int] = {}
    for batch in streaming_parquet(path).iter_batches(batch_size=SERIES_BATCH_ROWS, columns=["series_id"]):
        for series_id, begin, end in series_runs(batch.column("series_id")):
            lengths[series_id] = lengths.get(series_id, 0) + end - begin
    return lengths


def canonical_series(path: Path, features: tuple[str, ...], labelled: bool) -> Iterator[dict[str, Any]]:
    """Each series' rows of the canonical table (series_id, t, split, label, the first three
    features), a series as soon as the next one begins."""
    columns = ["t", "split", *(["label"] if labelled else []), *features[:3]]
    current: str | None = None
    pieces: list[pa.RecordBatch] = []
    batches = streaming_parquet(path).iter_batches(batch_size=SERIES_BATCH_ROWS,
                                                   columns=["series_id", *columns])
    for batch in batches:
        for series_id, begin, end in series_runs(batch.column("series_id")):
            if series_id != current and pieces:
                yield _series_rows(current, pieces, features[:3], labelled)
                pieces = []
            current = series_id
            pieces.append(batch.slice(begin, end - begin))
    if pieces:
        yield _series_rows(current, pieces, features[:3], labelled)


def _series_rows(series_id: str | None, pieces: list[pa.RecordBatch], features: tuple[str, ...],
                 labelled: bool) -> dict[str, Any]:
    table = pa.Table.from_batches(pieces)
    column = lambda name: table.column(name).to_numpy()  # noqa: E731
    return {"series_id": str(series_id), "t": column("t"), "split": column("split").astype(str),
            "label": column("label") if labelled else None,
            "values": np.stack([column(f).astype(np.float64) for f in features], axis=1)}


def baseline_batches(inputs: Evaluation,
                     baselines: Baselines) -> Iterator[tuple[pa.RecordBatch, pa.RecordBatch]]:
    """The baselines' windows a batch of examples at a time, as output batches: PCA with its
    per-step errors (aggregated like the model's; a window's score is the mean of its steps'),
    the k-NN distance of each window (a window-level detector: aggregated by window means)."""
    series_id, start = inputs.series_ids, inputs.frame["start"].to_numpy()
    for rows, x in example_batches(inputs):
        ids, starts = series_id.take(pa.array(rows)), pa.array(start[rows])
        steps = baselines.pca_step_errors(x)
        pca = pa.RecordBatch.from_pydict({"series_id": ids, "start": starts,
                                          "score": pa.array(steps.mean(axis=1), pa.float64()),
                                          "step_score": fixed_list(steps)})
        distance = baselines.nearest_distance(x, rows)
        knn = pa.RecordBatch.from_pydict({"series_id": ids, "start": starts,
                                          "score": pa.array(distance, pa.float64())})
        yield pca, knn


def unzipped(pairs: Iterator[tuple[pa.RecordBatch, pa.RecordBatch]]) -> tuple[Iterator[pa.RecordBatch],
                                                                          Iterator[pa.RecordBatch]]:
    """The first and the second batches of `pairs` as two iterators, each batch held only
    until its iterator has read it. itertools.tee frees what it holds a block of 57 items at
    a time, once both iterators are past the whole block: at 10M rows (47 batches) it held
    every PCA batch to the end, 59 MiB that grew with the rows."""
    waiting: tuple[collections.deque, collections.deque] = (collections.deque(), collections.deque())

    def side(i: int) -> Iterator[pa.RecordBatch]:
        while True:
            if not waiting[i]:
                pair = next(pairs, None)
                if pair is None:
                    return
                waiting[0].append(pair[0])
                waiting[1].append(pair[1])
            yield waiting[i].popleft()

    return side(0), side(1)


def model_batches(inputs: Evaluation, how: str) -> Iterator[pa.RecordBatch]:
    """The model's windows in id order (the canonical table's order), OUTPUT_BATCH_ROWS at a
    time, as output batches. Inference writes its parts in no global order (Ray Data does not
    keep it, and a row group may hold the last ids and the first), so they come from the
    per-row scalars evaluate holds sorted by id; "mean" and "max" also read every window's
    step scores, put in id order on disk first (StepScoreFile): sorted in memory they were
    window x 4 bytes a window, twice over while sorting (152 MiB at 10M rows)."""
    frame = inputs.frame
    series_id = inputs.series_ids
    start, score = frame["start"].to_numpy(), frame["score"].to_numpy()
    with tempfile.TemporaryDirectory(prefix="seqmodels-steps-") as folder:
        steps = StepScoreFile.write(inputs, Path(folder)) if how != "window" else None
        for begin in range(0, len(frame), OUTPUT_BATCH_ROWS):
            rows = slice(begin, begin + OUTPUT_BATCH_ROWS)
            columns = {"series_id": series_id.slice(begin, OUTPUT_BATCH_ROWS), "start": pa.array(start[rows]),
                       "score": pa.array(score[rows])}
            if steps is not None:
                columns["step_score"] = fixed_list(steps.read(begin, len(start[rows])))
            yield pa.RecordBatch.from_pydict(columns)


@dataclass
class StepScoreFile:
    """Every window's step scores (float32) in a raw file, in id order: the outputs' row
    groups are read one at a time and each run of consecutive ids is written at its place,
    so memory holds one row group whatever the number of windows. Read back with plain
    reads, not a memory map: a map's pages would count in the process's memory."""

    path: Path
    window: int

    @classmethod
    def write(cls, inputs: Evaluation, folder: Path) -> StepScoreFile:
        key, window = inputs.spec.id_column, inputs.spec.window
        ids = inputs.frame[key].to_numpy()  # sorted, each once (load checks them against the examples)
        path, row_bytes = folder / "step_score.bin", window * np.dtype(np.float32).itemsize
        with path.open("wb") as out:
            out.truncate(len(ids) * row_bytes)
            for fragment in inputs.outputs.get_fragments():
                file = streaming_parquet(fragment.filesystem.open_input_file(fragment.path))
                for batch in file.iter_batches(batch_size=OUTPUT_BATCH_ROWS, columns=[key, "step_score"]):
                    positions = np.searchsorted(ids, batch.column(key).to_numpy())
                    _write_at(out.fileno(), positions, vectors(batch.column("step_score")), row_bytes)
        return cls(path, window)

    def read(self, begin: int, rows: int) -> np.ndarray:
        """(rows, window) step scores of the windows numbered begin.. in id order."""
        with self.path.open("rb") as file:
            file.seek(begin * self.window * np.dtype(np.float32).itemsize)
            return np.fromfile(file, np.float32, count=rows * self.window).reshape(rows, self.window)


def _write_at(fd: int, positions: np.ndarray, values: np.ndarray, row_bytes: int) -> None:
    """Each row of `values` at its position's offset, a run of consecutive positions a write."""
    order = np.argsort(positions, kind="stable")
    positions, values = positions[order], np.ascontiguousarray(values[order], np.float32)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(positions) != 1) + 1, [len(positions)]])
    for begin, end in itertools.pairwise(bounds.tolist()):
        os.pwrite(fd, values[begin:end].tobytes(), int(positions[begin]) * row_bytes)


def scored_series(inputs: Evaluation, cfg: Config, baselines: Baselines) -> Iterator[SeriesSteps]:
    """Every series with the model's and the baselines' step scores, in table order."""
    table = Path(cfg.paths.prepared) / SERIES_FILE
    lengths, how, window = series_lengths(table), inputs.model_cfg.point_score, inputs.spec.window
    pca_batches, knn_batches = unzipped(baseline_batches(inputs, baselines))
    scores = {
        "model": series_in_order(model_batches(inputs, how), lengths, window, how),
        "pca": series_in_order(pca_batches, lengths, window, how),
        "knn": series_in_order(knn_batches, lengths, window, "window"),
    }
    waiting = {name: next(found, None) for name, found in scores.items()}
    for rows in canonical_series(table, inputs.spec.features, inputs.spec.has_labels):
        steps = {}
        for name, found in scores.items():
            head = waiting[name]
            if head is not None and head[0] == rows["series_id"]:
                steps[name], waiting[name] = head[1], next(found, None)
            else:  # a series without any window: NaN, as every step before a full window
                steps[name] = np.full(len(rows["t"]), np.nan)
        yield SeriesSteps(scores=steps, **rows)
    left = {name: head[0] for name, head in waiting.items() if head is not None}
    if left:
        raise DataError(f"the outputs score series {sorted(left.values())[:3]} out of the prepared table's "
                        "order (or not in it)", where=cfg.paths.outputs,
                        fix="rerun the prepare and infer stages (dvc repro)")


class TestSteps:
    """Every test step's score of each detector and its label, in table order, kept in files
    of `folder` (raw float64 and bool) as the series go by, and read back one array at a
    time: the pooled metrics then hold one detector's scores and the labels (9 bytes a test
    step), where lists of every series' arrays held 40 and left them scattered in the heap.
    Of the values, only the first MAX_POINTS are kept: all that dominant_period reads."""

    def __init__(self, folder: Path, labelled: bool) -> None:
        self.folder, self.labelled, self.steps = folder, labelled, 0
        names = [*DETECTORS, *(["label"] if labelled else [])]
        self._files = {name: (folder / f"{name}.bin").open("wb") for name in names}
        self._values: list[np.ndarray] = []
        self._kept_values = 0

    def add(self, series: SeriesSteps) -> None:
        in_test = series.split == "test"
        for name in DETECTORS:
            series.scores[name][in_test].astype(np.float64, copy=False).tofile(self._files[name])
        if self.labelled:
            assert series.label is not None
            (series.label[in_test] != 0).tofile(self._files["label"])
        self.steps += int(in_test.sum())
        if self._kept_values < MAX_POINTS:
            values = series.values[in_test, 0][:MAX_POINTS - self._kept_values]
            self._values.append(values)
            self._kept_values += len(values)

    def close(self) -> None:
        for file in self._files.values():
            file.close()

    def scores(self, name: str) -> np.ndarray:
        return np.fromfile(self.folder / f"{name}.bin", np.float64)

    def labels(self) -> np.ndarray | None:
        return np.fromfile(self.folder / "label.bin", np.bool_) if self.labelled else None

    def first_values(self) -> np.ndarray:
        """The first feature of the first MAX_POINTS test steps."""
        return np.concatenate(self._values) if self._values else np.empty(0)


class TimelineWriter:
    """outputs/timeline's part file, a row group of TIMELINE_ROW_GROUP steps at a time: one
    row per step, series_id, t, split, score, [label], is_anomaly."""

    def __init__(self, folder: Path) -> None:
        self.path, self.rows = folder / TIMELINE_FILE, 0
        self._pending: list[pa.Table] = []
        self._waiting = 0
        self._writer: pq.ParquetWriter | None = None
        self.schema: pa.Schema | None = None

    def add(self, series: SeriesSteps, flags: np.ndarray) -> None:
        n = len(series.t)
        columns = {"series_id": pa.array([series.series_id] * n, pa.large_string()),
                   "t": pa.array(series.t),
                   "split": pa.array(series.split, pa.large_string()),
                   "score": pa.array(series.scores["model"], pa.float64())}
        if series.label is not None:
            columns["label"] = pa.array(series.label.astype(np.int64))
        columns["is_anomaly"] = pa.array(flags)
        self._pending.append(pa.table(columns))
        self._waiting += n
        while self._waiting >= TIMELINE_ROW_GROUP:
            self._write(TIMELINE_ROW_GROUP)

    def close(self) -> None:
        if self._waiting or self._writer is None:
            self._write(self._waiting)
        if self._writer is not None:
            self._writer.close()

    def _write(self, rows: int) -> None:
        table = pa.concat_tables(self._pending) if self._pending else None
        if table is None:
            return
        if self._writer is None:
            self.schema = table.schema
            self._writer = pq.ParquetWriter(self.path, table.schema)
        self._writer.write_table(table.slice(0, rows), row_group_size=TIMELINE_ROW_GROUP)
        self.rows += rows
        rest = table.slice(rows)
        self._pending, self._waiting = ([rest] if rest.num_rows else []), rest.num_rows


def series_events(series: SeriesSteps, flags: np.ndarray) -> tuple[list[pd.DataFrame], np.ndarray]:
    """Runs of flagged steps inside each split's stretch of one series (events never merge
    across a split boundary), and the event counts of its test stretches."""
    frames, counts = [], np.zeros(4, np.int64)
    change = np.flatnonzero(series.split[1:] != series.split[:-1]) + 1
    for begin, end in itertools.pairwise([0, *change.tolist(), len(series.split)]):
        rows = slice(begin, end)
        labels = None if series.label is None else series.label[rows]
        if flags[rows].any():  # thousands of empty frames made the final concat slow
            events = events_table(series.series_id, series.t[rows], flags[rows], series.scores["model"][rows],
                                  labels)
            frames.append(events.assign(split=series.split[begin]))
        if series.split[begin] == "test" and labels is not None:
            counts += event_counts(flags[rows], labels)
    return frames, counts


@dataclass
class PointResult:
    """What the per-step evaluation produced, for eval.json, the reports and the plot."""

    threshold: Threshold
    events: pd.DataFrame
    section: dict[str, Any]
    plotted: plots.TimelineCandidates


def evaluate_points(inputs: Evaluation, cfg: Config, thresholds: Thresholds, baselines: Baselines | None,
                    timeline: Path) -> PointResult | None:
    """Score, measure and flag every time step, writing the timeline into `timeline` (its
    staging folder) as the series go by; None for data not scored per step (its timeline is
    then empty, and its manifest says why)."""
    if not inputs.spec.timeline or baselines is None:
        write_json_atomic(timeline / MANIFEST, build_manifest(rows=0, note=NOT_PER_STEP))
        return None
    threshold, labelled = thresholds.for_steps, inputs.spec.has_labels
    writer, counts, plotted = TimelineWriter(timeline), FlagCounts(labelled), plots.TimelineCandidates()
    events: list[pd.DataFrame] = []
    event_totals, test_stretches = np.zeros(4, np.int64), False
    with tempfile.TemporaryDirectory(prefix="seqmodels-test-steps-") as folder:
        test = TestSteps(Path(folder), labelled)
        try:
            for series in scored_series(inputs, cfg, baselines):
                flags = series.scores["model"] > threshold.value  # an unscored (NaN) step is not flagged
                writer.add(series, flags)
                counts.add(series.split, flags, series.label)
                frames, found = series_events(series, flags)
                events += frames
                event_totals += found
                test_stretches |= labelled and bool((series.split == "test").any())
                test.add(series)
                plotted.add(plots.Timeline(series_id=series.series_id, t=series.t, values=series.values,
                                           score=series.scores["model"], split=series.split,
                                           labels=series.label, flags=flags))
        finally:
            writer.close()
            test.close()
        section = point_section(test, inputs.model_cfg.point_score, cfg)
    section.update(threshold=threshold.to_dict(), flags=counts.summary(),
                   events=event_summary(event_totals) if test_stretches else {})
    write_json_atomic(timeline / MANIFEST, build_manifest(
        rows=writer.rows, point_score=inputs.model_cfg.point_score, threshold=threshold.to_dict(),
        schema=writer.schema.to_string(show_schema_metadata=False)))
    frame = pd.concat(events, ignore_index=True) if events else pd.DataFrame(columns=EVENT_COLUMNS)
    return PointResult(threshold, frame[EVENT_COLUMNS], section, plotted)


def point_section(test: TestSteps, how: str, cfg: Config) -> dict[str, Any]:
    """eval.json's `points`: each detector's TSB-AD metrics over the test steps."""
    section: dict[str, Any] = {"point_score": how, "split": "test", "steps": test.steps}
    label = test.labels()
    if label is None or not label.any() or label.all():
        section["note"] = "per-step metrics need labelled normal and anomalous test steps"
        return section
    window = (cfg.evaluate.sliding_window if cfg.evaluate.sliding_window is not None
              else int(dominant_period(test.first_values())))  # TSB-AD's choice: the test values' period
    section.update(sliding_window=window, anomalous_steps=int(label.sum()))
    for name in DETECTORS:
        try:
            metrics = point_metrics(test.scores(name), label, sliding_window=window)
        except ValueError as error:
            raise DataError(f"per-step metrics of {name}: {error}", where=cfg.paths.outputs,
                            fix="rerun the infer stage (dvc repro); every test step needs a finite score",
                            ) from None
        section[name] = metrics.as_dict()
    section["pa_f1_note"] = ("pa_f1_optimistic credits a whole labelled range once any step in it is "
                             "flagged: optimistic, not comparable with the other F1s")
    return section


NOT_PER_STEP = ("the data is not scored per time step: series get a timeline with point labels, "
                "data.split.by=time or data.test_source")


def write_events(result: PointResult | None, cfg: Config) -> None:
    """reports/events.csv; data not scored per step gets the header only, so the stage always
    produces what dvc.yaml declares."""
    events = result.events if result is not None else pd.DataFrame(columns=EVENT_COLUMNS)
    write_text_atomic(cfg.paths.events, events.to_csv(index=False))

