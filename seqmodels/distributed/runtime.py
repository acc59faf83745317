"""Starting or joining Ray with resources that cannot starve each other.

Locally, Ray gets an explicit logical CPU count (params: ray.num_cpus) rather than
"whatever the machine has", and Ray Data gets a CPU cap, so that training workers that
each hold one CPU still leave room for the Ray Data tasks feeding them. With RAY_ADDRESS
(or ray.address) set, the same code joins that cluster instead.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from seqmodels.config import RayConfig
from seqmodels.errors import SeqmodelsError

# In Ray worker processes glibc's malloc kept serving the ~0.1-10 MB tensors of each batch
# with fresh mmap/munmap calls (5x the page faults of the same loop in a plain process),
# which cost 15-20% of training speed. Fixed thresholds keep such buffers on the heap for
# reuse: measured 8,100 -> 10,000 samples/s for the same loop in a Ray task (plain: 10,100).
# Ray Train and Ray Data run the user's code in a thread, whose malloc arena is a separate
# mmap'd heap that the thresholds above do not keep: the plain inference loop ran 12%
# slower in a thread of a Ray actor (8.0-8.3 s vs 7.2 s for 300k windows) until one arena
# (MALLOC_ARENA_MAX=1) brought it back to 7.3 s.
# Arrow allocates from its own mimalloc pool, which gives freed pages back only on a later
# call into it: a worker that had run a Parquet read task then sat idle holding them (summed
# over the idle workers, 0.4-0.8 GB at the peak of a 10M-window inference). Purging on free
# returns them at once: that peak fell from 3.4 to 2.9 GB.
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(64 << 20),
                 "MALLOC_ARENA_MAX": "1", "MIMALLOC_PURGE_DELAY": "0"}


def init_ray(cfg: RayConfig) -> None:
    import ray

    if ray.is_initialized():
        configure_data_context(cfg)  # Ray Train may have swapped the execution options
        return
    address = cfg.resolved_address
    quiet = ray.LoggingConfig(log_level=cfg.log_level)
    env_vars = {"RAY_DATA_LOG_LEVEL": cfg.log_level,
                "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": str(cfg.train_poll_interval_s),
                **WORKER_MALLOC}
    for name, value in env_vars.items():
        os.environ.setdefault(name, value)  # the local raylet, its workers and the controller inherit these
    try:
        if address:
            # A cluster's workers do not inherit this process's environment: the job's
            # runtime_env carries it to them.
            ray.init(address=address, logging_level=cfg.log_level, logging_config=quiet,
                     runtime_env={"env_vars": env_vars})
        else:
            # No job runtime_env here: the raylet's pre-started idle workers were started
            # without one, and Ray gives a task or actor only a worker of the same runtime
            # env, so with one every task and actor waited for a new worker process
            # (measured on a warm local Ray: an empty actor ready in 1.9-2.5 s, 0.35-1.1 s
            # without). The workers get the variables above through the raylet's environment.
            # The dashboard process serves the state API that Ray Train's placement-group
            # cleaner polls; bound to loopback only.
            store = cfg.object_store_mb * 2**20 if cfg.object_store_mb is not None else None
            ray.init(num_cpus=cfg.num_cpus, object_store_memory=store,
                     include_dashboard=True, dashboard_host="127.0.0.1",
                     logging_level=cfg.log_level, logging_config=quiet)
    except ConnectionError as error:
        raise SeqmodelsError(f"cannot connect to Ray at {address}: {error}",
                             where="RAY_ADDRESS / ray.address",
                             fix="check the address, or unset it to run on a local Ray") from None
    configure_data_context(cfg)


def configure_data_context(cfg: RayConfig) -> None:
    """Ordered, CPU- and memory-capped Ray Data execution; called before every pipeline is built."""
    from ray.data import DataContext, ExecutionResources

    logging.getLogger("ray.data").setLevel(cfg.log_level)  # the driver's logger may predate the env
    context = DataContext.get_current()
    context.execution_options.preserve_order = True  # deterministic output order
    context.enable_progress_bars = sys.stderr.isatty()
    # Ray 2.60's default Parquet reader (datasource V2) lists files through a pool of 32
    # FooterReader actors started for every read: 7-12 s (up to 17 s) to read one
    # 10k-row file on 2 cores, 0.15 s of it CPU. Our reads are a few files whose footers
    # the driver reads in milliseconds, so the V1 reader does the same read in 0.26 s.
    # This was most of inference's fixed cost, and it hit every training ingest too.
    context.use_datasource_v2 = False
    memory = cfg.data_memory_limit_mb * 2**20 if cfg.data_memory_limit_mb is not None else None
    # for_limits: an omitted resource is unlimited (the plain constructor would make it 0,
    # e.g. no GPU at all for a GPU predictor).
    context.execution_options.resource_limits = ExecutionResources.for_limits(
        cpu=cfg.data_cpu_limit, object_store_memory=memory)


def ray_data_path(path: str | Path) -> str:
    """A path as Ray Data should get it.

    URIs (s3://, gs://, ...) pass through: every node reaches them. A plain local path is
    only on this (the driver's) node, so on a multi-node cluster it becomes `local://`,
    which pins the read or write tasks to this node; on one node nothing changes.
    """
    text = str(path)
    if "://" in text:
        return text
    absolute = str(Path(text).resolve())
    return f"local://{absolute}" if multi_node() else absolute


def multi_node() -> bool:
    """Whether this driver's Ray has more than one live node (Ray Client excluded: there
    the driver's files are on the client, where no task can run)."""
    import ray

    alive = [node for node in ray.nodes() if node.get("Alive")]
    return len(alive) > 1 and not ray.util.client.ray.is_connected()


def train_logging_config(cfg: RayConfig):
    import ray

    return ray.LoggingConfig(log_level=cfg.log_level)


def local_resources(cfg: RayConfig) -> tuple[float, float] | None:
    """(CPUs, GPUs) a local Ray started from `cfg` has, known before it starts so that
    impossible worker counts fail before Ray does; None when joining a cluster."""
    if cfg.resolved_address:
        return None
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return float(cfg.num_cpus or os.cpu_count() or 1), float(gpus)


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
