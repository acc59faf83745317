"""Evaluate without Ray: thresholds, anomaly flags, the report table and every plot, on small
synthetic prepared data + inference outputs written in the pipeline's formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqmodels.config import ThresholdConfig
from seqmodels.data.tables import examples_to_arrow, fixed_list
from seqmodels.distributed.live import write_history
from seqmodels.evaluation import (
    Scored,
    best_f1_threshold,
    choose_threshold,
    pick_examples,
    precision_recall_f1,
)
from seqmodels.publish import MANIFEST
from seqmodels.spec import EXAMPLES_FILE, SPEC_FILE, VOCAB_FILE, DataSpec
from seqmodels.stages import evaluate
from seqmodels.stages.detector import thresholds_from_outputs
from seqmodels.thresholds import write_thresholds
from tests.conftest import tiny_config


def scored(seed=0, val_anomalies=0):
    rng = np.random.default_rng(seed)
    split = np.array(["train"] * 40 + ["val"] * 20 + ["test"] * 30)
    label = np.zeros(len(split), dtype=np.int64)
    label[-10:] = 1
    label[40:40 + val_anomalies] = 1
    score = rng.gamma(2.0, 1.0, len(split)) + 4.0 * label
    return Scored(split=split, score=score, label=label)


def test_percentile_threshold_is_numpys_percentile_of_validation_scores():
    rows = scored()
    threshold = choose_threshold(rows, ThresholdConfig(method="percentile", percentile=95))
    assert threshold.value == np.percentile(rows.score[rows.split == "val"], 95)
    assert (threshold.method, threshold.fitted_on, threshold.note) == ("percentile", "val", None)


def brute_force_best_f1(score, label):
    return max(precision_recall_f1(score > t, label)["f1"] for t in np.r_[score, score.min() - 1])


def test_best_f1_threshold_reaches_the_best_f1_of_any_cut():
    # Overlapping classes with ties: no threshold separates them perfectly.
    score = np.array([0.1, 0.2, 0.2, 0.3, 0.5, 0.5, 0.6, 0.7, 0.9, 0.95])
    label = np.array([0, 0, 1, 0, 0, 1, 1, 0, 1, 1])
    threshold, f1 = best_f1_threshold(score, label)
    achieved = precision_recall_f1(score > threshold, label)["f1"]
    assert achieved == pytest.approx(f1) == pytest.approx(brute_force_best_f1(score, label))
    # Best: flag >= 0.5 (4 of 5 anomalies, 2 false positives: F1 = 8/11); the tied 0.5 rows are
    # flagged together, and the cut lies half-way to the next lower score (0.3).
    assert f1 == pytest.approx(8 / 11) and threshold == pytest.approx(0.4)

    rows = scored(seed=3, val_anomalies=5)
    chosen = choose_threshold(rows, ThresholdConfig(method="best_f1"))
    val = rows.split == "val"
    assert chosen.method == "best_f1" and chosen.note is None
    assert precision_recall_f1(rows.score[val] > chosen.value, rows.label[val])["f1"] == pytest.approx(
        brute_force_best_f1(rows.score[val], rows.label[val]))


def test_best_f1_falls_back_to_the_percentile_on_normal_only_validation():
    rows = scored()  # one-class setup: validation holds normal rows only
    chosen = choose_threshold(rows, ThresholdConfig(method="best_f1", percentile=90))
    assert chosen.method == "percentile" and chosen.requested == "best_f1"
    assert "only label [0]" in chosen.note
    assert chosen.value == np.percentile(rows.score[rows.split == "val"], 90)


def test_examples_are_normal_and_anomalous_test_rows_or_the_extremes_without_labels():
    rows = scored()
    picked = pick_examples(rows.score, rows.split, rows.label, 3, seed=0)
    assert list(picked) == ["normal (test)", "anomalous (test)"]
    assert all(rows.label[picked["anomalous (test)"]] == 1) and all(rows.label[picked["normal (test)"]] == 0)
    assert all(rows.split[np.concatenate(list(picked.values()))] == "test")
    unlabelled = pick_examples(rows.score, rows.split, None, 2, seed=0)
    test_scores = np.sort(rows.score[rows.split == "test"])
    assert sorted(rows.score[unlabelled["highest score (test)"]]) == sorted(test_scores[-2:])


# --- The whole evaluate stage on synthetic outputs ---------------------------------------------------

SPECS = {
    "series": DataSpec(kind="series", input_shape=(20, 2), features=("a", "b"), has_labels=True),
    "tabular": DataSpec(kind="tabular", input_shape=(5,), features=tuple("vwxyz"), has_labels=True),
    "images": DataSpec(kind="images", input_shape=(1, 8, 8), has_labels=True, n_classes=3),
    "tokens": DataSpec(kind="tokens", input_shape=(7,), vocab_size=8),
}
VOCAB = ["<pad>", "<bos>", "<eos>", "<unk>", "a", "b", "c", "d"]


def write_fake_run(cfg, spec: DataSpec, reconstructions: bool = True, n: int = 60) -> None:
    """Prepared examples, inference outputs (+ manifest) and a DVCLive log, as the stages write them."""
    rng = np.random.default_rng(0)
    key = spec.id_column
    split = np.array(["train"] * (n // 2) + ["val"] * (n // 4) + ["test"] * (n - n // 2 - n // 4))
    frame = pd.DataFrame({key: np.arange(n, dtype=np.int64), "split": split})
    if spec.discrete:
        lengths = rng.integers(1, spec.input_dim, n)
        x = np.zeros((n, spec.input_dim), dtype=np.int64)
        for row, length in enumerate(lengths):
            x[row, :length] = rng.integers(4, len(VOCAB), length)
            x[row, length] = 2
        reconstruction = x.copy()
        reconstruction[::3, 0] = 4  # some words decode wrongly
        score = rng.gamma(2.0, 0.5, n)
    else:
        x = rng.uniform(0, 1, (n, spec.input_dim))
        reconstruction = x + rng.normal(0, 0.05, x.shape)
        if spec.anomaly_labels:
            frame["label"] = np.where(np.arange(n) >= n - 8, 1, 0)
            reconstruction[frame["label"] == 1] += rng.normal(0, 0.5, (8, spec.input_dim))
        elif spec.has_labels:
            frame["label"] = rng.integers(0, spec.n_classes, n)
        score = ((reconstruction - x) ** 2).mean(axis=1)
    frame["x"] = list(x)
    prepared = Path(cfg.paths.prepared)
    prepared.mkdir(parents=True)
    pq.write_table(examples_to_arrow(frame, spec.input_dim, spec.discrete), prepared / EXAMPLES_FILE)
    (prepared / SPEC_FILE).write_text(json.dumps(spec.to_dict()))
    if spec.discrete:
        (prepared / VOCAB_FILE).write_text(json.dumps({"tokens": VOCAB}))

    outputs = Path(cfg.paths.outputs)
    outputs.mkdir(parents=True)
    table = pa.Table.from_pandas(frame.drop(columns=["x"]), preserve_index=False)
    table = table.append_column("latent", fixed_list(rng.normal(size=(n, 4))))
    if reconstructions:
        table = table.append_column("reconstruction", fixed_list(reconstruction))
    table = table.append_column("score", pa.array(score, pa.float32()))
    # Two parts, written out of id order, as Ray Data may.
    pq.write_table(table.slice(n // 2), outputs / "part-00000-0.parquet")
    pq.write_table(table.slice(0, n // 2), outputs / "part-00001-0.parquet")
    (outputs / MANIFEST).write_text(json.dumps({"params": {"model": {"latent_dim": 4}}}))
    write_thresholds(Path(cfg.paths.detector), thresholds_from_outputs(cfg, spec, "window"))
    write_history(cfg.paths.train_live, [
        {"epoch": e, "train_loss": 1.0 / (e + 1), "val_loss": 1.2 / (e + 1), "train_recon": 0.9 / (e + 1),
         "val_recon": 1.1 / (e + 1), "train_task": 0.5, "val_task": 0.6, "train_kl": 0.0, "val_kl": 0.0}
        for e in range(5)])


@pytest.mark.parametrize("kind", list(SPECS))
def test_evaluate_writes_report_metrics_and_every_plot(tmp_path, kind):
    cfg = tiny_config(tmp_path)
    spec = SPECS[kind]
    write_fake_run(cfg, spec)
    evaluate.run(cfg)

    result = json.loads(Path(cfg.paths.eval_metrics).read_text())
    report = pd.read_csv(cfg.paths.anomalies)
    assert len(report) == result["rows"] == 60
    assert list(report[spec.id_column]) == list(range(60))
    val = report.loc[report["split"] == "val", "score"].to_numpy()
    threshold = result["threshold"]
    assert threshold["method"] == "percentile" and threshold["fitted_on"] == "val"
    assert threshold["value"] == pytest.approx(np.percentile(val, 99))
    assert report["is_anomaly"].sum() == (report["score"] > threshold["value"]).sum()
    assert sum(result["anomalies"]["flagged"].values()) == report["is_anomaly"].sum()

    expected = {"loss.png", "scores.png", "latents.png", "examples.png"}
    if spec.anomaly_labels:
        expected |= {"roc.png", "roc.csv"}
        assert set(result["anomalies"]["test"]) == {"precision", "recall", "f1"}
        assert result["anomalies"]["test"]["recall"] > 0.5  # anomalies reconstruct far worse
        roc = pd.read_csv(Path(cfg.paths.plots) / "roc.csv")
        assert list(roc.columns) == ["fpr", "tpr", "threshold"] and roc["tpr"].iloc[-1] == 1.0
        assert np.isfinite(roc["threshold"]).all()
    else:
        assert set(result["plots_skipped"]) == {"roc.png"}
    written = {p.name: p.stat().st_size for p in Path(cfg.paths.plots).iterdir()}
    assert set(written) == expected
    assert all(size > 1000 for name, size in written.items() if name.endswith(".png"))


def test_outputs_without_reconstructions_skip_the_example_plot(tmp_path):
    cfg = tiny_config(tmp_path, evaluate={"threshold": {"method": "best_f1", "percentile": 90}})
    write_fake_run(cfg, SPECS["series"], reconstructions=False)
    evaluate.run(cfg)
    result = json.loads(Path(cfg.paths.eval_metrics).read_text())
    assert "examples.png" not in {p.name for p in Path(cfg.paths.plots).iterdir()}
    assert "write_reconstructions" in result["plots_skipped"]["examples.png"]
    assert result["threshold"]["requested"] == "best_f1" and "percentile" in result["threshold"]["note"]
    assert (Path(cfg.paths.plots) / "latents.png").stat().st_size > 1000


def test_a_modality_without_an_example_plot_skips_it_and_says_why(tmp_path, monkeypatch):
    from seqmodels import plots

    monkeypatch.delitem(plots.EXAMPLE_PLOTS, "series")
    cfg = tiny_config(tmp_path)
    write_fake_run(cfg, SPECS["series"])
    evaluate.run(cfg)
    result = json.loads(Path(cfg.paths.eval_metrics).read_text())
    assert "examples.png" not in {p.name for p in Path(cfg.paths.plots).iterdir()}
    assert "no example plot for data.kind='series'" in result["plots_skipped"]["examples.png"]
    assert (Path(cfg.paths.plots) / "latents.png").stat().st_size > 1000


def test_evaluate_scores_the_pca_baseline_with_the_models_score(tmp_path):
    """The manifest says what inference scored with; the baseline must use the same score."""
    results = {}
    for score in ("mse", "dtw"):
        cfg = tiny_config(tmp_path / score)
        write_fake_run(cfg, SPECS["series"])
        manifest = Path(cfg.paths.outputs) / MANIFEST
        manifest.write_text(json.dumps({"params": {"model": {"latent_dim": 4, "score": score}}}))
        evaluate.run(cfg)
        results[score] = json.loads(Path(cfg.paths.eval_metrics).read_text())["pca"]["mse"]["test"]
    # warping can only lower the error (the unwarped alignment is one of its paths)
    assert 0 < results["dtw"] < results["mse"]


def test_example_rows_come_from_the_row_groups_that_hold_them_in_the_order_asked(tmp_path):
    from types import SimpleNamespace

    import pyarrow as pa
    import pyarrow.parquet as pq

    from seqmodels.data.tables import fixed_list
    from seqmodels.stages.evaluate.inputs import example_batches, example_rows

    x = np.arange(30 * 4, dtype=np.float32).reshape(30, 4)
    path = tmp_path / "examples.parquet"
    pq.write_table(pa.table({"window_id": np.arange(30), "x": fixed_list(x)}), path, row_group_size=8)
    inputs = SimpleNamespace(examples=path, spec=SimpleNamespace(input_dim=4))
    wanted = np.array([7, 0, 25, 7, 8])
    np.testing.assert_array_equal(example_rows(inputs, wanted), x[wanted].astype(np.float64))
    assert [numbers.tolist() for numbers, _ in example_batches(inputs, np.array([0, 7, 8, 25]))] == [
        [0, 7], [8], [25]]  # a batch per row group holding a wanted row; rows 16-23 unread
    everything = np.concatenate([batch for _, batch in example_batches(inputs)])
    np.testing.assert_array_equal(everything, x.astype(np.float64))
