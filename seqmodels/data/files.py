"""Reading a user's table file (CSV or Parquet) and picking its feature columns.

Shared by the modalities whose file sources are tables (series, tabular, images), so
every low-level reader failure becomes the same readable DataError whatever the kind.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from seqmodels.errors import DataError

# `split` is assigned by prepare; `timestamp` and `is_anomaly` are the single-series form's
# names for `t` and `label` (seqmodels.data.series_files).
RESERVED_COLUMNS = ("series_id", "t", "label", "split", "timestamp", "is_anomaly")


def read_table_file(path: Path, bundled: Iterable[str]) -> pd.DataFrame:
    """Read a user's CSV or Parquet file, turning every low-level failure into a DataError.
    `bundled` are the source names a missing file's message suggests instead."""
    if not path.exists():
        raise DataError(f"data file {path} does not exist", where="params.yaml: data.source",
                        fix=f"point data.source at a CSV/Parquet file or one of {sorted(bundled)}")
    frame = _read(path)
    if frame.empty:
        raise DataError(f"{path} has no data rows", where=str(path),
                        fix="the file needs at least one row per series")
    return frame


def _read(path: Path) -> pd.DataFrame:
    """pandas' reader for the suffix; pandas and pyarrow raise many types for corrupt files."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path, encoding="utf-8")
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
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
    except Exception as error:
        raise DataError(f"could not read {path}: {type(error).__name__}: {error}", where=str(path),
                        fix="check that the file is a complete, valid CSV/Parquet file") from None


def feature_columns(frame: pd.DataFrame, requested: list[str] | None) -> list[str]:
    """data.features when given (each must exist), otherwise every non-reserved column."""
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
