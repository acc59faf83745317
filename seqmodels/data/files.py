"""Reading a user's table file (CSV or Parquet) and picking its feature columns.

Shared by the modalities whose file sources are tables (series, tabular, images), so
every low-level reader failure becomes the same readable DataError whatever the kind, and
a file on an object store (s3://...) reads like a local one (seqmodels.storage).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import PurePosixPath

import pandas as pd

from seqmodels.errors import DataError
from seqmodels.storage import open_input, readable_error, table_files

# `split` is assigned by prepare; `timestamp` and `is_anomaly` are the single-series form's
# names for `t` and `label` (seqmodels.data.series_files).
RESERVED_COLUMNS = ("series_id", "t", "label", "split", "timestamp", "is_anomaly")


def read_table_file(location: str | os.PathLike[str], bundled: Iterable[str]) -> pd.DataFrame:
    """Read a user's CSV or Parquet file, a local path or a URI (s3://...), turning every
    low-level failure into a DataError. `bundled` are the source names a missing file's
    message suggests instead."""
    location = check_table_file(location, bundled)
    frame = _read(location)
    if frame.empty:
        raise DataError(f"{location} has no data rows", where=location,
                        fix="the file needs at least one row per series")
    return frame


def check_table_file(location: str | os.PathLike[str], bundled: Iterable[str]) -> str:
    """`location` as text once it is known to be one readable table file (not missing, not a
    folder, reachable): what readers that stream the file check first."""
    location = str(location)  # a URI must not go through pathlib.Path: it mangles s3://
    try:
        files = table_files(location)
    except DataError as error:  # missing, unreachable, access denied: said where it was configured
        hint = f"; or use one of {sorted(bundled)}" if "does not exist" in error.what else ""
        raise DataError(error.what, where=f"params.yaml: data.source ({location})",
                        fix=f"{error.fix}{hint}") from None
    if len(files) != 1 or files[0] != location:
        raise DataError(f"{location} is a folder of {len(files)} table file(s), not one file",
                        where="params.yaml: data.source",
                        fix=f"point data.source at one CSV/Parquet file, e.g. {files[0]}")
    return location


def is_parquet(location: str) -> bool:
    return PurePosixPath(location).suffix.lower() != ".csv"


def _read(location: str) -> pd.DataFrame:
    """pandas' reader for the suffix."""
    with read_errors(location), open_input(location) as handle:
        if not is_parquet(location):
            return pd.read_csv(handle, encoding="utf-8")
        return pd.read_parquet(handle)


@contextlib.contextmanager
def read_errors(location: str) -> Iterator[None]:
    """Every low-level failure of reading `location` (pandas and pyarrow raise many types for
    corrupt files, an object store's connection may drop mid-read) as one readable DataError."""
    try:
        yield
    except DataError:
        raise
    except UnicodeDecodeError as error:
        raise DataError(f"{location} is not UTF-8 text ({error.reason} at byte {error.start})",
                        where=location, fix="re-save the file as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{location} is empty", where=location,
                        fix="the file needs a header row and at least one data row") from None
    except OSError as error:
        raise readable_error(error, location) from None
    except Exception as error:
        raise DataError(f"could not read {location}: {type(error).__name__}: {str(error).splitlines()[0]}",
                        where=location, fix="check that the file is a complete, valid CSV/Parquet file",
                        ) from None


def feature_columns(columns: Iterable[str], requested: list[str] | None) -> list[str]:
    """data.features when given (each must be one of `columns`), otherwise every non-reserved column."""
    columns = list(columns)
    if requested is not None:
        missing = [c for c in requested if c not in columns]
        if missing:
            raise DataError(f"feature column(s) {missing} not in the data",
                            where="params.yaml: data.features",
                            fix=f"available columns: {columns}")
        return list(requested)
    features = [c for c in columns if c not in RESERVED_COLUMNS]
    if not features:
        raise DataError("the data has no feature columns", where="data.source",
                        fix="add at least one numeric column beside series_id, t and label")
    return features
