"""Recurrent fused autoencoder: GRU/LSTM encoder -> latent -> GRU/LSTM decoder that unrolls
the window, fused with a next-step prediction head on the encoder's hidden states.

`bidirectional: true` adds a second, independent encoder stack over the reversed window
(rather than PyTorch's bidirectional RNN, whose upper layers mix both directions): the
prediction head reads only the forward stack, so it can never see the step it predicts.

Two linear skip paths (window -> code inside the encoder, code -> window beside the
decoder) make a linear autoencoder, i.e. PCA, a special case of this model; the recurrent
parts learn what PCA cannot. On GunPoint this took test AUROC from 0.79 to 0.95 at
latent 8 (the recurrent path alone underfits 55 training series).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqmodels.models.base import FusedAutoencoder
from seqmodels.models.config import ModelConfig
from seqmodels.models.outputs import Batch, ModelOutput
from seqmodels.spec import DataSpec

_CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}
_CLOCK_FREQUENCIES = (1, 2, 4, 8)


def time_features(steps: int) -> Tensor:
    """(steps, 2 * len(freqs)) sin/cos clock over the window.

    A decoder fed only a constant latent must count steps in its hidden state to place
    features in time; giving it a clock makes long windows learnable in far fewer epochs.
    """
    phase = torch.arange(steps, dtype=torch.float32).unsqueeze(1) / max(steps, 1)
    angles = 2 * torch.pi * phase * torch.tensor(_CLOCK_FREQUENCIES, dtype=torch.float32)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def _last_layer(state: Tensor | tuple[Tensor, Tensor]) -> Tensor:
    """Top layer's final hidden state, (B, H), for GRU (h) and LSTM ((h, c)) states."""
    hidden = state[0] if isinstance(state, tuple) else state
    return hidden[-1]


class RecurrentAutoencoder(FusedAutoencoder):
    modalities = frozenset({"series"})

    def __init__(self, cfg: ModelConfig, spec: DataSpec):
        directions = 2 if cfg.bidirectional else 1
        super().__init__(cfg, spec, trunk_features=cfg.hidden_size * directions + cfg.latent_dim)
        cell = _CELLS[cfg.cell]
        dropout = cfg.dropout if cfg.num_layers > 1 else 0.0
        self.encoder = cell(spec.n_features, cfg.hidden_size, cfg.num_layers, batch_first=True,
                            dropout=dropout)
        self.reverse_encoder = (cell(spec.n_features, cfg.hidden_size, cfg.num_layers, batch_first=True,
                                     dropout=dropout) if cfg.bidirectional else None)
        self.to_initial_state = nn.Linear(cfg.latent_dim, cfg.num_layers * cfg.hidden_size)
        self.register_buffer("clock", time_features(spec.window), persistent=False)
        self.decoder = cell(cfg.latent_dim + self.clock.shape[1], cfg.hidden_size, cfg.num_layers,
                            batch_first=True,
                            dropout=dropout)
        self.to_output = nn.Linear(cfg.hidden_size, spec.n_features)
        # Linear path from code to window: the model can always do what PCA does, and the
        # recurrent decoder learns the non-linear remainder on top of it.
        self.linear_encoder = nn.Linear(spec.input_dim, cfg.latent_dim)
        self.linear_decoder = nn.Linear(cfg.latent_dim, spec.input_dim)
        self.predict_next = nn.Linear(cfg.hidden_size, spec.n_features)

    def _as_sequence(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], self.spec.window, self.spec.n_features)

    def trunk(self, x: Tensor) -> tuple[Tensor, Tensor]:
        sequence = self._as_sequence(x)
        outputs, state = self.encoder(sequence)
        summaries = [_last_layer(state), self.linear_encoder(x)]
        if self.reverse_encoder is not None:
            _, reverse_state = self.reverse_encoder(sequence.flip(1))
            summaries.insert(1, _last_layer(reverse_state))
        return torch.cat(summaries, dim=1), outputs[:, :-1]

    def task_head(self, task_input: Tensor) -> Tensor:
        return self.predict_next(task_input)

    def task_loss(self, batch: Batch, out: ModelOutput) -> Tensor:
        if out.aux is None or out.aux.shape[1] == 0:
            return out.reconstruction.new_zeros(())
        return F.mse_loss(out.aux.float(), self._as_sequence(batch["x"])[:, 1:].float())

    def decode(self, z: Tensor, x: Tensor | None = None) -> Tensor:
        batch = z.shape[0]
        h0 = torch.tanh(self.to_initial_state(z))
        h0 = h0.view(batch, self.cfg.num_layers, self.cfg.hidden_size).transpose(0, 1).contiguous()
        state = (h0, torch.zeros_like(h0)) if self.cfg.cell == "lstm" else h0
        steps = torch.cat([z.unsqueeze(1).expand(batch, self.spec.window, z.shape[1]),
                           self.clock.to(z.dtype).expand(batch, -1, -1)], dim=2)
        outputs, _ = self.decoder(steps, state)
        return self.to_output(outputs).reshape(batch, self.spec.input_dim) + self.linear_decoder(z)
