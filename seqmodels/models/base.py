"""The FusedAutoencoder contract: training, inference and evaluation never branch on kind.

A family implements three things: `trunk` (input -> feature vector + whatever its task
head needs), `decode` (latent -> flattened reconstruction) and, if it has one, `task_loss`.
The latent head (plain or variational), the fused loss and the anomaly score are shared.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqmodels.models.config import ModelConfig
from seqmodels.models.outputs import Batch, Latent, ModelOutput
from seqmodels.models.scoring import reconstruction_error, step_errors
from seqmodels.models.variational import kl_divergence, latent_head
from seqmodels.spec import DataSpec


class FusedAutoencoder(nn.Module, ABC):
    #: data kinds (DataSpec.kind) this family can model
    modalities: frozenset[str] = frozenset({"series", "images", "tabular"})

    def __init__(self, cfg: ModelConfig, spec: DataSpec, trunk_features: int):
        super().__init__()
        self.cfg = cfg
        self.spec = spec
        self.latent_head = latent_head(trunk_features, cfg.latent_dim, cfg.variational)

    @abstractmethod
    def trunk(self, x: Tensor) -> tuple[Tensor, Any]:
        """Encoder body: (B, input_dim) -> ((B, trunk_features), task-head input or None)."""

    @abstractmethod
    def decode(self, z: Tensor, x: Tensor | None = None) -> Tensor:
        """(B, latent_dim) -> (B, input_dim). `x` only for teacher forcing."""

    def task_head(self, task_input: Any) -> Tensor | None:
        """Auxiliary output fused into the loss (prediction, logits); None if the kind has none."""
        return None

    def task_loss(self, batch: Batch, out: ModelOutput) -> Tensor:
        return out.reconstruction.new_zeros(())

    def encode(self, x: Tensor) -> Latent:
        features, _ = self.trunk(x)
        return self.latent_head(features)

    def forward(self, batch: Batch) -> ModelOutput:
        x = batch["x"]
        features, task_input = self.trunk(x)
        latent = self.latent_head(features)
        return ModelOutput(latent, self.decode(latent.z, x), self.task_head(task_input))

    def loss(self, batch: Batch, out: ModelOutput, kl_weight: float = 1.0) -> dict[str, Tensor]:
        """total = recon + task_weight * task + kl_weight * beta * kl (means over the batch).

        `recon` is a mean over input elements, so `kl` is divided by the input size too:
        with beta = 1 the two stay in the ELBO's proportion whatever the window length.
        """
        recon = self.reconstruction_loss(batch, out)
        task = self.task_loss(batch, out)
        kl = kl_divergence(out.latent).mean() / self.spec.input_dim
        total = recon + self.cfg.task_weight * task + kl_weight * self.cfg.beta * kl
        return {"total": total, "recon": recon, "task": task, "kl": kl}

    def reconstruction_loss(self, batch: Batch, out: ModelOutput) -> Tensor:
        """Mean over the batch; MSE for real-valued inputs (token models use cross-entropy)."""
        return F.mse_loss(out.reconstruction.float(), batch["x"].float())

    def output_reconstruction(self, batch: Batch, out: ModelOutput) -> Tensor:
        """What inference writes as `reconstruction`, (B, input_dim) in the input's units."""
        return out.reconstruction

    @property
    def predicted_classes(self) -> int:
        """Classes a classifier head predicts (inference writes `predicted_class`); 0 = no head.

        The data can carry class labels that a family ignores (dense on images), so the
        output columns follow the model, not the data."""
        return 0

    def extra_outputs(self, out: ModelOutput) -> dict[str, Tensor]:
        """Per-row columns beyond latent/reconstruction/score for inference (e.g. predicted class)."""
        return {}

    @torch.no_grad()
    def score(self, batch: Batch, out: ModelOutput) -> Tensor:
        """Per-row reconstruction error (model.score): the anomaly score, higher = more anomalous."""
        return reconstruction_error(batch["x"], out.reconstruction, self.cfg.score,
                                    self.spec.input_shape, self.cfg.score_band)

    @torch.no_grad()
    def step_scores(self, batch: Batch, out: ModelOutput) -> Tensor | None:
        """(B, window) error of each time step of each window under model.score (its mean
        over the steps is `score`), written for series scored per step (spec.timeline) and
        aggregated into the timeline; None for other data."""
        if not self.spec.timeline:
            return None
        return step_errors(batch["x"], out.reconstruction, self.spec.input_shape, self.cfg.score,
                           self.cfg.score_band)
