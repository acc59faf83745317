"""Stage `evaluate`: the published outputs against the labels and a PCA baseline
(metrics/eval.json), anomaly flags at the detector's threshold, fitted on validation by
the detector stage (reports/anomalies.csv), and the plots. Series scored per time step also get their
timeline (outputs/timeline), per-step metrics (eval.json `points`) and events
(reports/events.csv): points.py.

Three steps with small signatures: `load` (inputs.py) reads the outputs and the prepared
inputs once, `score_metrics` and `flag_anomalies` compute the figures, `draw` (figures.py)
writes the plots.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from seqmodels.config import Config
from seqmodels.evaluation import (
    Scored,
    Threshold,
    class_accuracy,
    evaluate_scores,
    evaluate_tokens,
    flag_summary,
    pca_scores,
)
from seqmodels.publish import clean_stale_staging, publishing, write_json_atomic, write_text_atomic
from seqmodels.stages.evaluate.figures import draw
from seqmodels.stages.evaluate.inputs import Evaluation, load, reconstructions
from seqmodels.stages.evaluate.points import evaluate_points, publish_points
from seqmodels.thresholds import read_thresholds


def run(cfg: Config) -> None:
    inputs = load(cfg)
    thresholds = read_thresholds(cfg.paths.detector)
    result, baseline = score_metrics(inputs, cfg.seed)
    threshold, flags = flag_anomalies(inputs, cfg, result, thresholds.window)
    points = evaluate_points(inputs, cfg, thresholds)
    if points is not None:
        result["points"] = points.section
    plot_dir = Path(cfg.paths.plots)
    for target in (plot_dir, Path(cfg.paths.timeline)):
        clean_stale_staging(target)
    with publishing(plot_dir) as staging:
        skipped = draw(inputs, cfg, staging, result, baseline, threshold, flags, points)
    if skipped:
        result["plots_skipped"] = skipped
    publish_points(points, cfg)
    write_json_atomic(cfg.paths.eval_metrics, result)
    for name, reason in skipped.items():
        print(f"evaluate: no {plot_dir / name}: {reason}")
    print(f"evaluated {len(inputs.frame)} rows -> {cfg.paths.eval_metrics}, {cfg.paths.anomalies} "
          f"({int(flags.sum())} flagged): "
          + json.dumps({k: v for k, v in result.items() if k != "rows"}, sort_keys=True))


def score_metrics(inputs: Evaluation, seed: int) -> tuple[dict[str, Any], Scored | None]:
    """The model's figures beside its baseline: PCA of the same latent size under the same
    score for real values, a unigram model for tokens (whose quality is exact match)."""
    scored, spec = inputs.scored, inputs.spec
    baseline = None
    if spec.discrete:
        decoded = reconstructions(inputs) if inputs.has_reconstructions else None
        result = evaluate_tokens(inputs.x.astype(np.int64), decoded, scored.score, scored.split)
    else:
        baseline = Scored(split=scored.split, label=scored.label,
                          score=pca_scores(inputs.x, scored.split, inputs.model_cfg, spec.input_shape, seed))
        result = evaluate_scores(scored, baseline)
    if "predicted_class" in inputs.frame.columns and "label" in inputs.frame.columns:
        result["model"]["accuracy"] = class_accuracy(inputs.frame)
    return result, baseline


def flag_anomalies(inputs: Evaluation, cfg: Config, result: dict[str, Any],
                   threshold: Threshold) -> tuple[Threshold, np.ndarray]:
    """One flag per row at the detector's threshold (fitted on validation scores by the
    detector stage) into the report and `result`."""
    flags = inputs.scored.score > threshold.value
    result["threshold"] = threshold.to_dict()
    result["anomalies"] = flag_summary(inputs.scored, flags)
    result["rows"] = len(inputs.frame)
    write_text_atomic(cfg.paths.anomalies, inputs.frame.assign(is_anomaly=flags).to_csv(index=False))
    return threshold, flags
