"""data.kind -> modality: the one list of data types.

A modality module defines its sources, tables and preparation and imports nothing from
here; its line below is what makes it a `data.kind` (with the DataConfig.kind Literal,
which a test keeps equal to these keys).
"""

from __future__ import annotations

from seqmodels.data import images, series, tabular, tokens
from seqmodels.data.modality import Modality
from seqmodels.errors import ConfigError

MODALITIES: dict[str, Modality] = {
    "series": series.MODALITY,
    "images": images.MODALITY,
    "tabular": tabular.MODALITY,
    "tokens": tokens.MODALITY,
}


def modality(kind: str) -> Modality:
    """The modality of `kind` (data.kind, or the kind a saved DataSpec names)."""
    if kind not in MODALITIES:
        raise ConfigError(f"unknown data kind {kind!r}", where="params.yaml: data.kind",
                          fix=f"choose one of {sorted(MODALITIES)}")
    return MODALITIES[kind]
