"""model.kind -> family class: the one list of model families.

A family module defines its FusedAutoencoder subclass and imports nothing from here; its
line below is what makes it a `model.kind`, so the registry never imports a module that
imports it back.
"""

from __future__ import annotations

from seqmodels.errors import ConfigError
from seqmodels.models.base import FusedAutoencoder
from seqmodels.models.config import ModelConfig
from seqmodels.models.conv import ConvAutoencoder
from seqmodels.models.dense import DenseAutoencoder
from seqmodels.models.recurrent import RecurrentAutoencoder
from seqmodels.models.seq2seq import Seq2SeqAutoencoder
from seqmodels.spec import DataSpec

FAMILIES: dict[str, type[FusedAutoencoder]] = {
    "conv": ConvAutoencoder,
    "dense": DenseAutoencoder,
    "recurrent": RecurrentAutoencoder,
    "seq2seq": Seq2SeqAutoencoder,
}


def model_kinds() -> list[str]:
    return sorted(FAMILIES)


def families_for(data_kind: str) -> list[str]:
    """The model kinds that can model `data_kind` data."""
    return sorted(kind for kind, family in FAMILIES.items() if data_kind in family.modalities)


def check_fits(cfg: ModelConfig, data_kind: str) -> None:
    """Refuse a model/data combination the project cannot train, naming the keys to change.

    Run by load_config (before any stage does work) and by build_model (a model folder or
    spec from elsewhere)."""
    if cfg.kind not in model_kinds():
        raise ConfigError(f"unknown model kind {cfg.kind!r}; choose one of {model_kinds()}",
                          where="params.yaml: model.kind",
                          fix=f"for {data_kind} data use one of {families_for(data_kind)}")
    if cfg.kind not in families_for(data_kind):
        raise ConfigError(f"model.kind={cfg.kind!r} cannot model data.kind={data_kind!r}",
                          where="params.yaml: model.kind / data.kind",
                          fix=f"for {data_kind} data use one of {families_for(data_kind)}")
    if cfg.score == "dtw" and data_kind != "series":
        raise ConfigError(f"model.score='dtw' warps time, and data.kind={data_kind!r} has no time axis",
                          where="params.yaml: model.score", fix="set model.score: mse")


def build_model(cfg: ModelConfig, spec: DataSpec) -> FusedAutoencoder:
    check_fits(cfg, spec.kind)
    return FAMILIES[cfg.kind](cfg, spec)
