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


def build_model(cfg: ModelConfig, spec: DataSpec) -> FusedAutoencoder:
    _load_families()
    builder = _BUILDERS[cfg.kind]
    supported = getattr(builder, "modalities", None)
    if supported is not None and spec.kind not in supported:
        from seqmodels.errors import ConfigError

        raise ConfigError(f"model.kind={cfg.kind!r} cannot model data.kind={spec.kind!r}",
                          where="params.yaml: model.kind / data.kind",
                          fix=f"for {spec.kind} data use one of "
                          f"{sorted(k for k, b in _BUILDERS.items() if spec.kind in b.modalities)}")
    if cfg.score == "dtw" and spec.kind != "series":
        from seqmodels.errors import ConfigError

        raise ConfigError(f"model.score='dtw' warps time, and data.kind={spec.kind!r} has no time axis",
                          where="params.yaml: model.score", fix="set model.score: mse")
    return builder(cfg, spec)
