"""DVC stage `validate`: see seqmodels.stages.validate."""

import sys

from seqmodels.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["validate", *sys.argv[1:]]))
