"""Shared fixtures: small generated series data and a tiny, fast configuration."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from seqmodels.config import Config, config_from_mapping

REPO = Path(__file__).resolve().parents[1]


def make_series_table(n_series: int = 24, length: int = 40, n_features: int = 2, anomalous: int = 6,
                      seed: int = 0) -> pd.DataFrame:
    """Noisy sines; the last `anomalous` series get a square-wave burst (label 1)."""
    rng = np.random.default_rng(seed)
    rows = []
    t = np.arange(length)
    for i in range(n_series):
        phase = rng.uniform(0, 2 * np.pi)
        values = np.stack([np.sin(2 * np.pi * t / 20 + phase + k) for k in range(n_features)], axis=1)
        values += rng.normal(0, 0.05, values.shape)
        label = int(i >= n_series - anomalous)
        if label:
            values[length // 3: length // 3 + 8] = 2.5
        frame = pd.DataFrame(values, columns=[f"f{k}" for k in range(n_features)])
        frame.insert(0, "t", t.astype(np.int64))
        frame.insert(0, "series_id", f"s{i:03d}")
        frame["label"] = label
        rows.append(frame)
    return pd.concat(rows, ignore_index=True)


def tiny_config(tmp_path: Path, **sections) -> Config:
    """A config that trains in seconds, with every path under tmp_path."""
    raw = {
        "seed": 0,
        "data": {"source": str(tmp_path / "series.csv"), "window": 20, "stride": 10,
                 "split": {"val": 0.2, "test": 0.2}},
        "model": {"kind": "recurrent", "hidden_size": 16, "latent_dim": 4},
        "train": {"workers": 2, "epochs": 3, "batch_size": 8, "lr": 0.01,
                  "storage": str(tmp_path / "runs")},
        "infer": {"batch_size": 16},
        "ray": {"num_cpus": 4},
        "paths": {name: str(tmp_path / value) for name, value in {
            "prepared": "prepared", "validation_report": "reports/validation.json",
            "model": "models/trained", "detector": "models/latest",
            "train_metrics": "metrics/train.json",
            "train_live": "metrics/live", "outputs": "outputs/latents",
            "eval_metrics": "metrics/eval.json", "plots": "plots",
            "anomalies": "reports/anomalies.csv", "timeline": "outputs/timeline",
            "events": "reports/events.csv", "scores": "outputs/scores"}.items()},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return config_from_mapping(raw, "tiny test config")


@pytest.fixture
def series_csv(tmp_path: Path) -> Path:
    path = tmp_path / "series.csv"
    make_series_table().to_csv(path, index=False)
    return path


@pytest.fixture
def tiny(tmp_path: Path, series_csv: Path) -> Config:
    return tiny_config(tmp_path)


def exported_vs_untrained_loss(cfg: Config) -> float:
    """Training-split reconstruction loss of the exported model over that of the same
    architecture at its seeded initialisation: below 1 when training really helped."""
    import pyarrow.parquet as pq
    import torch

    from seqmodels.checkpoints import load_exported_model
    from seqmodels.models import build_model
    from seqmodels.training import seed_everything

    model, model_cfg, spec = load_exported_model(cfg.paths.model)
    seed_everything(cfg.seed)
    untrained = build_model(model_cfg, spec).eval()
    windows = pq.read_table(f"{cfg.paths.prepared}/examples.parquet").to_pandas()
    x = {"x": torch.from_numpy(np.stack(windows.loc[windows["split"] == "train", "x"]))}
    with torch.no_grad():
        return float(model.loss(x, model(x))["recon"] / untrained.loss(x, untrained(x))["recon"])


def copy_project(target: Path, **param_updates: dict) -> Path:
    """The project's files as a user's clone would have them (tracked + not ignored), as a
    fresh git repo with no results: every stage must run. `param_updates` patch params.yaml
    sections, e.g. train={"epochs": 3}."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    # A clone with dvc.lock would legitimately skip stages whose outputs match the lock.
    (target / "dvc.lock").unlink(missing_ok=True)
    for result in ("metrics", "reports", "plots"):
        shutil.rmtree(target / result, ignore_errors=True)
    params = yaml.safe_load((target / "params.yaml").read_text())
    for section, values in param_updates.items():
        params[section].update(values)
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for command in (["git", "init", "-q"], [*git, "add", "-A"], [*git, "commit", "-qm", "copy"]):
        subprocess.run(command, cwd=target, check=True, capture_output=True)
    return target


def write_params(cfg: Config, path: Path) -> Path:
    """`cfg` as a params.yaml a stage entry point can read with --params."""
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def run_pipeline(stage: str, *args: str, cwd: Path = REPO, timeout: float = 300,
                 **kwargs) -> subprocess.CompletedProcess:
    """Run the DVC entry point pipelines/<stage>.py in a fresh interpreter, as DVC does."""
    return subprocess.run([sys.executable, str(REPO / "pipelines" / f"{stage}.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture
def cli(capsys):
    """Run `seqmodels ARGS...` in this process; returns (exit code, stderr). Faster than a
    subprocess for errors raised before Ray starts, and the same code path after argv."""
    from seqmodels.cli import main

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(list(argv))
        return code, capsys.readouterr().err

    return run
