"""DVC stage `infer`: see seqmodels.stages.infer."""

import sys

from seqmodels.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["infer", *sys.argv[1:]]))
