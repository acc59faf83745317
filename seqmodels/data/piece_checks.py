"""Validating a table a piece at a time, each piece on its own (in another process or on
another node), with the result a check of the whole table in order gives.

What a piece cannot see on its own comes from the table's order, which each piece records
(SeriesOrder): when every series' rows are contiguous, the only earlier row a check along a
series needs is the row just before the piece, which the piece reads for itself. When they
are not, or a unique column repeats across pieces, the pieces' failures are not the whole
story, and the table is checked again in one pass, in order (exact, and only then slower).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

import numpy as np
import pandas as pd
import pandera.pandas as pa

from seqmodels.data.blocks import BlockValidation
from seqmodels.data.pieces import Mapper, Piece


class SeriesOrder:
    """The series of a table in order of first appearance, and whether every series' rows
    are contiguous (the table is grouped by series)."""

    def __init__(self, ids: list[str] | None = None) -> None:
        self.ids: list[str] = []
        self._index: dict[str, int] = {}
        self.grouped = True
        self._last = -1  # the ordinal of the last row seen
        for name in ids or []:
            self._number(name)

    def _number(self, name: str) -> int:
        number = self._index.get(name)
        if number is None:
            number = self._index[name] = len(self.ids)
            self.ids.append(name)
        return number

    def ordinals(self, series_id: pd.Series | np.ndarray) -> np.ndarray:
        """Each row's series, numbered in order of first appearance (new series numbered now)."""
        codes, uniques = pd.factorize(np.asarray(series_id))
        numbers = np.fromiter((self._number(name) for name in uniques.tolist()), np.int64, len(uniques))
        return numbers[codes]

    def see(self, block: pd.DataFrame, valid: pd.DataFrame | None, series_column: str) -> np.ndarray:
        """A block as read (`valid`: as the schema coerced it, None when it failed); returns
        its rows' ordinals, for a subclass that counts them."""
        ordinals = self.ordinals(block[series_column].astype(str))
        self.note(ordinals)
        return ordinals

    def note(self, ordinals: np.ndarray) -> None:
        """Rows in table order: the first run continues the last series or starts a new one,
        every later run starts a new one, or the table is not grouped."""
        if not len(ordinals):
            return
        runs = ordinals[np.concatenate([[0], np.flatnonzero(np.diff(ordinals)) + 1])]
        if runs[0] not in (self._last, self._last + 1) or (np.diff(runs) != 1).any():
            self.grouped = False
        self._last = max(self._last, int(runs.max()))

    def merge(self, later: SeriesOrder) -> np.ndarray:
        """The next piece's order taken in; returns its series' ordinals in this numbering."""
        known = len(self.ids)
        ordinals = self.ordinals(np.asarray(later.ids, dtype=object))
        if later.ids:
            continuing = ordinals[0] == self._last
            if not later.grouped or (ordinals[1:] < known).any() or (ordinals[0] < known and not continuing):
                self.grouped = False
            self._last = max(self._last, int(ordinals.max()))
        return ordinals


Order = TypeVar("Order", bound=SeriesOrder)


@dataclass
class CheckedPiece(Generic[Order]):
    """What a task learnt of its piece: the failures, and the order of its series."""

    piece: Piece
    validation: BlockValidation
    order: Order | None


def check_piece(piece: Piece, *, schema: pa.DataFrameSchema, table: str, series_column: str | None,
                columns: list[str] | None, new_order: Callable[[], Order]) -> CheckedPiece[Order]:
    validation = BlockValidation(schema, table=table, source=piece.where, series_column=series_column,
                                 first_row=piece.first_row,
                                 row_before=piece.row_before(columns) if series_column else None)
    order = new_order() if series_column else None
    for block in piece.blocks(columns):
        valid = validation.add(block)
        if order is not None:
            order.see(block, valid, series_column)
    return CheckedPiece(piece, validation, order)


def check_pieces(pieces: list[Piece], schema: pa.DataFrameSchema, *, table: str, source: str,
                 series_column: str | None = None, mapper: Mapper, columns: list[str] | None = None,
                 new_order: Callable[[], Order] = SeriesOrder,
                 ) -> tuple[BlockValidation, list[CheckedPiece[Order]]]:
    """Every piece checked by `mapper`'s tasks, their failures merged in table order into one
    BlockValidation (call its finish), with each piece's own record."""
    task = partial(check_piece, schema=schema, table=table, series_column=series_column, columns=columns,
                   new_order=new_order)
    checked: list[CheckedPiece[Order]] = []
    merged: BlockValidation | None = None
    order, exact = SeriesOrder(), True
    for result in mapper(task, pieces, f"check {table}"):
        checked.append(result)
        if merged is None:
            merged = result.validation
        elif exact:
            exact = merged.merge(result.validation)
        if result.order is not None:
            order.merge(result.order)
    if merged is None or not exact or not order.grouped:
        merged = BlockValidation(schema, table=table, source=source, series_column=series_column)
        for piece in pieces:
            for block in piece.blocks(columns):
                merged.add(block)
    return merged, checked
