"""DVC stage `train`: see seqmodels.stages.train."""

import sys

from seqmodels.stages import train
from seqmodels.stages.runner import run_stage

if __name__ == "__main__":
    raise SystemExit(run_stage("train", train.run, sys.argv[1:]))
