"""DVC stage `evaluate`: see seqmodels.stages.evaluate."""

import sys

from seqmodels.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["evaluate", *sys.argv[1:]]))
