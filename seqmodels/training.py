"""The one training loop (plain PyTorch), used as-is by single-process runs and by every
Ray Train worker.

Distribution enters only through arguments: `reduce` sums metric totals across workers
(all_reduce under DDP, identity here) and `on_epoch_end` reports/checkpoints. There is no
second loop anywhere in the project.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from seqmodels.checkpoints import unwrap
from seqmodels.config import TrainConfig
from seqmodels.errors import TrainingDivergedError
from seqmodels.models.config import ModelConfig
from seqmodels.models.outputs import Batch

LOSS_PARTS = ("total", "recon", "task", "kl")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer,
                   cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """The LR schedule over the planned epochs, stepped once per epoch.

    Per-epoch stepping keeps the schedule independent of the batch count, which changes
    with the worker count and the data size; resumed runs restore it from the checkpoint.
    """
    if cfg.schedule == "onecycle":
        # From lr/25 up to lr over the first 30% of epochs, then cosine-annealed towards 0.
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.epochs + 1)
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs, eta_min=cfg.lr * 0.01)


def kl_weight(cfg: ModelConfig, epoch: int) -> float:
    """Linear KL warm-up: 1/warmup at epoch 0, reaching 1 after `kl_warmup_epochs`."""
    if cfg.kl_warmup_epochs == 0:
        return 1.0
    return min(1.0, (epoch + 1) / cfg.kl_warmup_epochs)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def run_epoch(model: nn.Module, batches: Iterable[Batch], *, device: torch.device, epoch: int,
              optimizer: torch.optim.Optimizer | None = None, kl_scale: float = 1.0,
              grad_clip: float | None = None, precision: str = "fp32",
              scaler: torch.amp.GradScaler | None = None) -> tuple[dict[str, float], int]:
    """One pass; trains when an optimizer is given. Returns (sum of each loss * rows, rows)."""
    training = optimizer is not None
    model.train(training)
    sums = dict.fromkeys(LOSS_PARTS, 0.0)
    rows = 0
    for step, raw in enumerate(batches):
        batch = {k: v.to(device, non_blocking=True) for k, v in raw.items()}
        with torch.set_grad_enabled(training), autocast(device, precision):
            out = model(batch)
            losses = unwrap(model).loss(batch, out, kl_scale)
        total = losses["total"]
        if not torch.isfinite(total):
            raise _diverged(total, epoch, step, training)
        if training:
            _optimizer_step(model, total, optimizer, scaler, grad_clip)
        n = batch["x"].shape[0]
        for part in LOSS_PARTS:
            sums[part] += float(losses[part].detach()) * n
        rows += n
    return sums, rows


def _diverged(total: Tensor, epoch: int, step: int, training: bool) -> TrainingDivergedError:
    return TrainingDivergedError(
        f"loss became {total.item()} at epoch {epoch}, step {step} "
        f"({'training' if training else 'validation'})",
        where=f"epoch {epoch}, step {step}",
        fix="lower train.lr, set train.grad_clip, or check the data for extreme values; "
        "the last good checkpoint is kept",
    )


def _optimizer_step(model: nn.Module, total: Tensor, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None, grad_clip: float | None) -> None:
    """Backward and step; with fp16 the grad scaler scales the loss and unscales the
    gradients before they are clipped, so the clip sees their true norm."""
    scaled = scaler is not None and scaler.is_enabled()
    optimizer.zero_grad(set_to_none=True)
    if scaled:
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
    else:
        total.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaled:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def selection_loss(metrics: dict[str, float]) -> float:
    """What picks the best epoch: the validation loss, or the training loss when there is no
    validation data. Early stopping, the exported model and Ray's kept checkpoints all use it."""
    return metrics.get("val_loss", metrics["train_loss"])


@dataclass
class FitState:
    """Everything needed to resume: saved inside every checkpoint."""

    next_epoch: int = 0
    best_val_loss: float = math.inf
    best_epoch: int = -1
    epochs_since_best: int = 0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_at: list[int] = field(default_factory=list)  # epochs a restart continued from

    def record(self, metrics: dict[str, float]) -> bool:
        """Add one epoch's metrics; whether it is the best so far by `selection_loss`."""
        epoch = int(metrics["epoch"])
        selection = selection_loss(metrics)
        improved = selection < self.best_val_loss
        if improved:
            self.best_val_loss, self.best_epoch, self.epochs_since_best = selection, epoch, 0
        else:
            self.epochs_since_best += 1
        self.next_epoch = epoch + 1
        self.history.append(metrics)
        return improved

    def to_dict(self) -> dict[str, Any]:
        return {"next_epoch": self.next_epoch, "best_val_loss": self.best_val_loss,
                "best_epoch": self.best_epoch, "epochs_since_best": self.epochs_since_best,
                "stopped_early": self.stopped_early, "history": self.history,
                "resumed_at": self.resumed_at}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FitState:
        return cls(**raw)


def in_memory_batches(tensors: dict[str, Tensor], batch_size: int, *, shuffle: bool,
                      seed: int = 0) -> Callable[[int], Iterable[Batch]]:
    """Batches over tensors already in memory, for plain single-process training
    (notebooks, benchmarks, tests); reshuffled per epoch from `seed + epoch`."""
    n = next(iter(tensors.values())).shape[0]

    def batches(epoch: int) -> Iterable[Batch]:
        order = (torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
                 if shuffle else torch.arange(n))
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size]
            yield {name: tensor[index] for name, tensor in tensors.items()}

    return batches


Reduce = Callable[[dict[str, float], int], tuple[dict[str, float], int]]
EpochHook = Callable[[dict[str, float], FitState, bool], None]


def _means(prefix: str, sums: dict[str, float], rows: int) -> dict[str, float]:
    name = {"total": "loss"}
    return {f"{prefix}_{name.get(k, k)}": v / rows for k, v in sums.items()} if rows else {}


def _train_and_validate(model: nn.Module, optimizer: torch.optim.Optimizer,
                        train_batches: Callable[[int], Iterable[Batch]],
                        val_batches: Callable[[int], Iterable[Batch]], epoch: int,
                        train_cfg: TrainConfig, model_cfg: ModelConfig, *, device: torch.device,
                        reduce: Reduce, scaler: torch.amp.GradScaler) -> dict[str, float]:
    """One epoch's training pass then validation pass; their mean losses (summed over the
    workers by `reduce`), the LR the epoch trained with, and its throughput."""
    started = time.perf_counter()
    lr = optimizer.param_groups[0]["lr"]
    train_sums, train_rows = reduce(*run_epoch(
        model, train_batches(epoch), device=device, epoch=epoch, optimizer=optimizer,
        kl_scale=kl_weight(model_cfg, epoch), grad_clip=train_cfg.grad_clip,
        precision=train_cfg.precision, scaler=scaler))
    train_seconds = time.perf_counter() - started
    val_sums, val_rows = reduce(*run_epoch(model, val_batches(epoch), device=device, epoch=epoch,
                                           precision=train_cfg.precision))
    return {"epoch": epoch, "lr": lr, **_means("train", train_sums, train_rows),
            **_means("val", val_sums, val_rows),
            "samples_per_s": train_rows / max(train_seconds, 1e-9),
            "epoch_s": time.perf_counter() - started}


def fit(model: nn.Module, optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        train_batches: Callable[[int], Iterable[Batch]],
        val_batches: Callable[[int], Iterable[Batch]],
        train_cfg: TrainConfig, model_cfg: ModelConfig, *, device: torch.device,
        state: FitState | None = None, reduce: Reduce = lambda sums, rows: (sums, rows),
        on_epoch_end: EpochHook | None = None, log: Callable[[str], None] | None = print) -> FitState:
    """Train from `state.next_epoch` to `train_cfg.epochs`, with early stopping on val loss.

    Model selection uses the validation loss (the training loss when there is no
    validation data); `on_epoch_end(metrics, state, improved)` runs after every epoch.
    """
    state = state or FitState()
    scaler = torch.amp.GradScaler(device.type, enabled=train_cfg.precision == "fp16")
    for epoch in range(state.next_epoch, train_cfg.epochs):
        if state.stopped_early:
            break
        metrics = _train_and_validate(model, optimizer, train_batches, val_batches, epoch,
                                      train_cfg, model_cfg, device=device, reduce=reduce, scaler=scaler)
        scheduler.step()
        improved = state.record(metrics)
        if log:
            shown = " ".join(f"{k}={metrics[k]:.4g}" for k in ("train_loss", "val_loss", "samples_per_s")
                             if k in metrics)
            log(f"epoch {epoch + 1}/{train_cfg.epochs} {shown}{' *' if improved else ''}")
        state.stopped_early = (train_cfg.patience is not None
                               and state.epochs_since_best >= train_cfg.patience)
        if on_epoch_end:
            on_epoch_end(metrics, state, improved)
        if state.stopped_early:
            if log:
                log(f"early stop: no val improvement for {train_cfg.patience} epochs "
                    f"(best epoch {state.best_epoch + 1})")
            break
    return state
