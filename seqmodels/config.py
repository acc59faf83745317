"""Typed configuration, loaded once from params.yaml and validated before any work starts.

Every section forbids unknown keys, so a typo such as `lattent_dim` fails loudly instead of
silently training with a default. Stages receive these objects, never raw dicts; the only
place a dict appears is the hand-over to Ray workers (`to_dict` / `Config.model_validate`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from seqmodels.data.config import DataConfig
from seqmodels.errors import ConfigError
from seqmodels.models.config import ModelConfig
from seqmodels.sections import Section


class TrainConfig(Section):
    workers: int = Field(2, gt=0)
    use_gpu: bool = False
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    epochs: int = Field(300, gt=0)
    batch_size: int = Field(8, gt=0, description="Global batch size, split across workers.")
    lr: float = Field(1e-2, gt=0.0)
    schedule: Literal["cosine", "onecycle", "constant"] = Field(
        "cosine", description="AdamW learning-rate schedule over train.epochs (stepped per epoch)."
    )
    weight_decay: float = Field(0.0, ge=0.0)
    grad_clip: float | None = Field(1.0, gt=0.0)
    patience: int | None = Field(None, gt=0, description="Early stopping on val loss; None = off.")
    storage: str = Field(
        "runs", description="Ray Train run storage: a local path or a pyarrow URI (s3://, gs://)."
    )
    checkpoints_to_keep: int = Field(2, gt=0)
    materialize: bool = Field(
        True, description="Keep the train/val datasets in Ray's object store (spilling to disk) "
        "instead of re-reading Parquet every epoch: one read instead of one per epoch."
    )
    max_failures: int = Field(0, ge=0)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="How Ray places the workers' resource bundles: PACK fills a node first, "
        "SPREAD puts workers on different nodes where it can (Ray's ScalingConfig option)."
    )

    @model_validator(mode="after")
    def _batch_splits_over_workers(self) -> TrainConfig:
        if self.batch_size % self.workers:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of workers ({self.workers}) so "
                "every step sees the same global batch whatever the worker count; "
                f"e.g. {max(self.batch_size // self.workers, 1) * self.workers}"
            )
        return self

    @property
    def per_worker_batch_size(self) -> int:
        return self.batch_size // self.workers


class InferConfig(Section):
    batch_size: int = Field(256, gt=0)
    concurrency: int = Field(1, gt=0, description="Predictor actors in the Ray Data pool.")
    use_gpu: bool = False
    write_reconstructions: bool = True


class ThresholdConfig(Section):
    """How evaluate turns scores into anomaly flags (`is_anomaly = score > threshold`)."""

    method: Literal["percentile", "best_f1"] = Field(
        "percentile", description="percentile: that percentile of the validation scores; best_f1: the "
        "threshold with the best F1 on validation, which needs normal and anomalous validation rows "
        "(otherwise evaluate falls back to the percentile and says so in eval.json)."
    )
    percentile: float = Field(99.0, ge=0.0, le=100.0)


class EvaluateConfig(Section):
    threshold: ThresholdConfig = ThresholdConfig()
    examples: int = Field(3, gt=0, description="Rows per group (normal/anomalous) in plots/examples.png.")
    sliding_window: int | None = Field(
        None, gt=0, description="Per-step metrics (VUS): TSB-AD's slidingWindow, the widest buffer "
        "around each labelled range; default the test series' dominant period, as TSB-AD computes it.")


class ScoreBatch(Section):
    """A batch of new data the `score` stage scores (dvc.yaml: foreach over score.batches,
    keyed by name: stage score@<name> -> paths.scores/<name>)."""

    input: str = Field(description="A CSV/Parquet file, a folder of them, or an s3:// URI.")


BATCH_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


def _heldout_batch() -> dict[str, ScoreBatch]:
    """The default batch: the test split's raw rows that prepare sets aside (spec.HELDOUT_FILE)."""
    return {"heldout": ScoreBatch(input="data/prepared/heldout.parquet")}


class ScoreConfig(Section):
    batches: dict[str, ScoreBatch] = Field(
        default_factory=_heldout_batch, description="Batches of new data for the score stage, by name.")
    write_reconstructions: bool = Field(
        False, description="Also write each window's reconstruction (latents and scores always).")

    @model_validator(mode="after")
    def _names_are_folder_names(self) -> ScoreConfig:
        bad = [name for name in self.batches if not re.match(BATCH_NAME, name)]
        if bad:
            raise ValueError(f"score.batches names {bad} must be letters, digits, '.', '_' or '-' "
                             "(each names a folder and a DVC stage)")
        return self

    def batch(self, name: str) -> ScoreBatch:
        if name not in self.batches:
            raise ConfigError(f"no batch {name!r} in score.batches", where="params.yaml: score.batches",
                              fix=f"name one of {sorted(self.batches)} or add it to score.batches")
        return self.batches[name]


class RayConfig(Section):
    address: str | None = Field(None, description="Cluster address; RAY_ADDRESS wins when set.")
    num_cpus: int | None = Field(
        4,
        gt=0,
        description="Logical CPUs of a local Ray (ignored on a cluster). Above the core count on "
        "purpose: train workers and Ray Data tasks each hold one, and they are mostly idle.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING", description="Ray/Ray Train/Ray Data console log level (full logs: /tmp/ray)."
    )
    train_poll_interval_s: float = Field(
        0.5, gt=0, description="How often Ray Train's controller polls its workers. A worker's "
        "per-epoch report waits for the poll, so Ray's 2 s default dominates short epochs."
    )
    data_cpu_limit: float | None = Field(
        1.0, gt=0, description="Cap on CPUs Ray Data may use, so it cannot starve train workers."
    )
    object_store_mb: int | None = Field(
        2048, gt=0, description="Object store size of a local Ray (ignored on a cluster). Ray's "
        "default, 30% of RAM, lets a long streaming run touch gigabytes of shared memory."
    )
    data_memory_limit_mb: int | None = Field(
        256, gt=0, description="Cap on the object-store memory Ray Data keeps in flight, so a "
        "streaming run's memory does not grow with the number of rows. Reads outrun the model, "
        "so batch inference fills the store up to this cap (its peak grows until it does), and "
        "it is the whole cluster's: raise it with the nodes (README, Running on a cluster)."
    )
    progress_interval_s: float | None = Field(
        10.0, gt=0, description="Off a terminal (DVC, CI, a log file), where Ray Data draws no "
        "progress bars, batch inference prints a progress line at most this often; null: none."
    )
    spread_reads: Literal["auto", "always", "never"] = Field(
        "auto", description="Whether prepare and validate read their input as Ray Data tasks "
        "(seqmodels.distributed.data_map): auto = on a cluster (RAY_ADDRESS / ray.address) when "
        "every node can read the input (s3://...), in this one process otherwise (on 2 cores a "
        "local Ray was slower and used 3x the memory: docs/performance.md); always = a local Ray "
        "too, and local paths on a cluster (shared storage, one host); never = this process."
    )

    @property
    def resolved_address(self) -> str | None:
        return os.environ.get("RAY_ADDRESS") or self.address


class Paths(Section):
    """Where each stage reads and writes. dvc.yaml takes these through ${paths.*}."""

    prepared: str = "data/prepared"
    validation_report: str = "reports/validation.json"
    model: str = "models/trained"  # the train stage's export: weights, model card, scaler
    detector: str = "models/latest"  # self-contained: the trained model + its thresholds (score this)
    train_metrics: str = "metrics/train.json"
    train_live: str = "metrics/live"
    outputs: str = "outputs/latents"
    eval_metrics: str = "metrics/eval.json"
    plots: str = "plots"
    anomalies: str = "reports/anomalies.csv"
    timeline: str = "outputs/timeline"  # series scored per step: one row per time step
    events: str = "reports/events.csv"  # runs of flagged steps
    scores: str = "outputs/scores"  # the score stage: one folder per score.batches entry


class Config(Section):
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    infer: InferConfig = InferConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    score: ScoreConfig = ScoreConfig()
    ray: RayConfig = RayConfig()
    paths: Paths = Paths()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _describe(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (typo?)"
        got = item.get("input")
        shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
        lines.append(f"  - {key}: {message}{shown}")
    return f"invalid parameters in {source}:\n" + "\n".join(lines)


def config_from_mapping(raw: dict[str, Any], source: str = "params") -> Config:
    """Validate every section, then the combination of model and data, before any work."""
    from seqmodels.models.registry import check_fits

    try:
        cfg = Config.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(
            _describe(error, source),
            where=source,
            fix="correct the keys above; see params.yaml in the repository for every key and default",
        ) from None
    check_fits(cfg.model, cfg.data.kind)
    return cfg


def load_config(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Config:
    """Read params.yaml, apply `key.sub=value` overrides (YAML-typed), validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parameters file {path} not found", where=str(path.absolute()),
                          fix="run from the project root or pass --params PATH")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}", where=str(path)) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections", where=str(path))
    for override in overrides or []:
        apply_override(raw, override)
    return config_from_mapping(raw, str(path))


def apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, value = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} is not KEY=VALUE", fix="e.g. --set train.epochs=5")
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
    node[leaf] = yaml.safe_load(value)
