"""Windows of a series kept as the steps they cover, cut into model inputs where they are used.

With a stride of 1 each window repeats window - 1 steps of its neighbour, so a batch of
windows materialised as rows of `x` is `window` times the series it came from: 256 bytes a
window at window 64, which made `seqmodels score` write (and Ray Data read back) 2.5 GB of
scratch for 10M windows. A `Segment` holds the steps once and where each window starts;
the in-process Detector cuts its windows from it in memory, and the Ray Data predictor
cuts them inside the actor from the segment rows of `segments_table`, so only the steps
travel between the driver, the object store and the actors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from seqmodels.data.tables import fixed_list
from seqmodels.spec import DataSpec

# The columns of a segment row; VALUES marks a table of segments rather than of windows.
VALUES, OFFSETS, ORIGIN, STEP_LABEL = "values", "offsets", "origin", "step_label"


@dataclass
class Segment:
    """Consecutive windows of one series: `values` (steps, n_features) float32 from the
    series' step `origin`, and each window's first step within them (`offsets`)."""

    series_id: str
    origin: int
    values: np.ndarray
    offsets: np.ndarray
    step_labels: np.ndarray | None
    window: int

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def starts(self) -> np.ndarray:
        """Each window's first step in the series."""
        return self.origin + self.offsets.astype(np.int64)

    def windows(self) -> np.ndarray:
        """The model inputs, (windows, window * n_features) float32, time-major per window."""
        return cut_windows(self.values, self.offsets, self.window)

    def labels(self) -> np.ndarray | None:
        """A window is anomalous when any of its steps is."""
        if self.step_labels is None:
            return None
        return window_labels(self.step_labels, self.offsets, self.window)


def cut_windows(values: np.ndarray, offsets: np.ndarray, window: int) -> np.ndarray:
    """Rows of `window` consecutive steps of `values` (steps, n_features), one per offset,
    flattened time-major: the layout prepare writes and the models read."""
    view = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)  # (starts, F, window)
    x = view[offsets].transpose(0, 2, 1).reshape(len(offsets), -1)
    return np.ascontiguousarray(x, np.float32)


def window_labels(step_labels: np.ndarray, offsets: np.ndarray, window: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(step_labels, window)[offsets].max(axis=1)


def segments_table(segments: list[Segment], first_id: int, spec: DataSpec) -> pa.Table:
    """One row per segment: the id of its first window (the rest follow), series_id, origin,
    offsets, the steps flattened, and the steps' labels when the data has them."""
    counts = np.array([len(s) for s in segments], np.int64)
    columns = {spec.id_column: first_id + np.concatenate([[0], np.cumsum(counts)[:-1]]),
               "series_id": pa.array([s.series_id for s in segments], pa.string()),
               ORIGIN: np.array([s.origin for s in segments], np.int64),
               OFFSETS: pa.array([s.offsets.astype(np.int32) for s in segments], pa.list_(pa.int32())),
               VALUES: pa.array([s.values.reshape(-1).astype(np.float32) for s in segments],
                                pa.list_(pa.float32()))}
    if segments and segments[0].step_labels is not None:
        columns[STEP_LABEL] = pa.array([s.step_labels.astype(np.int64) for s in segments],
                                       pa.list_(pa.int64()))
    return pa.table(columns)


def is_segments(table: pa.Table) -> bool:
    return VALUES in table.column_names


def windows_table(segments: pa.Table, spec: DataSpec) -> pa.Table:
    """Segment rows as the window rows prepare and `seqmodels score` feed the model: id,
    series_id, start, [label], x; cut where the model runs (see the module docstring)."""
    segments = segments.combine_chunks()
    column = {name: segments.column(name).chunk(0) for name in segments.column_names}
    parts = [_segment(column, index, spec) for index in range(segments.num_rows)]
    first_ids = column[spec.id_column].to_numpy()
    columns = {
        spec.id_column: np.concatenate([first + np.arange(len(s), dtype=np.int64)
                                        for first, s in zip(first_ids, parts, strict=True)]),
        "series_id": pa.array(np.concatenate([np.full(len(s), s.series_id, dtype=object) for s in parts]),
                              pa.string()),
        "start": np.concatenate([s.starts for s in parts])}
    if STEP_LABEL in column:
        columns["label"] = np.concatenate([s.labels() for s in parts]).astype(np.int64)
    columns["x"] = fixed_list(np.concatenate([s.windows() for s in parts]))
    return pa.table(columns)


def _segment(column: dict[str, pa.Array], index: int, spec: DataSpec) -> Segment:
    def values(name: str) -> np.ndarray:
        return column[name][index].values.to_numpy(zero_copy_only=False)

    labels = values(STEP_LABEL) if STEP_LABEL in column else None
    return Segment(column["series_id"][index].as_py(), column[ORIGIN][index].as_py(),
                   values(VALUES).reshape(-1, spec.n_features), values(OFFSETS), labels, spec.window)


def vector_bytes(table: pa.Table) -> np.ndarray:
    """Bytes of each row's vector column (`x` of windows, `values` of segments): what a
    Parquet row group of these rows holds at least, uncompressed (floats are written plain)."""
    column = table.column(VALUES if is_segments(table) else "x")
    width = column.type.value_type.bit_width // 8
    if pa.types.is_fixed_size_list(column.type):
        return np.full(table.num_rows, column.type.list_size * width, np.int64)
    return pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64) * width
