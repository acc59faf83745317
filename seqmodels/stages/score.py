"""Stage `score`: a new batch of data scored by a versioned detector, published atomically.

    new files -> read in chunks -> validated against the detector (Pandera + features,
    timestamps, window) -> scaled and windowed -> Predictor actors (Ray Data, the same as
    infer) -> per-step scores for series -> paths.scores/<name>/ with a _manifest.json

The output folder holds `windows/` (one row per window or row: ids, latent, score,
is_anomaly, [label]) and, for series, `steps/` (one row per time step: series_id, t, score,
is_anomaly, [label]). Nothing is published unless every part was written and checked: a
failure or a kill leaves the previous scores as they were.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from seqmodels import storage
from seqmodels.config import Config
from seqmodels.data import schemas
from seqmodels.data.new_data import BatchReader, Examples, Steps, input_files
from seqmodels.data.registry import modality
from seqmodels.data.segments import segments_table, vector_bytes
from seqmodels.data.tables import fixed_list, parquet_write_options, streaming_parquet
from seqmodels.detector import Detector
from seqmodels.distributed.infer import predict_to_parquet
from seqmodels.distributed.runtime import READ_TASK_BYTES_ENV, release_ray
from seqmodels.errors import DataError
from seqmodels.publish import (
    MANIFEST,
    build_manifest,
    clean_stale_staging,
    hash_path,
    publishing,
    write_json_atomic,
)
from seqmodels.spec import DataSpec
from seqmodels.timeline import series_in_order

WINDOWS_DIR, STEPS_DIR = "windows", "steps"
STEP_ROW_GROUP = 1 << 20
# Bytes of model inputs per Ray Data read task; the input's row groups are sized to exceed
# it (see InputFile). Rows of windows: a quarter of infer's (at 64 MiB the overlapping read
# tasks of a 10M-window run held 0.6 GB). Series segments are far smaller for as many
# windows (a 4096-window segment of window 64, stride 1, is 33 KB), so a read task is a
# few model batches and both predictor actors get work from the start.
READ_TASK_BYTES = 16 << 20
SEGMENT_READ_TASK_BYTES = 256 << 10


def run(cfg: Config, batch: str) -> None:
    """Score the batch `batch` of score.batches with paths.detector into paths.scores/<batch>."""
    item = cfg.score.batch(batch)
    score_batch(cfg, item.input, Path(cfg.paths.detector), str(Path(cfg.paths.scores) / batch))


def score_with(cfg: Config, source: str, target: str, *, model: str | None = None, rev: str | None = None,
               repo: str | None = None, remote: str | None = None) -> dict[str, Any]:
    """`seqmodels score`: the detector folder `model` (default paths.detector), or the one
    committed at git revision `rev` of `repo`, read through DVC (its cache, else its DVC
    remote or `remote`) as `outputs read --rev` does."""
    if rev is None:
        return score_batch(cfg, source, Path(model or cfg.paths.detector), target)
    from seqmodels.versions import fetch_directory

    with tempfile.TemporaryDirectory(prefix="seqmodels-detector-") as folder:
        local = Path(folder) / "detector"
        commit = fetch_directory(cfg.paths.detector, local, rev=rev, repo=repo, remote=remote)
        return score_batch(cfg, source, local, target, provenance={"rev": rev, "commit": commit,
                                                                   "repo_path": cfg.paths.detector})


def score_batch(cfg: Config, source: str, model_dir: Path, target: str,
                provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score `source` with the detector in `model_dir` into `target` (a folder, or an s3://
    URI: scored into a local folder first, then published there manifest last); returns the
    manifest."""
    detector = Detector.load(model_dir)  # a broken folder fails before any data is read
    if not storage.is_uri(target):
        return _score_into(cfg, source, detector, model_dir, Path(target), provenance)
    with tempfile.TemporaryDirectory(prefix="seqmodels-score-") as folder:
        local = Path(folder) / "scores"
        manifest = _score_into(cfg, source, detector, model_dir, local, provenance)
        storage.publish_remote(local, target)
    print(f"published {local.name} to {target}")
    return manifest


def _score_into(cfg: Config, source: str, detector: Detector, model_dir: Path, target: Path,
                provenance: dict[str, Any] | None) -> dict[str, Any]:
    reader = detector.reader(windows_per_segment=cfg.infer.batch_size)  # a segment is a model batch
    clean_stale_staging(target)
    with publishing(target) as staging, tempfile.TemporaryDirectory(
            prefix=f".{target.name}.inputs-", dir=target.parent) as scratch:
        inputs = write_model_inputs(reader, source, Path(scratch), detector.spec)
        predict_to_parquet(cfg, model_dir, inputs.path, staging / WINDOWS_DIR,
                           write_reconstructions=cfg.score.write_reconstructions,
                           threshold=detector.thresholds.window.value, label="score",
                           read_task_bytes=inputs.read_task_bytes, rows_per_batch=inputs.rows_per_batch,
                           total_rows=inputs.windows)
        release_ray()  # the rest is this process's own work
        rows = check_outputs(staging / WINDOWS_DIR, detector, cfg.score.write_reconstructions, inputs.windows)
        step_rows = (write_steps(staging, inputs.steps, inputs.lengths, detector)
                     if inputs.steps is not None else None)
        manifest = build_manifest(
            model={"path": str(model_dir), "sha256": hash_path(model_dir),
                   **(provenance or {})},
            input={"path": str(source), "sha256": hash_inputs(source), "rows": reader.rows},
            threshold=detector.thresholds.to_dict(), params=cfg.to_dict(), rows=rows, steps=step_rows,
            flagged=count_flags(staging), schema=pads.dataset(staging / WINDOWS_DIR).schema.to_string(
                show_schema_metadata=False))
        write_json_atomic(staging / MANIFEST, manifest)
    print(f"scored {reader.rows} input rows -> {rows} windows"
          + (f", {step_rows} steps" if step_rows is not None else "")
          + f" ({manifest['flagged']['windows']} flagged) into {target}")
    return manifest


@dataclass
class ModelInputs:
    """The batch's model inputs on disk, as the predictors read them."""

    path: Path  # Parquet: rows of windows (x), or for series, Segment rows (segments_table)
    steps: Path | None  # series: one row per time step (series_id, t, [label]), in input order
    lengths: dict[str, int]  # series: steps of each
    windows: int  # model inputs, and so output rows
    read_task_bytes: int  # the Ray Data read-task budget the row groups exceed
    rows_per_batch: int | None  # rows of `path` per model batch: one Segment, or infer.batch_size


def write_model_inputs(reader: BatchReader, source: str, scratch: Path, spec: DataSpec) -> ModelInputs:
    """The batch's model inputs (and, for series, its steps) as Parquet in `scratch`,
    written chunk by chunk. Series go as Segments of reader.windows_per_segment windows,
    each one model batch, and are cut into windows inside the predictor actors."""
    segments = spec.kind == "series"
    default = SEGMENT_READ_TASK_BYTES if segments else READ_TASK_BYTES
    budget = int(os.environ.get(READ_TASK_BYTES_ENV, default))
    inputs, steps = InputFile(scratch / "inputs.parquet", budget), None
    next_id = 0
    try:
        for chunk in reader.chunks(source):
            if not segments:
                for examples in chunk.inputs:
                    inputs.write(examples_table(examples, spec, next_id))
                    next_id += len(examples)
            elif chunk.inputs:
                inputs.write(segments_table(chunk.inputs, next_id, spec))
                next_id += sum(len(segment) for segment in chunk.inputs)
            if chunk.steps is not None and len(chunk.steps.t):
                table = steps_table(chunk.steps)
                steps = steps or _writer(scratch / "steps.parquet", table.schema)
                steps.write_table(table)
    finally:
        inputs.close()
        if steps is not None:
            steps.close()
    if not inputs.written:
        raise DataError(f"{source} holds no data to score", where=str(source),
                        fix="point --input at files with at least one full window of rows")
    return ModelInputs(inputs.path, scratch / "steps.parquet" if steps is not None else None, reader.lengths,
                       next_id, budget, 1 if segments else None)


def _writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    return pq.ParquetWriter(path, schema, **parquet_write_options(schema))


class InputFile:
    """The batch's model inputs in one Parquet file of row groups each bigger than a Ray
    Data read task's budget (the last one smaller).

    The per-step scores need the outputs in input order (a series' windows, then the next
    series'). Ray Data 2.60's V2 Parquet reader packs row groups into read tasks online and
    emits a bin of small row groups only when it fills, or at the end: a 1M-window input of
    8 MiB row groups came back starting at its 9th. A row group larger than a bin gets a
    read task of its own at once, so these come back in file order, and a read task's
    memory stays one row group. Sizes are counted in the vector column's bytes (segments_
    .vector_bytes), which the row group's uncompressed size exceeds.
    """

    def __init__(self, path: Path, budget: int) -> None:
        self.path, self.budget = path, budget
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._held = 0

    def write(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._held += int(vector_bytes(table).sum())
        while self._held > self.budget:
            table = pa.concat_tables(self._pending)
            total = np.cumsum(vector_bytes(table))
            rows = int(np.searchsorted(total, self.budget, side="right")) + 1  # the first past the budget
            self._flush(table.slice(0, rows))
            rest = table.slice(rows)
            self._pending = [rest] if rest.num_rows else []
            self._held = int(total[-1] - total[rows - 1])

    def close(self) -> None:
        if self._pending:
            self._flush(pa.concat_tables(self._pending))
        if self._writer is not None:
            self._writer.close()

    @property
    def written(self) -> bool:
        return self._writer is not None

    def _flush(self, table: pa.Table) -> None:
        self._writer = self._writer or _writer(self.path, table.schema)
        self._writer.write_table(table, row_group_size=table.num_rows)


def examples_table(examples: Examples, spec: DataSpec, first_id: int) -> pa.Table:
    ids = np.arange(first_id, first_id + len(examples), dtype=np.int64)
    columns: dict[str, Any] = {spec.id_column: ids}
    if examples.series_id is not None:
        columns |= {"series_id": pa.array(examples.series_id.astype(str)), "start": examples.start}
    if examples.label is not None:
        columns["label"] = examples.label.astype(np.int64)
    columns["x"] = fixed_list(examples.x)
    return pa.table(columns)


def steps_table(steps: Steps) -> pa.Table:
    columns: dict[str, Any] = {"series_id": pa.array(steps.series_id.astype(str)), "t": steps.t}
    if steps.label is not None:
        columns["label"] = steps.label
    return pa.table(columns)


def check_outputs(directory: Path, detector: Detector, reconstructions: bool, expected: int) -> int:
    """The written rows in the output schema, one per model input; returns the row count.

    The first batch of each part goes through the Pandera contract (every column, type and
    check); every row then through the same value checks vectorised in Arrow (no nulls,
    finite vectors, scores >= 0). Pandera checks vector columns row by row in Python, which
    at 2 s per 1M rows was a sixth of a run."""
    spec, model = detector.spec, detector.model
    schema = modality(spec.kind).output_schema(spec, model.cfg.latent_dim, reconstructions,
                                               predicted_classes=model.predicted_classes)
    schema = schema.remove_columns(["split"]).add_columns(
        {"is_anomaly": schemas.pa.Column(bool, nullable=False)})
    rows = 0
    for part in sorted(directory.glob("*.parquet")):
        for index, batch in enumerate(streaming_parquet(part).iter_batches(batch_size=65_536)):
            if index == 0:
                schemas.validate_table(batch.to_pandas(), schema, table="score output", source=str(part))
            else:
                check_values(batch, part, rows)
            rows += batch.num_rows
    if rows != expected:
        raise DataError(f"scoring wrote {rows} rows for {expected} model inputs", where=str(directory),
                        fix="rerun the score")
    return rows


def check_values(batch: pa.RecordBatch, part: Path, offset: int) -> None:
    """No nulls, finite float vectors and scores, scores >= 0: what the contract checks of
    every output row, for a whole batch at once."""
    columns = zip(batch.schema.names, batch.columns, strict=True)
    problems = [f"{name}: {column.null_count} nulls" for name, column in columns if column.null_count]
    for name in ("score", "latent", "reconstruction", "step_score"):
        if name not in batch.schema.names:
            continue
        column = batch.column(name)
        values = column.flatten() if pa.types.is_fixed_size_list(column.type) else column
        if pa.types.is_floating(values.type) and not pc.all(pc.is_finite(values)).as_py():
            problems.append(f"{name}: NaN or inf values")
    if pc.min(batch.column("score")).as_py() < 0:
        problems.append("score: negative values")
    if problems:
        raise DataError(f"score output {part} rows {offset}..{offset + batch.num_rows - 1} failed its "
                        f"checks: {'; '.join(problems)}", where=str(part),
                        fix="check the model and the input for extreme values, then rerun the score")


def write_steps(staging: Path, steps_path: Path, lengths: dict[str, int], detector: Detector) -> int:
    """One row per time step: the windows' scores folded per step (model.point_score), flagged
    at the step threshold; streamed one series at a time in the windows' order."""
    how = detector.model.cfg.point_score
    columns = ["series_id", "start", "score", *(["step_score"] if how != "window" else [])]
    outputs = pads.dataset(staging / WINDOWS_DIR, format="parquet")
    batches = outputs.to_batches(columns=columns, batch_size=8192)
    steps = _StepRows(streaming_parquet(steps_path))
    threshold = detector.thresholds.for_steps.value
    (staging / STEPS_DIR).mkdir()
    rows, writer = 0, None
    try:
        for series_id, score in series_in_order(batches, lengths, detector.spec.window, how):
            table = steps.take(series_id, len(score))
            table = table.append_column("score", pa.array(score)).append_column(
                "is_anomaly", pa.array(score > threshold))
            writer = writer or _writer(staging / STEPS_DIR / "part-00000.parquet", table.schema)
            writer.write_table(table, row_group_size=STEP_ROW_GROUP)
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    return rows


class _StepRows:
    """The steps file read forward, `take(series, n)` rows at a time."""

    def __init__(self, file: pq.ParquetFile) -> None:
        self._batches = file.iter_batches(batch_size=65_536)
        self._buffer: list[pa.RecordBatch] = []
        self._held = 0

    def take(self, series_id: str, n: int) -> pa.Table:
        while self._held < n:
            batch = next(self._batches)
            self._buffer.append(batch)
            self._held += batch.num_rows
        table = pa.Table.from_batches(self._buffer)
        taken, rest = table.slice(0, n), table.slice(n)
        if taken.column("series_id")[0].as_py() != series_id:
            raise DataError(f"the steps of series {series_id} are out of step with its windows",
                            where="score", fix="rerun the score")
        self._buffer, self._held = rest.to_batches(), rest.num_rows
        return taken


def count_flags(staging: Path) -> dict[str, int]:
    flagged = {"windows": _true_count(staging / WINDOWS_DIR)}
    if (staging / STEPS_DIR).exists():
        flagged["steps"] = _true_count(staging / STEPS_DIR)
    return flagged


def _true_count(directory: Path) -> int:
    column = pads.dataset(directory, format="parquet").to_table(columns=["is_anomaly"]).column("is_anomaly")
    return int(pc.sum(column).as_py() or 0)


def hash_inputs(source: str) -> str:
    """sha256 over the input files' names and contents, local or remote (what was scored)."""
    digest = hashlib.sha256()
    for location in input_files(source):
        digest.update(storage.stem(location).encode())
        with storage.open_input(location) as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()

