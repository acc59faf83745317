"""Batch inference with Ray Data: read_parquet -> map_batches(Predictor actors) -> write_parquet.

The input is rows of model inputs (`x`), or rows of series segments (seqmodels.data.
segments), which the actors cut into windows themselves.

The model is loaded once per actor; batches stay Arrow tables end to end, and vectors are
written as fixed_size_list<float32> columns so consumers read (N, d) arrays directly.
Output files are named part-<task>.parquet (no random UUIDs), preserve_order is on, and
each file is written in block order (see ordered_parquet_sink): a rerun gives the same
rows in the same order, byte for byte. Off a terminal, where Ray Data draws no bars, the
sink counts the rows it has written and the driver prints a progress line from the count
(see row_progress), for every caller of predict_to_parquet alike.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import torch

from seqmodels.checkpoints import load_exported_model
from seqmodels.config import Config
from seqmodels.data.segments import is_segments, windows_table
from seqmodels.data.tables import fixed_list, parquet_write_options, vectors
from seqmodels.distributed.runtime import (
    actor_pool_args,
    batch_inference,
    logged_progress,
    multi_node,
    preflight,
    progress_bars_shown,
    ray_data_path,
)
from seqmodels.prediction import predict_arrays
from seqmodels.progress import ProgressLine, RowFiles

if TYPE_CHECKING:  # Ray itself is imported where it runs: Predictor works without it
    from ray.data import Datasink
    from ray.data._internal.execution.interfaces import TaskContext
    from ray.data.block import Block

VECTOR_COLUMNS = ("x",)
# Each write task gets blocks worth at least this much, so output files are tens of MB
# rather than one per 8 MiB block (runtime.INFER_BLOCK_BYTES): fewer write tasks, Parquet
# writers and footers, and a faster run.
INFER_FILE_BYTES = 64 << 20


class Predictor:
    """Callable class for map_batches: one model per actor, Arrow in, Arrow out."""

    def __init__(self, model: str | dict[str, bytes], use_gpu: bool, write_reconstructions: bool,
                 threshold: float | None = None) -> None:
        """`model`: the exported model folder, or its files by name (see model_source);
        `threshold`: when given, each row also gets `is_anomaly = score > threshold`."""
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        if isinstance(model, str):
            loaded, _, _ = load_exported_model(model)
        else:
            with tempfile.TemporaryDirectory() as directory:
                for name, content in model.items():
                    (Path(directory) / name).write_bytes(content)
                loaded, _, _ = load_exported_model(directory)
        self.model = loaded.to(self.device).eval()
        self.write_reconstructions = write_reconstructions
        self.threshold = threshold

    def __call__(self, batch: pa.Table) -> pa.Table:
        if is_segments(batch):
            batch = windows_table(batch, self.model.spec)
        # Arrow buffers are read-only; torch wants a writable array.
        outputs = predict_arrays(self.model, vectors(batch.column("x")).copy(), self.device,
                                 self.write_reconstructions)
        result = batch.drop_columns(list(VECTOR_COLUMNS))
        for name, values in outputs.items():
            column = fixed_list(values) if values.ndim == 2 else pa.array(values)
            result = result.append_column(name, column)
        if self.threshold is not None:
            result = result.append_column("is_anomaly", pa.array(outputs["score"] > self.threshold))
        return result


def model_source(model_dir: str | Path, ship_files: bool) -> str | dict[str, bytes]:
    """What the predictor actors load: the folder's path when they share this node's disk,
    else its files by name (small), which travel with the actor through the object store
    because on a cluster the actor's node does not have the driver's models/ folder."""
    if not ship_files:
        return str(Path(model_dir).resolve())
    return {path.name: path.read_bytes() for path in sorted(Path(model_dir).iterdir()) if path.is_file()}


def ordered_parquet_sink(output_dir: str | Path, pin_to_driver: bool,
                         rows: RowFiles | None = None) -> Datasink:
    """A Ray Data sink writing each write task's blocks, in order, to part-<task>.parquet.

    Ray 2.60's write_parquet hands a task's blocks to pyarrow's write_dataset with threads
    on and preserve_order off, so rows inside a file came out shuffled (the files held the
    right id ranges). One ParquetWriter per task, fed in order, makes a rerun byte-identical.
    `pin_to_driver`: the folder is local to this node (multi-node cluster), so the
    writes must run here. `rows`: where each write task counts the rows it has written.
    """
    from ray.data import Datasink

    directory = str(Path(output_dir).resolve())

    class OrderedParquetSink(Datasink):  # defined here: Ray is imported only where it runs
        def on_write_start(self, schema: Any = None) -> None:  # on the driver, before any write task
            Path(directory).mkdir(parents=True, exist_ok=True)

        def write(self, blocks: Iterable[Block], ctx: TaskContext) -> None:
            name = f"part-{ctx.task_idx:05d}"
            write_in_order(blocks, f"{directory}/{name}.parquet", None if rows is None else rows.writer(name))

        @property
        def supports_distributed_writes(self) -> bool:
            return not pin_to_driver

        @property
        def min_bytes_per_write(self) -> int:
            return INFER_FILE_BYTES

    return OrderedParquetSink()


def write_in_order(blocks: Iterable[Block], part: str,
                   written: Callable[[int], None] | None = None) -> None:
    """One ParquetWriter fed the blocks as they come; empty blocks are skipped, so a task that
    got no rows leaves no file. `written` is told each block's row count once it is written."""
    import pyarrow.parquet as pq
    from ray.data.block import BlockAccessor

    writer = None
    try:
        for block in blocks:
            table = BlockAccessor.for_block(block).to_arrow()
            if table.num_rows == 0:
                continue
            if writer is None:
                writer = pq.ParquetWriter(part, table.schema, **parquet_write_options(table.schema))
            writer.write_table(table)
            if written is not None:
                written(table.num_rows)
    finally:
        if writer is not None:
            writer.close()


def predict_to_parquet(cfg: Config, model_dir: Path, input_path: Path, output_dir: Path, *,
                       write_reconstructions: bool | None = None, threshold: float | None = None,
                       label: str = "infer", read_task_bytes: int | None = None,
                       rows_per_batch: int | None = None, total_rows: int | None = None) -> None:
    """Stream `input_path` through the model into Parquet parts under `output_dir`; an
    impossible predictor pool fails before Ray starts. `write_reconstructions` defaults to
    infer.write_reconstructions; with `threshold` every row is also flagged (is_anomaly).
    Off a terminal a long run prints `<label>: rows done/total, rows/s, ETA` every
    ray.progress_interval_s (row_progress). `read_task_bytes`: see runtime.batch_inference.
    `rows_per_batch`: input rows per model batch (default infer.batch_size; 1 for segment
    rows, each a batch); `total_rows`: output rows expected (default: the input's rows)."""
    preflight(cfg, "infer")
    if write_reconstructions is None:
        write_reconstructions = cfg.infer.write_reconstructions
    options = {"write_reconstructions": write_reconstructions, "threshold": threshold}
    total = total_rows if total_rows is not None else input_rows(input_path)
    with batch_inference(cfg.ray, read_task_bytes), row_progress(cfg, label, total) as rows:
        _predict(cfg, model_dir, input_path, output_dir, options, rows,
                 rows_per_batch or cfg.infer.batch_size)


@contextlib.contextmanager
def row_progress(cfg: Config, label: str, total: int | None) -> Iterator[RowFiles | None]:
    """RowFiles for the sink's write tasks to count written rows in, and a driver thread
    that reads the count every ray.progress_interval_s into a ProgressLine, until the block
    exits. Yields None, and prints nothing, on a terminal (Ray Data draws its bars there) or
    with ray.progress_interval_s null. The count is of written rows because those are done;
    the write tasks run on this node (ordered_parquet_sink's folder is local to it), so the
    files are in a temporary folder here.
    """
    every_s = cfg.ray.progress_interval_s
    if every_s is None or progress_bars_shown():
        yield None
        return
    line = ProgressLine(label, total, every_s)
    stop = threading.Event()
    folder = tempfile.TemporaryDirectory(prefix=f"seqmodels-{label}-rows-", ignore_cleanup_errors=True)
    with folder as directory:
        rows = RowFiles(directory)

        def poll() -> None:
            while not stop.wait(every_s):
                line.update(rows.total())

        thread = threading.Thread(target=poll, name=f"{label}-progress", daemon=True)
        thread.start()
        try:
            yield rows
        finally:
            stop.set()
            thread.join()


def input_rows(input_path: Path) -> int | None:
    """Rows in the Parquet input, from its footers, for the progress line's total; None when
    they cannot be read (the pipeline's own read then says why)."""
    import pyarrow.dataset as pads

    try:
        return pads.dataset(str(input_path), format="parquet").count_rows()
    except (OSError, pa.ArrowException):
        return None


def _predict(cfg: Config, model_dir: Path, input_path: Path, output_dir: Path,
             options: dict[str, Any], rows: RowFiles | None, rows_per_batch: int) -> None:
    """read_parquet -> Predictor actor pool -> ordered sink; on a multi-node cluster the
    model travels with the actors and the writes stay on this node, where the folder is."""
    import ray.data

    spread = multi_node()
    dataset = logged_progress(ray.data.read_parquet(ray_data_path(input_path)))
    with warnings.catch_warnings():
        # max_restarts (actor_pool_args) has no named parameter in Ray 2.60, only the
        # **ray_remote_args that Ray deprecates for 2.64; pyproject pins ray < 2.61.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated",
                                category=DeprecationWarning)
        predictions = dataset.map_batches(
            Predictor,
            fn_constructor_kwargs={"model": model_source(model_dir, ship_files=spread),
                                   "use_gpu": cfg.infer.use_gpu, **options},
            batch_size=rows_per_batch,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=cfg.infer.concurrency),
            num_cpus=1,
            num_gpus=1 if cfg.infer.use_gpu else 0,
            **actor_pool_args(cfg.ray),
        )
    predictions.write_datasink(ordered_parquet_sink(output_dir, pin_to_driver=spread, rows=rows))
