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
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from seqmodels.checkpoints import MODEL_CARD, WEIGHTS_FILE, load_exported_model
from seqmodels.config import Config
from seqmodels.evaluation import Scored
from seqmodels.publish import clean_stale_staging, publishing
from seqmodels.spec import SERIES_FILE, DataSpec
from seqmodels.thresholds import Thresholds, fit_thresholds, write_thresholds
from seqmodels.timeline import output_steps


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
    validation steps' scores, aggregated by `how`, for series scored per step)."""
    outputs = pads.dataset(cfg.paths.outputs, format="parquet")
    steps = step_scores(outputs, Path(cfg.paths.prepared), spec, how)
    return fit_thresholds(window_scores(outputs, spec), steps, cfg.evaluate.threshold)


def window_scores(outputs: pads.Dataset, spec: DataSpec) -> Scored:
    labelled = spec.anomaly_labels and "label" in outputs.schema.names
    table = outputs.to_table(columns=["split", "score", *(["label"] if labelled else [])])
    return Scored(split=table.column("split").to_numpy(zero_copy_only=False).astype(str),
                  score=table.column("score").to_numpy().astype(np.float64),
                  label=table.column("label").to_numpy() if labelled else None)


def step_scores(outputs: pads.Dataset, prepared: Path, spec: DataSpec, how: str) -> Scored | None:
    """The validation steps' scores of series scored per step (None for other data)."""
    if not spec.timeline:
        return None
    columns = ["series_id", "split", *(["label"] if spec.has_labels else [])]
    table = pq.read_table(prepared / SERIES_FILE, columns=columns).to_pandas()
    lengths = table.groupby("series_id", sort=False).size()
    return Scored(split=table["split"].to_numpy().astype(str),
                  score=output_steps(outputs, lengths, spec.window, how),
                  label=table["label"].to_numpy() if spec.has_labels else None)


def describe(thresholds: Thresholds) -> str:
    parts = [("window", thresholds.window), ("step", thresholds.step)]
    return ", ".join(f"{name} {t.value:.6g} ({t.method} on {t.fitted_on})"
                     for name, t in parts if t is not None)
