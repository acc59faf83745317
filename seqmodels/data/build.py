"""One entry point from params to model-ready examples, whatever the modality.

Used by the prepare stage and by in-process users (benchmarks, notebooks), so loading,
raw-table validation and preparation happen the same way everywhere.
"""

from __future__ import annotations

from seqmodels.config import Config
from seqmodels.data import schemas
from seqmodels.data.config import DataConfig
from seqmodels.data.modality import PreparedData
from seqmodels.data.registry import modality


def build_examples(cfg: Config) -> PreparedData:
    """Load `cfg.data.source`, validate the raw table, prepare and validate the examples."""
    return prepare_examples(cfg.data, cfg.seed)


def prepare_examples(data: DataConfig, seed: int) -> PreparedData:
    """build_examples from the data section and the seed alone."""
    kind = modality(data.kind)
    prepared = kind.prepare(data, seed)
    schemas.validate_table(prepared.examples, kind.examples_schema(prepared.spec),
                           table=prepared.spec.kind, source=data.source)
    return prepared
