"""One entry point from params to model-ready examples, whatever the modality.

Used by the prepare stage and by in-process users (benchmarks, notebooks), so loading,
raw-table validation and preparation happen the same way everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from seqmodels.config import Config
from seqmodels.data import schemas
from seqmodels.data.prepare import prepare_images, prepare_rows, prepare_tokens, prepare_windows
from seqmodels.data.sources import load_images, load_rows, load_sequences, load_source
from seqmodels.spec import SCALER_FILE, SERIES_FILE, VOCAB_FILE, DataSpec


@dataclass
class PreparedData:
    examples: pd.DataFrame
    spec: DataSpec
    description: str
    artifacts: dict[str, Any] = field(default_factory=dict)  # file name -> DataFrame or JSON payload


def build_examples(cfg: Config) -> PreparedData:
    """Load `cfg.data.source`, validate the raw table, prepare and validate the examples."""
    data = cfg.data
    if data.kind == "series":
        table, features = load_source(data)
        table = schemas.validate_table(table, schemas.series_schema(features), table="canonical series",
                                       source=data.source)
        examples, scaler, spec = prepare_windows(table, features, data, cfg.seed)
        prepared = PreparedData(examples, spec,
                                f"{table['series_id'].nunique()} series -> {len(examples)} windows",
                                {SERIES_FILE: table, SCALER_FILE: scaler.to_dict()})
    elif data.kind == "tabular":
        table, features = load_rows(data)
        table = schemas.validate_table(table, schemas.rows_schema(features), table="tabular rows",
                                       source=data.source)
        examples, scaler, spec = prepare_rows(table, features, data, cfg.seed)
        prepared = PreparedData(examples, spec, f"{len(examples)} rows", {SCALER_FILE: scaler.to_dict()})
    elif data.kind == "tokens":
        examples, vocab, spec = prepare_tokens(load_sequences(data), data, cfg.seed)
        prepared = PreparedData(examples, spec, f"{len(examples)} sequences, vocabulary {spec.vocab_size}",
                                {VOCAB_FILE: vocab})
    else:
        source = load_images(data)
        examples, spec = prepare_images(source.images, source.labels, source.n_classes, data, cfg.seed)
        prepared = PreparedData(examples, spec, f"{len(examples)} images")
    schemas.validate_table(prepared.examples,
                           schemas.examples_schema(spec.kind, spec.input_dim, spec.n_classes,
                                                   spec.vocab_size),
                           table=spec.kind, source=data.source)
    return prepared
