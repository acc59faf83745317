"""Turn a data source into the canonical long-form series table.

Canonical table: one row per (series_id, t) with one float column per feature and an
optional integer `label` (1 = anomalous). Bundled datasets ship inside PyPI packages so the
default pipeline never touches the network.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from seqmodels.config import DataConfig
from seqmodels.errors import DataError

RESERVED_COLUMNS = ("series_id", "t", "label")


def _ucr_from_sktime(name: str, cfg: DataConfig) -> pd.DataFrame:
    """A UCR dataset bundled with sktime, in a one-class setup (normal_class -> label 0)."""
    from sktime.datasets import load_UCR_UEA_dataset

    frames, offset = [], 0
    for split in ("train", "test"):
        # extract_path=None reads the copy bundled inside sktime: no download.
        X, y = load_UCR_UEA_dataset(name, split=split, return_X_y=True, return_type="numpy3D")
        classes = {str(c) for c in y}
        if cfg.normal_class not in classes:
            raise DataError(
                f"data.normal_class={cfg.normal_class!r} is not a class of {name}",
                where="params.yaml: data.normal_class",
                fix=f"choose one of {sorted(classes)}",
            )
        n, channels, length = X.shape
        table = pd.DataFrame(
            {
                "series_id": np.repeat([f"{name.lower()}-{offset + i:04d}" for i in range(n)], length),
                "t": np.tile(np.arange(length, dtype=np.int64), n),
                "label": np.repeat((np.asarray(y).astype(str) != cfg.normal_class).astype(np.int64), length),
            }
        )
        for c in range(channels):
            table[f"x{c}" if channels > 1 else "value"] = X[:, c, :].reshape(-1).astype(np.float64)
        frames.append(table)
        offset += n
    return pd.concat(frames, ignore_index=True)


BUNDLED: dict[str, Callable[[DataConfig], pd.DataFrame]] = {
    "gunpoint": lambda cfg: _ucr_from_sktime("GunPoint", cfg),
}


def read_table_file(path: Path) -> pd.DataFrame:
    """Read a user's CSV or Parquet file, turning every low-level failure into a DataError."""
    if not path.exists():
        raise DataError(f"data file {path} does not exist", where="params.yaml: data.source",
                        fix=f"point data.source at a CSV/Parquet file or one of {sorted(BUNDLED)}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, encoding="utf-8")
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise DataError(f"unsupported file type {suffix!r} for {path}", where="data.source",
                            fix="use a .csv or .parquet file")
    except DataError:
        raise
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})",
                        where=str(path), fix="re-save the file as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty", where=str(path),
                        fix="the file needs a header row and at least one data row") from None
    except Exception as error:  # pyarrow/pandas raise many types for corrupt files
        raise DataError(f"could not read {path}: {type(error).__name__}: {error}", where=str(path),
                        fix="check that the file is a complete, valid CSV/Parquet file") from None
    if frame.empty:
        raise DataError(f"{path} has no data rows", where=str(path),
                        fix="the file needs at least one row per series")
    return frame


def feature_columns(frame: pd.DataFrame, requested: list[str] | None) -> list[str]:
    if requested is not None:
        missing = [c for c in requested if c not in frame.columns]
        if missing:
            raise DataError(f"feature column(s) {missing} not in the data",
                            where="params.yaml: data.features",
                            fix=f"available columns: {list(frame.columns)}")
        return list(requested)
    features = [c for c in frame.columns if c not in RESERVED_COLUMNS]
    if not features:
        raise DataError("the data has no feature columns", where="data.source",
                        fix="add at least one numeric column beside series_id, t and label")
    return features


def load_source(cfg: DataConfig) -> tuple[pd.DataFrame, list[str]]:
    """The canonical table for `cfg.source` and its feature columns (not yet validated)."""
    frame = BUNDLED[cfg.source](cfg) if cfg.source in BUNDLED else read_table_file(Path(cfg.source))
    features = feature_columns(frame, cfg.features)
    keep = ["series_id", "t", *features] + (["label"] if "label" in frame.columns else [])
    missing = [c for c in ("series_id", "t") if c not in frame.columns]
    if missing:
        raise DataError(f"required column(s) {missing} missing from {cfg.source}",
                        where=cfg.source,
                        fix="the canonical table needs series_id, t, feature columns, optional label")
    return frame[keep], features
