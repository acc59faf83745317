import json

import numpy as np
import pandas as pd
import pytest

from seqmodels.data import schemas
from seqmodels.data.series import WindowTable, series_schema
from seqmodels.errors import DataValidationError
from tests.conftest import make_series_table

FEATURES = ["f0", "f1"]


def check_series(frame):
    return schemas.validate_table(frame, series_schema(FEATURES), table="canonical series",
                                  source="input.csv")


def test_good_series_table_passes():
    frame = make_series_table(n_series=3)
    assert len(check_series(frame)) == len(frame)


def _bad(mutate):
    frame = make_series_table(n_series=3)
    mutate(frame)
    return frame


@pytest.mark.parametrize(
    ("mutate", "column", "check"),
    [
        (lambda f: f.drop(columns=["t"], inplace=True), "t", "column_in_dataframe"),
        (lambda f: f.__setitem__("f0", f["f0"].where(f.index != 4, np.nan)), "f0", "not_nullable"),
        (lambda f: f.__setitem__("f1", f["f1"].where(f.index != 7, np.inf)), "f1", "finite"),
        (lambda f: f.__setitem__("label", f["label"].where(f.index != 2, 5)), "label", "isin"),
        (lambda f: f.__setitem__("t", f["t"].where(f.index != 3, 1)), "t", "strictly increasing"),
        (lambda f: f.__setitem__("f0", "text"), "f0", "float64"),
    ],
)
def test_bad_series_tables_name_column_check_and_rows(mutate, column, check):
    with pytest.raises(DataValidationError) as caught:
        check_series(_bad(mutate))
    message = caught.value.message
    assert "input.csv" in message
    assert column in message or check in message
    assert any(check in p["check"] or column == p["column"] for p in caught.value.report["problems"])


def test_all_problems_are_reported_at_once_with_at_most_five_examples():
    def mutate(frame):
        frame.loc[0:20, "f0"] = np.nan
        frame.loc[5, "label"] = 3

    with pytest.raises(DataValidationError) as caught:
        check_series(_bad(mutate))
    problems = {p["column"]: p for p in caught.value.report["problems"]}
    assert problems["f0"]["failing_rows"] == 21
    assert len(problems["f0"]["examples"]) == 5
    assert "label" in problems


def _windows(width=4, rows=3):
    return pd.DataFrame({
        "window_id": np.arange(rows, dtype=np.int64),
        "series_id": ["a"] * rows,
        "split": ["train"] * rows,
        "start": np.arange(rows, dtype=np.int64),
        "x": [np.zeros(width, np.float32) for _ in range(rows)],
    })


def test_window_schema_checks_vector_width_finiteness_and_ids():
    schema = schemas.examples_schema(WindowTable, schemas.vector_check(4))
    schemas.validate_table(_windows(), schema, table="windows", source="w")
    bad = _windows()
    bad.at[1, "x"] = np.zeros(3, np.float32)
    bad.at[2, "x"] = np.array([0, np.nan, 0, 0], np.float32)
    bad.loc[2, "window_id"] = 0
    bad.loc[0, "split"] = "holdout"
    with pytest.raises(DataValidationError) as caught:
        schemas.validate_table(bad, schema, table="windows", source="w")
    columns = {p["column"] for p in caught.value.report["problems"]}
    assert {"x", "window_id", "split"} <= columns
    x_problem = next(p for p in caught.value.report["problems"] if p["column"] == "x")
    assert x_problem["failing_rows"] == 2


def test_report_is_written_as_json(tmp_path):
    path = tmp_path / "reports" / "validation.json"
    schemas.write_report(path, [{"table": "t", "valid": False, "problems": [{"column": "x"}]}])
    report = json.loads(path.read_text())
    assert report["valid"] is False
    assert report["tables"][0]["problems"][0]["column"] == "x"
