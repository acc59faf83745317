"""Distributed training on a real local Ray: DDP equivalence, worker faults, killed stages."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from seqmodels.config import Config
from seqmodels.distributed.live import read_history
from seqmodels.distributed.runtime import shutdown_ray
from seqmodels.distributed.train import train_distributed
from seqmodels.stages import infer, prepare, train, validate
from tests.conftest import REPO, exported_vs_untrained_loss, write_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _ray_teardown():
    yield
    shutdown_ray()


def _with_train(cfg: Config, **train) -> Config:
    return cfg.model_copy(update={"train": cfg.train.model_copy(update=train)})


@pytest.fixture
def prepared(tiny: Config) -> Config:
    prepare.run(tiny)
    validate.run(tiny)
    return tiny


def _train_rows(cfg: Config) -> int:
    split = pq.read_table(f"{cfg.paths.prepared}/examples.parquet", columns=["split"]).column(0)
    return sum(1 for value in split.to_pylist() if value == "train")


def test_two_workers_follow_the_one_worker_loss_trajectory(prepared, tmp_path):
    """Full-batch steps: with DDP averaging, 2 workers x half the batch take exactly the
    step 1 worker takes on the whole batch. Without averaging each worker would step on
    its own half and the trajectories would part after the first update."""
    rows = _train_rows(prepared)
    assert rows % 2 == 0  # equal shards, so the mean of the two shard means is the full mean
    runs = {}
    for workers in (1, 2):
        cfg = _with_train(prepared, workers=workers, batch_size=rows, epochs=5, lr=0.05,
                          storage=str(tmp_path / f"runs-{workers}"))
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"kind": "dense"})})
        runs[workers] = [epoch["train_loss"] for epoch in train_distributed(cfg).history]
    one, two = np.array(runs[1]), np.array(runs[2])
    assert one[-1] < 0.8 * one[0]  # the weights really moved, so a mismatch would show
    # Tolerance: float32 sums in a different order, compounded over 5 steps.
    np.testing.assert_allclose(two, one, rtol=1e-4)


def test_a_worker_fault_mid_epoch_is_retried_from_the_last_checkpoint(prepared):
    cfg = _with_train(prepared, workers=2, batch_size=8, epochs=4, max_failures=1)
    assert _train_rows(cfg) // 2 > 4  # rank 1 gets more than one batch: the fault is mid-epoch

    def flaky_worker(loop_config):
        """Rank 1 raises on the second batch of epoch 3, on the first attempt only."""
        import ray.train

        from seqmodels import training
        from seqmodels.distributed.train import train_worker

        first_attempt = ray.train.get_checkpoint() is None
        if first_attempt and ray.train.get_context().get_world_rank() == 1:
            original = training.run_epoch

            def run_epoch(model, batches, *, epoch, optimizer=None, **kwargs):
                if optimizer is not None and epoch == 2:
                    def failing():
                        for step, batch in enumerate(batches):
                            if step == 1:
                                raise RuntimeError("injected worker fault")
                            yield batch
                    batches = failing()
                return original(model, batches, epoch=epoch, optimizer=optimizer, **kwargs)

            training.run_epoch = run_epoch
        train_worker(loop_config)

    outcome = train_distributed(cfg, loop_per_worker=flaky_worker)
    assert [int(epoch["epoch"]) for epoch in outcome.history] == [0, 1, 2, 3]
    assert outcome.resumed_at == [2]  # epochs 1-2 were checkpointed; the retry redid epoch 3


def _process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _kill_stage(process: subprocess.Popen) -> None:
    """SIGKILL a stage and every process it started, as a crashed machine or the OOM killer
    would. Everything is stopped first, and the tree listed again until it stops growing:
    Ray's raylet starts workers at any moment, and one started between listing and killing
    outlived a CI run (an orphaned ray::TrainController holding ~500 MB)."""
    stopped: dict[int, psutil.Process] = {}
    while new := [child for child in _process_tree(process.pid) if child.pid not in stopped]:
        for child in new:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.suspend()
            stopped[child.pid] = child
    for child in stopped.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    process.wait()
    psutil.wait_procs(list(stopped.values()), timeout=30)


def test_a_killed_train_stage_resumes_where_it_stopped(prepared, tmp_path):
    cfg = _with_train(prepared, workers=2, epochs=25, batch_size=8)
    params = write_params(cfg, tmp_path / "params.yaml")
    command = [sys.executable, str(REPO / "pipelines" / "train.py"), "--params", str(params)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    live_loss = Path(cfg.paths.train_live) / "plots" / "metrics" / "train_loss.tsv"

    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while not (live_loss.exists() and len(live_loss.read_text().splitlines()) > 3):
            assert first.poll() is None, "the train stage ended before it could be killed"
            assert time.monotonic() < deadline, "no epoch was logged within 240 s"
            time.sleep(0.2)
    finally:
        _kill_stage(first)  # Ray's local processes included
    logged_before_kill = read_history(cfg.paths.train_live)["epoch"].tolist()
    assert logged_before_kill[:3] == [1, 2, 3] and max(logged_before_kill) < 25
    assert not Path(cfg.paths.model).exists()  # nothing published by the killed run

    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stderr[-3000:]
    metrics = json.loads(Path(cfg.paths.train_metrics).read_text())
    assert metrics["epochs_run"] == 25
    [resumed_at] = metrics["resumed_at_epochs"]  # 1-based epoch the second run started with
    assert max(logged_before_kill) + 1 <= resumed_at <= 25
    assert read_history(cfg.paths.train_live)["epoch"].tolist() == list(range(1, 26))

    assert exported_vs_untrained_loss(cfg) < 0.9


def test_ctrl_c_exits_130_with_one_message_and_publishes_nothing(prepared, tmp_path):
    """SIGINT (Ctrl-C) on the stage exits 130 with a one-line message, nothing published."""
    cfg = _with_train(prepared, workers=2, epochs=200, batch_size=8)
    params = write_params(cfg, tmp_path / "params.yaml")
    command = [sys.executable, str(REPO / "pipelines" / "train.py"), "--params", str(params)]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    live_loss = Path(cfg.paths.train_live) / "plots" / "metrics" / "train_loss.tsv"
    deadline = time.monotonic() + 240
    while not live_loss.exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr
    assert not Path(cfg.paths.model).exists()


def test_a_killed_infer_stage_leaves_the_published_outputs_intact(prepared, tmp_path):
    train.run(_with_train(prepared, epochs=2))
    infer.run(prepared)
    published = Path(prepared.paths.outputs)
    before = {part.name: part.read_bytes() for part in published.iterdir()}
    reference = pq.read_table(published).sort_by("window_id")

    params = write_params(prepared, tmp_path / "params.yaml")
    command = [sys.executable, str(REPO / "pipelines" / "infer.py"), "--params", str(params)]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(published.parent.glob(f".{published.name}.staging-*")):
        assert process.poll() is None and time.monotonic() < deadline, "infer never started writing"
        time.sleep(0.05)
    time.sleep(np.random.default_rng().uniform(0.0, 3.0))  # somewhere inside the Ray Data run
    _kill_stage(process)

    assert {part.name: part.read_bytes() for part in published.iterdir()} == before
    infer.run(prepared)  # the rerun clears the dead run's staging folder and completes
    assert not list(published.parent.glob(f".{published.name}.*-*"))
    assert pq.read_table(published).sort_by("window_id").equals(reference)
