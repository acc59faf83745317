"""One module per DVC stage, each with `run(cfg)`: read the inputs named in Config.paths,
call the library, publish the outputs atomically.

The DVC entry points in pipelines/ and the `seqmodels` console script both run these, so
each stage has exactly one implementation. A stage module imports only what that stage
uses, and dvc.yaml lists exactly those files as the stage's deps (tests/test_layout.py
walks the imports to check it). This package's __init__ imports no stage, so that
importing one stage does not import the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from seqmodels.config import Config

# In pipeline order; each name is a module of this package, a pipelines/ entry point and a
# dvc.yaml stage (tests/test_layout.py checks the three agree).
STAGES = ("prepare", "validate", "train", "infer", "detector", "evaluate", "score")


def stage_runner(name: str) -> Callable[[Config], None]:
    """The `run` function of stage `name`, imported only when that stage runs."""
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    return importlib.import_module(f"{__name__}.{name}").run
