"""Reading series sources so that prepare's memory is bounded by a group of whole series,
not by the table: the mechanics under seqmodels.data.series.prepare_series.

prepare reads its source three times, because each read needs what the one before learnt
from every row: a survey (validation, each series' rows and labels: enough to split), the
scaler's moments over the rows that train, and the windows. The last read needs each
series' rows together and in order; `series_groups` yields them about GROUP_ROWS rows at a
time, in order of first appearance, as if the table had been sorted by series. A source
whose series are not contiguous (rows ordered by time across series, or a test file that
continues the training file's series) is regrouped through bucket files of series ranges,
so no row order makes prepare hold the table. One series is never split across groups: a
single series larger than memory is the limit of this design.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from seqmodels.data.blocks import BLOCK_ROWS
from seqmodels.data.piece_checks import SeriesOrder
from seqmodels.data.pieces import PIECE_ROWS, Piece, frame_piece, parquet_pieces, read_rows

GROUP_ROWS = BLOCK_ROWS  # rows of whole series per group: about 16 MiB of windows of 4 features
SPILL_ROWS = 4 * GROUP_ROWS  # rows per bucket file when a source must be regrouped
FROM_TEST_FILE = "__from_test_file"  # flags the rows of a test file while they travel in groups


@dataclass
class TableSource:
    """One file of canonical rows, read block by block as often as prepare needs."""

    where: str  # how messages name the file
    columns: list[str]  # its canonical columns
    time_type: str  # "int64" or "datetime64[ns]"
    point_labels: bool = False  # its layout gives a label per step (the single-series form)
    test: bool = False  # every row is test (data.test_source, an archive's TEST file)
    frame: pd.DataFrame | None = None  # loaded whole: CSV, the single-series form, bundled data
    location: str | None = None  # a canonical Parquet file, streamed a row group at a time
    piece_rows: int = PIECE_ROWS  # rows per piece read apart (data.piece_rows)
    _pieces: list[Piece] | None = field(default=None, init=False, repr=False, compare=False)

    def pieces(self) -> list[Piece]:
        """The file as pieces read apart (seqmodels.data.pieces); a frame is one piece. Cut
        once: prepare reads a source three times, and each cut reads the file's footer (and
        a frame's would copy its columns)."""
        if self._pieces is None:
            if self.frame is not None:
                self._pieces = [frame_piece(self.frame[self.columns], self.where)]
            else:
                assert self.location is not None
                self._pieces = parquet_pieces(self.location, self.where, self.piece_rows)
        return self._pieces

    def blocks(self) -> Iterator[pd.DataFrame]:
        """The rows in file order, a piece's blocks at a time."""
        for piece in self.pieces():
            yield from piece.blocks(self.columns)


def canonical_types(block: pd.DataFrame, features: list[str], time_type: str) -> pd.DataFrame:
    """A block that passed the canonical schema, in its types (what the schema's coercion
    gives), without validating again: the survey validated every row already."""
    types = {"series_id": "str", "t": time_type, **dict.fromkeys(features, "float64")}
    if "label" in block.columns:
        types["label"] = "int64"
    label = ["label"] if "label" in block.columns else []
    return block[["series_id", "t", *features, *label]].astype(types)


class SeriesSurvey(SeriesOrder):
    """What the first read learns of every series, in order of first appearance: rows of its
    own file and of a test file, lowest and highest label, and whether every series' rows
    are contiguous across the sources. A piece's survey counts its rows as `test` says
    (a test file's); merged in table order, the pieces' surveys make the table's."""

    def __init__(self, test: bool = False) -> None:
        self.test = test
        self.own_rows = np.zeros(0, np.int64)
        self.test_rows = np.zeros(0, np.int64)
        self.label_low = np.zeros(0, np.int64)
        self.label_high = np.zeros(0, np.int64)
        super().__init__()

    @property
    def labelled(self) -> np.ndarray:
        """Series with a labelled row (a test file may have no label column)."""
        return self.label_low <= self.label_high

    @property
    def rows(self) -> int:
        return int(self.own_rows.sum() + self.test_rows.sum())

    def ordinals(self, series_id: pd.Series | np.ndarray) -> np.ndarray:
        numbers = super().ordinals(series_id)
        grow = len(self.ids) - len(self.own_rows)
        if grow:
            self.own_rows = np.concatenate([self.own_rows, np.zeros(grow, np.int64)])
            self.test_rows = np.concatenate([self.test_rows, np.zeros(grow, np.int64)])
            self.label_low = np.concatenate([self.label_low, np.full(grow, np.iinfo(np.int64).max)])
            self.label_high = np.concatenate([self.label_high, np.full(grow, np.iinfo(np.int64).min)])
        return numbers

    def see(self, block: pd.DataFrame, valid: pd.DataFrame | None, series_column: str) -> np.ndarray:
        ordinals = super().see(block, valid, series_column)
        if valid is None or not len(valid):
            return ordinals
        # `valid` is the whole block as the schema coerced it (series_id to str, as the
        # ordinals were numbered): the same rows in the same order, so the same ordinals
        counts = np.bincount(ordinals, minlength=len(self.ids))
        if self.test:
            self.test_rows += counts
        else:
            self.own_rows += counts
        if "label" in valid.columns:
            labels = valid["label"].to_numpy(np.int64)
            np.minimum.at(self.label_low, ordinals, labels)
            np.maximum.at(self.label_high, ordinals, labels)
        return ordinals

    def merge(self, later: SeriesOrder) -> np.ndarray:
        assert isinstance(later, SeriesSurvey)
        ordinals = super().merge(later)  # numbering later's new series grows the counts
        self.own_rows[ordinals] += later.own_rows
        self.test_rows[ordinals] += later.test_rows
        np.minimum.at(self.label_low, ordinals, later.label_low)
        np.maximum.at(self.label_high, ordinals, later.label_high)
        return ordinals


class Positions:
    """Each row's step within its series' own rows (a test file's rows not counted), carried
    from block to block."""

    def __init__(self, n_series: int, seen: np.ndarray | None = None) -> None:
        """`seen`: each series' own rows before the first block (a piece's, when it is read
        on its own)."""
        self._seen = np.zeros(n_series, np.int64) if seen is None else seen.astype(np.int64, copy=True)

    def of(self, ordinals: np.ndarray) -> np.ndarray:
        order = np.argsort(ordinals, kind="stable")
        ranked = ordinals[order]
        firsts = np.flatnonzero(np.concatenate([[True], ranked[1:] != ranked[:-1]]))
        run_lengths = np.diff(np.concatenate([firsts, [len(ranked)]]))
        positions = np.empty(len(ordinals), np.int64)
        positions[order] = np.arange(len(ranked)) - np.repeat(firsts, run_lengths) + self._seen[ranked]
        self._seen += np.bincount(ordinals, minlength=len(self._seen))
        return positions


def tagged_blocks(sources: list[TableSource], features: list[str]) -> Iterator[pd.DataFrame]:
    """Every source's blocks in canonical types, each row flagged when it is a test file's."""
    for source in sources:
        for block in source.blocks():
            typed = canonical_types(block, features, source.time_type)
            typed[FROM_TEST_FILE] = source.test
            yield typed


@dataclass
class SurveyedPiece:
    """A piece of one source, with what the survey learnt of its series: their ordinals in
    the table's numbering and each one's own rows in earlier pieces (where its steps start)."""

    piece: Piece
    source: TableSource
    ids: list[str]
    ordinals: np.ndarray
    own_before: np.ndarray


@dataclass(frozen=True)
class SeriesGroup:
    """Whole series [first, stop) of the survey's numbering, which are rows [row_start,
    row_stop) of the sources read one after the other (their series being contiguous)."""

    first: int
    stop: int
    row_start: int
    row_stop: int


def planned_groups(survey: SeriesSurvey, piece_rows: int = PIECE_ROWS) -> list[SeriesGroup]:
    """Consecutive whole series of at most GROUP_ROWS (and `piece_rows`) rows a group (one
    series alone when it has more), for sources whose series are contiguous: each group is
    then a range of rows, which a task reads by itself."""
    assert survey.grouped, "only contiguous series are ranges of rows"
    ends = np.cumsum(survey.own_rows + survey.test_rows)
    limit = min(GROUP_ROWS, piece_rows)
    groups, first, row_start = [], 0, 0
    while first < len(ends):
        stop = max(int(np.searchsorted(ends, row_start + limit, side="right")), first + 1)
        groups.append(SeriesGroup(first, stop, row_start, int(ends[stop - 1])))
        first, row_start = stop, int(ends[stop - 1])
    return groups


def read_group(group: SeriesGroup, sources: list[TableSource], pieces: list[list[Piece]],
               features: list[str]) -> pd.DataFrame:
    """A group's rows in canonical types, each flagged when it is a test file's, reading only
    the row groups that hold them; `pieces`: each source's."""
    parts, offset = [], 0
    for source, cut in zip(sources, pieces, strict=True):
        rows = sum(piece.rows for piece in cut)
        low, high = max(group.row_start - offset, 0), min(group.row_stop - offset, rows)
        if low < high:
            typed = canonical_types(read_rows(cut, low, high, source.columns), features, source.time_type)
            typed[FROM_TEST_FILE] = source.test
            parts.append(typed)
        offset += rows
    return pd.concat(parts, ignore_index=True)


def series_groups(sources: list[TableSource], features: list[str],
                  survey: SeriesSurvey) -> Iterator[pd.DataFrame]:
    """Whole series, about GROUP_ROWS rows a group, in order of first appearance; each series'
    rows keep their order (its own file's, then a test file's)."""
    if survey.grouped:
        pieces = [source.pieces() for source in sources]
        for group in planned_groups(survey):
            yield read_group(group, sources, pieces, features)
    else:
        yield from _regrouped(tagged_blocks(sources, features), survey)


def _regrouped(blocks: Iterator[pd.DataFrame], survey: SeriesSurvey) -> Iterator[pd.DataFrame]:
    """Series scattered through the sources: rows sorted by series, through bucket files of
    consecutive series (about SPILL_ROWS rows each) when they do not fit in one."""
    rows = survey.own_rows + survey.test_rows
    bucket_of = (np.cumsum(rows) - rows) // SPILL_ROWS
    if bucket_of[-1] == 0:
        table = pd.concat(list(blocks), ignore_index=True)
        yield _by_series(table, survey)
        return
    with tempfile.TemporaryDirectory(prefix="seqmodels-regroup-") as folder:
        writers: dict[int, pq.ParquetWriter] = {}
        try:
            for block in blocks:
                buckets = bucket_of[survey.ordinals(block["series_id"])]
                for bucket in np.unique(buckets).tolist():
                    piece = pa.Table.from_pandas(block.loc[buckets == bucket], preserve_index=False)
                    if bucket not in writers:
                        writers[bucket] = pq.ParquetWriter(Path(folder) / f"{bucket}.parquet", piece.schema)
                    writers[bucket].write_table(piece)
        finally:
            for writer in writers.values():
                writer.close()
        for bucket in sorted(writers):
            path = Path(folder) / f"{bucket}.parquet"
            yield _by_series(pq.read_table(path).to_pandas(), survey)
            path.unlink()


def _by_series(table: pd.DataFrame, survey: SeriesSurvey) -> pd.DataFrame:
    order = np.argsort(survey.ordinals(table["series_id"]), kind="stable")
    return table.iloc[order].reset_index(drop=True)
