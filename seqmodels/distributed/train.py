"""Ray Train around the one training loop in seqmodels.training.

The driver builds Ray Datasets for the train/val windows and a TorchTrainer; each worker
runs `fit` with DDP (ray.train.torch.prepare_model), data from its Ray Data shard, metric
totals all-reduced across workers, and rank 0 reporting a checkpoint every epoch. The run
is named after a hash of everything that shapes it, so rerunning an interrupted stage with
the same params and data resumes from its last checkpoint (Ray Train V2 restores a run
whose name and storage path already exist), while changed params start a fresh run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seqmodels.checkpoints import load_first_good, save_training_state, unwrap
from seqmodels.config import Config
from seqmodels.data.tables import read_spec
from seqmodels.distributed.live import live_callback
from seqmodels.distributed.runtime import preflight, ray_data_path, train_logging_config, training_ingest
from seqmodels.errors import ConfigError, SeqmodelsError
from seqmodels.models.registry import build_model
from seqmodels.publish import hash_path
from seqmodels.spec import EXAMPLES_FILE, DataSpec
from seqmodels.training import FitState, fit, make_optimizer, make_scheduler, seed_everything

SELECTION_METRIC = "selection_loss"
# Worker progress goes through logging so Ray's log level (ray.log_level) governs it;
# WARNING so the per-epoch line shows at the default level.
log = logging.getLogger("seqmodels.train")


@dataclass
class TrainOutcome:
    weights: dict[str, torch.Tensor]
    best_metrics: dict[str, Any]
    history: list[dict[str, float]]
    run_name: str
    run_path: str
    resumed_at: list[int] = field(default_factory=list)
    worker_nodes: list[str] = field(default_factory=list)  # Ray node id of each rank


def code_hash() -> str:
    """Hash of the seqmodels sources: changed code must not resume a run made by old code."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        digest.update(str(source.relative_to(package)).encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


def run_name(cfg: Config, data_hash: str) -> str:
    """Same params + data + code -> same name, so a rerun resumes instead of restarting."""
    shaping = {"seed": cfg.seed, "code": code_hash(), "model": cfg.model.model_dump(mode="json"),
               "train": cfg.train.model_dump(mode="json", exclude={"storage", "max_failures",
                                                                     "checkpoints_to_keep",
                                                                     "placement_strategy"}),
               "data": data_hash}
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()
    return f"{cfg.model.kind}-{digest[:12]}"


def storage_path(storage: str) -> str:
    return storage if "://" in storage else str(Path(storage).resolve())


def check_storage(storage: str) -> str:
    """The resolved `train.storage`, or a ConfigError before Ray starts: an empty value, an
    unknown URI scheme or an uncreatable local folder would otherwise fail inside Ray Train."""
    import pyarrow.fs

    where = "params.yaml: train.storage"
    fix = "set train.storage to a writable local folder (default: runs) or a URI such as s3://bucket/runs"
    if not storage.strip():
        raise ConfigError("train.storage is empty: checkpoints need a location", where=where, fix=fix)
    resolved = storage_path(storage)
    try:
        filesystem, root = pyarrow.fs.FileSystem.from_uri(resolved)
        if isinstance(filesystem, pyarrow.fs.LocalFileSystem):
            filesystem.create_dir(root, recursive=True)
    except Exception as error:  # pyarrow: ArrowInvalid (scheme), OSError (permissions), ...
        raise ConfigError(f"train.storage={storage!r} cannot be used: {type(error).__name__}: "
                          f"{str(error).splitlines()[0]}", where=where, fix=fix) from None
    return resolved


def run_exists(storage: str, name: str) -> bool:
    """Whether Ray Train already has a run of this name (so starting it again resumes it)."""
    import pyarrow.fs

    filesystem, root = pyarrow.fs.FileSystem.from_uri(storage)
    return filesystem.get_file_info(f"{root.rstrip('/')}/{name}").type != pyarrow.fs.FileType.NotFound


def run_checkpoints(storage: str, name: str) -> list:
    """The run's checkpoints on storage, newest first (Ray names them checkpoint_<timestamp>)."""
    import pyarrow.fs
    from ray.train import Checkpoint

    filesystem, root = pyarrow.fs.FileSystem.from_uri(storage)
    selector = pyarrow.fs.FileSelector(f"{root.rstrip('/')}/{name}", allow_not_found=True)
    folders = [info.path for info in filesystem.get_file_info(selector)
               if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith("checkpoint_")]
    return [Checkpoint(path, filesystem=filesystem) for path in sorted(folders, reverse=True)]


def restore_state(restored, storage: str, name: str, warn: Callable[[str], None]) -> dict[str, Any]:
    """The state in Ray's latest checkpoint or, if that one is unreadable (truncated by a
    crash, damaged on disk), in the newest earlier checkpoint of the run that loads."""
    def candidates():
        yield restored
        yield from (c for c in run_checkpoints(storage, name) if c.path != restored.path)

    state, _ = load_first_good(candidates(), warn)
    return state


def read_split(examples_path: Path | str, split: str, columns: list[str], materialize: bool):
    """A Ray Dataset with the model-input `columns` of one split."""
    import ray.data
    from ray.data.expressions import col

    dataset = ray.data.read_parquet(ray_data_path(examples_path)).select_columns(["split", *columns])
    dataset = dataset.filter(expr=col("split") == split).select_columns(columns)
    return dataset.materialize() if materialize else dataset


def _allreduce(sums: dict[str, float], rows: int) -> tuple[dict[str, float], int]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return sums, rows
    import ray.train.torch

    packed = torch.tensor([*sums.values(), rows], dtype=torch.float64,
                          device=ray.train.torch.get_device())
    dist.all_reduce(packed)
    values = packed.tolist()
    return dict(zip(sums, values[:-1], strict=True)), int(values[-1])


def _quiet_report_lines(level: str) -> None:
    """Ray Train 2.60 logs every report (metrics and checkpoint path) at INFO through a logger
    named after its source file, outside the "ray" hierarchy that ray.log_level governs."""
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray layout: its own logging settings apply
        return
    logging.getLogger(train_context.__file__).setLevel(level)


def train_worker(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    cfg = Config.model_validate(loop_config["config"])
    _quiet_report_lines(cfg.ray.log_level)
    # DDP compares grad strides with its bucket views; for weights with a size-1 dimension
    # (a conv over one input channel) they differ only on that dimension, which is harmless.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    spec = DataSpec.from_dict(loop_config["spec"])
    context = ray.train.get_context()
    rank = context.get_world_rank()
    device = ray.train.torch.get_device()

    seed_everything(cfg.seed)  # identical initial weights everywhere (DDP also broadcasts)
    model = build_model(cfg.model, spec)
    restored = ray.train.get_checkpoint()
    state_dicts: dict[str, Any] = {}
    if restored:
        state_dicts = restore_state(restored, loop_config["storage"], loop_config["run"],
                                    log.warning if rank == 0 else lambda _: None)
        model.load_state_dict(state_dicts["model"])
    model = ray.train.torch.prepare_model(model)
    optimizer = make_optimizer(model, cfg.train)
    scheduler = make_scheduler(optimizer, cfg.train)
    fit_state = FitState()
    if state_dicts:
        optimizer.load_state_dict(state_dicts["optimizer"])
        scheduler.load_state_dict(state_dicts["scheduler"])
        fit_state = FitState.from_dict(state_dicts["fit"])
        fit_state.resumed_at.append(fit_state.next_epoch)
        if rank == 0:
            log.warning("resuming from the checkpoint after epoch %d", fit_state.next_epoch)
    seed_everything(cfg.seed + 7919 * rank + 104729 * fit_state.next_epoch)  # per-worker noise

    per_worker = cfg.train.per_worker_batch_size
    dtypes = {"x": torch.int64 if spec.discrete else torch.float32, "label": torch.int64}
    dtypes = {column: dtypes[column] for column in spec.model_inputs}
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")

    def train_batches(epoch: int):
        return train_shard.iter_torch_batches(
            batch_size=per_worker, dtypes=dtypes, device=device,
            local_shuffle_buffer_size=max(4 * per_worker, 256), local_shuffle_seed=cfg.seed + epoch)

    def val_batches(epoch: int):
        return val_shard.iter_torch_batches(batch_size=per_worker, dtypes=dtypes, device=device)

    worker_nodes = _gather_node_ids()

    def report(metrics: dict[str, float], state: FitState, improved: bool) -> None:
        metrics = {**metrics, SELECTION_METRIC: metrics.get("val_loss", metrics["train_loss"])}
        with tempfile.TemporaryDirectory() as directory:
            checkpoint = None
            if rank == 0:
                save_training_state(Path(directory), {
                    "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "fit": state.to_dict(),
                    "worker_nodes": worker_nodes})
                checkpoint = Checkpoint.from_directory(directory)
            ray.train.report(metrics, checkpoint=checkpoint)

    fit(model, optimizer, scheduler, train_batches, val_batches, cfg.train, cfg.model, device=device,
        state=fit_state, reduce=_allreduce, on_epoch_end=report,
        log=log.warning if rank == 0 else None)


def _gather_node_ids() -> list[str]:
    """The Ray node of every rank, in rank order: shows where the placement put the workers."""
    import ray
    import torch.distributed as dist

    node = ray.get_runtime_context().get_node_id()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [node]
    nodes: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(nodes, node)
    return [str(n) for n in nodes]


def _unwrap_failure(error: BaseException) -> BaseException:
    """Find a SeqmodelsError raised inside a worker under Ray's wrapping exceptions."""
    seen = set()
    stack = [error]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, SeqmodelsError):
            return current
        stack.extend(e for e in (current.__cause__, current.__context__,
                                 getattr(current, "cause", None)) if isinstance(e, BaseException))
        stack.extend(e for e in getattr(current, "worker_failures", {}).values()
                     if isinstance(e, BaseException))
        stack.extend(e for e in getattr(current, "exceptions", []) if isinstance(e, BaseException))
    return error


def train_distributed(cfg: Config, loop_per_worker: Callable[[dict[str, Any]], None] = train_worker,
                      ) -> TrainOutcome:
    """Train on Ray; `loop_per_worker` is the worker entry point (tests wrap it to inject faults)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.train.v2.api.exceptions import TrainingFailedError

    prepared = Path(cfg.paths.prepared)
    spec = read_spec(prepared)
    examples = prepared / EXAMPLES_FILE
    build_model(cfg.model, spec)  # a model/data mismatch fails here, before Ray starts
    storage = check_storage(cfg.train.storage)
    preflight(cfg, "train")
    name = run_name(cfg, hash_path(examples))
    resuming = run_exists(storage, name)
    if resuming:
        log.warning("run %s exists in %s: continuing it from its last checkpoint", name, storage)
    with training_ingest(cfg.ray):
        trainer = TorchTrainer(
            loop_per_worker,
            train_loop_config={"config": cfg.to_dict(), "spec": spec.to_dict(),
                               "storage": storage, "run": name},
            scaling_config=ScalingConfig(num_workers=cfg.train.workers, use_gpu=cfg.train.use_gpu,
                                         resources_per_worker={"CPU": 1},
                                         placement_strategy=cfg.train.placement_strategy),
            run_config=RunConfig(
                name=name, storage_path=storage,
                checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.checkpoints_to_keep,
                                                   checkpoint_score_attribute=SELECTION_METRIC,
                                                   checkpoint_score_order="min"),
                failure_config=FailureConfig(max_failures=cfg.train.max_failures),
                callbacks=[live_callback(Path(cfg.paths.train_live).resolve(), resume=resuming)],
                logging_config=train_logging_config(cfg.ray)),
            datasets={split: read_split(examples, split, spec.model_inputs, cfg.train.materialize)
                      for split in ("train", "val")},
        )
        try:
            result = trainer.fit()
        except SystemExit:
            # Ray Train's Ctrl-C handler aborts the run, then calls sys.exit(0) from inside fit():
            # report it as the interruption it is (the CLI exits 130; checkpoints stay for resume).
            raise KeyboardInterrupt from None
        except TrainingFailedError as error:
            cause = _unwrap_failure(error)
            if isinstance(cause, SeqmodelsError):
                raise cause from None
            raise SeqmodelsError(f"training failed: {error}", where=f"{storage}/{name}",
                                 fix="see the worker error above; rerun resumes from the last checkpoint",
                                 ) from None
    if not result.best_checkpoints:
        raise SeqmodelsError("training finished without a checkpoint", where=f"{storage}/{name}")
    ranked = sorted(result.best_checkpoints, key=lambda cm: cm[1][SELECTION_METRIC])
    best_state, best_checkpoint = load_first_good([c for c, _ in ranked], log.warning)
    best_metrics = next(metrics for c, metrics in ranked if c is best_checkpoint)
    weights = best_state["model"]
    final = restore_state(result.checkpoint, storage, name, log.warning)
    final_state = FitState.from_dict(final["fit"])
    return TrainOutcome(weights=weights, best_metrics=dict(best_metrics), history=final_state.history,
                        run_name=name, run_path=f"{storage}/{name}", resumed_at=final_state.resumed_at,
                        worker_nodes=list(final.get("worker_nodes", [])))
