"""The anomaly thresholds a detector ships with, fitted once on validation scores.

A threshold is part of the model's lineage, not of any one report: the `detector` stage fits
it on the validation split's scores (evaluate.threshold says how) and writes it into the
self-contained model folder, so that the evaluate stage, `seqmodels score` and the Python
Detector all flag with the same number, and changing how it is fitted never retrains. Series
scored per time step get a second threshold for their per-step scores, fitted on the
validation steps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqmodels.config import ThresholdConfig
from seqmodels.errors import CheckpointError
from seqmodels.evaluation import Scored, Threshold, choose_threshold
from seqmodels.publish import write_json_atomic

THRESHOLD_FILE = "threshold.json"


@dataclass(frozen=True)
class Thresholds:
    """`window`: for per-window (per-row) scores; `step`: for per-step scores of series
    scored per time step (None otherwise: their steps take the window threshold, since a
    step's score is then a mean of window scores)."""

    window: Threshold
    step: Threshold | None = None

    @property
    def for_steps(self) -> Threshold:
        return self.step or self.window

    def to_dict(self) -> dict[str, Any]:
        return {"window": self.window.to_dict(), "step": None if self.step is None else self.step.to_dict()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Thresholds:
        return cls(window=Threshold(**raw["window"]),
                   step=None if raw.get("step") is None else Threshold(**raw["step"]))


def fit_thresholds(windows: Scored, steps: Scored | None, cfg: ThresholdConfig) -> Thresholds:
    """Both thresholds by the same rule (choose_threshold: validation rows, else training)."""
    return Thresholds(window=choose_threshold(windows, cfg),
                      step=None if steps is None else choose_threshold(steps, cfg))


def write_thresholds(directory: Path, thresholds: Thresholds) -> None:
    write_json_atomic(Path(directory) / THRESHOLD_FILE, thresholds.to_dict())


def read_thresholds(directory: str | Path) -> Thresholds:
    path = Path(directory) / THRESHOLD_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found: {directory} is a trained model without its anomaly "
                              "threshold", where=str(directory),
                              fix="score with the detector folder (paths.detector, default models/latest), "
                                  "made by the detector stage: dvc repro -s detector")
    try:
        return Thresholds.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path} is corrupt: {type(error).__name__}: {str(error).splitlines()[0]}",
                              where=str(path),
                              fix="rerun the detector stage (dvc repro -s detector)") from None
