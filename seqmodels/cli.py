"""`seqmodels` console script and the shared runner behind every pipelines/ entry point.

A stage run loads params once, runs, and turns a SeqmodelsError into one readable message
on stderr and a non-zero exit code (2 for user errors), so DVC stops the pipeline without
burying the cause in a stack trace.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from seqmodels.config import load_config
from seqmodels.errors import SeqmodelsError

STAGE_NAMES = ("prepare", "validate", "train", "infer", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqmodels", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in STAGE_NAMES:
        stage = commands.add_parser(name, help=f"run the {name} stage")
        stage.add_argument("--params", default="params.yaml", help="parameters file (default: %(default)s)")
        stage.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                           help="override a parameter, e.g. --set train.epochs=3 (repeatable)")
    return parser


def run_stage(name: str, params: str = "params.yaml", overrides: Sequence[str] = ()) -> int:
    from seqmodels.stages import STAGES

    try:
        cfg = load_config(params, list(overrides))
        STAGES[name](cfg)
    except SeqmodelsError as error:
        print(f"seqmodels {name}: error: {error.message}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"seqmodels {name}: interrupted; published outputs are unchanged", file=sys.stderr)
        return 130
    finally:
        if "ray" in sys.modules:
            from seqmodels.distributed.runtime import shutdown_ray

            shutdown_ray()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_stage(args.command, args.params, args.overrides)


if __name__ == "__main__":
    raise SystemExit(main())
