"""Scoring new batches: `seqmodels score`, the score stage and the in-process Detector.

One tiny trained pipeline (module scope) is scored by every test: a new file with other
series, the training data itself (must equal infer), bad inputs (each one message, exit 2,
the previous scores intact), a killed run, and the detector of a past git revision.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from seqmodels.config import Config
from seqmodels.detector import Detector
from seqmodels.publish import MANIFEST
from tests.conftest import REPO, make_series_table, tiny_config, write_params

pytest_plugins = ["tests.s3"]  # the moto server, `s3` and `dropping_proxy` fixtures


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Config:
    """prepare -> validate -> train (one process) -> infer (Ray) -> detector, on tiny series."""
    from seqmodels.stages import detector, infer, prepare, validate
    from tests.test_combinations import train_one_epoch

    root = tmp_path_factory.mktemp("trained")
    make_series_table().to_csv(root / "series.csv", index=False)
    cfg = tiny_config(root, model={"kind": "conv", "num_layers": 1}, train={"epochs": 2, "workers": 1})
    prepare.run(cfg)
    validate.run(cfg)
    train_one_epoch(cfg)
    infer.run(cfg)
    detector.run(cfg)
    return cfg


def new_batch(path: Path, n_series: int = 4, length: int = 55, seed: int = 3) -> Path:
    frame = make_series_table(n_series=n_series, length=length, anomalous=1, seed=seed)
    frame["series_id"] = "new-" + frame["series_id"]
    frame.to_csv(path, index=False)
    return path


def score_cli(cfg: Config, *args: str, cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess:
    params = write_params(cfg, Path(cfg.paths.prepared).parent / "params.yaml")
    return subprocess.run([sys.executable, "-m", "seqmodels.cli", "score", "--params", str(params), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def published(trained, tmp_path_factory) -> Path:
    """One `seqmodels score` run over a folder of two files: a new batch of other series
    (new.csv) and the training data itself (train.parquet, without its split column).
    Later tests copy its output as "the previous good scores"."""
    folder = tmp_path_factory.mktemp("published")
    (folder / "in").mkdir()
    new_batch(folder / "in" / "new.csv")
    rows = pq.read_table(Path(trained.paths.prepared) / "series.parquet").to_pandas().drop(columns=["split"])
    rows.to_parquet(folder / "in" / "train.parquet", index=False)
    result = score_cli(trained, "--input", str(folder / "in"), "--output", str(folder / "scores"))
    assert result.returncode == 0, result.stderr
    return folder / "scores"


def test_a_new_file_is_scored_per_window_and_per_step_with_a_manifest(trained, published):
    windows = pq.read_table(published / "windows").to_pandas()
    steps = pq.read_table(published / "steps").to_pandas()
    manifest = json.loads((published / MANIFEST).read_text())
    threshold = manifest["threshold"]["window"]["value"]
    new = windows["series_id"].str.startswith("new-")
    assert set(windows.loc[new, "series_id"]) == {f"new-s{i:03d}" for i in range(4)}
    # window 20, stride 10 over 55 steps: starts 0..30, then one flush with the end (35)
    assert windows[new].groupby("series_id")["start"].apply(list).iloc[0] == [0, 10, 20, 30, 35]
    assert (windows["is_anomaly"] == (windows["score"] > threshold)).all()
    training_rows = 24 * 40
    assert len(steps) == 4 * 55 + training_rows and steps["score"].notna().all()
    assert manifest["rows"] == len(windows) and manifest["steps"] == len(steps)
    assert manifest["input"]["rows"] == 4 * 55 + training_rows and manifest["model"]["sha256"]
    assert manifest["flagged"]["windows"] == int(windows["is_anomaly"].sum())
    # the in-process Detector scores the same file identically
    expected = Detector.load(trained.paths.detector).predict(published.parent / "in" / "new.csv")
    np.testing.assert_allclose(expected.windows["score"], windows.loc[new, "score"], rtol=1e-6)
    new_steps = steps["series_id"].str.startswith("new-")
    np.testing.assert_allclose(expected.steps["score"], steps.loc[new_steps, "score"], rtol=1e-6)
    assert (expected.steps["is_anomaly"].to_numpy() == steps.loc[new_steps, "is_anomaly"].to_numpy()).all()


def test_scoring_the_training_data_gives_infers_scores_for_the_same_windows(trained, published):
    scored = pq.read_table(published / "windows", columns=["series_id", "start", "score"]).to_pandas()
    inferred = pq.read_table(trained.paths.outputs, columns=["series_id", "start", "score"]).to_pandas()
    joined = inferred.merge(scored, on=["series_id", "start"], suffixes=("_infer", "_score"))
    assert len(joined) == len(inferred)
    np.testing.assert_allclose(joined["score_score"], joined["score_infer"], rtol=1e-6)


def bad(kind: str, directory: Path) -> Path:
    """A new batch with one problem of `kind`."""
    frame = make_series_table(n_series=3, length=40, seed=5)
    path = directory / f"{kind}.csv"
    if kind == "missing_feature":
        frame = frame.drop(columns=["f1"])
    elif kind == "extra_feature":
        frame["humidity"] = 1.0
    elif kind == "text_values":
        frame["f0"] = frame["f0"].astype(object)
        frame.loc[3, "f0"] = "n/a"
    elif kind == "short_series":
        frame = frame.groupby("series_id").head(12)
    elif kind == "tabular_rows":
        frame = frame[["f0", "f1"]]
    elif kind == "datetimes":
        frame["t"] = pd.Timestamp("2026-01-01") + pd.to_timedelta(frame["t"], unit="min")
    elif kind == "split_series":
        frame = pd.concat([frame.iloc[:20], frame.iloc[40:80], frame.iloc[20:40]])  # s000, s001, s000
    frame.to_csv(path, index=False)
    return path


BAD_INPUTS = {
    "missing_feature": "feature column(s) ['f1'] of the model are missing",
    "extra_feature": "column(s) ['humidity']",
    "text_values": "column 'f0'",
    "short_series": "fewer than the model's window of 20",
    "tabular_rows": "the model is a series model",
    "datetimes": "column 't'",
    "split_series": "appears again",
}


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_new_data_is_one_message_exit_2_and_the_previous_scores_stay(trained, published, tmp_path, cli,
                                                                        kind):
    target = tmp_path / "scores"
    shutil.copytree(published, target)
    write_params(trained, tmp_path / "p.yaml")
    before = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    code, err = cli("score", "--params", str(tmp_path / "p.yaml"), "--input", str(bad(kind, tmp_path)),
                    "--output", str(target))
    assert code == 2 and BAD_INPUTS[kind] in err and "Traceback" not in err
    assert "how to fix" in err
    assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".scores")] == []


@pytest.mark.parametrize("damage", ["truncated_weights", "no_threshold", "tabular_model", "not_a_model"])
def test_a_broken_or_foreign_model_folder_is_refused_before_any_data_is_read(trained, tmp_path, cli, damage):
    model = tmp_path / "model"
    shutil.copytree(trained.paths.detector, model)
    if damage == "truncated_weights":
        (model / "model.pt").write_bytes((model / "model.pt").read_bytes()[:100])
    elif damage == "no_threshold":
        (model / "threshold.json").unlink()
    elif damage == "tabular_model":  # a detector of another modality, over the same columns
        shutil.rmtree(model)
        rows = make_series_table()[["f0", "f1", "label"]]
        Detector.fit(rows, {"data": {"kind": "tabular"}, "model": {"kind": "dense", "latent_dim": 2},
                            "train": {"epochs": 1, "workers": 1}}).save(model)
    else:
        shutil.rmtree(model)
        model.mkdir()
    code, err = cli("score", "--params", str(write_params(trained, tmp_path / "p.yaml")), "--model",
                    str(model), "--input", str(new_batch(tmp_path / "new.csv")), "--output",
                    str(tmp_path / "out"))
    expected = {"truncated_weights": "cannot load checkpoint",
                "no_threshold": "without its anomaly threshold", "tabular_model": "is a tabular model",
                "not_a_model": "not an exported model folder"}[damage]
    assert code == 2 and expected in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_a_killed_score_leaves_the_previous_scores_intact(trained, published, tmp_path):
    target = tmp_path / "scores"
    shutil.copytree(published, target)
    before = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    big = new_batch(tmp_path / "big.csv", n_series=400, length=400, seed=9)
    params = write_params(trained, tmp_path / "p.yaml")
    process = subprocess.Popen([sys.executable, "-m", "seqmodels.cli", "score", "--params", str(params),
                                "--input", str(big), "--output", str(target)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(tmp_path.glob(".scores.staging-*/windows")):
        time.sleep(0.2)  # kill it once it is writing into its staging folder
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
    # the next run cleans the dead run's leftovers and publishes
    assert score_cli(trained, "--input", str(new_batch(tmp_path / "a.csv")), "--output",
                     str(target)).returncode == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".scores")] == []


def test_rev_scores_with_the_detector_of_that_commit(trained, tmp_path):
    """Two commits, two detectors (the second trained on other data): --rev picks each."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]

    def sh(*args: str) -> str:
        return subprocess.run(args, cwd=repo, check=True, capture_output=True, text=True).stdout.strip()

    sh("git", "init", "-q")
    sh(sys.executable, "-m", "dvc", "init", "-q")
    detectors = []
    for seed in (0, 1):
        if seed:
            table = make_series_table(seed=11)
            table[["f0", "f1"]] *= 3.0
            detector = Detector.fit(table, {**trained.to_dict(), "seed": seed, "paths": {}})
        else:
            detector = Detector.load(trained.paths.detector)
        detector.save(repo / "models/latest")
        sh(sys.executable, "-m", "dvc", "add", "-q", "models/latest")
        sh(*git, "add", "-A")
        sh(*git, "commit", "-qm", f"detector {seed}")
        detectors.append(detector)
    source = new_batch(tmp_path / "new.csv")
    in_repo = trained.model_copy(update={"paths": trained.paths.model_copy(
        update={"detector": "models/latest"})})
    scores = []
    for rev in ("HEAD~1", "HEAD"):
        target = tmp_path / f"out-{rev.replace('~', '_')}"
        result = score_cli(in_repo, "--rev", rev, "--input", str(source), "--output", str(target), cwd=repo)
        assert result.returncode == 0, result.stderr
        manifest = json.loads((target / MANIFEST).read_text())
        assert manifest["model"]["rev"] == rev and manifest["model"]["commit"] == sh("git", "rev-parse", rev)
        scores.append(pq.read_table(target / "windows").column("score").to_numpy())
    for detector, got in zip(detectors, scores, strict=True):
        np.testing.assert_allclose(detector.score(source).windows["score"], got, rtol=1e-6)
    assert not np.allclose(scores[0], scores[1])
    result = score_cli(in_repo, "--rev", "no-such-rev", "--input", str(source), "--output",
                       str(tmp_path / "x"), cwd=repo)
    assert result.returncode == 2 and "revision no-such-rev does not exist" in result.stderr


def test_detector_fit_score_predict_save_load_in_process(tmp_path):
    table = make_series_table()
    detector = Detector.fit(table, {"data": {"window": 20, "stride": 10, "split": {"val": 0.2, "test": 0.2}},
                                    "model": {"kind": "dense", "latent_dim": 4},
                                    "train": {"epochs": 3, "workers": 1}})
    scores = detector.predict(table)
    assert len(scores.steps) == len(table) and scores.windows["is_anomaly"].dtype == bool
    anomalous = scores.windows.groupby("series_id")["score"].max()
    assert anomalous[[f"s{i:03d}" for i in range(18, 24)]].mean() > anomalous.iloc[:18].mean()
    loaded = Detector.load(detector.save(tmp_path / "detector"))
    np.testing.assert_allclose(loaded.score(table).windows["score"], scores.windows["score"])
    assert loaded.thresholds == detector.thresholds


def test_an_s3_prefix_is_scored_into_s3_and_a_dropped_upload_keeps_the_last_scores(
        trained, s3, dropping_proxy, tmp_path, cli):
    """A day's files under s3://bucket/incoming/ in, s3://bucket/scores/ out (manifest last);
    the next day's upload is cut mid-request: exit 2, and readers still get the first day."""
    from seqmodels import storage

    for day, seed in (("day1", 3), ("day2", 4)):
        first = new_batch(tmp_path / f"{day}-a.csv", n_series=20, length=200, seed=seed)
        second = make_series_table(n_series=20, length=200, anomalous=2, seed=seed + 10)
        second["series_id"] = "other-" + second["series_id"]
        second.to_parquet(tmp_path / f"{day}-b.parquet", index=False)
        s3.put(f"incoming/{day}/a.csv", first.read_bytes())
        s3.put(f"incoming/{day}/b.parquet", (tmp_path / f"{day}-b.parquet").read_bytes())
    params = str(write_params(trained, tmp_path / "p.yaml"))
    target = s3.uri("scores")
    code, err = cli("score", "--params", params, "--input", s3.uri("incoming/day1"), "--output", target)
    assert code == 0, err
    manifest = storage.read_remote_manifest(target)
    assert manifest["input"]["path"] == s3.uri("incoming/day1") and manifest["input"]["rows"] == 40 * 200

    def published(kind: str) -> pd.DataFrame:
        parts = [p for p in storage.remote_parts(target) if f"/{kind}/" in p]
        tables = []
        for part in parts:
            with storage.open_input(part) as handle:
                tables.append(pq.read_table(handle).to_pandas())
        return pd.concat(tables, ignore_index=True)

    windows = published("windows")
    local = pd.concat([pd.read_csv(tmp_path / "day1-a.csv"), pd.read_parquet(tmp_path / "day1-b.parquet")])
    expected = Detector.load(trained.paths.detector).predict(local)
    np.testing.assert_allclose(windows["score"], expected.windows["score"], rtol=1e-6)
    assert len(published("steps")) == 40 * 200

    dropping_proxy.arm(8192)  # reads (small requests) pass, the upload of a part is cut
    code, err = cli("score", "--params", params, "--input", s3.uri("incoming/day2"), "--output", target)
    dropping_proxy.disarm()
    ours = err[err.index("seqmodels score: error:"):]  # moto's own server logs the cut request above it
    assert code == 2 and "the object store cannot be reached" in ours and "Traceback" not in ours, err
    assert "the previously published version is unchanged" in ours
    assert storage.read_remote_manifest(target) == manifest
    assert published("windows").equals(windows)


def test_windows_read_in_many_tasks_come_back_in_input_order(trained, tmp_path, cli, monkeypatch):
    """A read-task budget of 2 KiB cuts the batch's model inputs into dozens of read tasks;
    the per-step scores need the windows back in input order (series after series)."""
    monkeypatch.setenv("RAY_DATA_PARQUET_BIN_PACKING_BYTES", "2048")
    source = new_batch(tmp_path / "new.csv", n_series=12, length=120, seed=7)
    code, err = cli("score", "--params", str(write_params(trained, tmp_path / "p.yaml")), "--input",
                    str(source), "--output", str(tmp_path / "out"))
    assert code == 0, err
    inputs = pq.read_table(tmp_path / "out/windows", columns=["window_id"]).column(0).to_numpy()
    assert (np.diff(inputs) == 1).all()
    expected = Detector.load(trained.paths.detector).score(source)
    np.testing.assert_allclose(pq.read_table(tmp_path / "out/steps").column("score"), expected.steps["score"],
                               rtol=1e-6)


def test_output_rows_past_the_first_batch_are_checked_too(tmp_path):
    """check_values: what the Pandera contract checks per row, on whole batches."""
    import pyarrow as pa

    from seqmodels.errors import DataError
    from seqmodels.stages.score import check_values

    latent = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(6), pa.float32()), 2)
    good = pa.record_batch({"score": pa.array([0.1, 0.2, 0.3], pa.float32()), "latent": latent})
    check_values(good, tmp_path / "part.parquet", 0)
    with_nan = pa.FixedSizeListArray.from_arrays(pa.array([0, 1, np.nan, 0], pa.float32()), 2)
    nan_latent = pa.record_batch({"score": pa.array([0.1, 0.2], pa.float32()), "latent": with_nan})
    with pytest.raises(DataError, match="latent: NaN or inf"):
        check_values(nan_latent, tmp_path / "part.parquet", 0)
    for column, values in (("score", [0.1, float("nan"), 0.3]), ("score", [0.1, -1.0, 0.3]),
                           ("score", [0.1, None, 0.3])):
        bad = pa.record_batch({column: pa.array(values, pa.float32()), "latent": latent})
        with pytest.raises(DataError, match=r"rows 65536\.\.65538 failed its checks"):
            check_values(bad, tmp_path / "part.parquet", 65_536)
