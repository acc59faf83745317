"""DVC stage `detector`: see seqmodels.stages.detector."""

import sys

from seqmodels.stages import detector
from seqmodels.stages.runner import run_stage

if __name__ == "__main__":
    raise SystemExit(run_stage("detector", detector.run, sys.argv[1:]))
