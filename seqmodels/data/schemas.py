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

from seqmodels.config import SPLITS
from seqmodels.errors import DataValidationError

MAX_EXAMPLES = 5


class SeriesTable(pa.DataFrameModel):
    """Canonical long-form series table (features added by `series_schema`)."""

    series_id: Series[str] = pa.Field(nullable=False)
    t: Series[np.int64] = pa.Field(nullable=False)
    label: Series[np.int64] | None = pa.Field(isin=[0, 1], nullable=False)

    class Config:
        coerce = True

    @pa.dataframe_check(error="t must be strictly increasing (unique) within each series_id")
    def t_strictly_increasing(cls, df: pd.DataFrame) -> Series[bool]:
        step = df.groupby("series_id", sort=False)["t"].diff()
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


def _finite(series: pd.Series) -> pd.Series:
    return pd.Series(np.isfinite(series.to_numpy(dtype=np.float64, na_value=np.nan)), index=series.index)


def _vector_check(width: int) -> pa.Check:
    def ok(series: pd.Series) -> pd.Series:
        return series.map(
            lambda v: v is not None and len(v) == width and bool(np.isfinite(np.asarray(v, np.float64)).all())
        )

    return pa.Check(ok, name=f"finite_vector_of_length_{width}",
                    error=f"must be a list of {width} finite floats")


def _feature_columns(features: list[str]) -> dict[str, pa.Column]:
    finite = pa.Check(_finite, name="finite", error="must be finite (no inf)")
    return {name: pa.Column(np.float64, checks=[finite], nullable=False, coerce=True) for name in features}


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
                  vocab_size: int = 0) -> pa.DataFrameSchema:
    """Inference rows: the input's columns except `x`, plus latent, score, [reconstruction],
    [predicted_class] (when the model has a classifier head)."""
    columns: dict[str, pa.Column] = {
        "latent": pa.Column(object, checks=[_vector_check(latent_dim)]),
        "score": pa.Column(np.float32, checks=[pa.Check.ge(0)], nullable=False),
    }
    if input_width is not None:
        check = _token_check(input_width, vocab_size) if kind == "tokens" else _vector_check(input_width)
        columns["reconstruction"] = pa.Column(object, checks=[check])
    if n_classes > 1:
        columns["predicted_class"] = pa.Column(np.int64, checks=[pa.Check.in_range(0, n_classes - 1)])
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


def summarise_failures(failures: pd.DataFrame) -> list[dict[str, Any]]:
    """One entry per (column, check): how many rows fail and the first few examples."""
    failures = failures.assign(column=failures["column"].astype(str), check=failures["check"].astype(str))
    problems = []
    for (column, check), group in failures.groupby(["column", "check"], sort=False):
        examples = [
            {"row": _jsonable(row["index"]), "value": _jsonable(row["failure_case"])}
            for _, row in group.head(MAX_EXAMPLES).iterrows()
        ]
        problems.append({"column": column, "check": check, "failing_rows": len(group),
                         "examples": examples})
    return problems


def validate_table(frame: pd.DataFrame, schema: pa.DataFrameSchema, *, table: str,
                   source: str) -> pd.DataFrame:
    """Validate lazily (all problems at once); raise one readable DataValidationError."""
    try:
        return schema.validate(frame, lazy=True)
    except (SchemaError, SchemaErrors) as error:
        problems = summarise_failures(_failure_rows(error))
        lines = [f"{table} table from {source} failed validation ({len(problems)} problem(s)):"]
        for p in problems:
            shown = ", ".join(f"row {e['row']}: {e['value']!r}" for e in p["examples"])
            lines.append(f"  - column {p['column']!r}, check {p['check']}: "
                         f"{p['failing_rows']} failing; e.g. {shown}")
        exc = DataValidationError("\n".join(lines), where=source,
                                  fix="correct the data (or data.* params) and rerun")
        exc.report = {"table": table, "source": source, "valid": False, "problems": problems}
        raise exc from None


def write_report(path: Path, entries: list[dict[str, Any]]) -> None:
    from seqmodels.outputs import write_text_atomic

    write_text_atomic(path, json.dumps({"valid": all(e["valid"] for e in entries), "tables": entries},
                                       indent=2, default=str))
