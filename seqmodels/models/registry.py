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
    from seqmodels.models import conv, dense, recurrent  # noqa: F401


def model_kinds() -> list[str]:
    _load_families()
    return sorted(_BUILDERS)


def build_model(cfg: ModelConfig, spec: DataSpec) -> FusedAutoencoder:
    _load_families()
    return _BUILDERS[cfg.kind](cfg, spec)
