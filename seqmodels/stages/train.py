"""Stage `train`: Ray Train over the prepared windows (seqmodels.distributed.train), the
best model exported to paths.model, its history to DVCLive and metrics/train.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from seqmodels.checkpoints import export_model
from seqmodels.config import Config
from seqmodels.data.tables import read_spec
from seqmodels.distributed.live import write_history
from seqmodels.distributed.train import TrainOutcome, train_distributed
from seqmodels.publish import clean_stale_staging, publishing, write_json_atomic
from seqmodels.spec import SCALER_FILE, VOCAB_FILE


def run(cfg: Config) -> None:
    spec = read_spec(cfg.paths.prepared)
    model_dir = Path(cfg.paths.model)
    clean_stale_staging(model_dir)
    outcome = train_distributed(cfg)
    best = {k: v for k, v in outcome.best_metrics.items() if isinstance(v, (int, float))}
    with publishing(model_dir) as staging:
        export_model(staging, outcome.weights, cfg.model, spec,
                     extra={"best_metrics": best, "run": outcome.run_path, "seed": cfg.seed,
                            "scaler": read_scaler(cfg.paths.prepared),
                            "vocab": read_vocab(cfg.paths.prepared)})
    write_history(cfg.paths.train_live, outcome.history)
    write_json_atomic(cfg.paths.train_metrics, train_metrics(cfg, outcome, best))
    print(f"trained {cfg.model.kind} for {len(outcome.history)} epochs; best epoch {int(best['epoch']) + 1} "
          f"val_loss={best.get('val_loss', float('nan')):.5f}; exported to {model_dir}")
    print("worker nodes by rank: " + ", ".join(node[:12] for node in outcome.worker_nodes))


def read_scaler(prepared: str | Path) -> dict[str, Any] | None:
    """The scaler prepare fitted, so the exported model scales new data as it was trained."""
    path = Path(prepared) / SCALER_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def read_vocab(prepared: str | Path) -> list[str] | None:
    """The tokens' vocabulary, so the exported model encodes new text as it was trained."""
    path = Path(prepared) / VOCAB_FILE
    return json.loads(path.read_text())["tokens"] if path.is_file() else None


def train_metrics(cfg: Config, outcome: TrainOutcome, best: dict[str, Any]) -> dict[str, Any]:
    """metrics/train.json: the exported epoch, how the run went, where it ran."""
    history = outcome.history
    return {
        "best_epoch": int(best["epoch"]) + 1,
        "best_val_loss": best.get("val_loss"),
        "best_train_loss": best.get("train_loss"),
        "epochs_run": len(history),
        "first_train_loss": float(history[0]["train_loss"]),
        "mean_samples_per_s": sum(epoch["samples_per_s"] for epoch in history) / len(history),
        "workers": cfg.train.workers,
        "nodes_used": len(set(outcome.worker_nodes)),
        "resumed_at_epochs": [epoch + 1 for epoch in outcome.resumed_at],
    }
