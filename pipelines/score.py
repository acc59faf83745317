"""DVC stage `score` (foreach over score.batches): score@NAME runs `--batch NAME`, see
seqmodels.stages.score. `seqmodels score` runs the same stage with its own arguments."""

import argparse
import sys

from seqmodels.config import Config
from seqmodels.distributed.runtime import ray_starting
from seqmodels.stages.runner import add_stage_arguments, run_with_params


def score_batch(cfg: Config, batch: str) -> None:
    with ray_starting(cfg.ray):  # Ray starts while the detector loads and the batch is read
        from seqmodels.stages import score

        score.run(cfg, batch)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="seqmodels score", description="run the score stage")
    add_stage_arguments(parser)
    parser.add_argument("--batch", required=True, help="a score.batches name")
    args = parser.parse_args(sys.argv[1:])
    raise SystemExit(run_with_params("score", lambda cfg: score_batch(cfg, args.batch), args.params,
                                     args.overrides))
