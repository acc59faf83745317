"""DVC stage `evaluate`: see seqmodels.stages.evaluate."""

import sys

from seqmodels.stages import evaluate
from seqmodels.stages.runner import run_stage

if __name__ == "__main__":
    raise SystemExit(run_stage("evaluate", evaluate.run, sys.argv[1:]))
