"""Dense fused autoencoder: an MLP over the flattened input (no task head)."""

from __future__ import annotations

import itertools

from torch import Tensor, nn

from seqmodels.models.base import FusedAutoencoder
from seqmodels.models.config import ModelConfig
from seqmodels.spec import DataSpec


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DenseAutoencoder(FusedAutoencoder):
    def __init__(self, cfg: ModelConfig, spec: DataSpec):
        super().__init__(cfg, spec, trunk_features=cfg.hidden_size)
        hidden = [cfg.hidden_size] * cfg.num_layers
        self.encoder = nn.Sequential(_mlp([spec.input_dim, *hidden]), nn.ReLU())
        self.decoder = _mlp([cfg.latent_dim, *hidden[::-1], spec.input_dim])

    def trunk(self, x: Tensor) -> tuple[Tensor, None]:
        return self.encoder(x), None

    def decode(self, z: Tensor, x: Tensor | None = None) -> Tensor:
        return self.decoder(z)
