"""prepare's and validate's reads as Ray Data jobs: the ordered map of seqmodels.data.pieces,
each item one Ray Data task (a piece of a file, or a group of whole series), on whichever
node has a free CPU, results back in the items' order.

Only the reads move: a task reads its own rows from the source (a path every node sees, or
s3://), and what comes back is what the stage merges or writes: a piece's findings, or a
group's rows and windows, streamed back as the tasks finish under Ray Data's memory cap, so
the driver never holds more than a few groups. The driver keeps what must see the whole
table in order: merging, numbering windows, writing the files. On one machine a local Ray
runs the same tasks, on as many CPUs as the machine has.

Whether a stage uses Ray at all (ray.spread_reads): by default on a cluster only, and only for
input every node can read (s3://...; `always` for a path shared otherwise, e.g. NFS). On one
2-core machine a local Ray lost to the one-process map (10M rows: prepare 29.6 s and
1,835 MiB against 23.6 s and 546 MiB; docs/performance.md): its tasks, its daemons and the
driver that writes share the same two cores, and Ray's start and results' transfer are
pure cost there.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from seqmodels.config import RayConfig
from seqmodels.data.pieces import Mapper, serial_map
from seqmodels.distributed.runtime import DataSettings, data_settings, init_ray, logged_progress
from seqmodels.errors import SeqmodelsError
from seqmodels.storage import is_uri

Item = TypeVar("Item")
Result = TypeVar("Result")


class RayDataMapper:
    """A Mapper whose items run as Ray Data tasks; records the nodes its tasks ran on."""

    def __init__(self, cfg: RayConfig) -> None:
        self.cfg = cfg
        self.tasks = 0
        self.nodes: set[str] = set()

    def __call__(self, fn: Callable[[Item], Result], items: Sequence[Item], name: str) -> Iterator[Result]:
        import ray
        from ray import cloudpickle  # a result may hold local functions (a schema's checks)

        init_ray(self.cfg, dashboard=False)
        work = ray.put((fn, list(items)))

        def run_item(row: dict[str, Any]) -> dict[str, Any]:
            task_fn, task_items = ray.get(work)
            try:
                result, failed = task_fn(task_items[row["index"]]), False
            except SeqmodelsError as error:  # the user's to read: comes back as a result, not as Ray's error
                result, failed = error, True
            return {"index": row["index"], "node": ray.get_runtime_context().get_node_id(),
                    "result": cloudpickle.dumps(result), "failed": failed}

        run_item.__name__ = name.replace(" ", "_")  # names the operator in Ray's task list
        local = not self.cfg.resolved_address
        settings = DataSettings(log_level=self.cfg.log_level, datasource_v2=False,
                                cpu_limit=float(os.cpu_count() or 1) if local else None,
                                memory_limit_mb=self.cfg.data_memory_limit_mb)
        with data_settings(settings):
            dataset = ray.data.from_items([{"index": i} for i in range(len(items))],
                                          override_num_blocks=len(items))
            mapped = logged_progress(dataset.map(run_item, num_cpus=1))
            for expected, row in enumerate(mapped.iter_rows()):
                assert row["index"] == expected, "Ray Data returned the items out of order"
                self.tasks += 1
                self.nodes.add(row["node"])
                result = cloudpickle.loads(row["result"])
                if row["failed"]:
                    raise result
                yield result

    def summary(self) -> str:
        return f"{self.tasks} Ray Data tasks on {len(self.nodes)} node(s)"


@contextlib.contextmanager
def stage_mapper(cfg: RayConfig, inputs: Sequence[str]) -> Iterator[Mapper]:
    """The mapper of prepare's or validate's reads of `inputs`, as ray.spread_reads says:
    `auto` spreads them on a cluster when every node can read them (URIs such as s3://; a
    path of this machine is not on the others, unless the user says so with `always`). A
    RayDataMapper that ran tasks says so in the stage's output."""
    shared = all(is_uri(location) for location in inputs)
    if cfg.spread_reads == "never" or (cfg.spread_reads == "auto" and not (cfg.resolved_address and shared)):
        yield serial_map
        return
    mapper = RayDataMapper(cfg)
    yield mapper
    if mapper.tasks:
        print(f"read with {mapper.summary()}")
