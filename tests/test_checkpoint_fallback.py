"""A damaged checkpoint costs the epochs since the one before it, not the run; a crafted
one is refused without running its code (issue 7)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from seqmodels.checkpoints import STATE_FILE, load_first_good, load_training_state, save_training_state
from seqmodels.errors import CheckpointError


def checkpoint(directory: Path, epoch: int) -> Path:
    directory.mkdir(parents=True)
    save_training_state(directory, {"model": {"w": torch.full((2,), float(epoch))},
                                    "fit": {"next_epoch": epoch}})
    return directory


def truncate(directory: Path) -> Path:
    state = directory / STATE_FILE
    state.write_bytes(state.read_bytes()[:200])
    return state


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_truncated_latest_checkpoint_falls_back_to_the_one_before_with_a_warning(tmp_path):
    older, latest = checkpoint(tmp_path / "c1", 1), checkpoint(tmp_path / "c2", 2)
    damaged = truncate(latest)
    warnings: list[str] = []
    state, chosen = load_first_good([latest, older], warnings.append)
    assert chosen == older and state["fit"]["next_epoch"] == 1
    [warning] = warnings
    assert f"cannot load checkpoint {damaged}" in warning and "trying the checkpoint before it" in warning


def test_when_every_checkpoint_is_unreadable_the_error_names_each_file(tmp_path):
    first, second = checkpoint(tmp_path / "c1", 1), checkpoint(tmp_path / "c2", 2)
    truncate(first)
    (second / STATE_FILE).unlink()
    with pytest.raises(CheckpointError) as caught:
        load_first_good([second, first], lambda _: None)
    message = caught.value.message
    assert "none of the 2 checkpoint(s) can be loaded" in message
    assert str(first / STATE_FILE) in message and str(second / STATE_FILE) in message
    assert "delete the run folder" in message


@pytest.mark.parametrize("container", ["torch.save", "raw pickle"])
def test_a_crafted_training_state_is_refused_and_runs_nothing(container, tmp_path):
    marker = tmp_path / "pwned"
    directory = tmp_path / "checkpoint_evil"
    directory.mkdir()
    if container == "torch.save":
        torch.save({"model": {"w": torch.zeros(2)}, "fit": Payload(marker)}, directory / STATE_FILE)
    else:  # protocol 2: what torch.load's weights-only unpickler reads op by op
        (directory / STATE_FILE).write_bytes(pickle.dumps({"fit": Payload(marker)}, protocol=2))
    with pytest.raises(CheckpointError) as caught:
        load_training_state(directory)
    assert f"refused to load {directory / STATE_FILE}" in caught.value.message
    assert "GLOBAL posix.system" in caught.value.message
    assert not marker.exists()
    # ... and a resume treats it like any other unreadable checkpoint.
    good = checkpoint(tmp_path / "checkpoint_good", 3)
    warnings: list[str] = []
    _, chosen = load_first_good([directory, good], warnings.append)
    assert chosen == good and "refused to load" in warnings[0]
    assert not marker.exists()


def test_ray_checkpoints_of_a_run_are_tried_newest_first(tmp_path):
    """The fallback order on Ray storage: Ray names checkpoints by timestamp."""
    from ray.train import Checkpoint

    from seqmodels.distributed.train import restore_state, run_checkpoints

    run = tmp_path / "runs" / "conv-abc"
    names = ["checkpoint_2026-01-01_10-00-00.000001", "checkpoint_2026-01-01_10-00-05.000002",
             "checkpoint_2026-01-01_10-00-09.000003"]
    for epoch, name in enumerate(names, start=1):
        checkpoint(run / name, epoch)
    (run / "checkpoint_manager_snapshot.json").write_text("{}")
    assert [Path(c.path).name for c in run_checkpoints(str(tmp_path / "runs"), "conv-abc")] == names[::-1]

    truncate(run / names[2])
    warnings: list[str] = []
    latest = Checkpoint.from_directory(str(run / names[2]))
    state = restore_state(latest, str(tmp_path / "runs"), "conv-abc", warnings.append)
    assert state["fit"]["next_epoch"] == 2
    assert str(run / names[2] / STATE_FILE) in warnings[0]


@pytest.mark.slow
def test_training_resumes_from_the_previous_checkpoint_when_the_latest_is_truncated(tiny, tmp_path):
    """Real Ray Train: a finished 2-epoch run whose latest checkpoint is then truncated. The
    rerun (same params, so the same run) resumes from the newest readable checkpoint and
    retrains the lost epoch."""
    from seqmodels.distributed.runtime import shutdown_ray
    from seqmodels.distributed.train import run_checkpoints, run_name, train_distributed
    from seqmodels.publish import hash_path
    from seqmodels.stages import prepare

    cfg = tiny.model_copy(update={"train": tiny.train.model_copy(update={"epochs": 2, "workers": 1})})
    prepare.run(cfg)
    try:
        first = train_distributed(cfg)
        assert [int(e["epoch"]) for e in first.history] == [0, 1] and first.resumed_at == []
        name = run_name(cfg, hash_path(Path(cfg.paths.prepared) / "examples.parquet"))
        kept = run_checkpoints(str(Path(cfg.train.storage).resolve()), name)
        assert len(kept) == 2  # checkpoints_to_keep=2
        fallback_epoch = load_training_state(kept[1].path)["fit"]["next_epoch"]
        truncate(Path(kept[0].path))

        second = train_distributed(cfg)
    finally:
        shutdown_ray()
    assert second.resumed_at == [fallback_epoch]
    assert [int(e["epoch"]) for e in second.history] == [0, 1]
    assert second.weights  # the best readable checkpoint's weights
