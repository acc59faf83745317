"""Cutting a table into pieces that are read and checked apart, and mapping a function over
them in order: what lets prepare and validate spread a large file over processes or nodes
(seqmodels.distributed.data_map) with the same code and the same result as one process.

A piece is a run of consecutive Parquet row groups of about PIECE_ROWS rows, named by the
file's location (a path every node sees, or s3://), so a task anywhere reads it on its
own; a table loaded whole (CSV, bundled data) is one piece of its own, kept in memory and
never sent anywhere. Pieces are the unit of the work in both cases: the one-process map
reads the same pieces in the same blocks, which is why its results equal a cluster's to
the bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import pandas as pd

from seqmodels.data.blocks import BLOCK_ROWS, block_rows
from seqmodels.data.files import read_errors
from seqmodels.data.tables import streaming_parquet
from seqmodels.storage import is_uri, open_input

PIECE_ROWS = 4 * BLOCK_ROWS  # about a million rows: a few seconds of a task's work

Item = TypeVar("Item")
Result = TypeVar("Result")


class Mapper(Protocol):
    """An ordered map: `fn` over `items`, results in the items' order (where `fn` runs is the
    mapper's business). `name` labels the work in logs and in a cluster's task list."""

    def __call__(self, fn: Callable[[Item], Result], items: Sequence[Item],
                 name: str) -> Iterator[Result]: ...


def serial_map(fn: Callable[[Item], Result], items: Sequence[Item], name: str) -> Iterator[Result]:
    """The mapper of one process: lazily, so a consumer holds one result at a time."""
    return map(fn, items)


@dataclass(frozen=True)
class Piece:
    """Rows [first_row, first_row + rows) of one table: row groups of a Parquet file, or a
    slice of a frame loaded whole."""

    where: str  # how messages name the table
    first_row: int
    rows: int
    location: str | None = None
    row_groups: tuple[int, ...] = ()
    group_rows: tuple[int, ...] = ()  # the rows of each of row_groups
    frame: pd.DataFrame | None = None

    def blocks(self, columns: list[str] | None = None,
               row_groups: Sequence[int] | None = None) -> Iterator[pd.DataFrame]:
        """The piece's rows in file order (or only those of `row_groups`, some of its own), at
        most BLOCK_ROWS (and about 16 MiB) a block."""
        if self.frame is not None:
            frame = self.frame if columns is None else self.frame[columns]
            for start in range(0, len(frame), BLOCK_ROWS):
                yield frame.iloc[start:start + BLOCK_ROWS]
            return
        assert self.location is not None
        with read_errors(self.location), open_input(self.location) as handle:
            file = streaming_parquet(handle)
            groups = list(self.row_groups if row_groups is None else row_groups)
            for batch in file.iter_batches(batch_size=block_rows(file), row_groups=groups, columns=columns):
                yield batch.to_pandas()

    def row_before(self, columns: list[str] | None = None) -> pd.DataFrame | None:
        """The table's row just before this piece (indexed by its row number), or None for
        the first piece: what checks along a series carry into the piece's first block."""
        if not self.first_row:
            return None
        if self.frame is not None:
            raise ValueError("a frame is one piece: no row comes before it")
        assert self.location is not None
        with read_errors(self.location), open_input(self.location) as handle:
            group = streaming_parquet(handle).read_row_group(self.row_groups[0] - 1, columns=columns)
        row = group.slice(group.num_rows - 1).to_pandas()
        return row.set_axis(pd.RangeIndex(self.first_row - 1, self.first_row))


def parquet_pieces(location: str, where: str | None = None, target_rows: int | None = None) -> list[Piece]:
    """A Parquet file as runs of whole row groups of at least `target_rows` rows (the last
    may be smaller); a file of one row group is one piece, streamed all the same. A local
    path is made absolute, for tasks whose working directory is not this process's."""
    target = target_rows or PIECE_ROWS
    where = where or location
    if not is_uri(location):
        location = str(Path(location).resolve())
    with read_errors(location), open_input(location) as handle:
        meta = streaming_parquet(handle).metadata
    pieces: list[Piece] = []
    groups: list[int] = []
    sizes: list[int] = []
    first = 0
    for index in range(meta.num_row_groups):
        groups.append(index)
        sizes.append(meta.row_group(index).num_rows)
        if sum(sizes) >= target or index == meta.num_row_groups - 1:
            pieces.append(Piece(where, first, sum(sizes), location=location,
                                row_groups=tuple(groups), group_rows=tuple(sizes)))
            first, groups, sizes = first + sum(sizes), [], []
    return pieces or [Piece(where, 0, 0, location=location)]


def frame_piece(frame: pd.DataFrame, where: str) -> Piece:
    return Piece(where, 0, len(frame), frame=frame)


def read_rows(pieces: Sequence[Piece], start: int, stop: int, columns: list[str]) -> pd.DataFrame:
    """Rows [start, stop) of the table the pieces cut, reading only the row groups that hold
    them (a frame's piece: its slice)."""
    parts = []
    for piece in pieces:
        if piece.first_row >= stop or piece.first_row + piece.rows <= start:
            continue
        if piece.frame is not None:
            parts.append(piece.frame[columns].iloc[max(start - piece.first_row, 0):stop - piece.first_row])
            continue
        begins = piece.first_row + np.cumsum((0, *piece.group_rows[:-1]))
        held = [i for i, (begin, size) in enumerate(zip(begins.tolist(), piece.group_rows, strict=True))
                if begin < stop and begin + size > start]
        wanted, offset = [piece.row_groups[i] for i in held], int(begins[held[0]])
        for block in piece.blocks(columns, wanted):
            low, high = max(start - offset, 0), min(stop - offset, len(block))
            if low < high:
                parts.append(block.iloc[low:high])
            offset += len(block)
            if offset >= stop:
                break
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
