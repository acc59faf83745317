"""A fused-autoencoder anomaly detector as one object: fit, score, predict, save, load.

The in-process face of the project, in the style of PyOD and alibi-detect detectors: plain
PyTorch, no Ray and no DVC. `fit` prepares the data and trains with the library's one
training loop, then fits the anomaly threshold on the validation scores; `score` and
`predict` take new data as the pipeline does (a file, a folder, or a DataFrame in the
canonical or single-series form), checked against what the model was trained on.

A detector folder (`save`, or the pipeline's models/latest) holds everything needed to
score raw data elsewhere: weights, model and data spec, scaler, windowing and thresholds.

    detector = Detector.fit("gunpoint", {"train": {"epochs": 5, "workers": 1}})
    scores = detector.score(frame)       # .windows: one row per window; .steps: per time step
    flags = detector.predict(frame)      # the same with is_anomaly at the fitted threshold
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from seqmodels.checkpoints import WEIGHTS_FILE, load_exported_model, read_model_card, save_weights
from seqmodels.config import Config, config_from_mapping, load_config
from seqmodels.data.build import build_examples
from seqmodels.data.modality import PreparedData
from seqmodels.data.new_data import BatchReader, Examples
from seqmodels.data.scaling import StandardScaler
from seqmodels.evaluation import Scored
from seqmodels.models.base import FusedAutoencoder
from seqmodels.models.registry import build_model
from seqmodels.prediction import predict_arrays
from seqmodels.publish import publishing, write_json_atomic
from seqmodels.spec import SCALER_FILE, SERIES_FILE, VOCAB_FILE
from seqmodels.thresholds import Thresholds, fit_thresholds, read_thresholds, write_thresholds
from seqmodels.timeline import aggregate_windows
from seqmodels.training import fit, in_memory_batches, make_optimizer, make_scheduler, seed_everything

SCORE_BATCH = 1024  # windows per forward pass when scoring in-process
Params = Config | Mapping[str, Any] | str | Path | None


@dataclass
class Scores:
    """What `score` returns. `windows`: one row per model input (series: series_id, start;
    tabular: row), its `score` and `label` when the data has one. `steps` (series): one row
    per time step (series_id, t, score, [label]) from the windows covering it, aggregated by
    model.point_score."""

    windows: pd.DataFrame
    steps: pd.DataFrame | None = None


class Detector:
    """A trained model with the preprocessing and thresholds it was fitted with."""

    def __init__(self, model: FusedAutoencoder, card: dict[str, Any], thresholds: Thresholds | None) -> None:
        self.model = model.eval()
        self.spec = model.spec
        self.card = card
        self.thresholds = thresholds
        scaler = card.get("scaler")
        self.scaler = StandardScaler.from_dict(scaler) if scaler else None

    # --- building one ----------------------------------------------------------------

    @classmethod
    def fit(cls, data: pd.DataFrame | str | Path, params: Params = None, *,
            log: Callable[[str], None] | None = None) -> Detector:
        """Prepare `data` (a DataFrame, a file, or a bundled source name) with `params` (a
        Config, a mapping of params.yaml sections, or a params file; defaults otherwise),
        train in-process, and fit the thresholds on the validation split."""
        cfg = _config(params)
        with tempfile.TemporaryDirectory(prefix="seqmodels-fit-") as folder:
            source = data
            if isinstance(data, pd.DataFrame):
                source = Path(folder) / "data.parquet"
                data.to_parquet(source, index=False)
            cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"source": str(source)})})
            prepared = build_examples(cfg)
        return cls.fit_prepared(prepared, cfg, log=log)

    @classmethod
    def fit_prepared(cls, prepared: PreparedData, cfg: Config, *,
                     log: Callable[[str], None] | None = None) -> Detector:
        """`fit` on examples already prepared (seqmodels.data.build.build_examples(cfg)), for
        callers that also need the prepared data, e.g. benchmarks measuring on its splits."""
        model = train_in_process(cfg, prepared, log)
        card = {"model": cfg.model.model_dump(mode="json"), "data_spec": prepared.spec.to_dict(),
                "seed": cfg.seed, "scaler": prepared.artifacts.get(SCALER_FILE),
                "vocab": prepared.artifacts.get(VOCAB_FILE, {}).get("tokens")}
        detector = cls(model, card, None)
        detector.thresholds = detector._fit_thresholds(prepared, cfg)
        return detector

    @classmethod
    def load(cls, directory: str | Path, *, require_thresholds: bool = True) -> Detector:
        """A detector folder (`save`, or the pipeline's models/latest). Without
        `require_thresholds` a trained model folder without thresholds loads too, and
        `predict` then refuses."""
        model, _, _ = load_exported_model(directory)
        thresholds = read_thresholds(directory) if require_thresholds else None
        return cls(model, read_model_card(directory), thresholds)

    def save(self, directory: str | Path) -> Path:
        """Write the detector folder atomically (a previous one is replaced whole)."""
        with publishing(directory) as staging:
            save_weights(self.model.state_dict(), staging / WEIGHTS_FILE)
            write_json_atomic(staging / "model.json", self.card)
            if self.thresholds is not None:
                write_thresholds(staging, self.thresholds)
        return Path(directory)

    # --- using one -------------------------------------------------------------------

    def score(self, data: pd.DataFrame | str | Path) -> Scores:
        """Anomaly scores of new data (higher = more anomalous), per window and, for series,
        per time step. The data is validated against the model first."""
        reader = self.reader()
        parts, steps = [], []
        for chunk in reader.chunks(data):
            parts.extend(self._score_examples(examples) for examples in chunk.examples)
            if chunk.steps is not None:
                steps.append(chunk.steps)
        windows = _concat(parts)
        if self.spec.kind != "series":
            return Scores(windows.drop(columns=["step_score"], errors="ignore"))
        return Scores(windows.drop(columns=["step_score"], errors="ignore"), self._steps(windows, steps))

    def reader(self, windows_per_segment: int | None = None) -> BatchReader:
        """New data as this detector's inputs: its features, scaler (or vocabulary) and windowing."""
        return BatchReader(self.spec, self.scaler, vocab=self.card.get("vocab"),
                           windows_per_segment=windows_per_segment)

    def predict(self, data: pd.DataFrame | str | Path) -> Scores:
        """`score` plus `is_anomaly` (score > the threshold fitted on validation scores)."""
        if self.thresholds is None:
            raise ValueError("this detector has no thresholds: fit it, or load a detector folder")
        scores = self.score(data)
        scores.windows["is_anomaly"] = scores.windows["score"].to_numpy() > self.thresholds.window.value
        if scores.steps is not None:
            scores.steps["is_anomaly"] = scores.steps["score"].to_numpy() > self.thresholds.for_steps.value
        return scores

    def _score_examples(self, examples: Examples) -> pd.DataFrame:
        ids = ({"row": examples.row} if examples.row is not None
               else {"series_id": examples.series_id.astype(str), "start": examples.start})
        frame = pd.DataFrame(ids)
        if examples.label is not None:
            frame["label"] = examples.label
        scores, steps = [], []
        for begin in range(0, len(examples), SCORE_BATCH):
            out = predict_arrays(self.model, examples.x[begin:begin + SCORE_BATCH], torch.device("cpu"),
                                 reconstructions=False)
            scores.append(out["score"])
            steps.append(out.get("step_score"))
        frame["score"] = np.concatenate(scores) if scores else np.empty(0, np.float32)
        if steps and steps[0] is not None and self.model.cfg.point_score != "window":
            frame["step_score"] = list(np.concatenate(steps))
        return frame

    def _steps(self, windows: pd.DataFrame, parts: list) -> pd.DataFrame:
        series_id = np.concatenate([p.series_id for p in parts])
        steps = pd.DataFrame({"series_id": series_id, "t": np.concatenate([p.t for p in parts])})
        if parts[0].label is not None:
            steps["label"] = np.concatenate([p.label for p in parts])
        lengths = steps.groupby("series_id", sort=False).size()
        how = self.model.cfg.point_score
        step_score = np.stack(windows["step_score"].to_numpy()) if "step_score" in windows else None
        steps["score"] = aggregate_windows(windows["series_id"].to_numpy(), windows["start"].to_numpy(),
                                           windows["score"].to_numpy(), step_score, lengths,
                                           self.spec.window, how)
        return steps

    def _fit_thresholds(self, prepared: PreparedData, cfg: Config) -> Thresholds:
        """Scores of the prepared examples; thresholds on their validation split (and on the
        validation steps of series scored per step), as the detector stage fits them."""
        examples = prepared.examples
        x = np.stack(examples["x"].to_numpy()).astype(np.float32)
        ids = examples.get("series_id")
        scored_rows = self._score_examples(Examples(
            x=x, label=None, series_id=None if ids is None else ids.to_numpy(),
            start=examples["start"].to_numpy() if "start" in examples else None,
            row=None if ids is not None else np.arange(len(examples))))
        label = examples["label"].to_numpy() if self.spec.anomaly_labels else None
        split = examples["split"].to_numpy().astype(str)
        windows = Scored(split=split, score=scored_rows["score"].to_numpy(np.float64), label=label)
        steps = None
        if self.spec.timeline:
            table = prepared.artifacts[SERIES_FILE]
            lengths = table.groupby("series_id", sort=False).size()
            step_score = (np.stack(scored_rows["step_score"].to_numpy())
                          if "step_score" in scored_rows else None)
            per_step = aggregate_windows(ids.to_numpy(), examples["start"].to_numpy(),
                                         scored_rows["score"].to_numpy(), step_score, lengths,
                                         self.spec.window, self.model.cfg.point_score)
            steps = Scored(split=table["split"].to_numpy().astype(str), score=per_step,
                           label=table["label"].to_numpy() if "label" in table else None)
        return fit_thresholds(windows, steps, cfg.evaluate.threshold)


def train_in_process(cfg: Config, prepared: PreparedData,
                     log: Callable[[str], None] | None) -> FusedAutoencoder:
    """The library's one training loop over the prepared examples held in memory (what each
    Ray Train worker runs, on one process): seeded, best epoch by validation loss."""
    seed_everything(cfg.seed)
    spec, examples = prepared.spec, prepared.examples
    model = build_model(cfg.model, spec)
    dtype = np.int64 if spec.discrete else np.float32
    tensors = {"x": torch.from_numpy(np.stack(examples["x"].to_numpy()).astype(dtype))}
    if "label" in spec.model_inputs:
        tensors["label"] = torch.from_numpy(examples["label"].to_numpy().copy())
    split = examples["split"].to_numpy().astype(str)

    def subset(name: str) -> dict[str, torch.Tensor]:
        mask = torch.from_numpy(split == name)
        return {key: value[mask] for key, value in tensors.items()}

    best: dict[str, torch.Tensor] = {}

    def keep_best(metrics: dict[str, float], state: Any, improved: bool) -> None:
        if improved:
            best.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    optimizer = make_optimizer(model, cfg.train)
    fit(model, optimizer, make_scheduler(optimizer, cfg.train),
        in_memory_batches(subset("train"), cfg.train.batch_size, shuffle=True, seed=cfg.seed),
        in_memory_batches(subset("val"), cfg.train.batch_size, shuffle=False),
        cfg.train, cfg.model, device=torch.device("cpu"), on_epoch_end=keep_best, log=log)
    if best:
        model.load_state_dict(best)
    return model.eval()


def _config(params: Params) -> Config:
    if params is None:
        return config_from_mapping({}, "defaults")
    if isinstance(params, Config):
        return params
    if isinstance(params, (str, Path)):
        return load_config(params)
    return config_from_mapping(dict(params), "Detector.fit params")


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["score"])
