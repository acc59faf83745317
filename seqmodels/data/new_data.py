"""New data for a trained model: read, checked against the model, scaled and cut into the
model's inputs, a bounded chunk at a time.

Prepare fits the scaler and cuts windows over a whole table it holds in memory; a new batch
is scored with what the model was trained with instead (its features, scaler, window and
stride, from the model folder), and may be far larger than memory. So files are read in
chunks of rows, each chunk validated with the same Pandera contract as prepare's, and
series are windowed by `WindowStream`, which carries only the last window's worth of steps
of the series in progress from one chunk to the next. Its windows come as `Segment`s (the
steps they cover, and where each starts), cut into model inputs where the model runs.

Every step of a new series gets a score: after the stride's windows, a last window flush
with the series' end is added when the strides stop short of it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from seqmodels import storage
from seqmodels.data import schemas
from seqmodels.data.files import RESERVED_COLUMNS, read_errors
from seqmodels.data.scaling import StandardScaler
from seqmodels.data.segments import Segment
from seqmodels.data.series_files import canonical_form
from seqmodels.data.tables import streaming_parquet
from seqmodels.errors import CheckpointError, DataError
from seqmodels.spec import DataSpec

CHUNK_ROWS = 1 << 18  # input rows validated and scaled at a time
MAX_WINDOW_VALUES = 1 << 23  # floats per emitted batch of windows (32 MiB of float32)
SCALED_KINDS = ("series", "tabular")  # new data is scaled with the model's scaler


@dataclass
class Examples:
    """A batch of model inputs: `x` (n, input_dim) float32, with the ids that name each row
    (series: series_id and start; tabular: the row's position in the input)."""

    x: np.ndarray
    label: np.ndarray | None
    series_id: np.ndarray | None = None
    start: np.ndarray | None = None
    row: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class Steps:
    """The time steps of a chunk of series rows (series_id, t, [label]), in input order."""

    series_id: np.ndarray
    t: np.ndarray
    label: np.ndarray | None


@dataclass
class Chunk:
    """A chunk of input rows as model inputs: Examples, or for series, Segments of windows."""

    inputs: list[Examples] | list[Segment]
    steps: Steps | None = None

    @property
    def examples(self) -> list[Examples]:
        return [item if isinstance(item, Examples) else segment_examples(item) for item in self.inputs]


def segment_examples(segment: Segment) -> Examples:
    """A segment's windows as model inputs in memory (the in-process Detector's path)."""
    return Examples(x=segment.windows(), label=segment.labels(),
                    series_id=np.full(len(segment), segment.series_id, dtype=object), start=segment.starts)


def input_files(location: str | Path) -> list[str]:
    """A CSV/Parquet (or, for text, .txt) file, or every such file directly inside a folder
    or prefix (sorted); local paths and s3:// URIs alike."""
    text = str(location)
    if text.lower().endswith(".txt"):
        return [text]
    return storage.table_files(text)


def read_chunks(location: str, rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """The file's rows, `rows` at a time; the index counts data rows from 0 across chunks, so
    validation messages name the file's own row numbers."""
    suffix = Path(location).suffix.lower()
    with read_errors(location), storage.open_input(location) as handle:
        if suffix == ".txt":
            yield from _text_chunks(handle.read().decode("utf-8"), rows)
        elif suffix == ".csv":
            with pd.read_csv(handle, encoding="utf-8", chunksize=rows) as reader:
                yield from reader
        else:
            offset = 0
            for batch in streaming_parquet(handle).iter_batches(batch_size=rows):
                frame = batch.to_pandas()
                frame.index = pd.RangeIndex(offset, offset + len(frame))
                offset += len(frame)
                yield frame


def _text_chunks(text: str, rows: int) -> Iterator[pd.DataFrame]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for begin in range(0, len(lines), rows):
        part = lines[begin:begin + rows]
        yield pd.DataFrame({"text": part}, index=pd.RangeIndex(begin, begin + len(part)))


def check_columns(columns: list[str], spec: DataSpec, where: str) -> None:
    """The value columns must be the model's features, no more and no fewer: a missing one
    cannot be scored, and an extra one means the file is not what the model was trained on."""
    features = list(spec.features)
    missing = [c for c in features if c not in columns]
    if spec.kind == "series" and not {"series_id", "t"} <= set(columns):
        shape = "series rows (series_id, t, ... or timestamp, ...)"
        raise DataError(f"{where} does not hold {shape}: the model is a series model (window "
                        f"{spec.window}, features {features}); the file's columns are {columns}",
                        where=where, fix="score series with this model, or use a model of this data's kind")
    if spec.kind == "tabular" and {"series_id", "t"} <= set(columns):
        raise DataError(f"{where} holds series rows (series_id, t, ...) but the model is a tabular model "
                        f"(rows of {features})", where=where,
                        fix="score series with a series model, or drop series_id and t to score rows")
    extra = [c for c in columns if c not in RESERVED_COLUMNS and c not in features]
    if missing:
        raise DataError(f"feature column(s) {missing} of the model are missing from {where}", where=where,
                        fix=f"the model was trained on {features}; supply those columns")
    if extra:
        raise DataError(f"column(s) {extra} of {where} are not features of the model", where=where,
                        fix=f"the model was trained on {features}: drop the other columns or train a "
                            "model on them")


class WindowStream:
    """Windows of series whose rows arrive in chunks, grouped by series, in time order.

    Holds the last window's worth of steps of the series in progress, so memory does not grow
    with a series' length. Window starts are 0, stride, 2 * stride, ... of each series, then
    one flush with its end when the strides stop short of it: every step is covered.
    """

    def __init__(self, spec: DataSpec, where: str, per_segment: int | None = None) -> None:
        """`per_segment`: windows per emitted Segment (default: MAX_WINDOW_VALUES floats of them)."""
        self.window, self.stride, self.where = spec.window, spec.stride or spec.window, where
        self.n_features = spec.n_features
        self.per_batch = per_segment or max(1, MAX_WINDOW_VALUES // (self.window * self.n_features))
        self.lengths: dict[str, int] = {}  # finished series -> steps
        self._series: str | None = None

    def feed(self, series_id: np.ndarray, t: np.ndarray, values: np.ndarray,
             labels: np.ndarray | None) -> Iterator[Segment]:
        """Windows completed by these rows (grouped by series, in time order)."""
        change = np.flatnonzero(series_id[1:] != series_id[:-1]) + 1
        bounds = np.concatenate([[0], change, [len(series_id)]])
        for begin, end in itertools.pairwise(bounds):
            name = str(series_id[begin])
            if name != self._series:
                yield from self._finish()
                self._begin(name)
            elif not t[begin] > self._last_t:
                raise DataError(f"series {name} of {self.where}: t={t[begin]} follows t={self._last_t}",
                                where=self.where, fix="sort the rows of each series by time; drop repeats")
            self._last_t = t[end - 1]
            self._values = np.concatenate([self._values, values[begin:end]])
            if labels is not None:
                self._labels = np.concatenate([self._labels, labels[begin:end]])
            self._length += int(end - begin)
            yield from self._emit(final=False)

    def close(self) -> Iterator[Segment]:
        yield from self._finish()

    def _begin(self, name: str) -> None:
        if name in self.lengths:
            raise DataError(f"series {name} appears again in {self.where} after other rows (or in an "
                            "earlier file): a series' rows must be together, in one file", where=self.where,
                            fix="group each series' rows (sort by series_id, then t), or give the series "
                                "of different files distinct series_ids")
        self._series, self._origin, self._length, self._next, self._covered = name, 0, 0, 0, 0
        self._values = np.empty((0, self.n_features), np.float32)
        self._labels = np.empty(0, np.int64)
        self._last_t = None

    def _finish(self) -> Iterator[Segment]:
        if self._series is None:
            return
        if self._length < self.window:
            raise DataError(f"series {self._series} of {self.where} has {self._length} steps, fewer than the "
                            f"model's window of {self.window}", where=self.where,
                            fix=f"score series of at least {self.window} steps (or drop this one)")
        yield from self._emit(final=True)
        self.lengths[self._series] = self._length
        self._series = None

    def _emit(self, final: bool) -> Iterator[Segment]:
        end, window = self._length, self.window
        starts = np.arange(self._next, end - window + 1, self.stride, dtype=np.int64)
        if len(starts):
            self._next = int(starts[-1]) + self.stride
        if final and max(self._covered, int(starts[-1]) + window if len(starts) else 0) < end:
            starts = np.append(starts, end - window)
        if len(starts):
            self._covered = int(starts[-1]) + window
        for first in range(0, len(starts), self.per_batch):
            yield self._windows(starts[first:first + self.per_batch])
        keep = min(self._next, end - window) - self._origin
        if keep > 0:
            self._values, self._labels = self._values[keep:], self._labels[keep:]
            self._origin += keep

    def _windows(self, starts: np.ndarray) -> Segment:
        first, last = int(starts[0]) - self._origin, int(starts[-1]) - self._origin + self.window
        labels = self._labels[first:last].copy() if len(self._labels) else None
        return Segment(self._series, self._origin + first, self._values[first:last].copy(),
                       (starts - self._origin - first).astype(np.int32), labels, self.window)


class BatchReader:
    """A new batch (files or a DataFrame) as the model's inputs, chunk by chunk."""

    def __init__(self, spec: DataSpec, scaler: StandardScaler | None, chunk_rows: int = CHUNK_ROWS,
                 vocab: list[str] | None = None, windows_per_segment: int | None = None) -> None:
        """`windows_per_segment`: see WindowStream (series only)."""
        if spec.discrete and vocab is None:
            raise CheckpointError("the model folder has no vocabulary, so new text cannot be encoded as the "
                                  "model's training text was", where="model.json",
                                  fix="export the model again with this version (rerun the train stage)")
        if spec.kind in SCALED_KINDS and scaler is None:
            raise CheckpointError("the model folder has no scaler, so new data cannot be scaled as the "
                                  "model's training data was", where="model.json",
                                  fix="export the model again with this version (rerun the train stage)")
        self.spec, self.scaler, self.chunk_rows = spec, scaler, chunk_rows
        self.windows_per_segment = windows_per_segment
        self.vocab = {token: i for i, token in enumerate(vocab or [])}
        self.rows = 0
        self._stream: WindowStream | None = None

    @property
    def lengths(self) -> dict[str, int]:
        """Steps of each series read so far (series models)."""
        return {} if self._stream is None else self._stream.lengths

    def frames(self, source: str | Path | pd.DataFrame) -> Iterator[tuple[pd.DataFrame, str]]:
        """(chunk, where it came from) for a DataFrame, a file or a folder of files."""
        if isinstance(source, pd.DataFrame):
            for begin in range(0, max(len(source), 1), self.chunk_rows):
                yield source.iloc[begin:begin + self.chunk_rows], "the DataFrame"
            return
        for location in input_files(source):
            empty = True
            for frame in read_chunks(location, self.chunk_rows):
                empty = False
                yield frame, location
            if empty:
                raise DataError(f"{location} has no data rows", where=location,
                                fix="the file needs at least one row")

    def chunks(self, source: str | Path | pd.DataFrame) -> Iterator[Chunk]:
        """Model inputs chunk by chunk; a series ends with its file, and a series name may
        appear in one file only (its windows and steps are keyed by it)."""
        stream = (WindowStream(self.spec, "the input", self.windows_per_segment)
                  if self.spec.kind == "series" else None)
        self._stream, current = stream, None
        independent = {"tabular": self._rows, "images": self._images, "tokens": self._tokens}
        for frame, where in self.frames(source):
            if stream is None:
                yield independent[self.spec.kind](frame, where)
                continue
            if where != current:
                yield Chunk(list(stream.close()))
                stream.where = current = where
            yield self._series(frame, where, stream)
        if stream is not None:
            yield Chunk(list(stream.close()))

    def _validated(self, frame: pd.DataFrame, where: str, schema, table: str) -> pd.DataFrame:
        if frame.empty:
            raise DataError(f"{where} has no data rows", where=where, fix="the input needs at least one row")
        self.rows += len(frame)
        return schemas.validate_table(frame, schema, table=table, source=where)

    def _series(self, frame: pd.DataFrame, where: str, stream: WindowStream) -> Chunk:
        from seqmodels.data.series import series_schema, time_dtype  # series' contract

        name = storage.stem(where) if where != "the DataFrame" else "series"
        table = canonical_form(frame, name=name, where=where).table
        check_columns(list(table.columns), self.spec, where)
        if time_dtype(table) != self.spec.time_dtype:
            raise DataError(f"{where} has {time_dtype(table)} timestamps; the model was trained on "
                            f"{self.spec.time_dtype} ones", where=where,
                            fix="use the timestamp type of the training data (integer steps or datetimes)")
        features = list(self.spec.features)
        columns = ["series_id", "t", *features] + (["label"] if "label" in table.columns else [])
        table = self._validated(table[columns], where, series_schema(features, self.spec.time_dtype),
                                "canonical series")
        series_id = table["series_id"].to_numpy().astype(str)
        t = table["t"].to_numpy()
        label = table["label"].to_numpy(np.int64) if "label" in table.columns else None
        windows = list(stream.feed(series_id, t, self._scale(table), label))
        return Chunk(windows, Steps(series_id, t, label))

    def _rows(self, frame: pd.DataFrame, where: str) -> Chunk:
        from seqmodels.data.tabular import rows_schema

        features = list(self.spec.features)
        check_columns([c for c in frame.columns if c != "row_id"], self.spec, where)
        columns = features + (["label"] if "label" in frame.columns else [])
        table = self._validated(frame[columns], where, rows_schema(features), "tabular rows")
        first = self.rows - len(table)
        label = table["label"].to_numpy(np.int64) if "label" in table.columns else None
        return Chunk([Examples(x=self._scale(table), label=label,
                               row=np.arange(first, first + len(table), dtype=np.int64))])

    def _images(self, frame: pd.DataFrame, where: str) -> Chunk:
        """Images flattened in a list column `x` (C*H*W floats in [0, 1]), as prepare reads them."""
        if "x" not in frame.columns:
            raise DataError(f"{where} has no 'x' column: the model is an images model "
                            f"({'x'.join(map(str, self.spec.input_shape))})", where=where,
                            fix="store each image flattened (C*H*W floats in [0, 1]) in a list column 'x'")
        lengths = frame["x"].map(len).to_numpy()
        wrong = np.flatnonzero(lengths != self.spec.input_dim)
        if len(wrong):
            rows = frame.index[wrong[:5]].tolist()
            raise DataError(f"{len(wrong)} image(s) in {where} do not have {self.spec.input_dim} values "
                            f"(the model's {list(self.spec.input_shape)}): rows {rows}",
                            where=where, fix="resize the images to the model's shape")
        x = np.stack(frame["x"].to_numpy()).astype(np.float32)
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        if len(bad):
            rows = frame.index[bad[:5]].tolist()
            raise DataError(f"{len(bad)} image(s) in {where} hold NaN or inf: rows {rows}",
                            where=where, fix="drop or repair those images")
        return self._independent(x, frame, where)

    def _tokens(self, frame: pd.DataFrame, where: str) -> Chunk:
        """Text in a `text` column (a .txt file: one sequence per line), encoded with the
        model's vocabulary: characters it never saw become UNK."""
        if "text" not in frame.columns:
            raise DataError(f"{where} has no 'text' column: the model is a tokens model", where=where,
                            fix="give a .txt file (one sequence per line) or a table with a 'text' column")
        texts = frame["text"].astype(str).tolist()
        width = self.spec.input_dim
        long = [i for i, text in enumerate(texts) if len(text) >= width]
        if long:
            raise DataError(f"{len(long)} sequence(s) in {where} are longer than the model's {width - 1} "
                            f"characters: rows {frame.index[long[:5]].tolist()}", where=where,
                            fix=f"split or drop sequences over {width - 1} characters")
        from seqmodels.data.tokens import encode_texts

        return self._independent(encode_texts(texts, self.vocab, width), frame, where)

    def _independent(self, x: np.ndarray, frame: pd.DataFrame, where: str) -> Chunk:
        first = self.rows
        self.rows += len(x)
        label = frame["label"].to_numpy(np.int64) if "label" in frame.columns else None
        return Chunk([Examples(x=x, label=label, row=np.arange(first, first + len(x), dtype=np.int64))])

    def _scale(self, table: pd.DataFrame) -> np.ndarray:
        return self.scaler.transform(table)
