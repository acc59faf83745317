"""Series scored per time step (spec.timeline): one score per step, its metrics, its events.

The model's per-window outputs are folded into one score per time step (model.point_score,
seqmodels.timeline), streamed from the outputs a batch at a time. The same is done for two
baselines on the same windows: PCA of the model's latent size (per-step errors, like the
model) and the distance to the nearest training window (a classic k-NN detector). Each is
measured on the test steps with TSB-AD's metrics (VUS-PR is the headline); the model's steps
are flagged at a threshold fitted on validation steps, and runs of flags become events.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from seqmodels.config import Config
from seqmodels.data.windows import stretches
from seqmodels.errors import DataError
from seqmodels.evaluation import (
    Scored,
    Threshold,
    flag_summary,
    nearest_train_distance,
    pca_step_errors,
)
from seqmodels.periods import dominant_period
from seqmodels.point_metrics import point_metrics
from seqmodels.publish import MANIFEST, build_manifest, publishing, write_json_atomic, write_text_atomic
from seqmodels.spec import SERIES_FILE
from seqmodels.stages.evaluate.inputs import Evaluation
from seqmodels.thresholds import Thresholds
from seqmodels.timeline import (
    aggregate_windows,
    event_precision_recall,
    events_table,
    output_steps,
)

OUTPUT_BATCH_ROWS = 8192
TIMELINE_FILE = "part-0.parquet"
DETECTORS = ("model", "pca", "knn")


@dataclass
class Steps:
    """Every time step of the prepared series in the canonical table's order, with each
    detector's score for it (NaN where no window covers the step)."""

    table: pd.DataFrame  # series_id, t, split, [label], the first few feature columns (raw)
    scores: dict[str, np.ndarray]
    how: str  # model.point_score

    @property
    def split(self) -> np.ndarray:
        return self.table["split"].to_numpy().astype(str)

    @property
    def label(self) -> np.ndarray | None:
        return self.table["label"].to_numpy() if "label" in self.table.columns else None

    @property
    def value_columns(self) -> list[str]:
        """The feature columns read_steps kept (the series' own values, unscaled)."""
        return [c for c in self.table.columns if c not in ("series_id", "t", "split", "label")]


def read_steps(prepared: Path, features: tuple[str, ...], labelled: bool) -> pd.DataFrame:
    """The canonical rows (with the split prepare gave each step), without most features."""
    columns = ["series_id", "t", "split", *(["label"] if labelled else []), *features[:3]]
    return pq.read_table(prepared / SERIES_FILE, columns=columns).to_pandas()


def model_steps(inputs: Evaluation, lengths: pd.Series, how: str) -> np.ndarray:
    """The model's score of every step, streamed from the outputs a batch at a time."""
    return output_steps(inputs.outputs, lengths, inputs.spec.window, how, OUTPUT_BATCH_ROWS)


def baseline_steps(inputs: Evaluation, lengths: pd.Series, how: str, seed: int) -> dict[str, np.ndarray]:
    """PCA's per-step scores (aggregated like the model's; a window's score is the mean of
    its steps', as for the model) and the k-NN distance of each window spread over its steps
    (a window-level detector: aggregated by window means)."""
    frame, x, spec = inputs.frame, inputs.x, inputs.spec
    split = frame["split"].to_numpy().astype(str)
    pca_step = pca_step_errors(x, split, inputs.model_cfg, spec.input_shape, seed)
    knn = nearest_train_distance(x, split, seed)
    ids, start = frame["series_id"].to_numpy(), frame["start"].to_numpy()
    return {"pca": aggregate_windows(ids, start, pca_step.mean(axis=1), pca_step, lengths, spec.window, how),
            "knn": aggregate_windows(ids, start, knn, None, lengths, spec.window, "window")}


def score_steps(inputs: Evaluation, cfg: Config) -> Steps:
    table = read_steps(Path(cfg.paths.prepared), inputs.spec.features, inputs.spec.has_labels)
    lengths = table.groupby("series_id", sort=False).size()
    how = inputs.model_cfg.point_score
    scores = {"model": model_steps(inputs, lengths, how), **baseline_steps(inputs, lengths, how, cfg.seed)}
    return Steps(table, scores, how)


def sliding_window(steps: Steps, cfg: Config) -> int:
    """evaluate.sliding_window, else TSB-AD's choice: the dominant period of the test values."""
    if cfg.evaluate.sliding_window is not None:
        return cfg.evaluate.sliding_window
    test = steps.table.loc[steps.split == "test", steps.value_columns[0]].to_numpy(np.float64)
    return int(dominant_period(test))


def point_section(steps: Steps, cfg: Config) -> dict[str, Any]:
    """eval.json's `points`: each detector's TSB-AD metrics over the test steps."""
    test = steps.split == "test"
    section: dict[str, Any] = {"point_score": steps.how, "split": "test", "steps": int(test.sum())}
    label = steps.label
    if label is None or len(np.unique(label[test])) < 2:
        section["note"] = "per-step metrics need labelled normal and anomalous test steps"
        return section
    window = sliding_window(steps, cfg)
    section.update(sliding_window=window, anomalous_steps=int(label[test].sum()))
    for name in DETECTORS:
        try:
            metrics = point_metrics(steps.scores[name][test], label[test], sliding_window=window)
        except ValueError as error:
            raise DataError(f"per-step metrics of {name}: {error}", where=cfg.paths.outputs,
                            fix="rerun the infer stage (dvc repro); every test step needs a finite score",
                            ) from None
        section[name] = metrics.as_dict()
    section["pa_f1_note"] = ("pa_f1_optimistic credits a whole labelled range once any step in it is "
                             "flagged: optimistic, not comparable with the other F1s")
    return section


def flag_steps(steps: Steps, threshold: Threshold) -> tuple[Threshold, np.ndarray, dict[str, Any]]:
    """Flags of every step at the detector's step threshold (fitted on validation steps)."""
    scored = Scored(split=steps.split, score=steps.scores["model"], label=steps.label)
    flags = scored.score > threshold.value  # an unscored (NaN) step is not flagged
    return threshold, flags, flag_summary(scored, flags)


def stretch_events(steps: Steps, flags: np.ndarray) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Runs of flagged steps inside each (series, split) stretch, and event precision/recall
    on the test stretches (events never merge across a series or split boundary)."""
    table, score, label = steps.table, steps.scores["model"], steps.label
    series_id, split, t = table["series_id"].to_numpy(), steps.split, table["t"].to_numpy()
    frames, test_pairs = [], []
    for begin, end in stretches(series_id, split):
        rows = slice(begin, end)
        labels = None if label is None else label[rows]
        events = events_table(str(series_id[begin]), t[rows], flags[rows], score[rows], labels)
        frames.append(events.assign(split=split[begin]))
        if split[begin] == "test" and labels is not None:
            test_pairs.append((flags[rows], labels))
    events = pd.concat(frames, ignore_index=True)
    per_event = (event_precision_recall([f for f, _ in test_pairs], [lab for _, lab in test_pairs])
                 if test_pairs else {})
    return events, per_event


EVENT_COLUMNS = ["series_id", "split", "start", "end", "steps", "peak_score", "peak_t", "overlaps_anomaly"]


@dataclass
class PointResult:
    """What the per-step evaluation produced, for eval.json, the reports and the plot."""

    steps: Steps
    threshold: Threshold
    flags: np.ndarray
    events: pd.DataFrame
    section: dict[str, Any]


def evaluate_points(inputs: Evaluation, cfg: Config, thresholds: Thresholds) -> PointResult | None:
    """Score, measure and flag every time step; None for data not scored per step."""
    if not inputs.spec.timeline:
        return None
    steps = score_steps(inputs, cfg)
    section = point_section(steps, cfg)
    threshold, flags, summary = flag_steps(steps, thresholds.for_steps)
    events, per_event = stretch_events(steps, flags)
    section.update(threshold=threshold.to_dict(), flags=summary, events=per_event)
    return PointResult(steps, threshold, flags, events[EVENT_COLUMNS], section)


def timeline_table(result: PointResult) -> pa.Table:
    """One row per time step: series_id, t, split, score, [label], is_anomaly."""
    table = result.steps.table
    columns = {"series_id": pa.array(table["series_id"].astype(str)), "t": pa.array(table["t"]),
               "split": pa.array(table["split"].astype(str)),
               "score": pa.array(result.steps.scores["model"], pa.float64())}
    if "label" in table.columns:
        columns["label"] = pa.array(table["label"].to_numpy(np.int64))
    columns["is_anomaly"] = pa.array(result.flags)
    return pa.table(columns)


NOT_PER_STEP = ("the data is not scored per time step: series get a timeline with point labels, "
                "data.split.by=time or data.test_source")


def publish_points(result: PointResult | None, cfg: Config) -> None:
    """outputs/timeline and reports/events.csv. Data not scored per step gets an empty
    timeline (its manifest says why) and an events file with the header only, so the stage
    always produces what dvc.yaml declares."""
    with publishing(cfg.paths.timeline) as staging:
        if result is None:
            manifest = build_manifest(rows=0, note=NOT_PER_STEP)
        else:
            table = timeline_table(result)
            pq.write_table(table, staging / TIMELINE_FILE, row_group_size=1 << 20)
            manifest = build_manifest(rows=table.num_rows, point_score=result.steps.how,
                                      threshold=result.threshold.to_dict(),
                                      schema=table.schema.to_string(show_schema_metadata=False))
        write_json_atomic(staging / MANIFEST, manifest)
    events = result.events if result is not None else pd.DataFrame(columns=EVENT_COLUMNS)
    write_text_atomic(cfg.paths.events, events.to_csv(index=False))
