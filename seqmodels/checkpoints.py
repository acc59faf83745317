"""Saving and loading weights without pickle code execution.

Everything on disk is a dict of tensors and plain numbers loaded with
`torch.load(weights_only=True)`; configs travel as JSON beside the weights. A crafted
pickle therefore fails to load instead of running code, and the error names the file.
"""

from __future__ import annotations

import io
import json
import pickle
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seqmodels.errors import CheckpointError
from seqmodels.models.base import FusedAutoencoder
from seqmodels.models.config import ModelConfig
from seqmodels.models.registry import build_model
from seqmodels.publish import write_json_atomic
from seqmodels.spec import DataSpec

STATE_FILE = "state.pt"
WEIGHTS_FILE = "model.pt"
MODEL_CARD = "model.json"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under a DDP (or similar) wrapper."""
    return getattr(model, "module", model)


def safe_load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} not found", where=str(path),
                              fix="rerun the train stage to produce it")
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol is no news beside the error
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message suggests weights_only=False, which would run the file's code: never.
        lines = str(error).splitlines()
        blocked = next((line.split(" Please use")[0].strip() for line in lines if "GLOBAL" in line), None)
        if blocked:
            raise CheckpointError(
                f"refused to load {path}: it holds pickled objects other than tensors and numbers, "
                f"which could run code when loaded ({blocked})",
                where=str(path),
                fix="do not load this file with weights_only=False; delete it and retrain, or "
                    "re-export the model with this version of seqmodels",
            ) from None
        detail = next((line.strip() for line in lines if line.startswith("Unsupported")), lines[0])
        raise _unreadable(path, f"not a weights-only checkpoint ({detail})") from None
    except Exception as error:  # truncated zip, not a torch file, ...
        raise _unreadable(path, f"{type(error).__name__}: {str(error).splitlines()[0]}") from None


def _unreadable(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(
        f"cannot load checkpoint {path}: {reason}",
        where=str(path),
        fix="the file is corrupt (e.g. truncated) or not a seqmodels checkpoint; delete it and retrain",
    )


def save_weights(payload: dict[str, Any], path: Path) -> None:
    """torch.save through memory: torch's own file writer turns a full disk into a RuntimeError
    without errno ("unexpected pos"); a plain write raises the OSError that says what happened."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    Path(path).write_bytes(buffer.getbuffer())


def save_training_state(directory: Path, state: dict[str, Any]) -> None:
    save_weights(state, Path(directory) / STATE_FILE)


def load_training_state(directory: str | Path) -> dict[str, Any]:
    return safe_load(Path(directory) / STATE_FILE)


def _load_candidate(candidate: Any) -> dict[str, Any]:
    if hasattr(candidate, "as_directory"):  # a Ray Checkpoint, possibly in remote storage
        with candidate.as_directory() as directory:
            return load_training_state(directory)
    return load_training_state(candidate)


def load_first_good(candidates: Iterable[Any], warn: Callable[[str], None]) -> tuple[dict[str, Any], Any]:
    """The training state of the first candidate that loads, and that candidate.

    Candidates are checkpoint directories (paths, or Ray Checkpoints), best first. A crash
    while a checkpoint was written, or a damaged disk, must cost the epochs since the
    checkpoint before, not the run: each unreadable one is reported through `warn` (naming
    the file) and skipped. If none loads, the CheckpointError names every file tried.
    """
    failures: list[CheckpointError] = []
    for candidate in candidates:
        try:
            return _load_candidate(candidate), candidate
        except CheckpointError as error:
            failures.append(error)
            warn(f"{error.what}; trying the checkpoint before it")
    if not failures:
        raise CheckpointError("no checkpoint to load", fix="rerun the train stage")
    files = ", ".join(str(error.where) for error in failures)
    raise CheckpointError(f"none of the {len(failures)} checkpoint(s) can be loaded: {files}",
                          where=files, fix="delete the run folder in train.storage to train afresh, "
                          "or restore the files from a backup")


def export_model(directory: Path, weights: dict[str, torch.Tensor], cfg: ModelConfig, spec: DataSpec,
                 extra: dict[str, Any] | None = None) -> None:
    """Write the weights plus everything needed to rebuild the model (no Ray needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(weights, directory / WEIGHTS_FILE)
    write_json_atomic(directory / MODEL_CARD, {"model": cfg.model_dump(mode="json"),
                                               "data_spec": spec.to_dict(), **(extra or {})})


def read_model_card(directory: str | Path) -> dict[str, Any]:
    """model.json of an exported model folder: the model and data configs, the scaler, ..."""
    card_path = Path(directory) / MODEL_CARD
    if not card_path.is_file():
        raise CheckpointError(f"{card_path} not found: {directory} is not an exported model folder",
                              where=str(directory), fix="run the train stage first (dvc repro -s train), "
                              "or point at a folder holding model.json and model.pt")
    try:
        card = json.loads(card_path.read_text())
        if not isinstance(card, dict):
            raise TypeError(f"a JSON {type(card).__name__}, not an object")
        return card
    except (ValueError, TypeError) as error:  # bad JSON
        raise _corrupt_card(card_path, error) from None


def _corrupt_card(card_path: Path, error: Exception) -> CheckpointError:
    return CheckpointError(f"model card {card_path} is corrupt: {type(error).__name__}: "
                           f"{str(error).splitlines()[0]}", where=str(card_path),
                           fix="rerun the train stage to export the model again")


def load_exported_model(directory: str | Path) -> tuple[FusedAutoencoder, ModelConfig, DataSpec]:
    directory = Path(directory)
    card = read_model_card(directory)
    try:
        cfg = ModelConfig.model_validate(card["model"])
        spec = DataSpec.from_dict(card["data_spec"])
    except (ValueError, KeyError, TypeError) as error:  # missing or mistyped fields
        raise _corrupt_card(directory / MODEL_CARD, error) from None
    model = build_model(cfg, spec)
    try:
        model.load_state_dict(safe_load(directory / WEIGHTS_FILE))
    except RuntimeError as error:
        raise CheckpointError(f"weights in {directory / WEIGHTS_FILE} do not fit {cfg.kind}: {error}",
                              where=str(directory),
                              fix="retrain; the model card and weights disagree") from None
    return model.eval(), cfg, spec
