"""Cluster runs against a live two-node Ray on loopback: `ray start` head + second node,
token authentication on, jobs sent with `seqmodels submit` from a fresh copy of the project."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
import torch

from seqmodels.checkpoints import load_exported_model
from seqmodels.distributed.runtime import LOCAL_SYSTEM_CONFIG
from seqmodels.publish import hash_path
from seqmodels.storage import ENDPOINT_VARIABLES
from tests.conftest import copy_project

pytestmark = pytest.mark.slow
pytest_plugins = ["tests.s3"]  # the moto server and the `s3` fixture
BIN = Path(sys.executable).parent
# What each node has of S3: credentials of its own (as an instance role gives them) and no
# endpoint, which a job's driver forwards (runtime._join_cluster).
NODE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true"}


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class LiveCluster:
    gcs_address: str
    api_address: str
    token: str

    def env(self, with_token: bool = True) -> dict[str, str]:
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
            env.pop(name, None)
        if with_token:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token)
        return env


def _node_ports() -> list[str]:
    """Every port a node opens, chosen free: two nodes on one host (and any other Ray
    running here) must not collide, e.g. on the dashboard agent's default 52365."""
    names = ("node-manager-port", "object-manager-port", "metrics-export-port", "runtime-env-agent-port",
             "dashboard-agent-listen-port", "dashboard-agent-grpc-port")
    return [f"--{name}={port}" for name, port in zip(names, free_ports(len(names)), strict=True)]


def _stop(markers: list[str]) -> None:
    """Stop only this cluster's processes (not `ray stop`, which would stop every Ray here)."""
    mine = []
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if any(marker in command for marker in markers):
            mine.append(process)
    for process in mine:
        process.terminate()
    _, alive = psutil.wait_procs(mine, timeout=15)
    for process in alive:
        process.kill()


@pytest.fixture(scope="module")
def live_cluster() -> Iterator[LiveCluster]:
    token = secrets.token_hex(16)
    temp_dir = tempfile.mkdtemp(prefix="smray", dir="/tmp")  # short: Unix socket paths are limited
    gcs_port, dashboard_port, client_port = free_ports(3)
    cluster = LiveCluster(f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{dashboard_port}", token)
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=2", "--object-store-memory=300000000",
              "--disable-usage-stats", f"--temp-dir={temp_dir}"]
    head = [BIN / "ray", "start", "--head", f"--port={gcs_port}", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={client_port}",
            f"--system-config={json.dumps(LOCAL_SYSTEM_CONFIG)}", *common, *_node_ports()]
    second = [BIN / "ray", "start", f"--address={cluster.gcs_address}", *common, *_node_ports()]
    node_env = {name: value for name, value in cluster.env().items() if name not in ENDPOINT_VARIABLES}
    try:
        for command in (head, second):
            started = subprocess.run(command, env={**node_env, **NODE_AWS}, capture_output=True, text=True,
                                     timeout=300)
            log = started.stdout[-3000:] + started.stderr[-3000:]
            assert started.returncode == 0, f"{command[1:3]} failed:\n{log}"
        yield cluster
    finally:
        _stop([temp_dir, f":{gcs_port}"])


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("cluster") / "repo", train={"epochs": 4})


def seqmodels(*args: str, cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "seqmodels"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_train_job_spreads_workers_over_both_nodes_and_comes_home(live_cluster, project):
    result = seqmodels("submit", "train", "--address", live_cluster.api_address, "--no-pip",
                       "--set", "train.placement_strategy=SPREAD", cwd=project, env=live_cluster.env())
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert "SUCCEEDED" in result.stderr and "Running stage 'train'" in result.stdout

    train = json.loads((project / "metrics/train.json").read_text())
    assert train["workers"] == 2 and train["nodes_used"] == 2, train
    assert train["epochs_run"] == 4
    # The fetched model is usable here, without Ray: it reconstructs the training windows
    # better than chance and its outputs are finite.
    model, _, _ = load_exported_model(project / "models/trained")
    windows = pq.read_table(project / "data/prepared/examples.parquet").to_pandas()
    x = {"x": torch.from_numpy(np.stack(windows.loc[windows["split"] == "train", "x"]))}
    with torch.no_grad():
        out = model(x)
    assert torch.isfinite(out.reconstruction).all()
    # DVC now records the fetched outputs: prepare/validate/train are up to date here.
    status = subprocess.run([str(BIN / "dvc"), "status", "train"], cwd=project, capture_output=True,
                            text=True, env=live_cluster.env())
    assert "up to date" in status.stdout, status.stdout


def test_multi_node_inference_equals_single_node(live_cluster, project):
    if not (project / "models/trained").exists():
        pytest.skip("needs the model of the train job test")
    outputs = {}
    for name, address in (("single", None), ("cluster", live_cluster.gcs_address)):
        env = live_cluster.env(with_token=address is not None)
        if address:
            env["RAY_ADDRESS"] = address
        result = subprocess.run([sys.executable, "pipelines/infer.py", "--set", "infer.concurrency=2"],
                                cwd=project, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-4000:]
        table = pq.read_table(project / "outputs/latents").to_pandas()
        outputs[name] = table.sort_values("window_id").reset_index(drop=True)
    single, cluster = outputs["single"], outputs["cluster"]
    assert len(single) == len(cluster) > 0
    assert single["window_id"].tolist() == cluster["window_id"].tolist()
    np.testing.assert_array_equal(np.stack(single["latent"]), np.stack(cluster["latent"]))
    np.testing.assert_array_equal(single["score"].to_numpy(), cluster["score"].to_numpy())


def _md5s(folder: Path) -> dict[str, str]:
    import hashlib

    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_prepare_and_validate_spread_their_tasks_over_both_nodes_and_equal_one_node(live_cluster, project,
                                                                                     tmp_path):
    """prepare's and validate's reads as Ray Data tasks on the two-node cluster: they ran on
    both nodes, and every prepared file is byte-identical to a one-node Ray's. The file is
    a path both nodes read (one host); spread_reads=always says so."""
    import pyarrow as pa

    from tests.conftest import make_series_table

    source = tmp_path / "streams.parquet"
    pq.write_table(pa.Table.from_pandas(make_series_table(n_series=40, length=200), preserve_index=False),
                   source, row_group_size=250)
    settings = [f"data.source={source}", "data.piece_rows=500", "data.labels=points", "data.window=20",
                "data.stride=10", "ray.spread_reads=always"]
    prepared = {}
    for name, address in (("one node", None), ("cluster", live_cluster.gcs_address)):
        env = live_cluster.env(with_token=address is not None)
        if address:
            env["RAY_ADDRESS"] = address
        target = tmp_path / name.replace(" ", "-")
        stage_settings = [*settings, f"paths.prepared={target / 'prepared'}",
                          f"paths.validation_report={target / 'validation.json'}"]
        for stage in ("prepare", "validate"):
            result = subprocess.run([sys.executable, f"pipelines/{stage}.py",
                                     *(arg for value in stage_settings for arg in ("--set", value))],
                                    cwd=project, env=env, capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, result.stderr[-4000:]
            nodes = 2 if address else 1
            assert f"Ray Data tasks on {nodes} node(s)" in result.stdout, (stage, result.stdout)
        prepared[name] = _md5s(target / "prepared")
    assert prepared["cluster"] == prepared["one node"]
    written = set(prepared["cluster"])
    assert {"examples.parquet", "series.parquet", "heldout.parquet", "scaler.json"} <= written


def test_prepare_reads_an_s3_source_as_tasks_on_both_nodes_under_auto(live_cluster, project, s3):
    """ray.spread_reads=auto (the default) on a cluster: prepare's reads of an s3:// source
    are Ray Data tasks on both nodes, which reach the store through the endpoint the driver
    forwards (the nodes have credentials of their own and no endpoint), and the prepared
    files are byte-identical to one process's (auto off a cluster)."""
    import io

    import pyarrow as pa

    from tests.conftest import make_series_table

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(make_series_table(n_series=40, length=200), preserve_index=False),
                   buffer, row_group_size=250)
    source = s3.put("streams/streams.parquet", buffer.getvalue())
    settings = [f"data.source={source}", "data.piece_rows=500", "data.labels=points", "data.window=20",
                "data.stride=10"]
    prepared = {}
    for name, address in (("one process", None), ("cluster", live_cluster.gcs_address)):
        env = live_cluster.env(with_token=address is not None)
        if address:
            env["RAY_ADDRESS"] = address
        target = project.parent / f"s3-{name.replace(' ', '-')}"
        result = subprocess.run([sys.executable, "pipelines/prepare.py", "--set",
                                 f"paths.prepared={target / 'prepared'}",
                                 *(arg for value in settings for arg in ("--set", value))],
                                cwd=project, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-4000:]
        assert ("Ray Data tasks on 2 node(s)" in result.stdout) == bool(address), result.stdout
        prepared[name] = _md5s(target / "prepared")
    assert prepared["cluster"] == prepared["one process"]
    assert {"examples.parquet", "series.parquet", "heldout.parquet"} <= set(prepared["cluster"])


def test_failing_job_no_wait_logs_status_and_fetch(live_cluster, project):
    """A job that fails on the cluster (its data path does not exist there), sent with
    --no-wait and then followed: the job's exit status and error reach the user, and
    nothing in the checkout changes."""
    before = hash_path(project / "models") if (project / "models").exists() else None
    api = ["--address", live_cluster.api_address]
    submitted = seqmodels("submit", "prepare", *api, "--no-pip", "--no-wait",
                          "--set", "data.source=/nonexistent/series.csv", cwd=project, env=live_cluster.env())
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    job_id = submitted.stdout.split("submitted ", 1)[1].split()[0]

    followed = seqmodels("submit", "logs", job_id, "--follow", *api, cwd=project, env=live_cluster.env())
    output = followed.stdout + followed.stderr
    assert followed.returncode != 0, output[-4000:]
    assert "/nonexistent/series.csv" in output and f"job {job_id} FAILED" in followed.stderr
    assert "Traceback" not in output

    status = seqmodels("submit", "status", job_id, *api, cwd=project, env=live_cluster.env())
    assert status.returncode == 0 and f"{job_id}: FAILED (target prepare)" in status.stdout
    fetched = seqmodels("submit", "fetch", job_id, *api, cwd=project, env=live_cluster.env())
    assert fetched.returncode == 2 and "only a succeeded job has results" in fetched.stderr
    unknown = seqmodels("submit", "status", "no-such-job", *api, cwd=project, env=live_cluster.env())
    assert unknown.returncode == 2 and "no job no-such-job" in unknown.stderr
    after = hash_path(project / "models") if (project / "models").exists() else None
    assert before == after


def test_missing_token_and_unreachable_address_are_clear_errors(live_cluster, project):
    refused = seqmodels("submit", "train", "--address", live_cluster.api_address, "--no-pip",
                        cwd=project, env=live_cluster.env(with_token=False), timeout=120)
    assert refused.returncode == 2
    assert "refused this client" in refused.stderr and "RAY_AUTH_TOKEN" in refused.stderr
    (port,) = free_ports(1)
    unreachable = seqmodels("submit", "train", "--address", f"http://127.0.0.1:{port}", "--no-pip",
                            cwd=project, env=live_cluster.env(), timeout=120)
    assert unreachable.returncode == 2
    assert f"cannot reach a Ray job API at http://127.0.0.1:{port}" in unreachable.stderr
    assert "Traceback" not in refused.stderr + unreachable.stderr
