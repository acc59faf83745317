"""Validation block by block (seqmodels.data.blocks) says what validation of the whole table
says: the same problems, counts and row numbers, with checks along a series and unique ids
carried across block boundaries; and the validate stage finds one bad row deep in a file."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqmodels.data import schemas
from seqmodels.data.blocks import BlockValidation, validate_blocks
from seqmodels.data.series import WindowTable, series_schema
from seqmodels.errors import DataValidationError


def canonical(n_series: int = 4, length: int = 10) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"series_id": np.repeat([f"s{i}" for i in range(n_series)], length),
                         "t": np.tile(np.arange(length, dtype=np.int64), n_series),
                         "split": "train", "f0": rng.normal(size=n_series * length)})


def problems(error: DataValidationError) -> list[tuple]:
    return [(p["column"], p["check"], p["failing_rows"], [e["row"] for e in p["examples"]])
            for p in error.report["problems"]]


def in_blocks(frame: pd.DataFrame, rows: int) -> list[pd.DataFrame]:
    return [frame.iloc[start:start + rows].reset_index(drop=True) for start in range(0, len(frame), rows)]


@pytest.mark.parametrize("block_rows", [7, 10, 13, 1000])
def test_blocks_report_what_the_whole_table_reports(block_rows):
    frame = canonical()
    frame.loc[3, "f0"] = np.inf
    frame.loc[[14, 33], "split"] = "holdout"
    frame.loc[20, "t"] = -1  # s2 starts at row 20: its first step is fine, its second (21) is not
    frame.loc[[27, 30], "t"] = [8, 8]  # s2 steps back at 28; s3 starts at 30
    frame.loc[24, "t"] = 3  # s2: 21 (0 after -1) passes, 25 (5 after 3) passes, 24 (3 after 3) fails
    schema = series_schema(["f0"])
    with pytest.raises(DataValidationError) as whole:
        schemas.validate_table(frame, schema, table="canonical series", source="series.parquet")
    with pytest.raises(DataValidationError) as blocked:
        validate_blocks(in_blocks(frame, block_rows), schema, table="canonical series",
                        source="series.parquet", series_column="series_id")
    assert problems(blocked.value) == problems(whole.value)
    assert str(blocked.value) == str(whole.value)
    assert blocked.value.report["failure_cases_total"] == whole.value.report["failure_cases_total"]


def test_a_step_back_at_a_block_boundary_and_a_series_seen_again_later_are_found():
    frame = canonical(n_series=2, length=6)
    frame.loc[6, "t"] = 0  # s1 row 6: fine (its first step)
    frame.loc[7, "t"] = 0  # s1 row 7 repeats t=0, right after the block boundary below
    again = pd.DataFrame({"series_id": ["s0"], "t": [2], "split": ["train"], "f0": [0.0]})  # s0 back at t=2
    frame = pd.concat([frame, again], ignore_index=True)
    with pytest.raises(DataValidationError) as error:
        validate_blocks(in_blocks(frame, 7), series_schema(["f0"]), table="canonical series", source="f",
                        series_column="series_id")
    [problem] = error.value.report["problems"]
    assert problem["failing_rows"] == 2 and [e["row"] for e in problem["examples"]] == [7, 12]
    assert validate_blocks(in_blocks(canonical(), 7), series_schema(["f0"]), table="t", source="f",
                           series_column="series_id") == 40


def windows(ids: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"window_id": np.array(ids, dtype=np.int64), "series_id": "s0", "split": "train",
                         "start": np.arange(len(ids), dtype=np.int64),
                         "x": [np.zeros(2, np.float32)] * len(ids)})


def test_an_id_repeated_in_a_later_block_is_a_uniqueness_failure_at_the_repeat():
    schema = schemas.examples_schema(WindowTable, schemas.vector_check(2))
    assert validate_blocks([windows([0, 1, 2]), windows([3, 4]), windows([6, 5])], schema, table="w",
                           source="f") == 7
    with pytest.raises(DataValidationError) as error:
        validate_blocks([windows([0, 1, 2]), windows([10, 11]), windows([1, 12, 11])], schema, table="w",
                        source="f")
    [problem] = error.value.report["problems"]
    assert (problem["column"], problem["check"], problem["failing_rows"]) == ("window_id", "field_uniqueness",
                                                                             2)
    assert [e["row"] for e in problem["examples"]] == [5, 7]


def test_a_bad_row_deep_in_a_large_file_is_named_by_row_and_file(tmp_path):
    """The validate stage on a canonical table of 1M rows (4 blocks) with one inf at row
    987,654: one message, that row and the file, and the stage's report."""
    from seqmodels.config import config_from_mapping
    from seqmodels.spec import EXAMPLES_FILE, SERIES_FILE, SPEC_FILE, DataSpec
    from seqmodels.stages import validate

    prepared = tmp_path / "prepared"
    prepared.mkdir()
    rows, length = 1_000_000, 1_000
    f0 = np.sin(np.arange(rows) / 10.0)
    f0[987_654] = np.inf
    pq.write_table(pa.table({"series_id": np.repeat([f"s{i:04d}" for i in range(rows // length)], length),
                             "t": np.tile(np.arange(length, dtype=np.int64), rows // length),
                             "f0": f0, "split": pa.array(["train"] * rows)}), prepared / SERIES_FILE)
    windows(list(range(3))).to_parquet(prepared / EXAMPLES_FILE)
    spec = DataSpec(kind="series", input_shape=(2, 1), features=("f0",))
    (prepared / SPEC_FILE).write_text(json.dumps(spec.to_dict()))
    cfg = config_from_mapping({"paths": {"prepared": str(prepared),
                                         "validation_report": str(tmp_path / "validation.json")}})
    with pytest.raises(DataValidationError) as error:
        validate.run(cfg)
    message = str(error.value)
    assert str(prepared / SERIES_FILE) in message and "row 987654: 'inf'" in message
    assert "column 'f0', check must be finite (no inf): 1 failing" in message
    report = json.loads((tmp_path / "validation.json").read_text())
    series, examples = report["tables"]
    assert series["rows"] == rows and series["failure_cases"][0]["index"] == 987_654
    assert examples["valid"] is True


def test_block_validation_counts_rows_without_failures():
    validation = BlockValidation(series_schema(["f0"]), table="t", source="f", series_column="series_id")
    for block in in_blocks(canonical(), 9):
        validation.add(block)
    assert validation.finish() == 40
