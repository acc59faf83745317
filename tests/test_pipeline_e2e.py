"""End-to-end: `dvc repro` in a fresh git copy of the repository, tiny params, real Ray."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from seqmodels.versions import read_outputs
from tests.conftest import copy_project
from tests.test_docs import python_blocks, run_blocks

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def sh(*args, cwd, check=True):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
                             f"{result.stderr[-4000:]}")
    return result


pytest_plugins = ["tests.s3"]  # the moto server: the DVC remote consumers read through


@pytest.fixture
def repo_copy(tmp_path):
    return copy_project(tmp_path / "repo", train={"epochs": 3})


def test_dvc_repro_runs_every_stage_then_is_up_to_date(repo_copy, s3):
    first = sh("dvc", "repro", cwd=repo_copy)
    for stage in ("prepare", "validate", "train", "infer", "detector", "evaluate", "score@heldout"):
        assert f"Running stage '{stage}'" in first.stdout

    report = json.loads((repo_copy / "reports/validation.json").read_text())
    assert report["valid"] is True
    train = json.loads((repo_copy / "metrics/train.json").read_text())
    assert train["epochs_run"] == 3
    manifest = json.loads((repo_copy / "outputs/latents/_manifest.json").read_text())
    assert manifest["rows"] == 200 and manifest["git"]["commit"]
    evaluation = json.loads((repo_copy / "metrics/eval.json").read_text())
    assert 0.0 <= evaluation["model"]["test_auroc"] <= 1.0
    assert evaluation["pca"]["mse"]["test"] > 0
    for png in ("loss", "scores", "latents", "roc", "examples"):
        assert (repo_copy / f"plots/{png}.png").stat().st_size > 1000
    assert evaluation["threshold"]["method"] == "percentile"
    anomalies = (repo_copy / "reports/anomalies.csv").read_text().splitlines()
    assert len(anomalies) == 201 and anomalies[0].endswith("score,is_anomaly")
    assert (repo_copy / "dvc.lock").exists()

    shown = sh("dvc", "metrics", "show", "--json", cwd=repo_copy)
    assert "test_auroc" in shown.stdout
    plots = json.loads(sh("dvc", "plots", "show", "--json", cwd=repo_copy).stdout)["data"]
    loss_curve_data = json.dumps(plots["loss_curves"])
    assert "train_loss" in loss_curve_data and "val_loss" in loss_curve_data
    assert "fpr" in json.dumps(plots["roc"]) and "plots/examples.png" in plots

    again = sh("dvc", "repro", cwd=repo_copy)
    assert "Running stage" not in again.stdout
    status = sh("dvc", "status", cwd=repo_copy)
    assert "up to date" in status.stdout

    # The held-out batch (the test split's raw rows) scored by the packaged detector: the
    # same windows, scores and flags as infer and evaluate gave the test rows.
    thresholds = json.loads((repo_copy / "models/latest/threshold.json").read_text())
    assert thresholds["window"]["value"] == evaluation["threshold"]["value"]
    scored = pq.read_table(repo_copy / "outputs/scores/heldout/windows").to_pandas()
    inferred = pq.read_table(repo_copy / "outputs/latents").to_pandas()
    test = inferred[inferred["split"] == "test"]
    assert len(scored) == len(test) == json.loads(
        (repo_copy / "outputs/scores/heldout/_manifest.json").read_text())["rows"]
    joined = test.merge(scored, on=["series_id", "start"], suffixes=("_infer", "_score"))
    np.testing.assert_allclose(joined["score_score"], joined["score_infer"], rtol=1e-6)
    assert (joined["is_anomaly"] == (joined["score_infer"] > thresholds["window"]["value"])).all()

    # Versioned outputs: commit this run, publish another, read the first back by revision;
    # each is pushed to the DVC remotes as `make repro` does, for consumers elsewhere.
    folder_remote = repo_copy.parent / "folder-remote"
    sh("dvc", "remote", "add", "-d", "storage", s3.uri("dvc"), cwd=repo_copy)
    sh("dvc", "remote", "add", "folder", str(folder_remote), cwd=repo_copy)
    first_rev = commit(repo_copy, "first run")
    published = {first_rev: publish(repo_copy)}
    first_rows = pq.read_table(repo_copy / "outputs/latents").sort_by("window_id")
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["infer"]["write_reconstructions"] = False
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rerun = sh("dvc", "repro", cwd=repo_copy)
    assert "Running stage 'infer'" in rerun.stdout and "Running stage 'train'" not in rerun.stdout
    published[commit(repo_copy, "outputs without reconstructions")] = publish(repo_copy)
    evaluation = json.loads((repo_copy / "metrics/eval.json").read_text())
    assert "examples.png" in evaluation["plots_skipped"] and not (repo_copy / "plots/examples.png").exists()

    old = read_outputs(first_rev, repo=str(repo_copy)).sort_by("window_id")
    assert old.equals(first_rows)
    new = read_outputs("HEAD", repo=str(repo_copy))
    assert new.num_rows == 200 and "reconstruction" not in new.schema.names
    shown = sh("seqmodels", "outputs", "show", "--rev", first_rev, "--repo", str(repo_copy), cwd=repo_copy)
    assert json.loads(shown.stdout)["rows"] == 200
    old_scores = sh("seqmodels", "outputs", "read", "--rev", first_rev, "--path",
                    "outputs/scores/heldout/windows", "--columns", "series_id,start,score",
                    "--to", str(repo_copy.parent / "scores.parquet"), cwd=repo_copy)
    assert f"wrote {len(scored)} rows" in old_scores.stdout
    np.testing.assert_array_equal(pq.read_table(repo_copy.parent / "scores.parquet").column("score"),
                                  scored["score"])
    missing = sh("seqmodels", "outputs", "read", "--rev", "no-such-rev", cwd=repo_copy, check=False)
    assert missing.returncode == 2 and "no-such-rev" in missing.stderr and "Traceback" not in missing.stderr
    run_blocks(python_blocks(), repo_copy)  # the README's Python examples, as written, on these outputs
    consumers_read_through_remotes(repo_copy, published, folder_remote)


def publish(repo):
    """Push to both remotes; what was published: latents, held-out scores, detector files."""
    assert "pushed" in sh("seqmodels", "push", cwd=repo).stdout
    sh("dvc", "push", "-q", "-r", "folder", cwd=repo)
    return {"latents": pq.read_table(repo / "outputs/latents"),
            "scores": pq.read_table(repo / "outputs/scores/heldout/windows"),
            "detector": {p.name: p.read_bytes() for p in (repo / "models/latest").iterdir()}}


def consumers_read_through_remotes(repo, published, folder_remote):
    """A consumer elsewhere (a git clone, empty DVC cache) reads the latents and the detector
    of both revisions through the S3 remote, and through the folder remote by --remote, and
    scores with the detector of the first revision: exactly what was published."""
    from seqmodels.versions import fetch_directory

    consumer = repo.parent / "consumer"
    sh("git", "clone", "-q", str(repo), str(consumer), cwd=repo.parent)
    for rev, expected in published.items():
        for remote in ([], ["--remote", str(folder_remote)]):
            target = repo.parent / "read.parquet"
            sh("seqmodels", "outputs", "read", "--rev", rev, "--to", str(target), *remote, cwd=consumer)
            assert pq.read_table(target).equals(expected["latents"])
        detector = repo.parent / f"detector-{rev[:8]}"
        fetch_directory("models/latest", detector, rev=rev, repo=str(consumer))
        assert {p.name: p.read_bytes() for p in detector.iterdir()} == expected["detector"]
    first_rev, first = next(iter(published.items()))
    scored = repo.parent / "consumer-scores"
    sh("seqmodels", "score", "--rev", first_rev, "--input", str(repo / "data/prepared/heldout.parquet"),
       "--output", str(scored), cwd=consumer)
    np.testing.assert_allclose(pq.read_table(scored / "windows").column("score").to_numpy(),
                               first["scores"].column("score").to_numpy(), rtol=1e-6)
    assert not (consumer / ".dvc/cache").exists()  # read file by file, never a copy of the cache


def commit(repo, message):
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message, cwd=repo)
    return sh("git", "rev-parse", "HEAD", cwd=repo).stdout.strip()


def test_dvc_exp_run_switches_modality_and_model_from_the_command_line(repo_copy):
    sh("dvc", "exp", "run", "-S", "data.kind=images", "-S", "data.source=digits",
       "-S", "model.kind=conv", "-S", "model.num_layers=2", "-S", "train.batch_size=64",
       "-S", "model.task_weight=0.01", cwd=repo_copy)
    evaluation = json.loads((repo_copy / "metrics/eval.json").read_text())
    assert evaluation["rows"] == 1797
    assert evaluation["model"]["accuracy"]["test"] > 0.3
    shown = sh("dvc", "exp", "show", "--json", cwd=repo_copy)
    assert "accuracy" in shown.stdout


KDD135 = ["-S", "data.source=kdd135", "-S", "data.window=125", "-S", "data.stride=1",
          "-S", "data.split.by=time", "-S", "data.split.val=0.2", "-S", "model.kind=conv",
          "-S", "train.batch_size=64", "-S", "train.lr=0.003", "-S", "train.epochs=20"]


def test_dvc_exp_run_scores_every_step_of_the_ucr_archive_series(repo_copy):
    """kdd135 (one 12-step anomaly in 7,501 steps): timeline, events, per-step metrics and the
    timeline plot come out of `dvc exp run`, and a rerun is a no-op."""
    sh("dvc", "exp", "run", *KDD135, cwd=repo_copy)
    timeline = pq.read_table(repo_copy / "outputs/timeline").to_pandas()
    assert list(timeline.columns) == ["series_id", "t", "split", "score", "label", "is_anomaly"]
    assert len(timeline) == 1200 + 7501 and timeline["score"].notna().all()
    test = timeline[timeline["split"] == "test"]
    assert len(test) == 7501 and test["label"].sum() == 12
    assert test.loc[test["label"] == 1, "t"].tolist() == list(range(4187, 4199))
    assert set(timeline.loc[timeline["series_id"].str.endswith("TRAIN"), "split"]) == {"train", "val"}
    points = json.loads((repo_copy / "metrics/eval.json").read_text())["points"]
    assert points["steps"] == 7501 and points["anomalous_steps"] == 12 and points["sliding_window"] == 183
    for detector in ("model", "pca", "knn"):
        assert 0.0 <= points[detector]["vus_pr"] <= 1.0
    assert points["model"]["vus_pr"] > 0.5  # twenty epochs find the anomaly
    assert points["threshold"]["fitted_on"] == "val"
    events = (repo_copy / "reports/events.csv").read_text().splitlines()
    assert events[0] == "series_id,split,start,end,steps,peak_score,peak_t,overlaps_anomaly"
    assert points["events"]["flagged_events"] == sum(",test," in line for line in events[1:])
    assert (repo_copy / "plots/timeline.png").stat().st_size > 10_000
    plots = json.loads(sh("dvc", "plots", "show", "--json", cwd=repo_copy).stdout)["data"]
    assert "plots/timeline.png" in plots
    again = sh("dvc", "exp", "run", *KDD135, cwd=repo_copy)
    assert "Running stage" not in again.stdout
