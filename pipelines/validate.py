"""DVC stage `validate`: see seqmodels.stages.validate."""

import sys

from seqmodels.stages import validate
from seqmodels.stages.runner import run_stage

if __name__ == "__main__":
    raise SystemExit(run_stage("validate", validate.run, sys.argv[1:]))
