"""One function per pipeline stage: read inputs named in Config.paths, call the library,
publish outputs atomically. The DVC entry points in pipelines/ and the `seqmodels` CLI
both call these, so there is exactly one implementation of each stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from seqmodels.config import Config
from seqmodels.data import schemas
from seqmodels.data.build import build_examples
from seqmodels.data.tables import examples_to_arrow, parquet_write_options, read_spec
from seqmodels.errors import DataError, DataValidationError
from seqmodels.models.config import ModelConfig
from seqmodels.publish import (
    MANIFEST,
    build_manifest,
    clean_stale_staging,
    hash_path,
    publishing,
    write_json_atomic,
    write_text_atomic,
)
from seqmodels.spec import EXAMPLES_FILE, SERIES_FILE, SPEC_FILE, SPLITS, VOCAB_FILE, DataSpec

if TYPE_CHECKING:
    from seqmodels.models.base import FusedAutoencoder

OUTPUT_VALIDATION_ROWS = 65_536
PREPARE_REPORT = "prepare-failures.json"


def prepare_report_path(cfg: Config) -> Path:
    """Where prepare writes the full Pandera report of input that fails validation: beside
    the validate stage's report, which stays that stage's own output."""
    return Path(cfg.paths.validation_report).with_name(PREPARE_REPORT)


def prepare(cfg: Config) -> None:
    target = Path(cfg.paths.prepared)
    clean_stale_staging(target)
    report = prepare_report_path(cfg)
    try:
        prepared = build_examples(cfg)
    except DataValidationError as error:
        schemas.write_report(report, [error.report])
        raise DataValidationError(error.what, where=f"{error.where} (full report: {report})",
                                  fix=error.fix) from None
    report.unlink(missing_ok=True)  # a report of an earlier failure no longer applies
    spec = prepared.spec
    with publishing(target) as staging:
        examples = examples_to_arrow(prepared.examples, spec.input_dim, spec.discrete)
        pq.write_table(examples, staging / EXAMPLES_FILE, **parquet_write_options(examples.schema))
        write_json_atomic(staging / SPEC_FILE, spec.to_dict())
        for name, payload in prepared.artifacts.items():
            if isinstance(payload, pd.DataFrame):
                payload.to_parquet(staging / name, index=False)
            else:
                write_json_atomic(staging / name, payload)
    counts = prepared.examples.groupby("split").size().reindex(list(SPLITS), fill_value=0).to_dict()
    shape = "x".join(str(n) for n in spec.input_shape)
    print(f"prepared {prepared.description} of shape {shape} {counts} in {target}")


def validate(cfg: Config) -> None:
    prepared = Path(cfg.paths.prepared)
    spec = read_spec(prepared)
    checks = [(spec.kind, prepared / EXAMPLES_FILE,
               schemas.examples_schema(spec.kind, spec.input_dim, spec.n_classes, spec.vocab_size))]
    if spec.kind == "series":
        checks.insert(0, ("canonical series", prepared / SERIES_FILE,
                          schemas.series_schema(list(spec.features))))
    entries: list[dict[str, Any]] = []
    failures: list[DataValidationError] = []
    for table, path, schema in checks:
        try:
            frame = pd.read_parquet(path)
        except Exception as error:
            raise DataError(f"cannot read {path}: {error}", where=str(path),
                            fix="rerun the prepare stage") from None
        try:
            schemas.validate_table(frame, schema, table=table, source=str(path))
            entries.append({"table": table, "source": str(path), "valid": True, "rows": len(frame)})
        except DataValidationError as error:
            entries.append({**error.report, "rows": len(frame)})
            failures.append(error)
    report = Path(cfg.paths.validation_report)
    schemas.write_report(report, entries)
    if failures:
        raise DataValidationError("\n".join(f.what for f in failures), where=str(report),
                                  fix="full report in the file above; fix the data and rerun")
    tables = ", ".join(f"{e['table']} ({e['rows']} rows)" for e in entries)
    print(f"validated {tables} -> {report}")


def train(cfg: Config) -> None:
    from seqmodels.checkpoints import export_model
    from seqmodels.distributed.live import write_history
    from seqmodels.distributed.train import train_distributed

    spec = read_spec(cfg.paths.prepared)
    model_dir = Path(cfg.paths.model)
    clean_stale_staging(model_dir)
    outcome = train_distributed(cfg)
    best = {k: v for k, v in outcome.best_metrics.items() if isinstance(v, (int, float))}
    with publishing(model_dir) as staging:
        export_model(staging, outcome.weights, cfg.model, spec,
                     extra={"best_metrics": best, "run": outcome.run_path, "seed": cfg.seed})
    write_history(cfg.paths.train_live, outcome.history)
    history = pd.DataFrame(outcome.history)
    write_json_atomic(cfg.paths.train_metrics, {
        "best_epoch": int(best["epoch"]) + 1,
        "best_val_loss": best.get("val_loss"),
        "best_train_loss": best.get("train_loss"),
        "epochs_run": len(history),
        "first_train_loss": float(history["train_loss"].iloc[0]),
        "mean_samples_per_s": float(history["samples_per_s"].mean()),
        "workers": cfg.train.workers,
        "nodes_used": len(set(outcome.worker_nodes)),
        "resumed_at_epochs": [epoch + 1 for epoch in outcome.resumed_at],
    })
    print(f"trained {cfg.model.kind} for {len(history)} epochs; best epoch {int(best['epoch']) + 1} "
          f"val_loss={best.get('val_loss', float('nan')):.5f}; exported to {model_dir}")
    print("worker nodes by rank: " + ", ".join(node[:12] for node in outcome.worker_nodes))


def _validate_output_parts(directory: Path, schema) -> int:
    """Validate the written Parquet in bounded chunks; returns the row count."""
    rows = 0
    for part in sorted(directory.glob("*.parquet")):
        for batch in pq.ParquetFile(part).iter_batches(batch_size=OUTPUT_VALIDATION_ROWS):
            schemas.validate_table(batch.to_pandas(), schema, table="inference output", source=str(part))
            rows += batch.num_rows
    return rows


def infer(cfg: Config) -> None:
    from seqmodels.checkpoints import load_exported_model
    from seqmodels.distributed.infer import predict_to_parquet

    prepared, model_dir, target = Path(cfg.paths.prepared), Path(cfg.paths.model), Path(cfg.paths.outputs)
    model, _, spec = load_exported_model(model_dir)  # fail fast, before Ray starts
    windows = prepared / EXAMPLES_FILE
    clean_stale_staging(target)
    with publishing(target) as staging:
        predict_to_parquet(cfg, model_dir, windows, staging)
        rows = check_and_describe_outputs(cfg, staging, model, spec, windows)
    print(f"wrote {rows} rows (latent_dim={model.cfg.latent_dim}) to {target}")


def inference_schema(model: FusedAutoencoder, spec: DataSpec, write_reconstructions: bool):
    """The columns a model's predictions have: what the model produces (a classifier head
    or not), not only what the data holds."""
    width = spec.input_dim if write_reconstructions else None
    return schemas.output_schema(spec.kind, width, model.cfg.latent_dim, spec.n_classes, spec.vocab_size,
                                 predicted_classes=model.predicted_classes)


def check_and_describe_outputs(cfg: Config, staging: Path, model: FusedAutoencoder, spec: DataSpec,
                               windows: Path) -> int:
    """Validate the predictions written into `staging` (one row per input window, each row in
    the model's output schema) and write their manifest; returns the row count."""
    model_dir = Path(cfg.paths.model)
    expected_rows = pq.ParquetFile(windows).metadata.num_rows
    rows = _validate_output_parts(staging, inference_schema(model, spec, cfg.infer.write_reconstructions))
    if rows != expected_rows:
        raise DataError(f"inference wrote {rows} rows for {expected_rows} input windows",
                        where=str(staging), fix="rerun the infer stage")
    split_counts = (pads.dataset(staging).to_table(columns=["split"]).column("split")
                    .value_counts().to_pylist())
    write_json_atomic(staging / MANIFEST, build_manifest(
        model={"path": str(model_dir), "sha256": hash_path(model_dir)},
        input={"path": str(windows), "sha256": hash_path(windows)},
        params=cfg.to_dict(),
        rows=rows,
        rows_per_split={item["values"]: item["counts"] for item in split_counts},
        schema=pads.dataset(staging, format="parquet").schema.to_string(show_schema_metadata=False),
    ))
    return rows


def _vector_columns(dataset: pads.Dataset) -> set[str]:
    import pyarrow as pa

    return {f.name for f in dataset.schema if pa.types.is_fixed_size_list(f.type)}


def evaluate(cfg: Config) -> None:
    from seqmodels.data.tables import vectors
    from seqmodels.evaluation import (
        Scored,
        choose_threshold,
        class_accuracy,
        evaluate_scores,
        evaluate_tokens,
        flag_summary,
        pca_scores,
        score_table,
    )

    outputs, prepared = Path(cfg.paths.outputs), Path(cfg.paths.prepared)
    manifest = json.loads((outputs / MANIFEST).read_text())
    spec = read_spec(prepared)
    key = spec.id_column
    dataset = pads.dataset(outputs, format="parquet")
    vector_columns = _vector_columns(dataset)
    # Every per-row scalar the outputs carry (ids, split, score, label, predicted class).
    scalars = [name for name in dataset.schema.names if name not in vector_columns]
    table = dataset.to_table(columns=[*scalars, "latent"]).sort_by(key)
    frame = table.drop_columns(["latent"]).to_pandas()
    examples = pq.read_table(prepared / EXAMPLES_FILE, columns=[key, "split", "x"]).sort_by(key)
    if not np.array_equal(examples.column(key).to_numpy(), frame[key].to_numpy()):
        raise DataError(f"{outputs} and {prepared / EXAMPLES_FILE} hold different {key}s",
                        where=str(outputs), fix="rerun the infer stage (dvc repro)")
    x = vectors(examples.column("x")).astype(np.float64)
    split = examples.column("split").to_numpy(zero_copy_only=False).astype(str)
    model_scores = score_table(frame, anomaly_labels=spec.anomaly_labels)
    model_cfg = ModelConfig.model_validate(manifest["params"]["model"])  # what inference scored with
    baseline = None
    if spec.discrete:  # token ids: the baseline is a unigram model, quality is exact-match
        decoded = None
        if "reconstruction" in vector_columns:
            decoded = vectors(dataset.to_table(columns=[key, "reconstruction"]).sort_by(key)
                              .column("reconstruction"))
        result = evaluate_tokens(x.astype(np.int64), decoded, model_scores.score, model_scores.split)
    else:
        baseline = Scored(split=split, score=pca_scores(x, split, model_cfg, spec.input_shape, cfg.seed),
                          label=model_scores.label)
        result = evaluate_scores(model_scores, baseline)
    if "predicted_class" in frame.columns and "label" in frame.columns:
        result["model"]["accuracy"] = class_accuracy(frame)

    # Anomaly flags: a threshold fitted on validation scores, one flag per row.
    threshold = choose_threshold(model_scores, cfg.evaluate.threshold)
    flags = model_scores.score > threshold.value
    result["threshold"] = threshold.to_dict()
    result["anomalies"] = flag_summary(model_scores, flags)
    result["rows"] = len(frame)
    report_path = Path(cfg.paths.anomalies)
    write_text_atomic(report_path, frame.assign(is_anomaly=flags).to_csv(index=False))

    plot_dir = Path(cfg.paths.plots)
    clean_stale_staging(plot_dir)
    with publishing(plot_dir) as staging:
        skipped = _evaluation_plots(
            cfg, staging, spec, dataset, frame, vectors(table.column("latent")), x, model_scores,
            baseline, result, threshold, flags, has_reconstructions="reconstruction" in vector_columns,
            pca_name=f"PCA, {model_cfg.latent_dim} components")
    if skipped:
        result["plots_skipped"] = skipped
    write_json_atomic(cfg.paths.eval_metrics, result)
    for name, reason in skipped.items():
        print(f"evaluate: no {plot_dir / name}: {reason}")
    print(f"evaluated {len(frame)} rows -> {cfg.paths.eval_metrics}, {report_path} "
          f"({int(flags.sum())} flagged): "
          + json.dumps({k: v for k, v in result.items() if k != "rows"}, sort_keys=True))


def _evaluation_plots(cfg: Config, staging: Path, spec: DataSpec, dataset: pads.Dataset,
                      frame: pd.DataFrame, latent: np.ndarray, x: np.ndarray, scored, baseline,
                      result: dict[str, Any], threshold, flags: np.ndarray, has_reconstructions: bool,
                      pca_name: str) -> dict[str, str]:
    """Write every plot into `staging`; returns {plot: why it was not drawn}."""
    from seqmodels import plots
    from seqmodels.data.tables import vectors
    from seqmodels.distributed.live import read_history
    from seqmodels.evaluation import latent_projection, pick_examples, roc_points

    skipped: dict[str, str] = {}
    plots.loss_curves(read_history(cfg.paths.train_live), staging / "loss.png")
    threshold_text = (f"({threshold.percentile:g}th percentile of {threshold.fitted_on})"
                      if threshold.method == "percentile" else f"(best F1 on {threshold.fitted_on})")
    plots.score_histogram(scored.score, scored.split, scored.label, staging / "scores.png",
                          threshold.value, threshold_text)
    projection, explained = latent_projection(latent, cfg.seed)
    label = frame["label"].to_numpy() if "label" in frame.columns else None
    plots.latent_scatter(projection, scored.split, label, "anomaly" if spec.anomaly_labels else "class",
                         staging / "latents.png", explained, cfg.seed)

    test = scored.split == "test"
    if scored.label is not None and result["model"].get("test_auroc") is not None:
        points = roc_points(scored.score[test], scored.label[test])
        points.to_csv(staging / "roc.csv", index=False)  # for `dvc plots show`
        curves = {"model": (points["fpr"].to_numpy(), points["tpr"].to_numpy(),
                            result["model"]["test_auroc"])}
        if baseline is not None and result["pca"].get("test_auroc") is not None:
            pca_points = roc_points(baseline.score[test], baseline.label[test])
            curves[pca_name] = (pca_points["fpr"].to_numpy(), pca_points["tpr"].to_numpy(),
                                result["pca"]["test_auroc"])
        false_positive_rate = float(np.mean(flags[test][scored.label[test] == 0]))
        plots.roc(curves, staging / "roc.png",
                  operating_point=(false_positive_rate, result["anomalies"]["test"]["recall"]))
    elif spec.has_labels and not spec.anomaly_labels:
        skipped["roc.png"] = "the labels are class ids, not anomaly flags"
    else:
        skipped["roc.png"] = result["model"].get("test_auroc_note", "no anomaly labels in the data")

    if not has_reconstructions:
        skipped["examples.png"] = "the outputs hold no reconstructions (infer.write_reconstructions=false)"
        return skipped
    key = spec.id_column
    picked = pick_examples(scored.score, scored.split, scored.label, cfg.evaluate.examples, cfg.seed)
    ids = frame[key].to_numpy()
    wanted = ids[np.concatenate(list(picked.values()))]
    rows = dataset.to_table(columns=[key, "reconstruction"], filter=pads.field(key).isin(wanted))
    reconstruction = dict(zip(rows.column(key).to_pylist(), vectors(rows.column("reconstruction")),
                              strict=True))
    vocab = Path(cfg.paths.prepared) / VOCAB_FILE
    shown = plots.Examples(
        groups={group: [{"id": ids[i], "score": float(scored.score[i]), "x": x[i],
                         "reconstruction": reconstruction[ids[i]]} for i in members]
                for group, members in picked.items()},
        input_shape=spec.input_shape, features=spec.features, id_column=key,
        vocab=json.loads(vocab.read_text())["tokens"] if vocab.is_file() else None)
    plots.EXAMPLE_PLOTS[spec.kind](shown, staging / "examples.png")
    return skipped


STAGES = {"prepare": prepare, "validate": validate, "train": train, "infer": infer, "evaluate": evaluate}
