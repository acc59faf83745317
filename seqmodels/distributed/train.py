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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from seqmodels.checkpoints import load_first_good, save_training_state, unwrap
from seqmodels.config import Config
from seqmodels.data.tables import read_spec
from seqmodels.distributed.live import live_callback
from seqmodels.distributed.runtime import (
    logged_progress,
    preflight,
    ray_data_path,
    train_data_config,
    train_logging_config,
    training_ingest,
)
from seqmodels.errors import ConfigError, SeqmodelsError
from seqmodels.models.registry import build_model
from seqmodels.publish import hash_path
from seqmodels.spec import EXAMPLES_FILE, DataSpec
from seqmodels.storage import describe, is_uri
from seqmodels.storage import filesystem as storage_filesystem
from seqmodels.training import FitState, fit, make_optimizer, make_scheduler, seed_everything, selection_loss

if TYPE_CHECKING:  # Ray itself is imported where it runs
    from ray.data import Dataset
    from ray.train import Checkpoint, Result
    from ray.train.torch import TorchTrainer

SELECTION_METRIC = "selection_loss"
# Worker progress goes through logging so Ray's log level (ray.log_level) governs it;
# WARNING so the per-epoch line shows at the default level.
log = logging.getLogger("seqmodels.train")


@dataclass
class TrainOutcome:
    """What the train stage exports and records: the best weights, and the run they came from."""

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
    """URIs as given; a local folder absolute, because Ray Train resolves it elsewhere."""
    return storage if is_uri(storage) else str(Path(storage).resolve())


def check_storage(storage: str) -> str:
    """The resolved `train.storage`, or a ConfigError before Ray starts: an empty value, an
    unknown URI scheme, an uncreatable local folder, or a bucket that is missing, refuses
    access or cannot be reached would otherwise fail inside Ray Train."""
    import pyarrow.fs

    where = "params.yaml: train.storage"
    fix = "set train.storage to a writable local folder (default: runs) or a URI such as s3://bucket/runs"
    if not storage.strip():
        raise ConfigError("train.storage is empty: checkpoints need a location", where=where, fix=fix)
    resolved = storage_path(storage)
    problem = f"train.storage={storage!r} cannot be used"
    try:
        filesystem, root = storage_filesystem(resolved)
        if isinstance(filesystem, pyarrow.fs.LocalFileSystem):
            filesystem.create_dir(root, recursive=True)
        elif filesystem.get_file_info(bucket := root.split("/", 1)[0]).type == pyarrow.fs.FileType.NotFound:
            raise ConfigError(f"{problem}: bucket {bucket!r} does not exist", where=where,
                              fix="create the bucket, or correct its name in train.storage")
    except ConfigError as error:
        raise ConfigError(error.what if error.what.startswith(problem) else f"{problem}: {error.what}",
                          where=where, fix=error.fix or fix) from None
    except SeqmodelsError as error:  # the store's answer, readable (access denied, unreachable)
        raise ConfigError(f"{problem}: {error.what}", where=where, fix=error.fix) from None
    except OSError as error:
        if is_uri(resolved):
            reason, store_fix = describe(error, resolved, action="use")
            raise ConfigError(f"{problem}: {reason}", where=where, fix=store_fix) from None
        raise ConfigError(f"{problem}: {type(error).__name__}: {str(error).splitlines()[0]}", where=where,
                          fix=fix) from None
    return resolved


def run_exists(storage: str, name: str) -> bool:
    """Whether Ray Train already has a run of this name (so starting it again resumes it)."""
    import pyarrow.fs

    filesystem, root = storage_filesystem(storage)
    return filesystem.get_file_info(f"{root}/{name}").type != pyarrow.fs.FileType.NotFound


def run_checkpoints(storage: str, name: str) -> list[Checkpoint]:
    """The run's checkpoints on storage, newest first (Ray names them checkpoint_<timestamp>)."""
    import pyarrow.fs
    from ray.train import Checkpoint

    filesystem, root = storage_filesystem(storage)
    selector = pyarrow.fs.FileSelector(f"{root}/{name}", allow_not_found=True)
    folders = [info.path for info in filesystem.get_file_info(selector)
               if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith("checkpoint_")]
    return [Checkpoint(path, filesystem=filesystem) for path in sorted(folders, reverse=True)]


def restore_state(restored: Checkpoint, storage: str, name: str,
                  warn: Callable[[str], None]) -> dict[str, Any]:
    """The state in Ray's latest checkpoint or, if that one is unreadable (truncated by a
    crash, damaged on disk), in the newest earlier checkpoint of the run that loads."""
    state, _ = load_first_good(_newest_first(restored, storage, name), warn)
    return state


def _newest_first(restored: Checkpoint, storage: str, name: str) -> Iterator[Checkpoint]:
    """Ray's latest checkpoint, then the run's others; storage is listed only if needed."""
    yield restored
    yield from (c for c in run_checkpoints(storage, name) if c.path != restored.path)


def read_split(examples_path: Path | str, split: str, columns: list[str], materialize: bool) -> Dataset:
    """A Ray Dataset with the model-input `columns` of one split: the split column is read
    only to filter on, so workers receive just what the model takes."""
    import ray.data
    from ray.data.expressions import col

    dataset = logged_progress(ray.data.read_parquet(ray_data_path(examples_path)))
    dataset = dataset.select_columns(["split", *columns])
    dataset = dataset.filter(expr=col("split") == split).select_columns(columns)
    return dataset.materialize() if materialize else dataset


def _allreduce(sums: dict[str, float], rows: int) -> tuple[dict[str, float], int]:
    """fit's `reduce`: metric totals summed over the ranks, so every rank logs, reports and
    stops early on the same whole-dataset figures."""
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
    """Runs on every Ray Train worker: the one training loop, `fit`, on this worker's shard."""
    import ray.train
    import ray.train.torch

    cfg = Config.model_validate(loop_config["config"])
    spec = DataSpec.from_dict(loop_config["spec"])
    _quiet_worker(cfg.ray.log_level)
    rank = ray.train.get_context().get_world_rank()
    device = ray.train.torch.get_device()

    # [1] Build the model (same initial weights everywhere) and restore a checkpoint, if any
    seed_everything(cfg.seed)  # DDP also broadcasts rank 0's weights
    model = build_model(cfg.model, spec)
    saved = restored_state(loop_config["storage"], loop_config["run"], rank)
    if saved:
        model.load_state_dict(saved["model"])

    # [2] Prepare and wrap the model with DDP; optimizer, schedule and loop state
    model = ray.train.torch.prepare_model(model)
    optimizer = make_optimizer(model, cfg.train)
    scheduler = make_scheduler(optimizer, cfg.train)
    state = resumed_fit_state(saved, optimizer, scheduler, rank)
    seed_everything(cfg.seed + 7919 * rank + 104729 * state.next_epoch)  # per-worker noise

    # [3] Batch iterators over this worker's train/val shards
    batches = ShardBatches(cfg, spec, device)

    # [4] Train; after every epoch report the metrics and (rank 0) a checkpoint
    report = EpochReport(model, optimizer, scheduler, rank, worker_nodes=_gather_node_ids())
    fit(model, optimizer, scheduler, batches.train, batches.val, cfg.train, cfg.model, device=device,
        state=state, reduce=_allreduce, on_epoch_end=report, log=log.warning if rank == 0 else None)


def _quiet_worker(log_level: str) -> None:
    """Keep a worker's console to the per-epoch line and real problems."""
    _quiet_report_lines(log_level)
    # DDP compares grad strides with its bucket views; for weights with a size-1 dimension
    # (a conv over one input channel) they differ only on that dimension, which is harmless.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")


def _silent(message: str) -> None:
    """Ranks other than 0 stay quiet: every rank reads the same checkpoint."""


def restored_state(storage: str, run: str, rank: int) -> dict[str, Any]:
    """The state saved in the checkpoint Ray hands this attempt ({} on a fresh run): a
    retried worker group or a rerun stage continues where the run stopped."""
    import ray.train

    restored = ray.train.get_checkpoint()
    if not restored:
        return {}
    return restore_state(restored, storage, run, log.warning if rank == 0 else _silent)


def resumed_fit_state(saved: dict[str, Any], optimizer: torch.optim.Optimizer,
                      scheduler: torch.optim.lr_scheduler.LRScheduler, rank: int) -> FitState:
    """The loop's state to start from: a fresh one, or the checkpoint's with the optimizer and
    schedule where they were, so a resumed run takes the steps an unbroken one would."""
    if not saved:
        return FitState()
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    state = FitState.from_dict(saved["fit"])
    state.resumed_at.append(state.next_epoch)
    if rank == 0:
        log.warning("resuming from the checkpoint after epoch %d", state.next_epoch)
    return state


class ShardBatches:
    """`fit`'s train_batches(epoch) / val_batches(epoch) over this worker's Ray Data shards;
    the training shard is shuffled locally with a per-epoch seed, so reruns repeat it."""

    def __init__(self, cfg: Config, spec: DataSpec, device: torch.device) -> None:
        import ray.train

        self.batch_size = cfg.train.per_worker_batch_size
        self.seed = cfg.seed
        self.device = device
        dtypes = {"x": torch.int64 if spec.discrete else torch.float32, "label": torch.int64}
        self.dtypes = {column: dtypes[column] for column in spec.model_inputs}
        self.train_shard = ray.train.get_dataset_shard("train")
        self.val_shard = ray.train.get_dataset_shard("val")

    def train(self, epoch: int) -> Iterable[dict[str, torch.Tensor]]:
        """A fresh pass over the shard each epoch, in a different (seeded) order."""
        return self.train_shard.iter_torch_batches(
            batch_size=self.batch_size, dtypes=self.dtypes, device=self.device,
            local_shuffle_buffer_size=max(4 * self.batch_size, 256),
            local_shuffle_seed=self.seed + epoch)

    def val(self, epoch: int) -> Iterable[dict[str, torch.Tensor]]:
        """In shard order: evaluation gains nothing from shuffling."""
        return self.val_shard.iter_torch_batches(batch_size=self.batch_size, dtypes=self.dtypes,
                                                 device=self.device)


@dataclass
class EpochReport:
    """`fit`'s on_epoch_end: every rank reports (Ray Train waits for all of them), and rank
    0 attaches the checkpoint, which holds everything a resumed run needs."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    rank: int
    worker_nodes: list[str]

    def __call__(self, metrics: dict[str, float], state: FitState, improved: bool) -> None:
        """Every epoch is checkpointed (not only improving ones): resume needs the latest;
        Ray keeps the best by the selection metric."""
        import ray.train
        from ray.train import Checkpoint

        metrics = {**metrics, SELECTION_METRIC: selection_loss(metrics)}
        with tempfile.TemporaryDirectory() as directory:
            checkpoint = None
            if self.rank == 0:
                save_training_state(Path(directory), self.training_state(state))
                checkpoint = Checkpoint.from_directory(directory)
            ray.train.report(metrics, checkpoint=checkpoint)

    def training_state(self, state: FitState) -> dict[str, Any]:
        """The model without its DDP wrapper, so the weights load into a plain model."""
        return {"model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "fit": state.to_dict(),
                "worker_nodes": self.worker_nodes}


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
    with training_ingest(cfg.ray, examples.stat().st_size):
        trainer = build_trainer(cfg, loop_per_worker, spec, examples, storage, name, resuming)
        result = run_trainer(trainer, where=f"{storage}/{name}")
    return read_outcome(result, storage, name)


def build_trainer(cfg: Config, loop_per_worker: Callable[[dict[str, Any]], None], spec: DataSpec,
                  examples: Path, storage: str, name: str, resuming: bool) -> TorchTrainer:
    """The TorchTrainer for run `name`: Ray Train restores a run whose name and storage
    path exist, and keeps the best checkpoints by the selection metric."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    # Ray resolves a bare URI with pyarrow's defaults; the project's filesystem carries the
    # endpoint and region (AWS_ENDPOINT_URL, AWS_REGION) to every process that writes there.
    filesystem, root = storage_filesystem(storage)
    return TorchTrainer(
        loop_per_worker,
        train_loop_config={"config": cfg.to_dict(), "spec": spec.to_dict(),
                           "storage": storage, "run": name},
        scaling_config=ScalingConfig(num_workers=cfg.train.workers, use_gpu=cfg.train.use_gpu,
                                     resources_per_worker={"CPU": 1},
                                     placement_strategy=cfg.train.placement_strategy),
        run_config=RunConfig(
            name=name, storage_path=root, storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.checkpoints_to_keep,
                                               checkpoint_score_attribute=SELECTION_METRIC,
                                               checkpoint_score_order="min"),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
            callbacks=[live_callback(Path(cfg.paths.train_live).resolve(), resume=resuming)],
            logging_config=train_logging_config(cfg.ray)),
        datasets={split: read_split(examples, split, spec.model_inputs, cfg.train.materialize)
                  for split in ("train", "val")},
        dataset_config=train_data_config(),
    )


def run_trainer(trainer: TorchTrainer, where: str) -> Result:
    """`trainer.fit()`, with a worker's own error (bad data, a diverged loss) raised as
    itself rather than inside Ray's wrapping, and Ctrl-C as the interruption it is."""
    from ray.train.v2.api.exceptions import TrainingFailedError

    try:
        return trainer.fit()
    except SystemExit:
        # Ray Train's Ctrl-C handler aborts the run, then calls sys.exit(0) from inside fit():
        # report it as the interruption it is (the CLI exits 130; checkpoints stay for resume).
        raise KeyboardInterrupt from None
    except TrainingFailedError as error:
        cause = _unwrap_failure(error)
        if isinstance(cause, SeqmodelsError):
            raise cause from None
        raise SeqmodelsError(f"training failed: {error}", where=where,
                             fix="see the worker error above; rerun resumes from the last checkpoint",
                             ) from None


def read_outcome(result: Result, storage: str, name: str) -> TrainOutcome:
    """The best checkpoint's weights and metrics, and the history from the final checkpoint
    (the authoritative record, resumed attempts included)."""
    weights, best_metrics = best_checkpoint(result, where=f"{storage}/{name}")
    final = restore_state(result.checkpoint, storage, name, log.warning)
    final_state = FitState.from_dict(final["fit"])
    return TrainOutcome(weights=weights, best_metrics=best_metrics, history=final_state.history,
                        run_name=name, run_path=f"{storage}/{name}", resumed_at=final_state.resumed_at,
                        worker_nodes=list(final.get("worker_nodes", [])))


def best_checkpoint(result: Result, where: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(weights, metrics) of the kept checkpoint with the lowest selection metric that loads:
    a damaged one falls back to the next best."""
    if not result.best_checkpoints:
        raise SeqmodelsError("training finished without a checkpoint", where=where)
    ranked = sorted(result.best_checkpoints, key=lambda cm: cm[1][SELECTION_METRIC])
    best_state, chosen = load_first_good([c for c, _ in ranked], log.warning)
    best_metrics = next(metrics for c, metrics in ranked if c is chosen)
    return best_state["model"], dict(best_metrics)
