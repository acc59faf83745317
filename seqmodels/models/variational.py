"""Latent heads: the one place where "variational" differs from "plain".

Every family ends its encoder trunk in a feature vector and hands it to one of these
heads, so `model.variational: true` turns any kind into a VAE without a second copy of it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqmodels.models.outputs import Latent


class DeterministicHead(nn.Module):
    def __init__(self, in_features: int, latent_dim: int):
        super().__init__()
        self.project = nn.Linear(in_features, latent_dim)

    def forward(self, features: Tensor) -> Latent:
        return Latent(z=self.project(features))


class VariationalHead(nn.Module):
    """Gaussian posterior q(z|x) = N(mu, exp(logvar)); samples only while training.

    In eval mode z is the mean, so scores, reconstructions and written latents are
    deterministic.
    """

    def __init__(self, in_features: int, latent_dim: int):
        super().__init__()
        self.mu = nn.Linear(in_features, latent_dim)
        self.logvar = nn.Linear(in_features, latent_dim)

    def forward(self, features: Tensor) -> Latent:
        mu = self.mu(features)
        logvar = self.logvar(features).clamp(-10.0, 10.0)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return Latent(z=z, mu=mu, logvar=logvar)


def latent_head(in_features: int, latent_dim: int, variational: bool) -> nn.Module:
    head = VariationalHead if variational else DeterministicHead
    return head(in_features, latent_dim)


def kl_divergence(latent: Latent) -> Tensor:
    """KL(q(z|x) || N(0, I)) per row, summed over latent dimensions."""
    if latent.mu is None or latent.logvar is None:
        return latent.z.new_zeros(latent.z.shape[0])
    return -0.5 * torch.sum(1 + latent.logvar - latent.mu.pow(2) - latent.logvar.exp(), dim=1)
