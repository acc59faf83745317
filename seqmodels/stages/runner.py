"""Running one stage from a command line: the pipelines/ entry points and the `seqmodels`
console script share these, so `--params` / `--set` and the error policy are defined once.

Kept light on purpose: a stage's DVC deps are the code its entry point imports, and this
module is part of every stage's.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import sys
from collections.abc import Callable, Sequence

from seqmodels.config import Config, load_config
from seqmodels.console import guarded


def add_stage_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter, e.g. --set train.epochs=3 (repeatable)")


def run_stage(name: str, run: Callable[[Config], None], argv: Sequence[str] = ()) -> int:
    """A pipelines/ entry point: parse `--params` / `--set`, then `run_with_params`."""
    parser = argparse.ArgumentParser(prog=f"seqmodels {name}", description=f"run the {name} stage")
    add_stage_arguments(parser)
    args = parser.parse_args(list(argv))
    return run_with_params(name, run, args.params, args.overrides)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
LARGE_ALLOCATION = 1 << 20


def release_large_allocations() -> None:
    """Allocations of 1 MiB and more (a batch's numpy arrays, Arrow buffers) get pages of their
    own from the OS and give them back when freed. glibc's default raises that threshold each
    time such a block is freed (up to 32 MiB), and the blocks of a stage that makes a 13 MiB
    array per batch then stay in its heap once freed: evaluate at 10M rows held 1,071 MiB
    after its PCA scores with the default, 677 MiB without it (as after malloc_trim). This is
    the stage's own process: Ray's workers get runtime.WORKER_MALLOC from the raylet (a fixed
    32 MiB threshold, for their per-batch tensors' speed). A MALLOC_MMAP_THRESHOLD_ set by the
    user wins; elsewhere than glibc this does nothing."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, LARGE_ALLOCATION)


def run_with_params(name: str, run: Callable[[Config], None], params: str, overrides: Sequence[str]) -> int:
    """Load params once, run the stage, and leave no Ray behind whatever happened."""
    release_large_allocations()
    try:
        return guarded(name, lambda: run(load_config(params, list(overrides))))
    finally:
        ray = sys.modules.get("ray")  # imported only by the stages that use it
        if ray is not None and ray.is_initialized():
            ray.shutdown()
