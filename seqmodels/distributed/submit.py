"""`seqmodels submit`: run pipeline stages on a Ray cluster as Ray jobs and bring the results home.

The client side of cluster runs. It checks params before anything leaves this machine,
talks to the cluster's job API (the dashboard port, 8265 by default) with Ray's
JobSubmissionClient, uploads the project (code and params; never .venv, caches, or
DVC-tracked data, which the job regenerates or reads from shared storage), follows the
job's logs and status, and on success swaps the stages' outputs into this checkout and
lets DVC cache them (see seqmodels.distributed.results), then pushes them to the DVC remote
when one is configured. The exit status is the job's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from seqmodels.config import load_config
from seqmodels.distributed.results import default_results_uri, download
from seqmodels.errors import ClusterError
from seqmodels.remote import push_report

RUNTIME_ENV_FILE = Path("cluster/runtime_env.yaml")
TARGET_KEY = "seqmodels_target"
RESULTS_KEY = "seqmodels_results"
POLL_SECONDS = 2.0
AGENT_WAIT_SECONDS = 60.0
# Ray is the cluster's own (its image or install), and so are the packaging tools (pip freeze
# leaves them out of constraints.txt); everything else the job imports is pinned.
NOT_SHIPPED = frozenset({"ray", "seqmodels", "pip", "setuptools", "wheel"})


def resolve_address(address: str | None) -> str:
    """--address, else RAY_API_SERVER_ADDRESS, else an http(s) RAY_ADDRESS (as `ray job submit`)."""
    candidates = [address, os.environ.get("RAY_API_SERVER_ADDRESS")]
    ray_address = os.environ.get("RAY_ADDRESS", "")
    if ray_address.startswith(("http://", "https://")):
        candidates.append(ray_address)
    for candidate in candidates:
        if not candidate:
            continue
        if candidate.startswith("ray://"):
            raise ClusterError(f"{candidate} is a Ray Client address; jobs go to the job API",
                               where="--address", fix="use http://HEAD:8265 (the dashboard port)")
        return candidate if "://" in candidate else f"http://{candidate}"
    raise ClusterError("no cluster address given", where="--address / RAY_API_SERVER_ADDRESS",
                       fix="pass --address http://HEAD:8265, e.g. after `ray dashboard "
                           "cluster/ray-cluster.yaml` forwards the port to 127.0.0.1:8265")


def connect(address: str):
    """A JobSubmissionClient for `address`, with errors a user can act on."""
    import ray
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(address)
    except AuthenticationError as error:
        raise ClusterError(f"the cluster at {address} refused this client: {str(error).splitlines()[0]}",
                           where=address,
                           fix="set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the "
                               "cluster's token; see cluster/README.md") from None
    except ConnectionError:
        raise ClusterError(f"cannot reach a Ray job API at {address}", where=address,
                           fix="check that the cluster is up and the dashboard port is reachable "
                               "(`ray dashboard cluster/ray-cluster.yaml` forwards it), or fix --address"
                           ) from None
    except (RuntimeError, ValueError) as error:
        raise ClusterError(f"{address} did not answer as a Ray job API: {error}", where=address,
                           fix="point --address at the head's dashboard port (8265 by default)") from None
    cluster_version = client._server_ray_version  # set by the constructor's own version check
    if cluster_version and cluster_version != ray.__version__:
        raise ClusterError(
            f"the cluster runs Ray {cluster_version}, this client Ray {ray.__version__}",
            where=address,
            fix=f"use one Ray version on both sides: constraints.txt pins ray=={ray.__version__} and the "
                f"images in cluster/ use rayproject/ray:{ray.__version__}")
    return client


def _constraint_pins(constraints: Path) -> dict[str, str]:
    pins = {}
    for line in constraints.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name = line.split("==", 1)[0].split("[", 1)[0].strip()
            pins[_canonical(name)] = line
    return pins


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_requirements(constraints: Path, extras: Sequence[str] = ("dvc",)) -> list[str]:
    """The job's pip requirements: everything seqmodels[extras] needs, at constraints.txt's pins.

    Walks the installed dependency metadata, so transitive packages are pinned too and the
    cluster runs the versions the tests ran with; Ray itself is the cluster's.
    """
    from packaging.requirements import Requirement

    pins = _constraint_pins(constraints)
    needed: set[str] = set()
    queue: list[tuple[str, set[str]]] = [("seqmodels", set(extras))]
    while queue:
        name, wanted = queue.pop()
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requirements:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker and not any(marker.evaluate({"extra": extra}) for extra in {"", *wanted}):
                continue
            key = _canonical(requirement.name)
            if key in needed or key in NOT_SHIPPED:
                continue
            needed.add(key)
            queue.append((requirement.name, set(requirement.extras)))
    missing = sorted(needed - set(pins))
    if missing:
        raise ClusterError(f"constraints.txt has no pin for {', '.join(missing)}", where=str(constraints),
                           fix="reinstall (make setup) and add the installed versions to constraints.txt")
    return sorted(pins[key] for key in needed)


def build_runtime_env(root: Path, env_file: Path, with_pip: bool) -> dict[str, Any]:
    """cluster/runtime_env.yaml (Ray's own format), plus this project as working_dir and its pins."""
    spec = yaml.safe_load(env_file.read_text()) if env_file.is_file() else {}
    if not isinstance(spec, dict):
        raise ClusterError(f"{env_file} must be a mapping (a Ray runtime_env)", where=str(env_file))
    spec["working_dir"] = str(root)
    if with_pip:
        spec["pip"] = {"packages": pinned_requirements(root / "constraints.txt"), "pip_check": False}
    return spec


def job_entrypoint(target: str, results: str, overrides: Sequence[str]) -> str:
    sets = [arg for override in overrides for arg in ("--set", override)]
    return shlex.join(["python", "-m", "seqmodels.distributed.jobs", target, "--results", results, *sets])


def submit(target: str, overrides: Sequence[str], *, address: str | None, params: str = "params.yaml",
           results: str | None = None, runtime_env_file: Path = RUNTIME_ENV_FILE, with_pip: bool = True,
           wait: bool = True) -> int:
    root = Path.cwd()
    if not (root / "dvc.yaml").is_file():
        raise ClusterError("no dvc.yaml here", where=str(root),
                           fix="run seqmodels submit from the project root")
    cfg = load_config(params, list(overrides))  # a bad param fails here, before any upload
    runtime_env = build_runtime_env(root, runtime_env_file, with_pip)
    client = connect(resolve_address(address))
    job_id = f"seqmodels-{target}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    results = results or default_results_uri(cfg.train.storage, job_id)
    logging.getLogger("ray._private.runtime_env.packaging").setLevel(logging.WARNING)  # per-file noise
    deadline = time.monotonic() + AGENT_WAIT_SECONDS
    while True:
        try:
            client.submit_job(entrypoint=job_entrypoint(target, results, overrides), submission_id=job_id,
                              runtime_env=runtime_env, metadata={TARGET_KEY: target, RESULTS_KEY: results})
            break
        except (RuntimeError, ValueError) as error:
            # A head that has just started answers "No available agent" until its agent is up.
            if "No available agent" in str(error) and time.monotonic() < deadline:
                time.sleep(POLL_SECONDS)
                continue
            raise ClusterError(f"the cluster did not accept the job: {error}", where=client.get_address(),
                               fix="see the message; for an upload over Ray's size limit, add excludes "
                                   f"to {runtime_env_file}") from None
    print(f"submitted {job_id} to {client.get_address()} (results: {results})", flush=True)
    if not wait:
        print(f"follow it with: seqmodels submit logs {job_id} --follow; "
              f"then: seqmodels submit fetch {job_id}", flush=True)
        return 0
    return follow(client, job_id)


def follow(client, job_id: str, fetch: bool = True) -> int:
    """Stream logs and status changes until the job ends; the exit status is the job's."""
    try:
        status = asyncio.run(_stream(client, job_id))
    except KeyboardInterrupt:
        print(f"\nstopped following {job_id}; it keeps running on the cluster. "
              f"`seqmodels submit status {job_id}` / `stop {job_id}`", file=sys.stderr, flush=True)
        raise
    return _finish(client, job_id, status, fetch)


async def _stream(client, job_id: str) -> str:
    async def logs() -> None:
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    async def statuses() -> str:
        last = None
        started = time.monotonic()
        while True:
            status = await asyncio.to_thread(client.get_job_status, job_id)
            if status != last:
                print(f"[{job_id}] {status.value} after {time.monotonic() - started:.0f} s",
                      file=sys.stderr, flush=True)
                last = status
            if status.is_terminal():
                return status.value
            await asyncio.sleep(POLL_SECONDS)

    tail = asyncio.create_task(logs())
    final = await statuses()
    try:
        await asyncio.wait_for(tail, timeout=10)  # the log stream closes once the job ends
    except TimeoutError:
        tail.cancel()
    return final


def _finish(client, job_id: str, status: str, fetch: bool) -> int:
    info = client.get_job_info(job_id)
    if status == "SUCCEEDED":
        if fetch:
            fetch_results(client, job_id)
        return 0
    code = info.driver_exit_code if info.driver_exit_code not in (None, 0) else 1
    print(f"seqmodels submit: job {job_id} {status} (exit code {code}): {info.message or ''}".rstrip(),
          file=sys.stderr, flush=True)
    return code


def job_info(client, job_id: str):
    try:
        return client.get_job_info(job_id)
    except RuntimeError as error:
        raise ClusterError(f"no job {job_id} on {client.get_address()}: {str(error).splitlines()[0]}",
                           where=client.get_address(), fix="list jobs with `ray job list`") from None


def fetch_results(client, job_id: str) -> None:
    """Swap a finished job's outputs into this checkout, then `dvc commit` its stages."""
    info = job_info(client, job_id)
    if info.status.value != "SUCCEEDED":
        raise ClusterError(f"job {job_id} is {info.status.value}; only a succeeded job has results",
                           where=job_id, fix=f"seqmodels submit logs {job_id}")
    results = (info.metadata or {}).get(RESULTS_KEY)
    if not results:
        raise ClusterError(f"job {job_id} was not submitted by seqmodels submit", where=job_id,
                           fix="pass the job's results location: seqmodels submit fetch --results URI")
    fetch_from(results)


def fetch_from(results: str) -> None:
    """Swap finished results (from any job: submit, RayJob) into this checkout; `dvc commit` them."""
    manifest = download(results, Path.cwd())
    stages = manifest["stages"]
    commit = subprocess.run([sys.executable, "-m", "dvc", "commit", "--force", "--quiet", *stages],
                            capture_output=True, text=True)
    if commit.returncode != 0:
        raise ClusterError(f"dvc commit of {', '.join(stages)} failed: {commit.stderr.strip()}",
                           where=str(Path.cwd()), fix="run `dvc status`; the files are in place")
    print(f"fetched {len(manifest['paths'])} paths of stages {', '.join(stages)} from {results}; "
          "dvc.lock is up to date: commit it with git", flush=True)
    # Pushed from here, not by the job: this checkout holds the git history the outputs are
    # versioned in, and the cluster needs no credentials for the DVC remote.
    print(push_report(Path.cwd(), stages), flush=True)


def manage(action: str, job_id: str | None, *, address: str | None, follow_logs: bool = False,
           results: str | None = None) -> int:
    """status | logs | stop | fetch for a job submitted earlier (fetch also by --results alone)."""
    if action == "fetch" and results:
        fetch_from(results)  # no cluster needed: the results location says it all
        return 0
    if not job_id:
        raise ClusterError(f"submit {action} needs a job id", where="JOB_ID",
                           fix=f"seqmodels submit {action} JOB_ID (ids: `ray job list`)")
    client = connect(resolve_address(address))
    info = job_info(client, job_id)
    if action == "status":
        target = (info.metadata or {}).get(TARGET_KEY, "?")
        detail = f": {info.message}" if info.message else ""
        print(f"{job_id}: {info.status.value} (target {target}){detail}")
        return 0
    if action == "logs":
        if not follow_logs:
            print(client.get_job_logs(job_id), end="")
            return 0
        if info.status.is_terminal():  # nothing left to stream: the logs, then the job's exit status
            print(client.get_job_logs(job_id), end="", flush=True)
            return _finish(client, job_id, info.status.value, fetch=False)
        return follow(client, job_id, fetch=False)
    if action == "stop":
        stopped = client.stop_job(job_id)
        print(f"{job_id}: {'stop requested' if stopped else f'already {info.status.value}'}")
        return 0
    fetch_results(client, job_id)
    return 0
