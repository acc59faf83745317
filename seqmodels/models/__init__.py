"""Fused autoencoder families behind one contract (see base.FusedAutoencoder).

The names below load on first use: `seqmodels.models.config`, which every config load
imports, then does not import torch (a second of start-up, which `seqmodels score` spends
starting Ray instead)."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from seqmodels.models.base import FusedAutoencoder, Latent, ModelOutput
    from seqmodels.models.registry import build_model, model_kinds

__all__ = ["FusedAutoencoder", "Latent", "ModelOutput", "build_model", "model_kinds"]
_HOMES = {"FusedAutoencoder": "base", "Latent": "base", "ModelOutput": "base",
          "build_model": "registry", "model_kinds": "registry"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"seqmodels.models.{_HOMES[name]}"), name)
