"""`seqmodels submit` pieces that need no cluster, and the checked-in cluster configs."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from seqmodels.distributed import results, submit
from seqmodels.distributed.jobs import apply_overrides
from seqmodels.errors import ClusterError, ConfigError
from tests.conftest import REPO

CLUSTER = REPO / "cluster"


def constraint_pin(name: str) -> str:
    match = re.search(rf"^{name}==(\S+)$", (REPO / "constraints.txt").read_text(), re.MULTILINE)
    assert match, f"{name} is not pinned in constraints.txt"
    return match.group(1)


def ray_image_tags(text: str) -> list[str]:
    return re.findall(r"rayproject/ray:(\S+)", text)


# --- checked-in configs ---------------------------------------------------------------------

def test_every_ray_image_matches_the_ray_pin_and_python():
    expected = f"{constraint_pin('ray')}-py{sys.version_info.major}{sys.version_info.minor}-gpu"
    files = [CLUSTER / "ray-cluster.yaml", CLUSTER / "Dockerfile",
             *sorted((CLUSTER / "kuberay").glob("*.yaml"))]
    tags = {path.name: ray_image_tags(path.read_text()) for path in files}
    assert all(tags[name] for name in ("ray-cluster.yaml", "Dockerfile")), tags
    for name, found in tags.items():
        assert set(found) <= {expected}, f"{name}: {found} != {expected}"
    for manifest in (CLUSTER / "kuberay").glob("*.yaml"):
        document = yaml.safe_load(manifest.read_text())
        cluster_spec = document["spec"].get("rayClusterSpec", document["spec"])
        assert cluster_spec["rayVersion"] == constraint_pin("ray")


def _containers(cluster_spec: dict) -> list[dict]:
    groups = [cluster_spec["headGroupSpec"], *cluster_spec["workerGroupSpecs"]]
    return [c for group in groups for c in group["template"]["spec"]["containers"]]


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_manifests_are_complete_and_secure(name):
    document = yaml.safe_load((CLUSTER / "kuberay" / name).read_text())
    assert document["apiVersion"] == "ray.io/v1" and document["metadata"]["name"]
    spec = document["spec"]
    if document["kind"] == "RayJob":
        assert "seqmodels.distributed.jobs" in spec["entrypoint"] and "--results" in spec["entrypoint"]
        assert spec["shutdownAfterJobFinishes"] is True
        spec = spec["rayClusterSpec"]
    else:
        assert document["kind"] == "RayCluster"
    assert spec["authOptions"]["mode"] == "token"
    assert spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] in {"127.0.0.1", "localhost"}
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert gpu_groups and all(g["maxReplicas"] > g["minReplicas"] for g in gpu_groups)  # autoscaled
    for container in _containers(spec):
        assert container["image"] and container["resources"]["limits"]
        for variable in container.get("env", []):
            if re.search(r"TOKEN|SECRET|PASSWORD|KEY", variable["name"]):
                assert "value" not in variable, f"literal secret {variable['name']} in {name}"


def test_launcher_config_binds_loopback_uses_tokens_and_autoscales_gpus():
    config = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type",
                "head_start_ray_commands", "worker_start_ray_commands"):
        assert config[key], key
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start
    for commands in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert "RAY_AUTH_MODE=token" in " ".join(config[commands])
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["max_workers"] > gpu["min_workers"] == 0
    assert "~/.ray/auth_token" in config["file_mounts"]
    text = (CLUSTER / "ray-cluster.yaml").read_text()
    assert not re.search(r"(aws_secret_access_key|AKIA[0-9A-Z]{12,})", text, re.IGNORECASE)


def test_runtime_env_is_a_ray_runtime_env_without_secrets():
    from ray.runtime_env import RuntimeEnv

    spec = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    RuntimeEnv(**spec)  # Ray's own validation of the fields
    assert {".git", ".dvc/cache"} <= set(spec["excludes"])
    assert not any(re.search(r"TOKEN|SECRET|PASSWORD|KEY", name) for name in spec.get("env_vars", {}))


# --- the client --------------------------------------------------------------------------------

def test_runtime_env_pins_every_dependency_but_not_ray():
    env = submit.build_runtime_env(REPO, CLUSTER / "runtime_env.yaml", with_pip=True)
    assert env["working_dir"] == str(REPO)
    packages = env["pip"]["packages"]
    assert f"torch=={constraint_pin('torch')}" in packages
    assert f"dvc=={constraint_pin('dvc')}" in packages and f"pandera=={constraint_pin('pandera')}" in packages
    assert not any(p.lower().startswith(("ray==", "ray[", "pytest", "ruff")) for p in packages)
    assert all("==" in p for p in packages)
    assert "pip" not in submit.build_runtime_env(REPO, CLUSTER / "runtime_env.yaml", with_pip=False)


def test_an_unpinned_dependency_is_refused(tmp_path):
    (tmp_path / "constraints.txt").write_text("torch==2.13.0\n")
    with pytest.raises(ClusterError, match="no pin for"):
        submit.pinned_requirements(tmp_path / "constraints.txt")


@pytest.mark.parametrize(("given", "environment", "expected"), [
    ("127.0.0.1:8265", {}, "http://127.0.0.1:8265"),
    (None, {"RAY_API_SERVER_ADDRESS": "http://head:8265"}, "http://head:8265"),
    (None, {"RAY_ADDRESS": "https://head:8265"}, "https://head:8265"),
])
def test_address_resolution(monkeypatch, given, environment, expected):
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert submit.resolve_address(given) == expected


@pytest.mark.parametrize(("given", "environment", "message"), [
    (None, {"RAY_ADDRESS": "127.0.0.1:6379"}, "no cluster address"),  # a GCS address is not the job API
    ("ray://head:10001", {}, "Ray Client address"),
])
def test_address_errors(monkeypatch, given, environment, message):
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ClusterError, match=message):
        submit.resolve_address(given)


def test_a_cluster_on_another_ray_version_is_refused(monkeypatch):
    import ray.job_submission

    class OtherVersion:
        def __init__(self, address):
            self._server_ray_version = "2.41.0"

    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", OtherVersion)
    with pytest.raises(ClusterError, match=r"cluster runs Ray 2\.41\.0, this client Ray") as error:
        submit.connect("http://127.0.0.1:8265")
    assert f"ray=={ray.__version__}" in error.value.fix


def test_bad_params_fail_before_anything_is_sent(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(submit, "connect", lambda address: pytest.fail("must not connect"))
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        submit.submit("train", ["train.epochs=-1"], address="http://127.0.0.1:1")


def test_entrypoint_quotes_overrides():
    entrypoint = submit.job_entrypoint("train", "s3://b/jobs/x", ["data.source=/data/my series.csv"])
    assert entrypoint == ("python -m seqmodels.distributed.jobs train --results s3://b/jobs/x "
                          "--set 'data.source=/data/my series.csv'")


# --- results hand-over and the job side --------------------------------------------------------

def _job_outputs(root: Path) -> None:
    (root / "models/latest").mkdir(parents=True)
    (root / "models/latest/model.pt").write_bytes(b"weights")
    (root / "models/latest/model.json").write_text("{}")
    (root / "metrics").mkdir()
    (root / "metrics/train.json").write_text('{"epochs_run": 4}')


def test_results_round_trip_into_a_checkout(tmp_path):
    job, checkout, store = tmp_path / "job", tmp_path / "checkout", str(tmp_path / "store")
    _job_outputs(job)
    (checkout / "models/latest").mkdir(parents=True)
    (checkout / "models/latest/old.pt").write_bytes(b"old")
    results.upload(job, ["models/latest", "metrics/train.json", "plots"], store, ["train"])
    manifest = results.download(store, checkout)
    assert manifest["stages"] == ["train"] and "plots" not in manifest["paths"]  # absent: skipped
    assert sorted(p.name for p in (checkout / "models/latest").iterdir()) == ["model.json", "model.pt"]
    assert (checkout / "metrics/train.json").read_text() == '{"epochs_run": 4}'
    assert not list(checkout.glob("models/.latest.*"))  # no staging left behind


def test_unfinished_or_altered_results_change_nothing(tmp_path):
    job, checkout, store = tmp_path / "job", tmp_path / "checkout", tmp_path / "store"
    _job_outputs(job)
    with pytest.raises(ClusterError, match="_SUCCESS is missing"):
        results.download(str(store), checkout)
    results.upload(job, ["models/latest", "metrics/train.json"], str(store), ["train"])
    (store / "models/latest/model.pt").write_bytes(b"tampered")
    (checkout / "models/latest").mkdir(parents=True)
    (checkout / "models/latest/model.pt").write_bytes(b"previous")
    with pytest.raises(ClusterError, match="hash mismatch"):
        results.download(str(store), checkout)
    assert (checkout / "models/latest/model.pt").read_bytes() == b"previous"


def test_job_overrides_keep_params_comments_and_validate(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    apply_overrides(params, ["train.epochs=7", "model.kind=dense"])
    text = params.read_text()
    assert "epochs: 7" in text and "kind: dense" in text
    assert "# Every knob of the pipeline" in text  # comments survive, as with dvc exp run -S
    with pytest.raises(ConfigError, match=r"train\.epochz"):
        apply_overrides(params, ["train.epochz=3"])


def test_predictor_from_shipped_model_files_matches_the_folder(tmp_path):
    """On a multi-node cluster the actors get the model's files, not a path: same outputs."""
    import numpy as np
    import pyarrow as pa
    import torch

    from seqmodels.checkpoints import export_model
    from seqmodels.data.tables import fixed_list
    from seqmodels.distributed.infer import Predictor, model_source
    from seqmodels.models import build_model
    from seqmodels.models.config import ModelConfig
    from seqmodels.spec import DataSpec

    spec = DataSpec(kind="series", input_shape=(16, 1), features=("value",))
    cfg = ModelConfig(kind="conv", hidden_size=4, latent_dim=3)
    torch.manual_seed(0)
    export_model(tmp_path / "model", build_model(cfg, spec).state_dict(), cfg, spec)
    batch = pa.table({"window_id": pa.array(np.arange(5)),
                      "x": fixed_list(np.random.default_rng(0).normal(size=(5, 16)))})
    shipped = model_source(tmp_path / "model", ship_files=True)
    assert isinstance(shipped, dict) and set(shipped) == {"model.pt", "model.json"}
    by_files = Predictor(shipped, use_gpu=False, write_reconstructions=True)(batch)
    by_path = Predictor(model_source(tmp_path / "model", ship_files=False), use_gpu=False,
                        write_reconstructions=True)(batch)
    assert by_files.equals(by_path)
