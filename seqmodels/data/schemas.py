"""The validation machinery every table contract shares, and readable failures.

Each modality module (series, images, tabular, tokens) declares its tables as Pandera
DataFrameModels; columns whose names or widths come from the data (feature columns,
vector lengths) are added by the builders here, which take what they need as arguments.
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

from seqmodels.errors import DataValidationError

MAX_EXAMPLES = 5
MAX_REPORT_ROWS = 10_000  # failure cases kept in the report on disk

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


def vector_check(width: int) -> pa.Check:
    """`x`, latents and reconstructions: a list of `width` finite floats per row."""
    def ok(series: pd.Series) -> pd.Series:
        return series.map(
            lambda v: v is not None and len(v) == width and bool(np.isfinite(np.asarray(v, np.float64)).all())
        )

    return pa.Check(ok, name=f"finite_vector_of_length_{width}",
                    error=f"must be a list of {width} finite floats")


def token_check(width: int, vocab_size: int) -> pa.Check:
    """Token sequences: `width` ids per row, each a vocabulary index."""
    def ok(series: pd.Series) -> pd.Series:
        return series.map(lambda v: v is not None and len(v) == width
                          and bool(((np.asarray(v) >= 0) & (np.asarray(v) < vocab_size)).all()))

    return pa.Check(ok, name=f"token_ids_below_{vocab_size}",
                    error=f"must be {width} token ids in [0, {vocab_size})")


def values_check(width: int, discrete: bool, vocab_size: int = 0) -> pa.Check:
    """The check of a model input or reconstruction: token ids (discrete) or finite floats."""
    return token_check(width, vocab_size) if discrete else vector_check(width)


def feature_checks(features: list[str]) -> dict[str, pa.Column]:
    """Float columns named by the data (data.features): finite, of a plausible magnitude."""
    finite = pa.Check(_finite, name="finite", error="must be finite (no inf)")
    plausible = pa.Check(_plausible, name="plausible_magnitude",
                         error=f"must be within +-{MAX_ABS_VALUE:g} (rescale the column, e.g. change units)")
    return {name: pa.Column(np.float64, checks=[finite, plausible], nullable=False, coerce=True)
            for name in features}


def examples_schema(table: type[pa.DataFrameModel], x_check: pa.Check,
                    n_classes: int = 0) -> pa.DataFrameSchema:
    """A prepared-examples table (`table`, a modality's model) with `x` checked by `x_check`;
    class ids below n_classes."""
    schema = table.to_schema().update_column("x", checks=[x_check])
    if n_classes > 1:
        schema = schema.update_column("label", checks=[pa.Check.in_range(0, n_classes - 1)])
    return schema


def output_schema(examples: pa.DataFrameSchema, latent_dim: int, reconstruction: pa.Check | None,
                  predicted_classes: int = 0, step_scores: int = 0) -> pa.DataFrameSchema:
    """Inference rows: the examples' columns except `x`, plus latent, score, [reconstruction
    checked by `reconstruction`], [predicted_class] (when the model has a classifier head
    over `predicted_classes`), [step_score: `step_scores` per-step errors of a window]."""
    columns: dict[str, pa.Column] = {
        "latent": pa.Column(object, checks=[vector_check(latent_dim)]),
        "score": pa.Column(np.float32, checks=[pa.Check.ge(0)], nullable=False),
    }
    if reconstruction is not None:
        columns["reconstruction"] = pa.Column(object, checks=[reconstruction])
    if step_scores:
        columns["step_score"] = pa.Column(object, checks=[vector_check(step_scores)])
    if predicted_classes > 1:
        columns["predicted_class"] = pa.Column(np.int64,
                                               checks=[pa.Check.in_range(0, predicted_classes - 1)])
    return examples.remove_columns(["x"]).add_columns(columns)


def failure_rows(error: SchemaError | SchemaErrors) -> pd.DataFrame:
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
        failures = failure_rows(error)
        raise validation_error(summarise_failures(failures), failures, len(failures), table=table,
                               source=source) from None


def validation_error(problems: list[dict[str, Any]], failures: pd.DataFrame, total: int, *, table: str,
                     source: str) -> DataValidationError:
    """The one error of a table's failures: `problems` (summarise_failures) in the message,
    `failures` (the first cases, up to MAX_REPORT_ROWS) and their `total` in `.report`."""
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
    error = DataValidationError("\n".join(lines), where=source,
                                fix="correct the data (or data.* params) and rerun")
    error.report = {"table": table, "source": source, "valid": False, "problems": problems,
                    "failure_cases": failure_records(failures), "failure_cases_total": total}
    return error


def write_report(path: Path, entries: list[dict[str, Any]]) -> None:
    from seqmodels.publish import write_text_atomic

    write_text_atomic(path, json.dumps({"valid": all(e["valid"] for e in entries), "tables": entries},
                                       indent=2, default=str))
