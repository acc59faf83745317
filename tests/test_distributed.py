"""Integration: the real stages on a real local Ray (2 CPU train workers), tiny data."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from seqmodels import stages
from seqmodels.checkpoints import load_exported_model
from seqmodels.data import schemas
from seqmodels.distributed.runtime import shutdown_ray
from seqmodels.models import build_model
from seqmodels.outputs import MANIFEST
from seqmodels.training import seed_everything

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _ray_teardown():
    yield
    shutdown_ray()


def test_train_infer_evaluate_on_two_ray_workers(tiny):
    stages.prepare(tiny)
    stages.validate(tiny)
    stages.train(tiny.model_copy(update={"train": tiny.train.model_copy(update={"epochs": 4})}))

    history = pd.read_csv(tiny.paths.train_history)
    assert list(history["epoch"]) == [1, 2, 3, 4]
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    metrics = json.loads(Path(tiny.paths.train_metrics).read_text())
    assert metrics["workers"] == 2 and metrics["epochs_run"] == 4

    model, cfg, spec = load_exported_model(tiny.paths.model)
    seed_everything(tiny.seed)
    untrained = build_model(cfg, spec).eval()
    windows = pq.read_table(f"{tiny.paths.prepared}/windows.parquet").to_pandas()
    train_x = {"x": torch.from_numpy(np.stack(windows.loc[windows["split"] == "train", "x"]))}
    with torch.no_grad():
        exported_loss = model.loss(train_x, model(train_x))["recon"].item()
        initial_loss = untrained.loss(train_x, untrained(train_x))["recon"].item()
    assert exported_loss < 0.9 * initial_loss

    stages.infer(tiny)
    out_dir = tiny.paths.outputs
    parts = sorted(p.name for p in Path(out_dir).glob("*.parquet"))
    assert parts == ["part-00000-0.parquet"]
    output = pq.read_table(out_dir).to_pandas()
    assert len(output) == len(windows)
    assert sorted(output["window_id"]) == sorted(windows["window_id"])
    schemas.validate_table(output, schemas.output_schema(spec.input_dim, cfg.latent_dim),
                           table="output", source=out_dir)
    assert all(len(v) == cfg.latent_dim for v in output["latent"])
    manifest = json.loads((Path(out_dir) / MANIFEST).read_text())
    assert manifest["rows"] == len(windows)
    assert manifest["rows_per_split"]["test"] == int((windows["split"] == "test").sum())

    first = pq.read_table(out_dir).to_pandas()
    stages.infer(tiny)  # rerun: identical rows, same order
    pd.testing.assert_frame_equal(first, pq.read_table(out_dir).to_pandas())

    stages.evaluate(tiny)
    evaluation = json.loads(Path(tiny.paths.eval_metrics).read_text())
    assert set(evaluation["model"]["mse"]) == {"train", "val", "test", "test_normal", "test_anomalous"}
    assert 0.0 <= evaluation["model"]["test_auroc"] <= 1.0
    assert evaluation["pca"]["test_auroc"] is not None
    for name in ("loss.png", "scores.png"):
        assert (Path(tiny.paths.plots) / name).stat().st_size > 1000
