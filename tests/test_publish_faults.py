"""Faults while publishing lose nothing: a full disk, an unwritable folder or a killed stage
leaves the previously published output byte-identical and no half-written files behind,
and the next run completes (issue 7)."""

from __future__ import annotations

import errno
import os
import pathlib
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from seqmodels.checkpoints import export_model, load_exported_model
from seqmodels.data.tables import read_spec
from seqmodels.errors import OutputError
from seqmodels.models.registry import build_model
from seqmodels.publish import hash_path, publishing, write_text_atomic
from seqmodels.stages import prepare, validate
from tests.conftest import REPO, make_series_table, write_params


def leftovers(directory: Path) -> list[str]:
    """Staging, retired or temporary files of an interrupted publish."""
    return sorted(p.name for p in directory.rglob(".*")
                  if "staging-" in p.name or "retired-" in p.name or p.name.endswith(".tmp"))


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def published_dir(tmp_path: Path) -> Path:
    target = tmp_path / "out"
    target.mkdir()
    (target / "good.txt").write_text("good")
    return target


def test_a_full_disk_while_staging_keeps_the_published_folder(published_dir):
    before = hash_path(published_dir)
    with pytest.raises(OutputError) as caught, publishing(published_dir) as staging:
        (staging / "part-0.parquet").write_bytes(b"half")
        no_space()
    message = caught.value.message
    assert f"cannot write {published_dir}: disk full" in message and "free space" in message
    assert hash_path(published_dir) == before
    assert leftovers(published_dir.parent) == []


def test_a_full_disk_in_an_atomic_file_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    path.write_text('{"old": 1}')
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OutputError, match="disk full"):
        write_text_atomic(path, '{"new": 2}')
    assert path.read_text() == '{"old": 1}'
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_an_unwritable_output_folder_is_a_clear_error(tmp_path, published_dir, monkeypatch):
    before = hash_path(published_dir)
    if os.geteuid() == 0:  # root ignores permission bits: make mkdir fail as it would for a user
        real_mkdir = pathlib.Path.mkdir

        def mkdir(self, *args, **kwargs):
            if self.parent == tmp_path:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    else:
        tmp_path.chmod(0o500)
    try:
        with pytest.raises(OutputError) as caught, publishing(published_dir):
            pytest.fail("the body must not run without a staging folder")
    finally:
        tmp_path.chmod(0o755)
    assert "permission denied" in caught.value.message and f"make {tmp_path} writable" in caught.value.message
    assert hash_path(published_dir) == before
    assert leftovers(tmp_path) == []


def test_a_full_disk_while_exporting_the_model_keeps_the_previous_model(tiny, tmp_path, monkeypatch):
    prepare.run(tiny)
    spec = read_spec(tiny.paths.prepared)
    model_dir = Path(tiny.paths.model)
    export_model(model_dir, build_model(tiny.model, spec).state_dict(), tiny.model, spec)
    before = hash_path(model_dir)
    monkeypatch.setattr(pathlib.Path, "write_bytes", no_space)  # torch.save goes through it
    with pytest.raises(OutputError, match="disk full"), publishing(model_dir) as staging:
        export_model(staging, {k: v + 1 for k, v in build_model(tiny.model, spec).state_dict().items()},
                     tiny.model, spec)
    monkeypatch.undo()
    assert hash_path(model_dir) == before
    assert leftovers(model_dir.parent) == []
    load_exported_model(model_dir)  # still a complete, loadable model


def test_prepare_on_a_full_disk_exits_2_and_keeps_the_prepared_data(tiny, cli, tmp_path, monkeypatch):
    prepare.run(tiny)
    prepared = Path(tiny.paths.prepared)
    before = hash_path(prepared)
    monkeypatch.setattr(pq.ParquetWriter, "write_table", no_space)  # every Parquet write prepare makes
    code, stderr = cli("prepare", "--params", str(write_params(tiny, tmp_path / "params.yaml")),
                       "--set", "seed=1")
    assert code == 2 and "Traceback" not in stderr
    assert f"cannot write {prepared}: disk full" in stderr and "how to fix: free space" in stderr
    assert hash_path(prepared) == before
    assert leftovers(tmp_path) == []


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_real_write_failure_in_the_prepare_entry_point_loses_nothing(tiny, tmp_path):
    """A fresh interpreter whose files may not exceed 4 KiB (ulimit -f): the OS refuses the
    Parquet write itself, as it does on a full disk."""
    prepare.run(tiny)
    prepared = Path(tiny.paths.prepared)
    before = hash_path(prepared)
    params = write_params(tiny, tmp_path / "params.yaml")
    result = subprocess.run([sys.executable, str(REPO / "pipelines" / "prepare.py"), "--params", str(params),
                             "--set", "seed=1"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            preexec_fn=_limit_file_size(4096))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"cannot write {prepared}: file too large" in result.stderr and "ulimit -f" in result.stderr
    assert hash_path(prepared) == before
    assert leftovers(tmp_path) == []


def _big_series_csv(path: Path) -> None:
    """Enough rows that prepare spends a while reading, validating and writing."""
    make_series_table(n_series=200, length=200, anomalous=20, seed=1).to_csv(path, index=False)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["prepare", "validate"])
def test_a_stage_killed_at_a_random_point_keeps_its_outputs_and_reruns(stage, tiny, tmp_path):
    prepare.run(tiny)
    validate.run(tiny)
    big, probe = tmp_path / "big.csv", tmp_path / "probe"
    _big_series_csv(big)
    # The killed runs would publish the outputs of a bigger data set: a swap that happened
    # shows as the new version, and a mix of old and new as neither.
    if stage == "prepare":
        target, key, sets = Path(tiny.paths.prepared), "paths.prepared", [f"data.source={big}"]
    else:
        prepare.run(tiny.model_copy(update={
            "data": tiny.data.model_copy(update={"source": str(big)}),
            "paths": tiny.paths.model_copy(update={"prepared": str(probe / "prepared")})}))
        target, key = Path(tiny.paths.validation_report), "paths.validation_report"
        sets = [f"paths.prepared={probe / 'prepared'}"]
    params = write_params(tiny, tmp_path / "params.yaml")
    command = [sys.executable, str(REPO / "pipelines" / f"{stage}.py"), "--params", str(params),
               *[arg for item in sets for arg in ("--set", item)]]
    started = time.monotonic()
    subprocess.run([*command, "--set", f"{key}={probe / target.name}"], cwd=tmp_path, check=True,
                   capture_output=True, timeout=300)
    duration = time.monotonic() - started
    old, new = hash_path(target), hash_path(probe / target.name)
    assert old != new

    outcomes = []
    # Most of a run is interpreter start-up and imports; aim at the later part, where it writes.
    for delay in np.random.default_rng().uniform(0.5 * duration, 1.1 * duration, size=3):
        process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        state = hash_path(target)
        assert state in (old, new), f"killed after {delay:.2f} s of {duration:.2f} s: a mixed output"
        outcomes.append("old" if state == old else "new")
        if state == new:  # published before the kill came: put the old version back for the next try
            prepare.run(tiny) if stage == "prepare" else validate.run(tiny)
    rerun = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert hash_path(target) == new
    assert leftovers(tmp_path) == []
    print(f"{stage}: a full run took {duration:.2f} s; the killed runs left {outcomes}")
