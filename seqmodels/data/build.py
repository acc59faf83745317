"""One entry point from params to model-ready examples, whatever the modality.

Used by the prepare stage and by in-process users (benchmarks, notebooks), so loading,
raw-table validation and preparation happen the same way everywhere.
"""

from __future__ import annotations

from seqmodels.config import Config
from seqmodels.data import schemas
from seqmodels.data.modality import PreparedData
from seqmodels.data.registry import modality


def build_examples(cfg: Config) -> PreparedData:
    """Load `cfg.data.source`, validate the raw table, prepare and validate the examples."""
    data = cfg.data
    kind = modality(data.kind)
    prepared = kind.prepare(data, cfg.seed)
    schemas.validate_table(prepared.examples, kind.examples_schema(prepared.spec),
                           table=prepared.spec.kind, source=data.source)
    return prepared
