"""DVC stage `score` (foreach over score.batches): score@NAME runs `--batch NAME`, see
seqmodels.stages.score. `seqmodels score` runs the same stage with its own arguments."""

import argparse
import sys

from seqmodels.stages import score
from seqmodels.stages.runner import add_stage_arguments, run_with_params

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="seqmodels score", description="run the score stage")
    add_stage_arguments(parser)
    parser.add_argument("--batch", required=True, help="a score.batches name")
    args = parser.parse_args(sys.argv[1:])
    raise SystemExit(run_with_params("score", lambda cfg: score.run(cfg, args.batch), args.params,
                                     args.overrides))
