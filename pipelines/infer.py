"""DVC stage `infer`: see seqmodels.stages.infer."""

import sys

from seqmodels.config import Config
from seqmodels.distributed.runtime import ray_starting
from seqmodels.stages import infer
from seqmodels.stages.runner import run_stage


def infer_stage(cfg: Config) -> None:
    with ray_starting(cfg.ray):  # Ray starts while the model loads; infer.run lets it go before its checks
        infer.run(cfg)


if __name__ == "__main__":
    raise SystemExit(run_stage("infer", infer_stage, sys.argv[1:]))
