"""Stage `detector`: the trained model packaged with its anomaly thresholds into one
self-contained folder (paths.detector), the model that `seqmodels score` and the Python
Detector use.

The thresholds are fitted here, on the validation split's scores that infer wrote, rather
than in train or evaluate: they are part of the model's lineage (dvc.lock records which
model, which scores and which evaluate.threshold settings made them), changing how they are
fitted never retrains, and evaluate reports with exactly the numbers `score` flags with.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from seqmodels.checkpoints import MODEL_CARD, WEIGHTS_FILE, load_exported_model
from seqmodels.config import Config
from seqmodels.data.tables import streaming_parquet
from seqmodels.evaluation import Scored
from seqmodels.publish import clean_stale_staging, publishing
from seqmodels.spec import SERIES_FILE, DataSpec
from seqmodels.thresholds import Thresholds, fit_thresholds, write_thresholds
from seqmodels.timeline import OUTPUT_COLUMNS, series_in_order, series_runs

OUTPUT_BATCH_ROWS = 8192
SERIES_BATCH_ROWS = 65536


def run(cfg: Config) -> None:
    trained, target = Path(cfg.paths.model), Path(cfg.paths.detector)
    _, model_cfg, spec = load_exported_model(trained)  # a broken model fails before anything is written
    thresholds = thresholds_from_outputs(cfg, spec, model_cfg.point_score)
    clean_stale_staging(target)
    with publishing(target) as staging:
        for name in (WEIGHTS_FILE, MODEL_CARD):
            shutil.copy2(trained / name, staging / name)
        write_thresholds(staging, thresholds)
    print(f"packaged {trained} with its thresholds into {target}: {describe(thresholds)}")


def thresholds_from_outputs(cfg: Config, spec: DataSpec, how: str) -> Thresholds:
    """evaluate.threshold fitted on the validation scores in paths.outputs (and on the
    validation steps' scores, aggregated by `how`, for series scored per step). Both are
    streamed: memory holds the fitting split's scores, not every row's."""
    outputs = pads.dataset(cfg.paths.outputs, format="parquet")
    steps = step_scores(outputs, Path(cfg.paths.prepared), spec, how)
    return fit_thresholds(window_scores(outputs, spec), steps, cfg.evaluate.threshold)


def window_scores(outputs: pads.Dataset, spec: DataSpec) -> Scored:
    """The validation windows' scores (the training windows' where there are none: the
    rule of choose_threshold), read with a filter."""
    labelled = spec.anomaly_labels and "label" in outputs.schema.names
    columns = ["split", "score", *(["label"] if labelled else [])]
    table = outputs.to_table(columns=columns, filter=pads.field("split") == "val")
    if table.num_rows == 0:
        table = outputs.to_table(columns=columns, filter=pads.field("split") == "train")
    return Scored(split=table.column("split").to_numpy(zero_copy_only=False).astype(str),
                  score=table.column("score").to_numpy().astype(np.float64),
                  label=table.column("label").to_numpy() if labelled else None)


def step_scores(outputs: pads.Dataset, prepared: Path, spec: DataSpec, how: str) -> Scored | None:
    """The validation steps' scores (the training steps' where there are none) of series
    scored per step; None for other data. The prepared series are read in batches for where
    each series' fitting steps are, then the outputs a batch at a time, one series' step
    scores at a time (timeline.series_in_order)."""
    if not spec.timeline:
        return None
    series, split = streaming_parquet(prepared / SERIES_FILE), "val"
    lengths, fitting = fitting_steps(series, split, spec.has_labels)
    if not fitting:
        split = "train"
        lengths, fitting = fitting_steps(series, split, spec.has_labels)
    columns = [*OUTPUT_COLUMNS, *(["step_score"] if how != "window" else [])]
    batches = outputs.to_batches(columns=columns, batch_size=OUTPUT_BATCH_ROWS)
    scores = {series_id: steps[fitting[series_id].positions]
              for series_id, steps in series_in_order(batches, lengths, spec.window, how)
              if series_id in fitting}
    order = list(fitting)  # a series without any window scores NaN, as every step before a full window
    return Scored(
        split=np.full(sum(len(fitting[s].positions) for s in order), split),
        score=np.concatenate([scores.get(s, np.full(len(fitting[s].positions), np.nan)) for s in order]
                             or [np.empty(0)]),
        label=np.concatenate([fitting[s].labels for s in order] or [np.empty(0, np.int64)])
        if spec.has_labels else None)


@dataclass
class FittingSteps:
    """Where one series' steps of the fitting split are, and their labels."""

    positions: np.ndarray  # step numbers within the series
    labels: np.ndarray | None


def fitting_steps(series: pq.ParquetFile, split: str, labelled: bool) -> tuple[dict[str, int],
                                                                               dict[str, FittingSteps]]:
    """Every series' length, and the steps of `split` of the series that have any, from the
    canonical table SERIES_BATCH_ROWS rows at a time (a series may span batches). Ids and
    splits stay Arrow arrays: a million rows as Python strings took 300 MiB."""
    lengths: dict[str, int] = {}
    found: dict[str, list[tuple[np.ndarray, np.ndarray | None]]] = {}
    columns = ["series_id", "split", *(["label"] if labelled else [])]
    for batch in series.iter_batches(batch_size=SERIES_BATCH_ROWS, columns=columns):
        in_split = pc.equal(batch.column("split"), split).to_numpy(zero_copy_only=False)
        label = batch.column("label").to_numpy(zero_copy_only=False) if labelled else None
        for series_id, begin, end in series_runs(batch.column("series_id")):
            offset = lengths.get(series_id, 0)
            lengths[series_id] = offset + end - begin
            rows = np.flatnonzero(in_split[begin:end])
            if rows.size:
                found.setdefault(series_id, []).append(
                    (rows + offset, None if label is None else label[begin:end][rows]))
    return lengths, {
        series_id: FittingSteps(np.concatenate([p for p, _ in parts]),
                                None if not labelled else np.concatenate([lab for _, lab in parts]))
        for series_id, parts in found.items()}


def describe(thresholds: Thresholds) -> str:
    parts = [("window", thresholds.window), ("step", thresholds.step)]
    return ", ".join(f"{name} {t.value:.6g} ({t.method} on {t.fitted_on})"
                     for name, t in parts if t is not None)
