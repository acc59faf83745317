"""What goes into a model (a Batch of named tensors) and what comes out (NamedTuples, so DDP
and torch.utils._pytree can traverse them)."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

# Named model inputs: "x" always, "label" for a classifier head.
Batch = dict[str, Tensor]


class Latent(NamedTuple):
    z: Tensor
    mu: Tensor | None = None
    logvar: Tensor | None = None

    @property
    def code(self) -> Tensor:
        """The deterministic latent code written by inference: the mean for VAEs."""
        return self.mu if self.mu is not None else self.z


class ModelOutput(NamedTuple):
    latent: Latent
    reconstruction: Tensor  # (B, input_dim), flattened like the stored input
    aux: Tensor | None = None  # task head output (next-step prediction, logits, ...)
