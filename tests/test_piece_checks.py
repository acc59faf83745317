"""A table validated a piece at a time (seqmodels.data.piece_checks), as prepare's and
validate's Ray Data tasks do, reports what one pass over the whole table in order reports:
the same problems, rows and failure cases, also where the failure crosses two pieces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqmodels.data import pieces
from seqmodels.data.blocks import validate_blocks
from seqmodels.data.piece_checks import SeriesOrder, check_pieces
from seqmodels.data.pieces import parquet_pieces, read_rows, serial_map
from seqmodels.data.series import series_schema
from seqmodels.errors import DataValidationError

FEATURES = ["f0", "f1"]


def table(n_series: int = 12, length: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    return pd.DataFrame({"series_id": np.repeat([f"s{i:02d}" for i in range(n_series)], length),
                         "t": np.tile(np.arange(length), n_series),
                         "f0": rng.normal(size=n_series * length), "f1": rng.normal(size=n_series * length)})


def write(path: Path, frame: pd.DataFrame) -> Path:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=150)
    return path


def reports(path: Path, schema, series_column: str | None) -> tuple[dict | None, dict | None]:
    """(the pieces' report, the whole table's report): None where valid."""
    found = []
    for check in ("pieces", "whole"):
        try:
            if check == "pieces":
                validation, _ = check_pieces(parquet_pieces(str(path), target_rows=300), schema, table="t",
                                             source=str(path), series_column=series_column, mapper=serial_map)
                validation.finish()
            else:
                blocks = (b.to_pandas() for b in pq.ParquetFile(path).iter_batches(batch_size=150))
                validate_blocks(blocks, schema, table="t", source=str(path), series_column=series_column)
            found.append(None)
        except DataValidationError as error:
            found.append(error.report)
    return found[0], found[1]


@pytest.mark.parametrize("order", ["by series", "by time"])
def test_failures_inside_and_across_pieces_are_reported_as_one_pass_reports_them(tmp_path, order):
    frame = table()
    frame.loc[17, "f1"] = np.inf
    if order == "by series":  # row 300 opens a piece (pieces of 300 rows) and repeats s02's t of row 299
        frame.loc[300, "t"] = frame.loc[299, "t"]
    else:  # series interleaved: s05's row before row 1205 (a piece's sixth) is in the piece before
        frame = frame.sort_values(["t", "series_id"], kind="stable").reset_index(drop=True)
        assert frame.loc[1205, "series_id"] == "s05" and frame.loc[1205, "t"] == 100
        frame.loc[1205, "t"] = 50
    path = write(tmp_path / "t.parquet", frame)
    got, expected = reports(path, series_schema(FEATURES), "series_id")
    assert expected is not None and got == expected
    checks = {problem["check"] for problem in got["problems"]}
    assert any("increasing" in check for check in checks), checks  # the step back across pieces
    rows = {case["index"] for case in got["failure_cases"]}
    infinite = int(np.flatnonzero(np.isinf(frame["f1"]))[0])
    assert rows == {infinite, 300 if order == "by series" else 1205}


def test_an_id_repeated_in_a_later_piece_is_reported_as_one_pass_reports_it(tmp_path):
    import pandera.pandas as pandera

    ids = np.arange(1_000, dtype=np.int64)
    ids[700] = 12  # a repeat of a value of the first piece
    schema = pandera.DataFrameSchema({"window_id": pandera.Column(np.int64, unique=True)})
    path = write(tmp_path / "ids.parquet", pd.DataFrame({"window_id": ids}))
    got, expected = reports(path, schema, None)
    assert expected is not None and got == expected
    assert got["failure_cases"][0]["index"] == 700


def test_a_valid_table_is_valid_in_pieces_and_counts_every_row(tmp_path):
    path = write(tmp_path / "t.parquet", table())
    validation, checked = check_pieces(parquet_pieces(str(path), target_rows=300), series_schema(FEATURES),
                                       table="t", source=str(path), series_column="series_id",
                                       mapper=serial_map)
    assert validation.finish() == 1_440 and len(checked) == 5
    assert [c.piece.first_row for c in checked] == [0, 300, 600, 900, 1200]


def test_pieces_merge_their_series_order_and_see_when_the_table_is_not_grouped():
    whole, first, second = SeriesOrder(), SeriesOrder(), SeriesOrder()
    first.note(first.ordinals(np.array(["a", "a", "b"])))
    second.note(second.ordinals(np.array(["b", "c"])))
    np.testing.assert_array_equal(whole.merge(first), [0, 1])
    np.testing.assert_array_equal(whole.merge(second), [1, 2])
    assert whole.grouped and whole.ids == ["a", "b", "c"]
    back = SeriesOrder()
    back.note(back.ordinals(np.array(["a"])))  # `a` again, after b and c
    whole.merge(back)
    assert not whole.grouped


def test_rows_are_read_from_the_row_groups_that_hold_them(tmp_path, monkeypatch):
    frame = table()
    path = write(tmp_path / "t.parquet", frame)
    cut = parquet_pieces(str(path), target_rows=300)
    read_groups = []
    original = pieces.Piece.blocks

    def counted(self, columns=None, row_groups=None):
        read_groups.extend(row_groups or self.row_groups)
        return original(self, columns, row_groups)

    monkeypatch.setattr(pieces.Piece, "blocks", counted)
    rows = read_rows(cut, 440, 620, ["series_id", "t"])
    pd.testing.assert_frame_equal(rows, frame.iloc[440:620][["series_id", "t"]].reset_index(drop=True))
    assert read_groups == [2, 3, 4]  # rows 300-449, 450-599, 600-749: nothing else decoded
