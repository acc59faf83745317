"""prepare in bounded memory (issue 19): a canonical Parquet file is read block by block and
windowed a group of whole series at a time, and gives what the whole table in memory gives,
whatever the blocks, the groups and the order of the rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqmodels.data import blocks, pieces, series_stream
from seqmodels.data.config import DataConfig
from seqmodels.data.series import prepare_windows, series_sources, survey_sources, write_prepared
from seqmodels.data.series_stream import series_groups
from seqmodels.errors import DataValidationError
from seqmodels.spec import EXAMPLES_FILE, HELDOUT_FILE, SERIES_FILE

FEATURES = ["f0", "f1"]
LENGTH = 120


def canonical(n_series: int = 40, seed: int = 0) -> pd.DataFrame:
    """Series of LENGTH steps, one in four with a labelled burst."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_series):
        label = np.zeros(LENGTH, np.int64)
        values = rng.normal(0, 1, (LENGTH, len(FEATURES))) + i % 3
        if i % 4 == 3:
            label[50:60] = 1
            values[50:60] += 4.0
        frames.append(pd.DataFrame({"series_id": f"s{i:03d}", "t": np.arange(LENGTH), "f0": values[:, 0],
                                    "f1": values[:, 1], "label": label}))
    return pd.concat(frames, ignore_index=True)


def write_parquet(path: Path, frame: pd.DataFrame, row_group_rows: int = 700) -> Path:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group_rows)
    return path


def data_config(source: Path, **data) -> DataConfig:
    return DataConfig(source=str(source), window=20, stride=10, labels="points", **data)


def read(folder: Path) -> dict[str, pd.DataFrame]:
    return {name: pq.read_table(folder / name).to_pandas()
            for name in (EXAMPLES_FILE, SERIES_FILE, HELDOUT_FILE)}


def assert_same_outputs(got: dict[str, pd.DataFrame], expected: dict[str, pd.DataFrame]) -> None:
    for name in (SERIES_FILE, HELDOUT_FILE):
        pd.testing.assert_frame_equal(got[name], expected[name])
    left, right = got[EXAMPLES_FILE], expected[EXAMPLES_FILE]
    pd.testing.assert_frame_equal(left.drop(columns="x"), right.drop(columns="x"))
    # the scaler's moments merged block by block agree with one pass to rounding (1e-15)
    np.testing.assert_allclose(np.stack(left["x"]), np.stack(right["x"]), rtol=0, atol=1e-5)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 1,000 rows, pieces of 1,400 (two row groups), groups of 1,500 and bucket
    files of 2,000: a 4,800-row table goes through every path that a file of millions of
    rows takes."""
    monkeypatch.setattr(blocks, "BLOCK_ROWS", 1_000)
    monkeypatch.setattr(pieces, "BLOCK_ROWS", 1_000)
    monkeypatch.setattr(pieces, "PIECE_ROWS", 1_400)
    monkeypatch.setattr(series_stream, "BLOCK_ROWS", 1_000)
    monkeypatch.setattr(series_stream, "GROUP_ROWS", 1_500)
    monkeypatch.setattr(series_stream, "SPILL_ROWS", 2_000)


@pytest.mark.parametrize("split", [{"by": "series"}, {"by": "time", "val": 0.2, "test": 0.3}])
def test_a_file_prepared_in_groups_equals_the_whole_table_prepared_at_once(tmp_path, small_blocks, split):
    table = canonical()
    cfg = data_config(write_parquet(tmp_path / "streams.parquet", table), split=split)
    (tmp_path / "out").mkdir()
    summary = write_prepared(cfg, 7, tmp_path / "out")
    windows, _, spec, rows = prepare_windows(table, FEATURES, cfg, seed=7)
    expected = {EXAMPLES_FILE: windows, SERIES_FILE: rows,
                HELDOUT_FILE: rows.loc[rows["split"].eq("test")].drop(columns="split").reset_index(drop=True)}
    got = read(tmp_path / "out")
    assert len(got[EXAMPLES_FILE]) == sum(summary.counts.values()) > 0
    assert summary.spec == spec and summary.spec.timeline
    assert got[EXAMPLES_FILE]["window_id"].tolist() == list(range(len(windows)))  # numbered across groups
    assert_same_outputs(got, expected)


def test_rows_ordered_by_time_across_series_are_regrouped_through_bucket_files(tmp_path, small_blocks):
    table = canonical()
    by_time = table.sort_values(["t", "series_id"], kind="stable").reset_index(drop=True)
    grouped, scattered = tmp_path / "grouped", tmp_path / "scattered"
    for folder, frame in ((grouped, table), (scattered, by_time)):
        folder.mkdir()
        write_prepared(data_config(write_parquet(tmp_path / f"{folder.name}.parquet", frame)), 3, folder)
    assert_same_outputs(read(scattered), read(grouped))


def test_groups_hold_whole_series_and_stay_near_the_group_size(tmp_path, small_blocks):
    for frame in (canonical(), canonical().sort_values(["t", "series_id"], kind="stable")):
        cfg = data_config(write_parquet(tmp_path / "streams.parquet", frame))
        sources, features = series_sources(cfg)
        survey = survey_sources(sources, features).series
        seen: list[str] = []
        for group in series_groups(sources, features, survey):
            ids = group["series_id"].to_numpy()
            assert len(group) <= series_stream.SPILL_ROWS + LENGTH
            in_order = group.groupby("series_id", sort=False)["t"].apply(lambda t: t.is_monotonic_increasing)
            assert in_order.all()
            seen += list(dict.fromkeys(ids))
        assert seen == [f"s{i:03d}" for i in range(40)]  # each series once, in order of first appearance


def test_a_bad_value_deep_in_a_large_file_is_named_by_row_and_file(tmp_path, small_blocks):
    table = canonical()
    table.loc[4_321, "f1"] = np.inf
    path = write_parquet(tmp_path / "streams.parquet", table)
    (tmp_path / "out").mkdir()
    with pytest.raises(DataValidationError) as caught:
        write_prepared(data_config(path), 0, tmp_path / "out")
    assert "4321" in caught.value.what and str(path) in caught.value.where
    assert caught.value.report["rows"] == len(table)  # every block was checked, not just the first bad one


def test_the_scaler_merged_block_by_block_is_numpys_in_one_block_and_to_rounding_in_many():
    from seqmodels.data.scaling import ScalerFit

    values = np.random.default_rng(2).normal(5.0, 3.0, (10_001, 3))
    whole = ScalerFit(["a", "b", "c"])
    whole.add(values)
    assert whole.scaler().mean == tuple(np.asfortranarray(values).mean(axis=0).tolist())
    assert whole.scaler().std == tuple(np.asfortranarray(values).std(axis=0).tolist())
    pieces = ScalerFit(["a", "b", "c"])
    for start in range(0, len(values), 997):
        pieces.add(values[start:start + 997])
    np.testing.assert_allclose(pieces.scaler().mean, values.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(pieces.scaler().std, values.std(axis=0), rtol=1e-13)
    assert pieces.count == len(values)
