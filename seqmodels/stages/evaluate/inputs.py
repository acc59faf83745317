"""What evaluate reads: the published outputs and the prepared examples they were computed
from, read once and aligned by id."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from seqmodels.config import Config
from seqmodels.data.tables import read_spec, vectors
from seqmodels.errors import DataError
from seqmodels.evaluation import Scored, score_table
from seqmodels.models.config import ModelConfig
from seqmodels.publish import MANIFEST
from seqmodels.spec import EXAMPLES_FILE, DataSpec


@dataclass
class Evaluation:
    """Everything evaluate reads, in one row order (the id column's)."""

    spec: DataSpec
    model_cfg: ModelConfig  # what inference scored with (from the outputs' manifest)
    outputs: pads.Dataset  # for columns read on demand (reconstructions)
    frame: pd.DataFrame  # per-row scalars: ids, split, score, label, predicted class
    latent: np.ndarray
    x: np.ndarray  # the model inputs, float64
    scored: Scored

    @property
    def has_reconstructions(self) -> bool:
        return "reconstruction" in self.outputs.schema.names


def load(cfg: Config) -> Evaluation:
    """The outputs and the prepared examples they were computed from, sorted by id."""
    outputs, prepared = Path(cfg.paths.outputs), Path(cfg.paths.prepared)
    manifest = json.loads((outputs / MANIFEST).read_text())
    spec = read_spec(prepared)
    key = spec.id_column
    dataset = pads.dataset(outputs, format="parquet")
    scalars = [f.name for f in dataset.schema if not pa.types.is_fixed_size_list(f.type)]
    table = dataset.to_table(columns=[*scalars, "latent"]).sort_by(key)
    frame = table.drop_columns(["latent"]).to_pandas()
    examples = pq.read_table(prepared / EXAMPLES_FILE, columns=[key, "split", "x"]).sort_by(key)
    if not np.array_equal(examples.column(key).to_numpy(), frame[key].to_numpy()):
        raise DataError(f"{outputs} and {prepared / EXAMPLES_FILE} hold different {key}s",
                        where=str(outputs), fix="rerun the infer stage (dvc repro)")
    return Evaluation(spec=spec, model_cfg=ModelConfig.model_validate(manifest["params"]["model"]),
                      outputs=dataset, frame=frame, latent=vectors(table.column("latent")),
                      x=vectors(examples.column("x")).astype(np.float64),
                      scored=score_table(frame, anomaly_labels=spec.anomaly_labels))


def reconstructions(inputs: Evaluation, ids: np.ndarray | None = None) -> np.ndarray:
    """The `reconstruction` vectors of the rows with these ids (all rows, in id order, if None)."""
    key = inputs.spec.id_column
    if ids is None:
        return vectors(inputs.outputs.to_table(columns=[key, "reconstruction"]).sort_by(key)
                       .column("reconstruction"))
    rows = inputs.outputs.to_table(columns=[key, "reconstruction"], filter=pads.field(key).isin(ids))
    by_id = dict(zip(rows.column(key).to_pylist(), vectors(rows.column("reconstruction")), strict=True))
    return np.stack([by_id[i] for i in ids.tolist()])
