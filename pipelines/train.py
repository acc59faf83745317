"""DVC stage `train`: see seqmodels.stages.train."""

import sys

from seqmodels.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
