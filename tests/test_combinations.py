"""Every documented modality x model family x plain/VAE, through the stages' own code.

For each combination: the prepare stage on a small slice of data, one epoch of the
library's training loop, the model exported as the train stage exports it, predictions
written and checked against the output schema the infer stage uses, and the evaluate
stage. No Ray: the Ray paths are covered in test_distributed and the end-to-end tests.
The matrix comes from the model registry and must match the README's family table.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from seqmodels.checkpoints import export_model, load_exported_model
from seqmodels.config import Config
from seqmodels.data import registry
from seqmodels.data.tables import parquet_write_options, read_spec, vectors
from seqmodels.distributed.infer import Predictor
from seqmodels.distributed.live import write_history
from seqmodels.errors import ConfigError
from seqmodels.models import build_model
from seqmodels.models.registry import families_for, model_kinds
from seqmodels.publish import publishing
from seqmodels.spec import EXAMPLES_FILE
from seqmodels.stages import detector, evaluate, infer, prepare, validate
from seqmodels.stages.train import read_scaler
from seqmodels.training import fit, in_memory_batches, make_optimizer, make_scheduler, seed_everything
from tests.conftest import REPO, make_series_table, tiny_config

MODALITIES = tuple(registry.MODALITIES)
MATRIX = [(data_kind, family, variational) for data_kind in MODALITIES
          for family in families_for(data_kind) for variational in (False, True)]


def write_source(kind: str, directory: Path) -> dict:
    """A small file in the modality's input contract; returns the data.* params to read it."""
    rng = np.random.default_rng(0)
    if kind == "series":
        make_series_table().to_csv(directory / "series.csv", index=False)
        return {"source": str(directory / "series.csv"), "window": 20, "stride": 10}
    if kind == "images":  # 150 of scikit-learn's digits, as a user's Parquet file
        from sklearn.datasets import load_digits

        digits = load_digits()
        frame = pd.DataFrame({"label": digits.target[:150].astype(np.int64)})
        frame["x"] = list((digits.images[:150] / 16.0).reshape(150, -1).astype(np.float32))
        frame.to_parquet(directory / "images.parquet")
        return {"kind": "images", "source": str(directory / "images.parquet"), "image_shape": [1, 8, 8]}
    if kind == "tabular":
        values = rng.normal(size=(160, 5))
        values[-20:] += 4.0
        frame = pd.DataFrame(values, columns=[f"v{i}" for i in range(5)]).assign(
            label=np.r_[np.zeros(140), np.ones(20)].astype(np.int64))
        frame.to_csv(directory / "rows.csv", index=False)
        return {"kind": "tabular", "source": str(directory / "rows.csv")}
    words = {"".join(rng.choice(list("abcdefgh"), rng.integers(2, 7))) for _ in range(300)}
    (directory / "words.txt").write_text("\n".join(sorted(words)) + "\n")
    return {"kind": "tokens", "source": str(directory / "words.txt"), "max_length": 8}


def train_one_epoch(cfg: Config) -> None:
    """The library's one training loop on the prepared train/val rows, exported as `train` does."""
    spec = read_spec(cfg.paths.prepared)
    examples = pq.read_table(Path(cfg.paths.prepared) / EXAMPLES_FILE)
    split = examples.column("split").to_numpy(zero_copy_only=False)
    x = vectors(examples.column("x"))
    tensors = {"x": torch.from_numpy(x.astype(np.int64 if spec.discrete else np.float32))}
    if "label" in spec.model_inputs:
        tensors["label"] = torch.from_numpy(examples.column("label").to_numpy().copy())

    def rows(name: str) -> dict[str, torch.Tensor]:
        return {key: value[torch.from_numpy(split == name)] for key, value in tensors.items()}

    seed_everything(cfg.seed)
    model = build_model(cfg.model, spec)
    optimizer = make_optimizer(model, cfg.train)
    state = fit(model, optimizer, make_scheduler(optimizer, cfg.train),
                in_memory_batches(rows("train"), cfg.train.batch_size, shuffle=True, seed=cfg.seed),
                in_memory_batches(rows("val"), cfg.train.batch_size, shuffle=False),
                cfg.train, cfg.model, device=torch.device("cpu"), log=None)
    export_model(Path(cfg.paths.model), model.state_dict(), cfg.model, spec,
                 extra={"scaler": read_scaler(cfg.paths.prepared)})
    write_history(cfg.paths.train_live, state.history)


def predict_in_process(cfg: Config) -> int:
    """What the infer stage does, with the Predictor called directly instead of in Ray Data's
    actor pool; the same output checks and manifest, published the same way."""
    model, _, spec = load_exported_model(cfg.paths.model)
    windows = Path(cfg.paths.prepared) / EXAMPLES_FILE
    predictor = Predictor(cfg.paths.model, use_gpu=False,
                          write_reconstructions=cfg.infer.write_reconstructions)
    with publishing(cfg.paths.outputs) as staging:
        table = pq.read_table(windows)
        batches = [predictor(table.slice(start, cfg.infer.batch_size))
                   for start in range(0, table.num_rows, cfg.infer.batch_size)]
        with pq.ParquetWriter(staging / "part-00000.parquet", batches[0].schema,
                              **parquet_write_options(batches[0].schema)) as writer:
            for batch in batches:
                writer.write_table(batch)
        return infer.check_and_describe_outputs(cfg, staging, model, spec, windows)


@pytest.mark.parametrize(("data_kind", "family", "variational"), MATRIX,
                         ids=[f"{d}-{f}-{'vae' if v else 'plain'}" for d, f, v in MATRIX])
def test_every_documented_combination_prepares_trains_infers_and_evaluates(tmp_path, data_kind, family,
                                                                         variational):
    cfg = tiny_config(tmp_path, data=write_source(data_kind, tmp_path),
                      model={"kind": family, "variational": variational, "beta": 0.1, "num_layers": 1},
                      train={"epochs": 1, "workers": 1, "batch_size": 16})
    prepare.run(cfg)
    validate.run(cfg)
    train_one_epoch(cfg)
    rows = predict_in_process(cfg)
    detector.run(cfg)
    evaluate.run(cfg)

    spec = read_spec(cfg.paths.prepared)
    model, _, _ = load_exported_model(cfg.paths.model)
    assert rows == pq.ParquetFile(Path(cfg.paths.prepared) / EXAMPLES_FILE).metadata.num_rows
    output_columns = set(pq.read_schema(next(Path(cfg.paths.outputs).glob("*.parquet"))).names)
    assert ("predicted_class" in output_columns) == (model.predicted_classes > 1)
    result = json.loads(Path(cfg.paths.eval_metrics).read_text())
    assert result["rows"] == rows
    # Accuracy exactly where a classifier head exists; AUROC exactly where anomaly labels do.
    assert ("accuracy" in result["model"]) == (model.predicted_classes > 1)
    if spec.anomaly_labels:
        assert 0.0 <= result["model"]["test_auroc"] <= 1.0
    if spec.discrete:
        assert set(result["model"]["exact_match"]) == {"train", "val", "test"}
    assert (Path(cfg.paths.plots) / "examples.png").stat().st_size > 0


def test_the_readme_family_table_is_the_tested_matrix():
    text = (REPO / "README.md").read_text()
    table = text[text.index("| `data.kind` | bundled `data.source` | families |"):].split("\n\n")[0]
    documented = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        documented[re.findall(r"`([^`]+)`", cells[0])[0]] = sorted(
            name for name in re.findall(r"`([^`]+)`", cells[-1]) if name in model_kinds())
    assert documented == {kind: families_for(kind) for kind in MODALITIES}


REFUSED = [(data_kind, family) for data_kind, family in itertools.product(MODALITIES, model_kinds())
           if family not in families_for(data_kind)]


@pytest.mark.parametrize(("data_kind", "family"), REFUSED, ids=[f"{d}-{f}" for d, f in REFUSED])
def test_a_combination_outside_the_matrix_is_refused_when_params_load(tmp_path, data_kind, family):
    with pytest.raises(ConfigError) as caught:
        tiny_config(tmp_path, data={"kind": data_kind}, model={"kind": family})
    assert f"model.kind={family!r} cannot model data.kind={data_kind!r}" in caught.value.message
    assert all(kind in caught.value.fix for kind in families_for(data_kind))
