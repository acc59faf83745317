"""Batch inference with Ray Data: read_parquet -> map_batches(Predictor actors) -> write_parquet.

The model is loaded once per actor; batches stay Arrow tables end to end, and vectors are
written as fixed_size_list<float32> columns so consumers read (N, d) arrays directly.
Output files are named part-<task>.parquet (no random UUIDs), preserve_order is on, and
each file is written in block order (see ordered_parquet_sink): a rerun gives the same
rows in the same order, byte for byte.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow as pa
import torch

from seqmodels.checkpoints import load_exported_model
from seqmodels.config import Config
from seqmodels.data.tables import fixed_list, parquet_write_options, vectors
from seqmodels.errors import ConfigError

VECTOR_COLUMNS = ("x",)
# Ray Data's map actor buffers its output batches until a block reaches the context's
# target_max_block_size (128 MiB by default) before yielding it. Our output is ~1.3 MB
# per 4096 rows, so an actor held ~100 batches, and each batch's zero-copy numpy/torch
# buffers pin far more heap than their Arrow size: the actor's private memory reached
# 2.2 GiB on 1M rows vs 0.8 GiB on 100k. Small blocks keep it flat (0.54 vs 0.58 GiB).
INFER_BLOCK_BYTES = 8 << 20
# Each write task gets blocks worth at least this much, so output files are tens of MB
# rather than one per 8 MiB block: 1M windows went from 210 files (a write task, a
# ParquetWriter and a footer each) to 5; with ~40 MiB bundles the run took 39 s, not 42-45 s.
INFER_FILE_BYTES = 64 << 20
# Ray Data's V2 Parquet reader takes these from the environment when the read is planned:
# - footer-reading actors: its default, 32, took 7-17 s to start on 2 cores for one file;
# - bytes (uncompressed) per read task: its default, 128 MiB, is two of our 52 MB row groups,
#   and a read task's memory follows what it reads (0.56 GB at 128 MiB, 0.42 GB at 64 MiB);
#   on a 10M-window file its read tasks overlapped the predictor at the peak (2.9 -> 2.7 GB).
# A user's own value wins.
INFER_READER_ENV = {"RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": "1",
                    "RAY_DATA_PARQUET_BIN_PACKING_BYTES": str(64 << 20)}


class Predictor:
    """Callable class for map_batches: one model per actor, Arrow in, Arrow out."""

    def __init__(self, model: str | dict[str, bytes], use_gpu: bool, write_reconstructions: bool):
        """`model`: the exported model folder, or its files by name (see model_source)."""
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

    def __call__(self, batch: pa.Table) -> pa.Table:
        # Arrow buffers are read-only; torch wants a writable array.
        x = torch.from_numpy(vectors(batch.column("x")).copy()).to(self.device)
        if self.model.spec.discrete:
            x = x.long()
        with torch.inference_mode():
            inputs = {"x": x}
            out = self.model(inputs)
            score = self.model.score(inputs, out)
        result = batch.drop_columns(list(VECTOR_COLUMNS))
        result = result.append_column("latent", fixed_list(out.latent.code.float().cpu().numpy()))
        if self.write_reconstructions:
            reconstruction = self.model.output_reconstruction(inputs, out).cpu().numpy()
            result = result.append_column("reconstruction", fixed_list(reconstruction))
        result = result.append_column("score", pa.array(score.float().cpu().numpy(), pa.float32()))
        for name, values in self.model.extra_outputs(out).items():
            result = result.append_column(name, pa.array(values.cpu().numpy()))
        return result


def model_source(model_dir: str | Path, ship_files: bool) -> str | dict[str, bytes]:
    """What the predictor actors load: the folder's path when they share this node's disk,
    else its files by name (small), which travel with the actor through the object store
    because on a cluster the actor's node does not have the driver's models/ folder."""
    if not ship_files:
        return str(Path(model_dir).resolve())
    return {path.name: path.read_bytes() for path in sorted(Path(model_dir).iterdir()) if path.is_file()}


def ordered_parquet_sink(output_dir: str | Path, pin_to_driver: bool):
    """A Ray Data sink writing each write task's blocks, in order, to part-<task>.parquet.

    Ray 2.60's write_parquet hands a task's blocks to pyarrow's write_dataset with threads
    on and preserve_order off, so rows inside a file came out shuffled in 2 of 3 runs
    (measured: 400k ids through map_batches, files in the right id ranges, rows within
    them not). One ParquetWriter per task, fed in order, makes a rerun byte-identical.
    `pin_to_driver`: the folder is local to this node (multi-node cluster), so the
    writes must run here.
    """
    import pyarrow.parquet as pq
    from ray.data import Datasink
    from ray.data.block import BlockAccessor

    directory = str(Path(output_dir).resolve())

    class OrderedParquetSink(Datasink):
        def on_write_start(self, schema=None) -> None:  # on the driver, before any write task
            Path(directory).mkdir(parents=True, exist_ok=True)

        def write(self, blocks, ctx) -> None:
            writer = None
            try:
                for block in blocks:
                    table = BlockAccessor.for_block(block).to_arrow()
                    if table.num_rows == 0:
                        continue
                    if writer is None:
                        part = f"{directory}/part-{ctx.task_idx:05d}.parquet"
                        writer = pq.ParquetWriter(part, table.schema,
                                                  **parquet_write_options(table.schema))
                    writer.write_table(table)
            finally:
                if writer is not None:
                    writer.close()

        @property
        def supports_distributed_writes(self) -> bool:
            return not pin_to_driver

        @property
        def min_bytes_per_write(self) -> int:
            return INFER_FILE_BYTES

    return OrderedParquetSink()


def check_resources(cfg: Config, cpus: float, gpus: float) -> None:
    """Refuse a predictor pool the local Ray cannot place: Ray Data would wait for it forever."""
    pool = cfg.infer.concurrency
    if cfg.infer.use_gpu and pool > gpus:
        raise ConfigError(f"infer.concurrency={pool} predictor(s) with infer.use_gpu need {pool} GPU(s); "
                          f"this machine has {gpus:g} visible to torch",
                          where="params.yaml: infer.use_gpu / infer.concurrency",
                          fix="set infer.use_gpu: false" if not gpus
                          else f"set infer.concurrency <= {int(gpus)}")
    if pool > cpus:
        raise ConfigError(f"infer.concurrency={pool} predictor actors need {pool} CPUs; Ray has {cpus:g}",
                          where="params.yaml: infer.concurrency / ray.num_cpus",
                          fix=f"set infer.concurrency <= {int(cpus)} or raise ray.num_cpus")


def predict_to_parquet(cfg: Config, model_dir: Path, input_path: Path, output_dir: Path) -> None:
    """Stream `input_path` through the model into Parquet parts under `output_dir`."""
    import ray.data
    from ray.data import ExecutionResources

    from seqmodels.distributed.runtime import init_ray, local_resources

    resources = local_resources(cfg.ray)
    if resources is not None:
        check_resources(cfg, *resources)
    init_ray(cfg.ray)
    context = ray.data.DataContext.get_current()
    options = context.execution_options
    saved = context.target_max_block_size, options.resource_limits, context.use_datasource_v2
    context.target_max_block_size = INFER_BLOCK_BYTES
    # The V1 Parquet reader (see configure_data_context) reads a file in one task, and on a
    # 10M-window file that task's private memory kept growing while the slower predictor
    # held it back (1.2-1.9 GB after 40-100 s; 5.6 GB summed at the peak vs 3.0 GB for 1M).
    # The V2 reader splits a file into short read tasks that stayed at 0.45-0.73 GB. Its
    # footer-reader pool is started per read: one actor is plenty for our few files.
    context.use_datasource_v2 = True
    for name, value in INFER_READER_ENV.items():
        os.environ.setdefault(name, value)
    # ray.data_cpu_limit keeps training ingest from starving train workers; inference has
    # Ray to itself, and capping it at 1 CPU serialised reading, the model and writing
    # (0.60 -> 0.67-0.75 of a plain loop's rows/s on 2 cores). The memory cap stays.
    options.resource_limits = ExecutionResources.for_limits(
        object_store_memory=options.resource_limits.object_store_memory)
    try:
        _predict(cfg, model_dir, input_path, output_dir)
    finally:
        context.target_max_block_size, options.resource_limits, context.use_datasource_v2 = saved


def _predict(cfg: Config, model_dir: Path, input_path: Path, output_dir: Path) -> None:
    import ray.data

    from seqmodels.distributed.runtime import multi_node, ray_data_path

    spread = multi_node()
    dataset = ray.data.read_parquet(ray_data_path(input_path))
    predictions = dataset.map_batches(
        Predictor,
        fn_constructor_kwargs={"model": model_source(model_dir, ship_files=spread),
                               "use_gpu": cfg.infer.use_gpu,
                               "write_reconstructions": cfg.infer.write_reconstructions},
        batch_size=cfg.infer.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=cfg.infer.concurrency),
        num_cpus=1,
        num_gpus=1 if cfg.infer.use_gpu else 0,
    )
    predictions.write_datasink(ordered_parquet_sink(output_dir, pin_to_driver=spread))
