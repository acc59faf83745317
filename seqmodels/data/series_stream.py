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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from seqmodels.data.blocks import BLOCK_ROWS, block_rows
from seqmodels.data.files import read_errors
from seqmodels.data.tables import streaming_parquet
from seqmodels.storage import open_input

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

    def blocks(self) -> Iterator[pd.DataFrame]:
        """The rows in file order, at most BLOCK_ROWS (and about 16 MiB) a block."""
        if self.frame is not None:
            for start in range(0, len(self.frame), BLOCK_ROWS):
                yield self.frame.iloc[start:start + BLOCK_ROWS][self.columns]
            return
        assert self.location is not None
        with read_errors(self.location), open_input(self.location) as handle:
            file = streaming_parquet(handle)
            for batch in file.iter_batches(batch_size=block_rows(file), columns=self.columns):
                yield batch.to_pandas()


def canonical_types(block: pd.DataFrame, features: list[str], time_type: str) -> pd.DataFrame:
    """A block that passed the canonical schema, in its types (what the schema's coercion
    gives), without validating again: the survey validated every row already."""
    types = {"series_id": "str", "t": time_type, **dict.fromkeys(features, "float64")}
    if "label" in block.columns:
        types["label"] = "int64"
    label = ["label"] if "label" in block.columns else []
    return block[["series_id", "t", *features, *label]].astype(types)


class SeriesSurvey:
    """What the first read learns of every series, in order of first appearance: rows of its
    own file and of a test file, lowest and highest label, and whether every series' rows
    are contiguous across the sources."""

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self.ids: list[str] = []
        self.own_rows = np.zeros(0, np.int64)
        self.test_rows = np.zeros(0, np.int64)
        self.label_low = np.zeros(0, np.int64)
        self.label_high = np.zeros(0, np.int64)
        self.grouped = True
        self._last = -1  # the ordinal of the last row seen

    @property
    def labelled(self) -> np.ndarray:
        """Series with a labelled row (a test file may have no label column)."""
        return self.label_low <= self.label_high

    @property
    def rows(self) -> int:
        return int(self.own_rows.sum() + self.test_rows.sum())

    def ordinals(self, series_id: pd.Series) -> np.ndarray:
        """Each row's series, numbered in order of first appearance (new series numbered now)."""
        codes, uniques = pd.factorize(series_id.to_numpy())
        numbers = np.empty(len(uniques), np.int64)
        for i, name in enumerate(uniques.tolist()):
            number = self._index.get(name)
            if number is None:
                number = self._index[name] = len(self.ids)
                self.ids.append(name)
            numbers[i] = number
        grow = len(self.ids) - len(self.own_rows)
        if grow:
            self.own_rows = np.concatenate([self.own_rows, np.zeros(grow, np.int64)])
            self.test_rows = np.concatenate([self.test_rows, np.zeros(grow, np.int64)])
            self.label_low = np.concatenate([self.label_low, np.full(grow, np.iinfo(np.int64).max)])
            self.label_high = np.concatenate([self.label_high, np.full(grow, np.iinfo(np.int64).min)])
        return numbers[codes]

    def add(self, block: pd.DataFrame, test: bool) -> None:
        """A validated block of one source (`test`: a test file's)."""
        if not len(block):
            return
        ordinals = self.ordinals(block["series_id"])
        runs = ordinals[np.concatenate([[0], np.flatnonzero(np.diff(ordinals)) + 1])]
        # contiguous: the first run continues the last series or starts the next, every later run starts one
        if runs[0] not in (self._last, self._last + 1) or (np.diff(runs) != 1).any():
            self.grouped = False
        self._last = max(self._last, int(runs.max()))
        counts = np.bincount(ordinals, minlength=len(self.ids))
        if test:
            self.test_rows += counts
        else:
            self.own_rows += counts
        if "label" in block.columns:
            labels = block["label"].to_numpy(np.int64)
            np.minimum.at(self.label_low, ordinals, labels)
            np.maximum.at(self.label_high, ordinals, labels)


class Positions:
    """Each row's step within its series' own rows (a test file's rows not counted), carried
    from block to block."""

    def __init__(self, n_series: int) -> None:
        self._seen = np.zeros(n_series, np.int64)

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


def series_groups(sources: list[TableSource], features: list[str],
                  survey: SeriesSurvey) -> Iterator[pd.DataFrame]:
    """Whole series, about GROUP_ROWS rows a group, in order of first appearance; each series'
    rows keep their order (its own file's, then a test file's)."""
    blocks = tagged_blocks(sources, features)
    if survey.grouped:
        yield from _stitched(blocks)
    else:
        yield from _regrouped(blocks, survey)


def _stitched(blocks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Contiguous series: blocks joined, cut before the last series whenever enough rows wait
    (that series may go on in the next block)."""
    pending: list[pd.DataFrame] = []
    waiting = 0
    for block in blocks:
        pending.append(block)
        waiting += len(block)
        if waiting < GROUP_ROWS:
            continue
        table = pd.concat(pending, ignore_index=True)
        ids = table["series_id"].to_numpy()
        others = np.flatnonzero(ids != ids[-1])
        last_begins = int(others[-1]) + 1 if len(others) else 0
        if last_begins:
            yield table.iloc[:last_begins]
        pending, waiting = [table.iloc[last_begins:]], len(table) - last_begins
    if pending and waiting:
        yield pd.concat(pending, ignore_index=True)


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
