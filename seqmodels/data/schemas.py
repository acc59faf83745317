"""Pandera contracts for every table that crosses a stage boundary, and readable failures.

The fixed columns of each table are DataFrameModels; columns whose names or widths come
from the data (feature columns, vector lengths) are added by the `*_schema` builders.
Failures become one `DataValidationError` whose message names the file, column, check and
a few failing rows; the full failure table goes to a JSON report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaError, SchemaErrors
from pandera.typing import Series

from seqmodels.errors import DataValidationError
from seqmodels.spec import SPLITS

MAX_EXAMPLES = 5
MAX_REPORT_ROWS = 10_000  # failure cases kept in the report on disk


class SeriesTable(pa.DataFrameModel):
    """Canonical long-form series table (features added by `series_schema`)."""

    series_id: Series[str] = pa.Field(nullable=False)
    t: Series[np.int64] = pa.Field(nullable=False)
    label: Series[np.int64] | None = pa.Field(isin=[0, 1], nullable=False)

    class Config:
        coerce = True

    @pa.parser("t")
    def fractional_steps_fail_coercion(cls, t: pd.Series) -> pd.Series:
        """Coercing to int64 would silently truncate a step of 1.5 to 1; as text it fails the
        coercion instead and is reported (parsers run before coercion)."""
        if t.dtype.kind not in "fO":
            return t
        return t.map(lambda v: str(v) if isinstance(v, float) and np.isfinite(v) and not v.is_integer()
                     else v)

    @pa.dataframe_check(error="t must be strictly increasing (unique) within each series_id")
    def t_strictly_increasing(cls, df: pd.DataFrame) -> Series[bool]:
        # A `t` that is not a number is reported by the dtype check; here it passes.
        t = pd.to_numeric(df["t"], errors="coerce")
        step = t.groupby(df["series_id"], sort=False).diff()
        return step.isna() | (step > 0)


class WindowTable(pa.DataFrameModel):
    """Prepared windows: `x` holds window * n_features float32 values, time-major."""

    window_id: Series[np.int64] = pa.Field(unique=True, ge=0)
    series_id: Series[str]
    split: Series[str] = pa.Field(isin=list(SPLITS))
    start: Series[np.int64] = pa.Field(ge=0)
    x: Series[object]
    label: Series[np.int64] | None = pa.Field(isin=[0, 1])

    class Config:
        strict = True


class ImageTable(pa.DataFrameModel):
    """Prepared images: `x` holds C*H*W float32 values; `label` is a class id."""

    image_id: Series[np.int64] = pa.Field(unique=True, ge=0)
    split: Series[str] = pa.Field(isin=list(SPLITS))
    x: Series[object]
    label: Series[np.int64] | None = pa.Field(ge=0)

    class Config:
        strict = True


class TabularTable(pa.DataFrameModel):
    """Prepared tabular rows: `x` holds the scaled features; `label` 1 = anomalous."""

    row_id: Series[np.int64] = pa.Field(unique=True, ge=0)
    split: Series[str] = pa.Field(isin=list(SPLITS))
    x: Series[object]
    label: Series[np.int64] | None = pa.Field(isin=[0, 1])

    class Config:
        strict = True


class TokenTable(pa.DataFrameModel):
    """Prepared token sequences: `x` holds max_length + 1 ids (characters, EOS, PAD...)."""

    seq_id: Series[np.int64] = pa.Field(unique=True, ge=0)
    split: Series[str] = pa.Field(isin=list(SPLITS))
    x: Series[object]

    class Config:
        strict = True


class RawRows(pa.DataFrameModel):
    """Tabular input before preparation (feature columns added by `rows_schema`)."""

    label: Series[np.int64] | None = pa.Field(isin=[0, 1], nullable=False)

    class Config:
        coerce = True


EXAMPLE_TABLES = {"series": WindowTable, "images": ImageTable, "tabular": TabularTable,
                  "tokens": TokenTable}


# Larger feature values are unit or sentinel mistakes (fill values such as 9.99e37) rather
# than measurements, and their squares in the scaler's variance would overflow float64 (1e300).
MAX_ABS_VALUE = 1e12


def _as_float(series: pd.Series) -> np.ndarray:
    """Values as float64; what is not a number becomes NaN (the dtype check reports it)."""
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _finite(series: pd.Series) -> pd.Series:
    values = _as_float(series)
    return pd.Series(np.isfinite(values) | np.isnan(values), index=series.index)


def _plausible(series: pd.Series) -> pd.Series:
    values = _as_float(series)  # inf is the finite check's to report
    return pd.Series(~(np.isfinite(values) & (np.abs(values) > MAX_ABS_VALUE)), index=series.index)


def _vector_check(width: int) -> pa.Check:
    def ok(series: pd.Series) -> pd.Series:
        return series.map(
            lambda v: v is not None and len(v) == width and bool(np.isfinite(np.asarray(v, np.float64)).all())
        )

    return pa.Check(ok, name=f"finite_vector_of_length_{width}",
                    error=f"must be a list of {width} finite floats")


def _feature_columns(features: list[str]) -> dict[str, pa.Column]:
    finite = pa.Check(_finite, name="finite", error="must be finite (no inf)")
    plausible = pa.Check(_plausible, name="plausible_magnitude",
                         error=f"must be within +-{MAX_ABS_VALUE:g} (rescale the column, e.g. change units)")
    return {name: pa.Column(np.float64, checks=[finite, plausible], nullable=False, coerce=True)
            for name in features}


def series_schema(features: list[str]) -> pa.DataFrameSchema:
    return SeriesTable.to_schema().add_columns(_feature_columns(features))


def rows_schema(features: list[str]) -> pa.DataFrameSchema:
    return RawRows.to_schema().add_columns(_feature_columns(features))


def _token_check(width: int, vocab_size: int) -> pa.Check:
    def ok(series: pd.Series) -> pd.Series:
        return series.map(lambda v: v is not None and len(v) == width
                          and bool(((np.asarray(v) >= 0) & (np.asarray(v) < vocab_size)).all()))

    return pa.Check(ok, name=f"token_ids_below_{vocab_size}",
                    error=f"must be {width} token ids in [0, {vocab_size})")


def examples_schema(kind: str, width: int, n_classes: int = 0, vocab_size: int = 0) -> pa.DataFrameSchema:
    """Prepared examples: `x` of `width` finite floats (token ids below vocab_size for tokens);
    class ids below n_classes."""
    check = _token_check(width, vocab_size) if kind == "tokens" else _vector_check(width)
    schema = EXAMPLE_TABLES[kind].to_schema().update_column("x", checks=[check])
    if n_classes > 1:
        schema = schema.update_column("label", checks=[pa.Check.in_range(0, n_classes - 1)])
    return schema


def output_schema(kind: str, input_width: int | None, latent_dim: int, n_classes: int = 0,
                  vocab_size: int = 0, predicted_classes: int = 0) -> pa.DataFrameSchema:
    """Inference rows: the input's columns except `x`, plus latent, score, [reconstruction],
    [predicted_class] (when the model has a classifier head over `predicted_classes`)."""
    columns: dict[str, pa.Column] = {
        "latent": pa.Column(object, checks=[_vector_check(latent_dim)]),
        "score": pa.Column(np.float32, checks=[pa.Check.ge(0)], nullable=False),
    }
    if input_width is not None:
        check = _token_check(input_width, vocab_size) if kind == "tokens" else _vector_check(input_width)
        columns["reconstruction"] = pa.Column(object, checks=[check])
    if predicted_classes > 1:
        columns["predicted_class"] = pa.Column(np.int64,
                                               checks=[pa.Check.in_range(0, predicted_classes - 1)])
    return examples_schema(kind, 1, n_classes, vocab_size).remove_columns(["x"]).add_columns(columns)


def _failure_rows(error: SchemaError | SchemaErrors) -> pd.DataFrame:
    if isinstance(error, SchemaErrors):
        return error.failure_cases
    cases = error.failure_cases
    if not isinstance(cases, pd.DataFrame):
        cases = pd.DataFrame({"failure_case": [cases], "index": [None]})
    schema = getattr(error, "schema", None)
    check = error.check
    return cases.assign(
        column=getattr(schema, "name", None),
        check=str(check) if check is not None else getattr(error, "reason_code", "schema"),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()[:8]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def _row_check(failures: pd.DataFrame) -> pd.Series:
    """Failures of checks over whole rows (e.g. `t` increasing within a series): Pandera lists
    each failing row once per column, which reads as one problem per column."""
    context = failures.get("schema_context", pd.Series("", index=failures.index)).astype(str)
    return ((context == "DataFrameSchema") & failures["index"].notna()
            & (failures["check"] != "column_in_dataframe"))


def summarise_failures(failures: pd.DataFrame) -> list[dict[str, Any]]:
    """One entry per (column, check): how many rows fail and the first few examples. A check
    over whole rows is one entry whose examples show the failing rows' values."""
    failures = failures.assign(column=failures["column"].astype(str), check=failures["check"].astype(str))
    # A value that cannot be coerced also fails the dtype check: report it once.
    coerced = set(failures.loc[failures["check"].str.startswith("coerce_dtype"), "column"])
    failures = failures[~(failures["check"].str.startswith("dtype(") & failures["column"].isin(coerced))]
    problems = []
    whole_rows = _row_check(failures)
    for check, group in failures[whole_rows].groupby("check", sort=False):
        rows = group.groupby("index", sort=False)
        examples = [{"row": _jsonable(index), "value": {str(c): _jsonable(v) for c, v in
                                                        zip(row["column"], row["failure_case"], strict=True)}}
                    for index, row in list(rows)[:MAX_EXAMPLES]]
        problems.append({"column": None, "columns": list(dict.fromkeys(group["column"])), "check": check,
                         "failing_rows": rows.ngroups, "examples": examples})
    for (column, check), group in failures[~whole_rows].groupby(["column", "check"], sort=False):
        examples = [
            {"row": _jsonable(row["index"]), "value": _jsonable(row["failure_case"])}
            for _, row in group.head(MAX_EXAMPLES).iterrows()
        ]
        problems.append({"column": column, "check": check, "failing_rows": len(group),
                         "examples": examples})
    return problems


def failure_records(failures: pd.DataFrame, limit: int = MAX_REPORT_ROWS) -> list[dict[str, Any]]:
    """The raw Pandera failure cases (up to `limit`) for the report on disk."""
    columns = [c for c in ("column", "check", "index", "failure_case") if c in failures.columns]
    return [{name: _jsonable(value) for name, value in row.items()}
            for row in failures[columns].head(limit).to_dict("records")]


def validate_table(frame: pd.DataFrame, schema: pa.DataFrameSchema, *, table: str,
                   source: str) -> pd.DataFrame:
    """Validate lazily (all problems at once); raise one readable DataValidationError."""
    try:
        return schema.validate(frame, lazy=True)
    except (SchemaError, SchemaErrors) as error:
        failures = _failure_rows(error)
        problems = summarise_failures(failures)
        lines = [f"{table} table from {source} failed validation ({len(problems)} problem(s); "
                 "rows counted from 0 after the header):"]
        for p in problems:
            if p["column"] is None:  # a check over whole rows
                shown = "; ".join(f"row {e['row']}: " + ", ".join(f"{c}={v!r}" for c, v in e["value"].items())
                                  for e in p["examples"])
                lines.append(f"  - check {p['check']}: {p['failing_rows']} failing row(s); e.g. {shown}")
                continue
            shown = ", ".join(f"row {e['row']}: {e['value']!r}" for e in p["examples"])
            lines.append(f"  - column {p['column']!r}, check {p['check']}: "
                         f"{p['failing_rows']} failing; e.g. {shown}")
        exc = DataValidationError("\n".join(lines), where=source,
                                  fix="correct the data (or data.* params) and rerun")
        exc.report = {"table": table, "source": source, "valid": False, "problems": problems,
                      "failure_cases": failure_records(failures), "failure_cases_total": len(failures)}
        raise exc from None


def write_report(path: Path, entries: list[dict[str, Any]]) -> None:
    from seqmodels.publish import write_text_atomic

    write_text_atomic(path, json.dumps({"valid": all(e["valid"] for e in entries), "tables": entries},
                                       indent=2, default=str))
