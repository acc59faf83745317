"""Series files in either of the two layouts users bring, turned into the canonical table.

The canonical long form (`series_id, t, features..., label`) suits many series. One long
stream, as anomaly archives (UCR, TSB-AD, TimeEval) and sensor exports ship it, comes in
the single-series form instead: `timestamp` (integer steps or datetimes), value columns,
and an optional 0/1 `is_anomaly` per step. Its labels are point labels by definition, and
its problems are reported in its own column names and data-row numbers (the first row
after the header is data row 0), because that is the file the user opens to fix them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from seqmodels.errors import DataError
from seqmodels.storage import stem

TIMESTAMP, IS_ANOMALY = "timestamp", "is_anomaly"
MAX_LISTED = 5


@dataclass
class SeriesFile:
    """A file's rows in canonical column names; `point_labels` when the layout says so."""

    table: pd.DataFrame
    point_labels: bool = False


def single_series_form(columns: Iterable[str]) -> bool:
    """The TimeEval / TSB-AD layout: a `timestamp` column and no canonical `t`."""
    columns = set(columns)
    return TIMESTAMP in columns and "t" not in columns


def canonical_form(frame: pd.DataFrame, name: str, where: str) -> SeriesFile:
    """`frame` in canonical column names; a single-series file becomes series `name`
    (unless it has a series_id column) with `t` parsed from `timestamp`."""
    if not single_series_form(frame.columns):
        return SeriesFile(frame)
    if "label" in frame.columns and IS_ANOMALY in frame.columns:
        raise DataError(f"{where} has both 'label' and '{IS_ANOMALY}' columns", where=where,
                        fix=f"keep one: '{IS_ANOMALY}' (0/1 per step) in the single-series form")
    table = frame.drop(columns=[TIMESTAMP, IS_ANOMALY, "series_id"], errors="ignore")
    series_id = (frame["series_id"].astype(str) if "series_id" in frame.columns
                 else pd.Series(name, index=frame.index))
    table.insert(0, "t", parse_timestamps(frame[TIMESTAMP], where))
    table.insert(0, "series_id", series_id)
    check_increasing(table["t"], series_id, where)
    if IS_ANOMALY in frame.columns:
        table["label"] = point_label_column(frame[IS_ANOMALY], where)
    return SeriesFile(table, point_labels=True)


def _rows(mask: np.ndarray, values: pd.Series, limit: int = MAX_LISTED) -> str:
    rows = np.flatnonzero(mask)[:limit]
    shown = (values.iloc[i].item() if hasattr(values.iloc[i], "item") else values.iloc[i] for i in rows)
    return ", ".join(f"data row {i} ({value!r})" for i, value in zip(rows, shown, strict=True))


def parse_timestamps(values: pd.Series, where: str) -> pd.Series:
    """Integer steps stay int64; datetimes (text or typed) become datetime64[ns], UTC when
    they carry a zone. A column mixing numbers and dates is refused, not guessed at."""
    where = f"{where}: column '{TIMESTAMP}'"
    if values.isna().any():
        raise DataError(f"missing timestamps at {_rows(values.isna().to_numpy(), values)}", where=where,
                        fix="every row needs a timestamp: fill or drop those rows")
    if pd.api.types.is_datetime64_any_dtype(values):
        return _naive_ns(values)
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return _integer_steps(values, where)
    numeric = pd.to_numeric(values, errors="coerce")
    is_number = numeric.notna().to_numpy()
    if is_number.all():
        return _integer_steps(numeric, where)
    if is_number.any():
        raise DataError(f"mixed timestamp types: {_rows(is_number, values, 2)} ... are numbers but "
                        f"{_rows(~is_number, values, 2)} ... are not", where=where,
                        fix="use one type for the whole column: integer steps or datetimes")
    parsed = pd.to_datetime(values, errors="coerce", format="mixed")
    bad = parsed.isna().to_numpy()
    if bad.any():
        raise DataError(f"timestamps that are neither integers nor dates: {_rows(bad, values)}", where=where,
                        fix="write timestamps as integer steps or ISO 8601 datetimes (2024-01-31T12:00:00)")
    return _naive_ns(parsed)


def _naive_ns(values: pd.Series) -> pd.Series:
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values.astype("datetime64[ns]")


def _integer_steps(values: pd.Series, where: str) -> pd.Series:
    as_float = values.to_numpy(dtype=np.float64)
    fractional = ~np.isfinite(as_float) | (as_float != np.round(as_float))
    if fractional.any():
        raise DataError(f"integer timestamps expected, got {_rows(fractional, values)}", where=where,
                        fix="timestamps are integer steps or datetimes: round them or write dates")
    return pd.Series(as_float.astype(np.int64) if values.dtype.kind == "f" else values.to_numpy(np.int64),
                     index=values.index)


def steps_forward(t: pd.Series, series_id: pd.Series) -> pd.Series:
    """True where a row's `t` (int or datetime) is after the previous row's of its series, or
    is its series' first: the rule of both layouts (the canonical table's schema check too)."""
    step = t.groupby(series_id, sort=False).diff()
    zero = pd.Timedelta(0) if pd.api.types.is_datetime64_any_dtype(t) else 0
    return step.isna() | (step > zero)


def check_increasing(t: pd.Series, series_id: pd.Series, where: str) -> None:
    """Each series' timestamps strictly increase: a repeat or a step back is a duplicated or
    unsorted export, and a window cut across it would mix two moments."""
    bad = ~steps_forward(t, series_id).to_numpy()
    if bad.any():
        rows = np.flatnonzero(bad)[:MAX_LISTED]
        # the row each one follows in its own series (not the file's previous row)
        previous = pd.Series(np.arange(len(t))).groupby(series_id.to_numpy(), sort=False).shift(1).to_numpy()
        listed = ", ".join(f"data row {i} ({t.iloc[i]} after {t.iloc[int(previous[i])]})" for i in rows)
        raise DataError(f"timestamps must strictly increase within a series: {listed} "
                        f"({int(bad.sum())} row(s) in all)", where=f"{where}: column '{TIMESTAMP}'",
                        fix="sort the file by timestamp and drop duplicated rows")


def point_label_column(values: pd.Series, where: str) -> pd.Series:
    """`is_anomaly` as int64 0/1: anything else (2, 0.5, 'yes', missing) is refused by row."""
    numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isin(numeric, (0.0, 1.0))
    if bad.any():
        raise DataError(f"'{IS_ANOMALY}' must be 0 or 1: {_rows(bad, values)} ({int(bad.sum())} row(s))",
                        where=f"{where}: column '{IS_ANOMALY}'",
                        fix="mark each step 1 (anomalous) or 0 (normal)")
    return pd.Series(numeric.astype(np.int64), index=values.index)


def read_series_file(location: str | Path, frame: pd.DataFrame) -> SeriesFile:
    """A file read by data.files.read_table_file (a path or a URI), in canonical form, named
    after the file."""
    return canonical_form(frame, name=stem(location), where=str(location))
