"""Stage `evaluate`: the published outputs against the labels and a PCA baseline
(metrics/eval.json), anomaly flags at the detector's threshold, fitted on validation by
the detector stage (reports/anomalies.csv), and the plots. Series scored per time step also get their
timeline (outputs/timeline), per-step metrics (eval.json `points`) and events
(reports/events.csv): points.py.

Steps with small signatures: `load` (inputs.py) reads the outputs' per-row scalars once and
leaves the prepared inputs on disk, read a batch at a time; `fit_baselines` fits PCA and
k-NN on a bounded sample; `score_metrics` and `flag_anomalies` compute the figures; `draw`
(figures.py) writes the plots. Every output is published at the end, so a stage killed while
it computes leaves the previous run's outputs whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from seqmodels.config import Config
from seqmodels.evaluation import (
    Baselines,
    Scored,
    Threshold,
    class_accuracy,
    evaluate_scores,
    evaluate_tokens,
    flag_summary,
)
from seqmodels.publish import clean_stale_staging, publishing, write_json_atomic, write_text_atomic
from seqmodels.stages.evaluate.figures import draw
from seqmodels.stages.evaluate.inputs import (
    Evaluation,
    example_batches,
    example_rows,
    fit_baselines,
    load,
    reconstructions,
)
from seqmodels.stages.evaluate.points import evaluate_points, write_events
from seqmodels.thresholds import read_thresholds


def run(cfg: Config) -> None:
    inputs = load(cfg)
    thresholds = read_thresholds(cfg.paths.detector)
    baselines = None if inputs.spec.discrete else fit_baselines(inputs, cfg.seed)
    result, baseline = score_metrics(inputs, baselines)
    threshold, flags = flag_anomalies(inputs, result, thresholds.window)
    plot_dir = Path(cfg.paths.plots)
    for target in (plot_dir, Path(cfg.paths.timeline)):
        clean_stale_staging(target)
    with publishing(cfg.paths.timeline) as timeline_dir:  # written as the series are scored
        points = evaluate_points(inputs, cfg, thresholds, baselines, timeline_dir)
        if points is not None:
            result["points"] = points.section
        with publishing(plot_dir) as staging:
            skipped = draw(inputs, cfg, staging, result, baseline, threshold, flags, points)
        # every output is published here, within a second: a stage killed while it computed
        # (minutes at 10M rows) leaves all of the previous run's, none of them half replaced
        write_events(points, cfg)
    if skipped:
        result["plots_skipped"] = skipped
    write_text_atomic(cfg.paths.anomalies, inputs.frame.assign(is_anomaly=flags).to_csv(index=False))
    write_json_atomic(cfg.paths.eval_metrics, result)
    for name, reason in skipped.items():
        print(f"evaluate: no {plot_dir / name}: {reason}")
    print(f"evaluated {len(inputs.frame)} rows -> {cfg.paths.eval_metrics}, {cfg.paths.anomalies} "
          f"({int(flags.sum())} flagged): "
          + json.dumps({k: v for k, v in result.items() if k != "rows"}, sort_keys=True))


def score_metrics(inputs: Evaluation, baselines: Baselines | None) -> tuple[dict[str, Any], Scored | None]:
    """The model's figures beside its baseline: PCA of the same latent size under the same
    score for real values (streamed over the examples), a unigram model for tokens (whose
    quality is exact match; token sequences are short and few, and read whole)."""
    scored = inputs.scored
    baseline = None
    if baselines is None:
        decoded = reconstructions(inputs) if inputs.has_reconstructions else None
        tokens = example_rows(inputs, np.arange(len(inputs.frame))).astype(np.int64)
        result = evaluate_tokens(tokens, decoded, scored.score, scored.split)
    else:
        pca = [baselines.pca_scores(x) for _, x in example_batches(inputs)]
        baseline = Scored(split=scored.split, label=scored.label, score=np.concatenate(pca))
        result = evaluate_scores(scored, baseline)
    if "predicted_class" in inputs.frame.columns and "label" in inputs.frame.columns:
        result["model"]["accuracy"] = class_accuracy(inputs.frame)
    return result, baseline


def flag_anomalies(inputs: Evaluation, result: dict[str, Any],
                   threshold: Threshold) -> tuple[Threshold, np.ndarray]:
    """One flag per row at the detector's threshold (fitted on validation scores by the
    detector stage) into `result`; the report is written with the other outputs, at the end."""
    flags = inputs.scored.score > threshold.value
    result["threshold"] = threshold.to_dict()
    result["anomalies"] = flag_summary(inputs.scored, flags)
    result["rows"] = len(inputs.frame)
    return threshold, flags
