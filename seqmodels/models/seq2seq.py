"""Sequence-to-sequence fused autoencoder over token ids (characters of words, say).

Embedding -> GRU/LSTM encoder (packed by length, so padding never reaches the latent) ->
latent -> decoder RNN fed the latent at every step plus the previous token: teacher
forcing while training and for scoring, greedy decoding for the written reconstruction.
The reconstruction loss is cross-entropy over real tokens (EOS included, padding masked);
the anomaly score is each sequence's mean cross-entropy per token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from seqmodels.models.base import FusedAutoencoder
from seqmodels.models.config import ModelConfig
from seqmodels.models.outputs import Batch, ModelOutput
from seqmodels.spec import BOS, EOS, PAD, DataSpec

_CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


def sequence_lengths(tokens: Tensor) -> Tensor:
    """Tokens up to and including the first EOS (the full width when there is none)."""
    is_eos = tokens == EOS
    first = is_eos.int().argmax(dim=1)
    return torch.where(is_eos.any(dim=1), first + 1, torch.full_like(first, tokens.shape[1]))


def real_token_mask(tokens: Tensor) -> Tensor:
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    return positions.unsqueeze(0) < sequence_lengths(tokens).unsqueeze(1)


class Seq2SeqAutoencoder(FusedAutoencoder):
    modalities = frozenset({"tokens"})

    def __init__(self, cfg: ModelConfig, spec: DataSpec):
        directions = 2 if cfg.bidirectional else 1
        super().__init__(cfg, spec, trunk_features=cfg.hidden_size * directions)
        cell = _CELLS[cfg.cell]
        embedding_dim = cfg.hidden_size
        self.embed = nn.Embedding(spec.vocab_size, embedding_dim, padding_idx=PAD)
        dropout = cfg.dropout if cfg.num_layers > 1 else 0.0
        self.encoder = cell(embedding_dim, cfg.hidden_size, cfg.num_layers, batch_first=True,
                            dropout=dropout, bidirectional=cfg.bidirectional)
        self.to_initial_state = nn.Linear(cfg.latent_dim, cfg.num_layers * cfg.hidden_size)
        self.decoder = cell(embedding_dim + cfg.latent_dim, cfg.hidden_size, cfg.num_layers,
                            batch_first=True, dropout=dropout)
        self.to_logits = nn.Linear(cfg.hidden_size, spec.vocab_size)

    def trunk(self, x: Tensor) -> tuple[Tensor, None]:
        packed = pack_padded_sequence(self.embed(x), sequence_lengths(x).cpu(), batch_first=True,
                                      enforce_sorted=False)
        _, state = self.encoder(packed)
        hidden = state[0] if isinstance(state, tuple) else state
        directions = 2 if self.cfg.bidirectional else 1
        return hidden[-directions:].transpose(0, 1).reshape(x.shape[0], -1), None

    def _initial_state(self, z: Tensor):
        h0 = torch.tanh(self.to_initial_state(z)).view(z.shape[0], self.cfg.num_layers, -1)
        h0 = h0.transpose(0, 1).contiguous()
        return (h0, torch.zeros_like(h0)) if self.cfg.cell == "lstm" else h0

    def _step_inputs(self, previous: Tensor, z: Tensor) -> Tensor:
        embedded = self.embed(previous)
        return torch.cat([embedded, z.unsqueeze(1).expand(-1, previous.shape[1], -1)], dim=2)

    def decode(self, z: Tensor, x: Tensor | None = None) -> Tensor:
        """Teacher-forced logits (B, L, vocab) given the target `x`; greedy ids without it."""
        if x is None:
            return self.greedy_decode(z)
        previous = torch.cat([torch.full_like(x[:, :1], BOS), x[:, :-1]], dim=1)
        outputs, _ = self.decoder(self._step_inputs(previous, z), self._initial_state(z))
        return self.to_logits(outputs)

    @torch.no_grad()
    def greedy_decode(self, z: Tensor) -> Tensor:
        state = self._initial_state(z)
        token = torch.full((z.shape[0], 1), BOS, dtype=torch.long, device=z.device)
        finished = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
        decoded = []
        for _ in range(self.spec.input_dim):
            output, state = self.decoder(self._step_inputs(token, z), state)
            token = self.to_logits(output).argmax(dim=2)
            decoded.append(torch.where(finished.unsqueeze(1), torch.full_like(token, PAD), token))
            finished |= token.squeeze(1) == EOS
        return torch.cat(decoded, dim=1)

    def _token_losses(self, batch: Batch, out: ModelOutput) -> tuple[Tensor, Tensor]:
        tokens = batch["x"].long()
        losses = F.cross_entropy(out.reconstruction.float().transpose(1, 2), tokens, reduction="none")
        mask = real_token_mask(tokens).float()
        return losses * mask, mask

    def reconstruction_loss(self, batch: Batch, out: ModelOutput) -> Tensor:
        losses, mask = self._token_losses(batch, out)
        return losses.sum() / mask.sum().clamp(min=1.0)

    @torch.no_grad()
    def score(self, batch: Batch, out: ModelOutput) -> Tensor:
        losses, mask = self._token_losses(batch, out)
        return losses.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def output_reconstruction(self, batch: Batch, out: ModelOutput) -> Tensor:
        return self.greedy_decode(out.latent.code)
