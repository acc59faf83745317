"""The modality registry is the one list of data kinds: params, sources and the prepared
tables agree with it, and an unknown kind is a clear ConfigError."""

from __future__ import annotations

from typing import get_args

import pytest

from seqmodels.data.config import DataConfig
from seqmodels.data.registry import MODALITIES, modality
from seqmodels.errors import ConfigError
from seqmodels.spec import ID_COLUMNS


def test_data_kind_accepts_exactly_the_registered_modalities():
    assert get_args(DataConfig.model_fields["kind"].annotation) == tuple(MODALITIES)


@pytest.mark.parametrize("kind", list(MODALITIES))
def test_the_source_description_names_the_bundled_sources_of_each_modality(kind):
    description = DataConfig.model_fields["source"].description
    assert MODALITIES[kind].sources
    assert f"{kind}: {', '.join(MODALITIES[kind].sources)}" in description


@pytest.mark.parametrize("kind", list(MODALITIES))
def test_each_modality_is_registered_under_its_kind_with_its_id_column_first(kind):
    entry = MODALITIES[kind]
    assert entry.kind == kind and entry.id_column == ID_COLUMNS[kind]
    columns = entry.table.to_schema().columns
    assert next(iter(columns)) == ID_COLUMNS[kind] and columns[ID_COLUMNS[kind]].unique
    assert {"split", "x"} <= set(columns)


def test_an_unknown_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown data kind 'audio'") as caught:
        modality("audio")
    assert "series" in caught.value.fix
