"""Validating a table block by block, so that a file larger than memory is checked by the
same Pandera schema as a small one and fails with the same one message and report.

A block on its own cannot see two things, which are carried from block to block:
- a `unique` column's values in earlier blocks: kept as runs of consecutive integers (the
  ids prepare writes are 0..n-1, one run however many rows), or as a set for other values;
- checks along a series (`t` strictly increasing within a series_id): each block is
  validated with, in front of it, the last row already seen of every series it continues,
  and failures of those carried rows, reported with their own block, are dropped.
Row numbers are the table's (counted from 0), not the block's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow.parquet as pq
from pandera.errors import SchemaError, SchemaErrors

from seqmodels.data.schemas import (
    MAX_EXAMPLES,
    MAX_REPORT_ROWS,
    failure_rows,
    summarise_failures,
    validation_error,
)

# A block holds at most BLOCK_ROWS rows and about BLOCK_BYTES of Arrow data: 262k rows of a
# canonical table with four features, 10k windows of 400 values. Validating 10M rows peaked
# at 471 MiB PSS against 431 at 1M (64 MiB blocks: 672 against 463).
BLOCK_ROWS, BLOCK_BYTES = 262_144, 16 << 20


def block_rows(file: pq.ParquetFile) -> int:
    """Rows per block of this file, from its row groups' uncompressed size."""
    meta = file.metadata
    size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    per_row = size / max(meta.num_rows, 1)
    return max(1024, min(BLOCK_ROWS, int(BLOCK_BYTES / max(per_row, 1.0))))


class BlockValidation:
    """Feed `add` the table's blocks in order, then `finish`. `series_column`: the column that
    groups rows into series for checks along a series (None: no such checks)."""

    def __init__(self, schema: pa.DataFrameSchema, *, table: str, source: str,
                 series_column: str | None = None, first_row: int = 0,
                 row_before: pd.DataFrame | None = None) -> None:
        """`first_row`, `row_before`: for a piece of the table (seqmodels.data.pieces) checked
        on its own, its first row's number and the table's row before it, which checks along
        a series see in front of the piece's first block."""
        self.schema, self.table, self.source, self.series_column = schema, table, source, series_column
        self.first_row = first_row
        self.rows = 0
        self._problems: dict[tuple[str | None, str], dict[str, Any]] = {}
        self._kept: list[pd.DataFrame] = []  # the first MAX_REPORT_ROWS failure cases, for the report
        self._kept_rows = self._total = 0
        self._seen = {name: _SeenValues() for name, column in schema.columns.items() if column.unique}
        self._last_rows: pd.DataFrame | None = row_before  # per series, the last row seen

    def add(self, frame: pd.DataFrame) -> pd.DataFrame | None:
        """The block as the schema coerces it (a row index counted from the table's start), or
        None when it failed: its failures are kept for `finish`."""
        first = self.first_row + self.rows
        frame = frame.set_axis(pd.RangeIndex(first, first + len(frame)))
        self.rows += len(frame)
        checked, carried = frame, None
        if self.series_column is not None and self._last_rows is not None and self.series_column in frame:
            ids = frame[self.series_column].unique()  # few: pandas' isin of Arrow strings loops in Python
            continuing = self._last_rows[self._last_rows[self.series_column].isin(ids)]
            checked, carried = pd.concat([continuing, frame]), continuing.index
        valid: pd.DataFrame | None = None
        failed = self._total
        try:
            valid = self.schema.validate(checked, lazy=True)
        except (SchemaError, SchemaErrors) as error:
            failures = failure_rows(error)
            if carried is not None and len(carried):
                failures = failures[~failures["index"].isin(carried)]
            self._record(failures)
        self._record(self._duplicates(frame))
        if self.series_column is not None and self.series_column in frame:
            tails = frame.drop_duplicates(self.series_column, keep="last")
            stacked = tails if self._last_rows is None else pd.concat([self._last_rows, tails])
            self._last_rows = stacked.drop_duplicates(self.series_column, keep="last")
        if valid is None or self._total > failed:
            return None
        return valid.iloc[len(valid) - len(frame):]

    def merge(self, later: BlockValidation) -> bool:
        """Take in the failures of the table's next piece, checked on its own; False (and
        nothing taken) when a unique column's values repeat across the two, which only a
        check of the whole table in order reports as it should. Checks along a series are
        exact across pieces when a series' rows are contiguous (`row_before` is then the
        only earlier row of a series a piece continues): the caller checks that."""
        assert later.first_row == self.first_row + self.rows, "pieces merge in table order"
        if any(not seen.disjoint(later._seen[name]) for name, seen in self._seen.items()):
            return False
        for name, seen in self._seen.items():
            seen.update(later._seen[name])
        self.rows += later.rows
        for key, problem in later._problems.items():
            self._merge_problem(key, problem)
        self._total += later._total
        for kept in later._kept:
            if self._kept_rows >= MAX_REPORT_ROWS:
                break
            self._kept.append(kept.head(MAX_REPORT_ROWS - self._kept_rows))
            self._kept_rows += len(self._kept[-1])
        self._last_rows = later._last_rows
        return True

    def finish(self) -> int:
        """The rows checked; raises the one DataValidationError of every block's failures,
        whose report also says how many rows were checked."""
        if self._total:
            failures = pd.concat(self._kept, ignore_index=True) if self._kept else pd.DataFrame()
            error = validation_error(self._in_table_order(), failures, self._total, table=self.table,
                                     source=self.source)
            error.report["rows"] = self.rows
            raise error
        return self.rows

    def _in_table_order(self) -> list[dict[str, Any]]:
        """As summarise_failures orders a whole table's problems: checks over whole rows first,
        then by column in the schema's order (blocks met them in the order of their rows)."""
        columns = {name: i for i, name in enumerate(self.schema.columns)}
        return sorted(self._problems.values(),
                      key=lambda p: (p["column"] is not None, columns.get(p["column"], len(columns))))

    def _duplicates(self, frame: pd.DataFrame) -> pd.DataFrame | None:
        """Failure cases of values a unique column already had in an earlier block (a repeat
        inside the block is Pandera's to report)."""
        found = []
        for name, seen in self._seen.items():
            if name not in frame:
                continue
            values = frame[name].to_numpy()
            repeated = seen.contains(values)
            seen.add(values)
            if repeated.any():
                found.append(pd.DataFrame({"column": name, "check": "field_uniqueness",
                                           "index": frame.index[repeated], "failure_case": values[repeated],
                                           "schema_context": "Column"}))
        return pd.concat(found, ignore_index=True) if found else None

    def _record(self, failures: pd.DataFrame | None) -> None:
        if failures is None or failures.empty:
            return
        self._total += len(failures)
        if self._kept_rows < MAX_REPORT_ROWS:
            self._kept.append(failures.head(MAX_REPORT_ROWS - self._kept_rows))
            self._kept_rows += len(self._kept[-1])
        for problem in summarise_failures(failures):
            self._merge_problem((problem["column"], problem["check"]), problem)

    def _merge_problem(self, key: tuple[str | None, str], problem: dict[str, Any]) -> None:
        merged = self._problems.setdefault(key, {**problem, "failing_rows": 0, "examples": []})
        merged["failing_rows"] += problem["failing_rows"]
        merged["examples"] = (merged["examples"] + problem["examples"])[:MAX_EXAMPLES]
        if "columns" in problem:
            merged["columns"] = list(dict.fromkeys(merged["columns"] + problem["columns"]))


def validate_blocks(blocks: Iterable[pd.DataFrame], schema: pa.DataFrameSchema, *, table: str, source: str,
                    series_column: str | None = None) -> int:
    """Every block of one table through one BlockValidation; returns the rows checked."""
    validation = BlockValidation(schema, table=table, source=source, series_column=series_column)
    for block in blocks:
        validation.add(block)
    return validation.finish()


class _SeenValues:
    """The values of a unique column in the blocks so far: runs [start, stop) of consecutive
    integers while the values are integers, a set otherwise."""

    def __init__(self) -> None:
        self._starts = np.empty(0, np.int64)
        self._stops = np.empty(0, np.int64)
        self._other: set[Any] | None = None

    def contains(self, values: np.ndarray) -> np.ndarray:
        if self._other is not None:
            return np.array([v in self._other for v in values.tolist()], dtype=bool)
        if not np.issubdtype(values.dtype, np.integer) or not self._starts.size:
            return np.zeros(len(values), dtype=bool)
        run = np.searchsorted(self._starts, values, side="right") - 1
        return (run >= 0) & (values < self._stops[np.maximum(run, 0)])

    def add(self, values: np.ndarray) -> None:
        if self._other is None and not np.issubdtype(values.dtype, np.integer):
            self._other = set(self._as_list())
        if self._other is not None:
            self._other.update(values.tolist())
            return
        points = np.unique(values.astype(np.int64))
        self._runs(np.concatenate([self._starts, points]), np.concatenate([self._stops, points + 1]))

    def _runs(self, starts: np.ndarray, stops: np.ndarray) -> None:
        """Keep the union of runs [starts, stops), as few sorted runs as it takes."""
        if not len(starts):
            return
        order = np.argsort(starts, kind="stable")
        starts, stops = starts[order], np.maximum.accumulate(stops[order])
        new_run = np.concatenate([[True], starts[1:] > stops[:-1]])
        self._starts = starts[new_run]
        self._stops = np.maximum.reduceat(stops, np.flatnonzero(new_run)) if len(stops) else stops

    def disjoint(self, other: _SeenValues) -> bool:
        """No value in both."""
        if self._other is None and other._other is None:
            starts = np.concatenate([self._starts, other._starts])
            stops = np.concatenate([self._stops, other._stops])
            order = np.argsort(starts, kind="stable")
            return bool((starts[order][1:] >= np.maximum.accumulate(stops[order])[:-1]).all())
        mine = self._other if self._other is not None else set(self._as_list())
        theirs = other._other if other._other is not None else other._as_list()
        return mine.isdisjoint(theirs)

    def update(self, other: _SeenValues) -> None:
        if other._other is not None or self._other is not None:
            values = other._other if other._other is not None else other._as_list()
            self.add(np.asarray(list(values), dtype=object))
        else:
            self._runs(np.concatenate([self._starts, other._starts]),
                       np.concatenate([self._stops, other._stops]))

    def _as_list(self) -> list[int]:
        return [v for start, stop in zip(self._starts.tolist(), self._stops.tolist(), strict=True)
                for v in range(start, stop)]
