"""The base of every params.yaml section, shared by the sections defined beside their code
(models/config.py, data/config.py) and the rest in config.py."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Unknown keys fail (a typo such as `lattent_dim` must not train with a default), and a
    loaded config cannot change under the code that reads it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
