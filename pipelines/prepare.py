"""DVC stage `prepare`: see seqmodels.stages.prepare."""

import sys

from seqmodels.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["prepare", *sys.argv[1:]]))
