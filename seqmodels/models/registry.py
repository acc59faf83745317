"""model.kind -> builder (timm-style registry). New families register themselves here."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from seqmodels.config import ModelConfig
    from seqmodels.data.prepare import DataSpec
    from seqmodels.models.base import FusedAutoencoder

Builder = Callable[["ModelConfig", "DataSpec"], "FusedAutoencoder"]
_BUILDERS: dict[str, Builder] = {}


def register(kind: str) -> Callable[[Builder], Builder]:
    def add(builder: Builder) -> Builder:
        if kind in _BUILDERS:
            raise ValueError(f"model kind {kind!r} registered twice")
        _BUILDERS[kind] = builder
        return builder

    return add


def _load_families() -> None:
    # Importing the family modules runs their @register decorators.
    from seqmodels.models import conv, dense, recurrent, seq2seq  # noqa: F401


def model_kinds() -> list[str]:
    _load_families()
    return sorted(_BUILDERS)


def families_for(data_kind: str) -> list[str]:
    """The model kinds that can model `data_kind` data."""
    _load_families()
    return sorted(kind for kind, builder in _BUILDERS.items()
                  if data_kind in getattr(builder, "modalities", (data_kind,)))


def check_fits(cfg: ModelConfig, data_kind: str) -> None:
    """Refuse a model/data combination the project cannot train, naming the keys to change.

    Run by load_config (before any stage does work) and by build_model (a model folder or
    spec from elsewhere)."""
    from seqmodels.errors import ConfigError

    _load_families()
    if cfg.kind not in families_for(data_kind):
        raise ConfigError(f"model.kind={cfg.kind!r} cannot model data.kind={data_kind!r}",
                          where="params.yaml: model.kind / data.kind",
                          fix=f"for {data_kind} data use one of {families_for(data_kind)}")
    if cfg.score == "dtw" and data_kind != "series":
        raise ConfigError(f"model.score='dtw' warps time, and data.kind={data_kind!r} has no time axis",
                          where="params.yaml: model.score", fix="set model.score: mse")


def build_model(cfg: ModelConfig, spec: DataSpec) -> FusedAutoencoder:
    check_fits(cfg, spec.kind)
    return _BUILDERS[cfg.kind](cfg, spec)
