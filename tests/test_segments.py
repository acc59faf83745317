"""Series windows as Segments: the windows cut in the predictor are the windows of the series."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from seqmodels.config import config_from_mapping
from seqmodels.data.new_data import BatchReader
from seqmodels.data.scaling import StandardScaler
from seqmodels.data.segments import segments_table, vector_bytes, windows_table
from seqmodels.detector import Detector
from seqmodels.distributed.infer import Predictor
from seqmodels.evaluation import Threshold
from seqmodels.models import build_model
from seqmodels.spec import DataSpec
from seqmodels.stages.score import InputFile, examples_table
from seqmodels.thresholds import Thresholds


def series_frame(lengths: list[int], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = [pd.DataFrame({"series_id": f"s{i}", "t": np.arange(n), "f0": rng.normal(size=n),
                           "f1": rng.normal(size=n), "label": (rng.random(n) > 0.9).astype(int)})
             for i, n in enumerate(lengths)]
    return pd.concat(parts, ignore_index=True)


def expected_windows(frame: pd.DataFrame, window: int, stride: int) -> tuple[list, np.ndarray, np.ndarray]:
    """Every series' windows by plain indexing: starts 0, stride, ..., then one flush with the end."""
    keys, xs, labels = [], [], []
    for name, rows in frame.groupby("series_id", sort=False):
        values, label = rows[["f0", "f1"]].to_numpy(np.float32), rows["label"].to_numpy()
        starts = list(range(0, len(rows) - window + 1, stride))
        if starts[-1] + window < len(rows):
            starts.append(len(rows) - window)
        for start in starts:
            keys.append((name, start))
            xs.append(values[start:start + window].reshape(-1))
            labels.append(label[start:start + window].max())
    return keys, np.stack(xs), np.array(labels)


@pytest.mark.parametrize(("stride", "chunk_rows", "per_segment"), [(1, 37, 16), (3, 1000, 5), (7, 23, 1000)])
def test_segments_cut_the_series_windows_in_memory_and_from_their_table(stride, chunk_rows, per_segment):
    """Chunks split series mid-way and segments split chunks: both paths (the Detector's in
    memory, the predictor's from segment rows) give every window once, in order."""
    window = 8
    frame = series_frame([30, 8, 51, 19])
    frame[["f0", "f1"]] = frame[["f0", "f1"]].astype(np.float32)
    spec = DataSpec(kind="series", input_shape=(window, 2), features=("f0", "f1"), stride=stride)
    identity = StandardScaler(("f0", "f1"), (0.0, 0.0), (1.0, 1.0))
    reader = BatchReader(spec, identity, chunk_rows=chunk_rows, windows_per_segment=per_segment)
    memory, table_rows, sizes, first_id = [], [], [], 0
    for chunk in reader.chunks(frame):
        memory.extend(chunk.examples)
        sizes.extend(len(segment) for segment in chunk.inputs)
        if chunk.inputs:
            table_rows.append(windows_table(segments_table(chunk.inputs, first_id, spec), spec))
            first_id += sum(len(segment) for segment in chunk.inputs)
    keys, x, labels = expected_windows(frame, window, stride)

    in_memory = pa.concat_tables([examples_table(e, spec, 0) for e in memory])
    from_table = pa.concat_tables(table_rows)
    for table in (in_memory, from_table):
        assert list(zip(table.column("series_id").to_pylist(), table.column("start").to_pylist(),
                        strict=True)) == keys
        np.testing.assert_allclose(np.stack(table.column("x").to_numpy(zero_copy_only=False)), x, rtol=1e-6)
        np.testing.assert_array_equal(table.column("label").to_numpy(), labels)
    np.testing.assert_array_equal(from_table.column("window_id").to_numpy(), np.arange(len(keys)))
    assert max(sizes) <= per_segment


def test_a_stride_1_segment_table_holds_each_step_once():
    spec = DataSpec(kind="series", input_shape=(64, 1), features=("f0",), stride=1)
    frame = series_frame([5000])[["series_id", "t", "f0"]]
    reader = BatchReader(spec, StandardScaler(("f0",), (0.0,), (1.0,)),
                         windows_per_segment=4096)
    segments = [s for chunk in reader.chunks(frame) for s in chunk.inputs]
    table = segments_table(segments, 0, spec)
    windows = windows_table(table, spec)
    assert windows.num_rows == 5000 - 63
    assert vector_bytes(table).sum() < vector_bytes(windows).sum() / 30  # 4 bytes a step, not 256 a window


def test_the_predictor_scores_segment_rows_as_the_windows_they_hold(tmp_path):
    spec = DataSpec(kind="series", input_shape=(8, 2), features=("f0", "f1"), stride=2)
    cfg = config_from_mapping({"model": {"kind": "conv", "hidden_size": 4, "latent_dim": 2, "num_layers": 1}})
    torch.manual_seed(0)
    card = {"model": cfg.model.model_dump(mode="json"), "data_spec": spec.to_dict(),
            "scaler": {"features": ["f0", "f1"], "mean": [0.0, 0.0], "std": [1.0, 1.0]}}
    Detector(build_model(cfg.model, spec), card,
             Thresholds(Threshold(value=0.5, method="fixed", fitted_on="none"))).save(tmp_path / "d")
    reader = Detector.load(tmp_path / "d").reader(windows_per_segment=6)
    segments = [s for chunk in reader.chunks(series_frame([40, 25])) for s in chunk.inputs]
    predictor = Predictor(str(tmp_path / "d"), use_gpu=False, write_reconstructions=True, threshold=0.5)
    from_segments = predictor(segments_table(segments, 100, spec))
    from_windows = predictor(windows_table(segments_table(segments, 100, spec), spec))
    assert from_segments.column_names == from_windows.column_names
    assert from_segments.equals(from_windows)
    assert from_segments.num_rows == sum(len(s) for s in segments)


@pytest.mark.parametrize("kind", ["segments", "windows"])
def test_input_file_row_groups_each_exceed_the_read_task_budget_in_order(tmp_path, kind):
    """Ray Data's V2 reader keeps row groups in file order only when each exceeds its
    read-task budget (see InputFile): every row group but the last must."""
    spec = DataSpec(kind="series", input_shape=(16, 2), features=("f0", "f1"), stride=1)
    reader = BatchReader(spec, StandardScaler(("f0", "f1"), (0.0, 0.0), (1.0, 1.0)),
                         chunk_rows=100, windows_per_segment=10)
    budget, first_id = (500 if kind == "segments" else 3000), 0
    inputs = InputFile(tmp_path / "inputs.parquet", budget)
    for chunk in reader.chunks(series_frame([120, 300, 45])):
        if not chunk.inputs:
            continue
        table = segments_table(chunk.inputs, first_id, spec)
        inputs.write(table if kind == "segments" else windows_table(table, spec))
        first_id += sum(len(s) for s in chunk.inputs)
    inputs.close()
    file = pq.ParquetFile(tmp_path / "inputs.parquet")
    sizes = [sum(file.metadata.row_group(i).column(j).total_uncompressed_size
                 for j in range(file.metadata.num_columns)) for i in range(file.num_row_groups)]
    assert file.num_row_groups > 3 and all(size > budget for size in sizes[:-1])
    ids = file.read(columns=["window_id"]).column(0).to_numpy()
    assert (np.diff(ids) > 0).all() and ids[0] == 0
