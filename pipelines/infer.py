"""DVC stage `infer`: see seqmodels.stages.infer."""

import sys

from seqmodels.stages import infer
from seqmodels.stages.runner import run_stage

if __name__ == "__main__":
    raise SystemExit(run_stage("infer", infer.run, sys.argv[1:]))
