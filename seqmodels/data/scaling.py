"""The per-feature scaler of real-valued modalities (series, tabular), fitted on train rows.

Fitted on training rows alone, so validation and test data never shape the inputs the
model learns from; saved as JSON in the prepared folder (scaler.json), not as a pickle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class StandardScaler:
    """Per-feature standardisation fitted on training rows; saved as JSON, not pickle."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, frame: pd.DataFrame, features: list[str]) -> StandardScaler:
        values = frame[features].to_numpy(np.float64)
        std = values.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)  # a constant feature stays constant, not NaN
        return cls(tuple(features), tuple(values.mean(axis=0).tolist()), tuple(std.tolist()))

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        values = frame[list(self.features)].to_numpy(np.float64)
        return ((values - np.asarray(self.mean)) / np.asarray(self.std)).astype(np.float32)

    @classmethod
    def from_dict(cls, raw: dict) -> StandardScaler:
        return cls(tuple(raw["features"]), tuple(float(v) for v in raw["mean"]),
                   tuple(float(v) for v in raw["std"]))

    def to_dict(self) -> dict:
        return {"features": list(self.features), "mean": list(self.mean), "std": list(self.std)}
