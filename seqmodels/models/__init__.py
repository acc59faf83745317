"""Fused autoencoder families behind one contract (see base.FusedAutoencoder)."""

from seqmodels.models.base import FusedAutoencoder, Latent, ModelOutput
from seqmodels.models.registry import build_model, model_kinds

__all__ = ["FusedAutoencoder", "Latent", "ModelOutput", "build_model", "model_kinds"]
