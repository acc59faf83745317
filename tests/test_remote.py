"""Consumers on other machines: a producer pushes versioned outputs to a DVC remote (a plain
folder, or S3 on moto's server), a fresh clone with an empty DVC cache reads any revision
through it, and each way that can fail is one message and exit 2.

The producers here are small DVC repositories with real Parquet outputs and a model
folder, so every case runs in seconds; the pipeline's own outputs go through the same path
in the end-to-end test (test_pipeline_e2e).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqmodels.errors import RemoteError
from seqmodels.versions import fetch_directory, iter_outputs, read_outputs

if TYPE_CHECKING:
    from tests.s3 import S3

pytest_plugins = ["tests.s3"]  # the moto server and the `s3` fixture
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def run(*args: str, cwd: Path, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=300,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def dvc(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "dvc", *args, cwd=cwd, **kwargs)


def seqmodels(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "seqmodels.cli", *args, cwd=cwd, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Producer:
    """A producer's checkout and, per committed revision, what it published."""

    root: Path
    revs: list[str] = field(default_factory=list)
    latents: list[pa.Table] = field(default_factory=list)
    models: list[dict[str, bytes]] = field(default_factory=list)

    def publish(self, seed: int, push: bool = True) -> str:
        """Write a new version of outputs/latents (two parts and a manifest) and
        models/latest, track and commit them, and push as `make repro` does."""
        rng = np.random.default_rng(seed)
        latents = self.root / "outputs/latents"
        latents.mkdir(parents=True, exist_ok=True)
        table = pa.table({"window_id": np.arange(40 + seed), "score": rng.random(40 + seed),
                          "latent": pa.FixedSizeListArray.from_arrays(rng.random(4 * (40 + seed)), 4)})
        for index, part in enumerate((table.slice(0, 20), table.slice(20))):
            pq.write_table(part, latents / f"part-{index}.parquet", row_group_size=10)
        (latents / "_manifest.json").write_text(f'{{"rows": {table.num_rows}, "seed": {seed}}}')
        model = self.root / "models/latest"
        model.mkdir(parents=True, exist_ok=True)
        files = {"model.pt": rng.bytes(2048), "model.json": f'{{"seed": {seed}}}'.encode()}
        for name, content in files.items():
            (model / name).write_bytes(content)
        dvc("add", "-q", "outputs/latents", "models/latest", cwd=self.root)
        run(*GIT, "add", "-A", cwd=self.root)
        run(*GIT, "commit", "-qm", f"publish {seed}", cwd=self.root)
        if push:
            pushed = seqmodels("push", cwd=self.root)
            assert "pushed" in pushed.stdout, pushed.stdout
        self.revs.append(run("git", "rev-parse", "HEAD", cwd=self.root).stdout.strip())
        self.latents.append(table)
        self.models.append(files)
        return self.revs[-1]


def make_producer(root: Path, remote_url: str | None) -> Producer:
    root.mkdir(parents=True)
    run("git", "init", "-q", cwd=root)
    dvc("init", "-q", cwd=root)
    if remote_url:  # the DVC way: the URL is committed, credentials come from the environment
        dvc("remote", "add", "-d", "storage", remote_url, cwd=root)
    run(*GIT, "add", "-A", cwd=root)
    run(*GIT, "commit", "-qm", "dvc init", cwd=root)
    return Producer(root)


def clone(producer: Producer, target: Path) -> Path:
    """A consumer's checkout on another machine: git only, an empty DVC cache."""
    run("git", "clone", "-q", str(producer.root), str(target), cwd=producer.root.parent)
    assert not (target / ".dvc/cache").exists()
    return target


def assert_reads_every_revision(producer: Producer, consumer: Path, tmp_path: Path) -> None:
    """Latents and model of each revision come back exactly as published, through the CLI
    and the Python API, and nothing fills the consumer's cache (only streamed files)."""
    for rev, latents, model in zip(producer.revs, producer.latents, producer.models, strict=True):
        target = tmp_path / f"latents-{rev[:8]}.parquet"
        read = seqmodels("outputs", "read", "--rev", rev, "--repo", str(consumer), "--to", str(target),
                         cwd=tmp_path)
        assert f"wrote {latents.num_rows} rows" in read.stdout
        assert pq.read_table(target).equals(latents)
        assert read_outputs(rev, repo=str(consumer), columns=["window_id", "score"]).equals(
            latents.select(["window_id", "score"]))
        folder = tmp_path / f"model-{rev[:8]}"
        assert fetch_directory("models/latest", folder, rev=rev, repo=str(consumer)) == rev
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == model
    assert not (consumer / ".dvc/cache").exists()


def test_a_fresh_clone_reads_two_revisions_through_a_local_folder_remote(tmp_path):
    producer = make_producer(tmp_path / "producer", str(tmp_path / "remote"))
    for seed in (1, 2):
        producer.publish(seed)
    assert any((tmp_path / "remote").rglob("*"))
    assert_reads_every_revision(producer, clone(producer, tmp_path / "consumer"), tmp_path)


def test_a_fresh_clone_reads_two_revisions_through_an_s3_remote(s3: S3, tmp_path):
    producer = make_producer(tmp_path / "producer", s3.uri("dvc"))
    for seed in (1, 2):
        producer.publish(seed)
    assert any(key.startswith("dvc/files/md5/") for key in s3.keys("dvc/"))
    assert "endpointurl" not in (producer.root / ".dvc/config").read_text()  # from the environment
    assert_reads_every_revision(producer, clone(producer, tmp_path / "consumer"), tmp_path)


def test_consumer_errors_are_one_message_and_exit_2(tmp_path):
    producer = make_producer(tmp_path / "producer", str(tmp_path / "remote"))
    pushed = producer.publish(1)
    unpushed = producer.publish(2, push=False)
    consumer = clone(producer, tmp_path / "consumer")

    def fails(*args: str) -> str:
        result = seqmodels("outputs", *args, cwd=consumer, check=False)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        return result.stderr

    assert "nor in DVC remote 'storage'" in fails("show", "--rev", unpushed)
    assert "does not exist" in fails("show", "--rev", "no-such-rev")
    untracked = fails("read", "--rev", pushed, "--path", "outputs/other")
    assert "outputs/other is not tracked at revision" in untracked
    assert seqmodels("outputs", "show", "--rev", pushed, cwd=consumer).returncode == 0


def test_a_clone_of_a_producer_without_a_remote_says_so_instead_of_a_traceback(tmp_path):
    producer = make_producer(tmp_path / "producer", None)
    rev = producer.publish(1, push=False)
    consumer = clone(producer, tmp_path / "consumer")
    result = seqmodels("outputs", "show", "--rev", rev, cwd=consumer, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no DVC remote is configured" in result.stderr and "--remote URL" in result.stderr
    # The producer pushes to a location it never committed; the consumer names it.
    dvc("remote", "add", "mirror", str(tmp_path / "mirror"), cwd=producer.root)
    dvc("push", "-q", "-r", "mirror", cwd=producer.root)
    shown = seqmodels("outputs", "show", "--rev", rev, "--remote", str(tmp_path / "mirror"), cwd=consumer)
    assert '"rows": 41' in shown.stdout


def test_an_unreachable_remote_and_refused_credentials_are_named(s3: S3, tmp_path, monkeypatch):
    import moto.settings

    producer = make_producer(tmp_path / "producer", s3.uri("dvc"))
    rev = producer.publish(1)
    consumer = clone(producer, tmp_path / "consumer")
    nowhere = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_MAX_ATTEMPTS": "1"}
    for result in (seqmodels("outputs", "read", "--rev", rev, "--repo", str(consumer), cwd=tmp_path,
                             env=nowhere, check=False),
                   seqmodels("push", cwd=producer.root, env=nowhere, check=False)):
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "cannot be reached" in result.stderr and "AWS_ENDPOINT_URL" in result.stderr

    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks the keys now
    producer.publish(2, push=False)
    for result in (seqmodels("outputs", "read", "--rev", rev, "--repo", str(consumer), cwd=tmp_path,
                             check=False),
                   seqmodels("push", cwd=producer.root, check=False)):
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "refused the credentials" in result.stderr and "AWS_ACCESS_KEY_ID" in result.stderr


def test_push_without_a_remote_fails_unless_asked_to_skip(tmp_path):
    producer = make_producer(tmp_path / "producer", None)
    producer.publish(1, push=False)
    refused = seqmodels("push", cwd=producer.root, check=False)
    assert refused.returncode == 2 and "no DVC remote is configured" in refused.stderr
    skipped = seqmodels("push", "--if-configured", cwd=producer.root)
    assert "outputs stay in this checkout's DVC cache" in skipped.stdout


def test_fetched_cluster_results_are_pushed_when_a_remote_is_set(tmp_path, monkeypatch):
    """`seqmodels submit` (fetch) commits the job's outputs and pushes them from the checkout."""
    from seqmodels.distributed import results, submit

    checkout = make_producer(tmp_path / "checkout", str(tmp_path / "remote")).root
    (checkout / "dvc.yaml").write_text("stages:\n  train:\n    cmd: 'true'\n"
                                       "    outs:\n      - models/latest\n")
    job = tmp_path / "job"
    (job / "models/latest").mkdir(parents=True)
    (job / "models/latest/model.pt").write_bytes(b"weights")
    results.upload(job, ["models/latest"], str(tmp_path / "store"), ["train"])
    monkeypatch.chdir(checkout)
    submit.fetch_from(str(tmp_path / "store"))
    assert (checkout / "dvc.lock").exists()
    assert "are in sync" in dvc("status", "--cloud", cwd=checkout).stdout
    assert sum(1 for p in (tmp_path / "remote").rglob("*") if p.is_file()) == 2  # the folder's .dir + file


def test_remote_error_is_raised_in_process_too(tmp_path):
    producer = make_producer(tmp_path / "producer", None)
    rev = producer.publish(1, push=False)
    consumer = clone(producer, tmp_path / "consumer")
    with pytest.raises(RemoteError, match="no DVC remote is configured"):
        read_outputs(rev, repo=str(consumer))


def test_outputs_stream_row_group_by_row_group_and_a_failed_copy_keeps_the_old_file(tmp_path):
    producer = make_producer(tmp_path / "producer", str(tmp_path / "remote"))
    rev = producer.publish(1)
    consumer = clone(producer, tmp_path / "consumer")
    groups = iter_outputs(rev, repo=str(consumer), columns=["score"])
    assert [table.num_rows for table in groups] == [10, 10, 10, 10, 1]  # two parts, row groups of 10
    target = tmp_path / "copy.parquet"
    target.write_bytes(b"the previous copy")
    bad = seqmodels("outputs", "read", "--rev", rev, "--repo", str(consumer), "--columns", "nope",
                    "--to", str(target), cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "cannot read columns ['nope']" in bad.stderr
    assert target.read_bytes() == b"the previous copy"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".copy")) == []
    head = seqmodels("outputs", "read", "--rev", rev, "--repo", str(consumer), "--head", "3", cwd=tmp_path)
    assert "(41 rows)" in head.stdout and len(head.stdout.strip().splitlines()) == 1 + 3 + 1
    none = seqmodels("outputs", "read", "--rev", rev, "--repo", str(consumer), "--head", "0", cwd=tmp_path)
    assert "(41 rows)" in none.stdout and "window_id" in none.stdout
