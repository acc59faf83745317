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
        moments = ScalerFit(features)
        moments.add(frame[features].to_numpy(np.float64))
        return moments.scaler()

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        values = frame[list(self.features)].to_numpy(np.float64)
        return ((values - np.asarray(self.mean)) / np.asarray(self.std)).astype(np.float32)

    @classmethod
    def from_dict(cls, raw: dict) -> StandardScaler:
        return cls(tuple(raw["features"]), tuple(float(v) for v in raw["mean"]),
                   tuple(float(v) for v in raw["std"]))

    def to_dict(self) -> dict:
        return {"features": list(self.features), "mean": list(self.mean), "std": list(self.std)}


class ScalerFit:
    """Each feature's row count, mean and sum of squared deviations, merged block by block
    (Chan, Golub and LeVeque's pairwise update), so the scaler of a table larger than memory
    is fitted in one pass. One block gives numpy's own mean and std to the last bit; more
    blocks agree with them to rounding (about 1e-15 relative)."""

    def __init__(self, features: list[str]) -> None:
        self.features = tuple(features)
        self.count = 0
        self.mean = np.zeros(len(features))
        self.squares = np.zeros(len(features))

    def add(self, values: np.ndarray) -> None:
        """Rows (n, features) of float64 values."""
        n = len(values)
        if not n:
            return
        values = np.asfortranarray(values)  # sums over each feature's contiguous values, whatever the layout
        mean = values.mean(axis=0)
        self._merge(n, mean, ((values - mean) ** 2).sum(axis=0))

    def merge(self, later: ScalerFit) -> None:
        """The moments of more rows (another piece's), taken in by the same update."""
        if later.count:
            self._merge(later.count, later.mean, later.squares)

    def _merge(self, n: int, mean: np.ndarray, squares: np.ndarray) -> None:
        if not self.count:
            self.count, self.mean, self.squares = n, mean, squares
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.squares = self.squares + squares + delta ** 2 * (self.count * n / total)
        self.count = total

    def scaler(self) -> StandardScaler:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self.mean if self.count else np.full(len(self.features), np.nan)
            std = np.sqrt(self.squares / self.count) if self.count else np.full(len(self.features), np.nan)
        std = np.where(std > 1e-12, std, 1.0)  # a constant feature stays constant, not NaN
        return StandardScaler(self.features, tuple(mean.tolist()), tuple(std.tolist()))
