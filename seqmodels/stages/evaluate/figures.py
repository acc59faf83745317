"""What the evaluate stage draws, from what it loaded and computed: one small function per
plot, each deciding whether its plot can be drawn (seqmodels.plots only draws)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from seqmodels import plots
from seqmodels.config import Config
from seqmodels.distributed.live import read_history
from seqmodels.evaluation import Scored, Threshold, latent_projection, pick_examples, roc_points
from seqmodels.spec import VOCAB_FILE
from seqmodels.stages.evaluate.inputs import Evaluation, example_rows, reconstructions
from seqmodels.stages.evaluate.points import PointResult


def draw(inputs: Evaluation, cfg: Config, staging: Path, result: dict[str, Any], baseline: Scored | None,
         threshold: Threshold, flags: np.ndarray, points: PointResult | None = None) -> dict[str, str]:
    """Write every plot into `staging`; returns {plot: why it was not drawn}."""
    plots.loss_curves(read_history(cfg.paths.train_live), staging / "loss.png")
    score_histogram(inputs.scored, threshold, staging)
    latents(inputs, cfg.seed, staging)
    skipped = {}
    why_not = roc(inputs, result, baseline, flags, staging)
    if why_not:
        skipped["roc.png"] = why_not
    why_not = examples(inputs, cfg, staging)
    if why_not:
        skipped["examples.png"] = why_not
    if points is not None:  # data not scored per step has no timeline to draw
        timeline(points, staging)
    return skipped


def timeline(points: PointResult, staging: Path) -> None:
    """Each series' values over its per-step score, labelled and flagged runs, zooms on events:
    drawn from the candidates kept while the series were scored (plots.TimelineCandidates)."""
    plots.timeline(points.plotted.series, points.threshold.value, staging / "timeline.png",
                   total_series=points.plotted.total)


def score_histogram(scored: Scored, threshold: Threshold, staging: Path) -> None:
    text = (f"({threshold.percentile:g}th percentile of {threshold.fitted_on})"
            if threshold.method == "percentile" else f"(best F1 on {threshold.fitted_on})")
    plots.score_histogram(scored.score, scored.split, scored.label, staging / "scores.png",
                          threshold.value, text)


def latents(inputs: Evaluation, seed: int, staging: Path) -> None:
    projection, explained = latent_projection(inputs.latent, seed)
    label = inputs.frame["label"].to_numpy() if "label" in inputs.frame.columns else None
    plots.latent_scatter(projection, inputs.scored.split, label,
                         "anomaly" if inputs.spec.anomaly_labels else "class",
                         staging / "latents.png", explained, seed)


def roc(inputs: Evaluation, result: dict[str, Any], baseline: Scored | None, flags: np.ndarray,
        staging: Path) -> str | None:
    """The test ROC of the model (and of PCA), with the threshold's operating point; or why not."""
    scored, spec = inputs.scored, inputs.spec
    if scored.label is None or result["model"].get("test_auroc") is None:
        if spec.has_labels and not spec.anomaly_labels:
            return "the labels are class ids, not anomaly flags"
        return result["model"].get("test_auroc_note", "no anomaly labels in the data")
    test = scored.split == "test"
    points = roc_points(scored.score[test], scored.label[test])
    points.to_csv(staging / "roc.csv", index=False)  # for `dvc plots show`
    curves = {"model": (points["fpr"].to_numpy(), points["tpr"].to_numpy(), result["model"]["test_auroc"])}
    if baseline is not None and result["pca"].get("test_auroc") is not None:
        pca_points = roc_points(baseline.score[test], baseline.label[test])
        curves[f"PCA, {inputs.model_cfg.latent_dim} components"] = (
            pca_points["fpr"].to_numpy(), pca_points["tpr"].to_numpy(), result["pca"]["test_auroc"])
    false_positive_rate = float(np.mean(flags[test][scored.label[test] == 0]))
    plots.roc(curves, staging / "roc.png",
              operating_point=(false_positive_rate, result["anomalies"]["test"]["recall"]))
    return None


def examples(inputs: Evaluation, cfg: Config, staging: Path) -> str | None:
    """Inputs beside their reconstructions for a few normal and anomalous test rows; or why not."""
    draw_examples = plots.EXAMPLE_PLOTS.get(inputs.spec.kind)
    if draw_examples is None:
        return f"no example plot for data.kind={inputs.spec.kind!r} (seqmodels.plots.EXAMPLE_PLOTS)"
    if not inputs.has_reconstructions:
        return "the outputs hold no reconstructions (infer.write_reconstructions=false)"
    scored, spec = inputs.scored, inputs.spec
    picked = pick_examples(scored.score, scored.split, scored.label, cfg.evaluate.examples, cfg.seed)
    ids = inputs.frame[spec.id_column].to_numpy()
    rows = np.concatenate(list(picked.values()))
    reconstruction = dict(zip(rows.tolist(), reconstructions(inputs, ids[rows]), strict=True))
    x = dict(zip(rows.tolist(), example_rows(inputs, rows), strict=True))
    vocab = Path(cfg.paths.prepared) / VOCAB_FILE
    shown = plots.Examples(
        groups={group: [{"id": ids[i], "score": float(scored.score[i]), "x": x[i],
                         "reconstruction": reconstruction[i]} for i in members]
                for group, members in picked.items()},
        input_shape=spec.input_shape, features=spec.features, id_column=spec.id_column,
        vocab=json.loads(vocab.read_text())["tokens"] if vocab.is_file() else None)
    draw_examples(shown, staging / "examples.png")
    return None
