"""DVC stage `prepare`: see seqmodels.stages.prepare."""

import sys

from seqmodels.stages import prepare
from seqmodels.stages.runner import run_stage

if __name__ == "__main__":
    raise SystemExit(run_stage("prepare", prepare.run, sys.argv[1:]))
