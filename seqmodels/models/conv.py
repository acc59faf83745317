"""Convolutional fused autoencoder: strided convolutions -> latent -> transposed
convolutions, 1-D over the time axis of series windows, 2-D over images, with an optional
classifier head on the latent code (fused loss adds task_weight * cross-entropy).

Each encoder layer halves every spatial size (kernel 3, stride 2, padding 1) and each
decoder layer doubles it exactly (kernel 4, stride 2, padding 1); the decoder output is
cropped back to the input size, so any window length or image size works.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from seqmodels.models.base import FusedAutoencoder
from seqmodels.models.config import ModelConfig
from seqmodels.models.outputs import Batch, ModelOutput
from seqmodels.spec import DataSpec

_LAYERS = {1: (nn.Conv1d, nn.ConvTranspose1d), 2: (nn.Conv2d, nn.ConvTranspose2d)}


def _channels_first(spec: DataSpec) -> tuple[int, tuple[int, ...]]:
    """(channels, spatial sizes): series windows are (time, features) -> features as channels."""
    if spec.kind == "series":
        return spec.n_features, (spec.window,)
    channels, *spatial = spec.input_shape
    return channels, tuple(spatial)


class ConvAutoencoder(FusedAutoencoder):
    modalities = frozenset({"series", "images"})

    def __init__(self, cfg: ModelConfig, spec: DataSpec):
        channels, spatial = _channels_first(spec)
        conv, deconv = _LAYERS[len(spatial)]
        widths = [cfg.hidden_size * 2**i for i in range(cfg.num_layers)]
        reduced = tuple(_halved(size, cfg.num_layers) for size in spatial)
        flat = widths[-1] * math.prod(reduced)
        super().__init__(cfg, spec, trunk_features=flat)
        self.channels, self.spatial, self.reduced = channels, spatial, reduced
        encoder: list[nn.Module] = []
        for n_in, n_out in zip([channels, *widths[:-1]], widths, strict=True):
            encoder += [conv(n_in, n_out, kernel_size=3, stride=2, padding=1), nn.GELU()]
        self.encoder = nn.Sequential(*encoder, nn.Flatten())
        self.from_latent = nn.Linear(cfg.latent_dim, flat)
        decoder: list[nn.Module] = []
        reversed_widths = widths[::-1]
        for i, (n_in, n_out) in enumerate(zip(reversed_widths, [*reversed_widths[1:], channels],
                                              strict=True)):
            decoder.append(deconv(n_in, n_out, kernel_size=4, stride=2, padding=1))
            if i < len(widths) - 1:
                decoder.append(nn.GELU())
        self.decoder = nn.Sequential(*decoder)
        self.classifier = nn.Linear(cfg.latent_dim, spec.n_classes) if spec.n_classes > 1 else None

    def _to_grid(self, x: Tensor) -> Tensor:
        if self.spec.kind == "series":
            return x.view(x.shape[0], self.spec.window, self.channels).transpose(1, 2)
        return x.view(x.shape[0], self.channels, *self.spatial)

    def _from_grid(self, grid: Tensor) -> Tensor:
        crop = grid[(..., *(slice(0, size) for size in self.spatial))]
        if self.spec.kind == "series":
            crop = crop.transpose(1, 2)
        return crop.reshape(grid.shape[0], self.spec.input_dim)

    def trunk(self, x: Tensor) -> tuple[Tensor, None]:
        return self.encoder(self._to_grid(x)), None

    def decode(self, z: Tensor, x: Tensor | None = None) -> Tensor:
        grid = self.from_latent(z).view(z.shape[0], -1, *self.reduced)
        return self._from_grid(self.decoder(F.gelu(grid)))

    def forward(self, batch: Batch) -> ModelOutput:
        out = super().forward(batch)
        if self.classifier is None:
            return out
        return out._replace(aux=self.classifier(out.latent.code))

    def task_loss(self, batch: Batch, out: ModelOutput) -> Tensor:
        if out.aux is None or "label" not in batch:
            return out.reconstruction.new_zeros(())
        return F.cross_entropy(out.aux.float(), batch["label"].long())

    @property
    def predicted_classes(self) -> int:
        return self.spec.n_classes if self.classifier is not None else 0

    def extra_outputs(self, out: ModelOutput) -> dict[str, Tensor]:
        return {} if out.aux is None else {"predicted_class": out.aux.argmax(dim=1)}


def _halved(size: int, times: int) -> int:
    for _ in range(times):
        size = (size + 1) // 2
    return size


