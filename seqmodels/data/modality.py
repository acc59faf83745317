"""What a modality (data.kind) provides, so the stages never branch on the kind.

Each modality module (series.py, images.py, tabular.py, tokens.py) ends with one
`MODALITY = Modality(...)`, and data/registry.py maps data.kind to it. The stages ask the
modality for what differs between kinds: how to prepare the examples from data.* params,
the table model of the prepared examples, and any further prepared table validate checks.
This module imports no modality module, and no modality module imports the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.pandas as pa

from seqmodels.data import schemas
from seqmodels.data.config import DataConfig
from seqmodels.data.pieces import Mapper
from seqmodels.spec import EXAMPLES_FILE, ID_COLUMNS, DataSpec


@dataclass
class PreparedData:
    """What a modality's `prepare` returns and the prepare stage writes."""

    examples: pd.DataFrame
    spec: DataSpec
    description: str
    artifacts: dict[str, Any] = field(default_factory=dict)  # file name -> DataFrame or JSON payload


@dataclass(frozen=True)
class PreparedSummary:
    """What the prepare stage reports once a modality has written its folder."""

    spec: DataSpec
    description: str
    counts: dict[str, int]  # examples per split


@dataclass(frozen=True)
class PreparedTable:
    """A table of the prepared folder the validate stage checks."""

    name: str  # as the validation report and its messages name it
    file: str  # in the prepared folder
    schema: pa.DataFrameSchema
    series_column: str | None = None  # groups rows into series for the schema's checks along one


def no_extra_tables(spec: DataSpec) -> list[PreparedTable]:
    """Most modalities write only the examples table."""
    return []


@dataclass(frozen=True)
class Modality:
    """One data.kind: its bundled sources, its preparation and its prepared tables."""

    kind: str
    sources: tuple[str, ...]  # bundled source names (data.source), loaded without a download
    prepare: Callable[[DataConfig, int], PreparedData]  # (data params, seed): load, validate, prepare
    table: type[pa.DataFrameModel]  # the prepared examples (id column, split, x, [label])
    extra_tables: Callable[[DataSpec], list[PreparedTable]] = no_extra_tables  # checked before examples
    # (data params, seed, folder, mapper of its reads): prepare straight into the folder, in memory
    # that does not grow with the data; None: `prepare` in memory, then the stage writes the result
    write: Callable[[DataConfig, int, Path, Mapper], PreparedSummary] | None = None

    @property
    def id_column(self) -> str:
        return ID_COLUMNS[self.kind]

    def examples_schema(self, spec: DataSpec) -> pa.DataFrameSchema:
        """The prepared examples of `spec`: `x` of its input size, labels below its classes."""
        check = schemas.values_check(spec.input_dim, spec.discrete, spec.vocab_size)
        return schemas.examples_schema(self.table, check, spec.n_classes)

    def output_schema(self, spec: DataSpec, latent_dim: int, reconstructions: bool,
                      predicted_classes: int = 0) -> pa.DataFrameSchema:
        """Inference rows for `spec`'s examples: what the model produces (a latent of
        `latent_dim`, reconstructions if written, a classifier head or not)."""
        reconstruction = (schemas.values_check(spec.input_dim, spec.discrete, spec.vocab_size)
                          if reconstructions else None)
        return schemas.output_schema(self.examples_schema(spec), latent_dim, reconstruction,
                                     predicted_classes, step_scores=spec.window if spec.timeline else 0)

    def prepared_tables(self, spec: DataSpec) -> list[PreparedTable]:
        """Every table validate checks, in the order of its report: extra tables, then examples."""
        return [*self.extra_tables(spec), PreparedTable(spec.kind, EXAMPLES_FILE, self.examples_schema(spec))]
