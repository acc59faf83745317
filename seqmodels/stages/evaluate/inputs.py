"""What evaluate reads: the published outputs (their per-row scalars and latents, read once
and sorted by id) and the prepared examples they were computed from, which stay on disk and
are read a batch at a time: at 400 values a window they are most of what evaluate touches
(608 MiB as float64 at 10M rows), and no figure needs them all at once."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from seqmodels.config import Config
from seqmodels.data.tables import read_spec, streaming_parquet, vectors
from seqmodels.errors import DataError
from seqmodels.evaluation import Baselines, Scored, fit_sample, score_table
from seqmodels.models.config import ModelConfig
from seqmodels.publish import MANIFEST
from seqmodels.spec import EXAMPLES_FILE, DataSpec

EXAMPLE_BATCH_ROWS = 4096  # 12 MiB of float64 inputs of 400 values


@dataclass
class Evaluation:
    """Everything evaluate reads, in one row order (the id column's)."""

    spec: DataSpec
    model_cfg: ModelConfig  # what inference scored with (from the outputs' manifest)
    outputs: pads.Dataset  # for columns read on demand (reconstructions)
    frame: pd.DataFrame  # per-row scalars: ids, split, score, label, predicted class
    latent: np.ndarray
    examples: Path  # the model inputs, in id order: read with example_batches / example_rows
    scored: Scored

    @property
    def has_reconstructions(self) -> bool:
        return "reconstruction" in self.outputs.schema.names

    @functools.cached_property
    def series_ids(self) -> pa.StringArray:
        """Every window's series id, in id order, as one Arrow array to slice batches from,
        made once for the model's batches and the baselines'. The frame's string column made
        into numpy is a Python string a window (12 MiB at 10M rows, each time)."""
        return pa.array(self.frame["series_id"], pa.string())


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
    latent = vectors(table.column("latent")).copy()  # its own memory, so the table can go
    del table
    release_arrow_memory()
    examples = prepared / EXAMPLES_FILE
    example_ids = pq.read_table(examples, columns=[key]).column(key).to_numpy()
    if not np.array_equal(example_ids, frame[key].to_numpy()):
        raise DataError(f"{outputs} and {examples} hold different {key}s (or the examples are not in "
                        f"{key} order)", where=str(outputs),
                        fix="rerun the prepare and infer stages (dvc repro)")
    return Evaluation(spec=spec, model_cfg=ModelConfig.model_validate(manifest["params"]["model"]),
                      outputs=dataset, frame=frame, latent=latent, examples=examples,
                      scored=score_table(frame, anomaly_labels=spec.anomaly_labels))


def example_batches(inputs: Evaluation,
                    rows: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(row numbers, inputs as float64) of the examples in id order, EXAMPLE_BATCH_ROWS at a
    time; only the rows numbered `rows` (sorted) when given, read from the row groups that
    hold them (the figures want a dozen rows of a file of millions)."""
    file = streaming_parquet(inputs.examples)
    if rows is None:
        offset = 0
        for batch in file.iter_batches(batch_size=EXAMPLE_BATCH_ROWS, columns=["x"]):
            yield np.arange(offset, offset + batch.num_rows), vectors(batch.column("x")).astype(np.float64)
            offset += batch.num_rows
        release_arrow_memory()
        return
    sizes = [file.metadata.row_group(i).num_rows for i in range(file.metadata.num_row_groups)]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for group, (begin, end) in enumerate(zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True)):
        numbers = rows[(rows >= begin) & (rows < end)]
        if len(numbers):
            x = file.read_row_group(group, columns=["x"]).column("x").take(pa.array(numbers - begin))
            yield numbers, vectors(x).astype(np.float64)


def example_rows(inputs: Evaluation, rows: np.ndarray) -> np.ndarray:
    """The inputs (float64) of the rows numbered `rows`, in that order."""
    wanted = np.unique(rows)
    found = [x for _, x in example_batches(inputs, wanted)]
    x = np.concatenate(found) if found else np.empty((0, inputs.spec.input_dim))
    del found
    release_arrow_memory()
    return x[np.searchsorted(wanted, rows)]


def release_arrow_memory() -> None:
    """Hand the pages Arrow's allocator keeps after a large read back to the OS. mimalloc
    keeps freed pages for reuse, and evaluate's reads happen once: at 10M rows reading and
    sorting the outputs' scalars left 29 MiB more in the process, the fit sample's rows more."""
    pa.default_memory_pool().release_unused()


def fit_baselines(inputs: Evaluation, seed: int) -> Baselines:
    """The PCA and k-NN baselines, fitted on the training rows of fit_sample (read alone)."""
    rows = fit_sample(inputs.scored.split, seed)
    return Baselines.fit(example_rows(inputs, rows), rows, inputs.model_cfg, inputs.spec.input_shape, seed)


def reconstructions(inputs: Evaluation, ids: np.ndarray | None = None) -> np.ndarray:
    """The `reconstruction` vectors of the rows with these ids (all rows, in id order, if None)."""
    key = inputs.spec.id_column
    if ids is None:
        return vectors(inputs.outputs.to_table(columns=[key, "reconstruction"]).sort_by(key)
                       .column("reconstruction"))
    rows = inputs.outputs.to_table(columns=[key, "reconstruction"], filter=pads.field(key).isin(ids))
    by_id = dict(zip(rows.column(key).to_pylist(), vectors(rows.column("reconstruction")), strict=True))
    return np.stack([by_id[i] for i in ids.tolist()])
