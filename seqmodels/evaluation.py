"""Scores against labels and against a PCA baseline of the same latent size.

PCA is the honest yardstick for an autoencoder: a linear model with the same code size,
fitted on the same training windows. If the network cannot beat it on reconstruction
error or on anomaly AUROC, the network is not earning its cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.neighbors import NearestNeighbors

from seqmodels.config import ThresholdConfig
from seqmodels.models.config import ModelConfig
from seqmodels.models.scoring import reconstruction_error, step_errors
from seqmodels.spec import SPLITS


@dataclass
class Scored:
    """Per-row anomaly scores with split and (optional) label."""

    split: np.ndarray
    score: np.ndarray
    label: np.ndarray | None


def auroc(score: np.ndarray, label: np.ndarray | None) -> tuple[float | None, str | None]:
    """ROC-AUC, or None with the reason when it is undefined."""
    if label is None:
        return None, "no labels in the data"
    classes = np.unique(label)
    if len(classes) < 2:
        return None, f"only label {classes.tolist()} present; AUROC needs normal and anomalous rows"
    return float(roc_auc_score(label, score)), None


def summarise(scored: Scored) -> dict[str, Any]:
    per_split = {s: float(scored.score[scored.split == s].mean())
                 for s in SPLITS if np.any(scored.split == s)}
    test = scored.split == "test"
    if scored.label is not None:
        # Held-out normal rows measure reconstruction quality; anomalous rows *should*
        # reconstruct badly, so the all-of-test figure mixes two opposite goals.
        for name, value in (("test_normal", 0), ("test_anomalous", 1)):
            rows = test & (scored.label == value)
            if rows.any():
                per_split[name] = float(scored.score[rows].mean())
    value, reason = auroc(scored.score[test], None if scored.label is None else scored.label[test])
    summary: dict[str, Any] = {"mse": per_split, "test_auroc": value}
    if reason:
        summary["test_auroc_note"] = reason
    return summary


MAX_FIT_ROWS = 20_000  # training windows a baseline is fitted on (a seeded sample beyond)


def fit_sample(split: np.ndarray, seed: int, max_rows: int = MAX_FIT_ROWS) -> np.ndarray:
    """The training rows the baselines are fitted on, in row order: all of them, or a seeded
    sample of `max_rows`, so fitting costs the same at 1M windows as at 20k."""
    train = np.flatnonzero(split == "train")
    if len(train) > max_rows:
        train = np.sort(np.random.default_rng(seed).choice(train, max_rows, replace=False))
    return train


@dataclass
class Baselines:
    """The two baselines every real-valued model is measured against, fitted once on the
    training rows of `fit_sample` and then applied to any rows, a batch at a time: a PCA of the
    model's latent size scored with the model's own score (a linear model with the same
    code), and the distance to the nearest training row (PyOD's KNN with k = 1, a
    non-neural detector that needs no fitting). Scoring streams; fitting does not grow."""

    pca: PCA
    index: NearestNeighbors
    reference: np.ndarray  # the row numbers of the fitted rows (a row is not its own neighbour)
    model: ModelConfig
    input_shape: tuple[int, ...]

    @classmethod
    def fit(cls, x: np.ndarray, rows: np.ndarray, model: ModelConfig, input_shape: tuple[int, ...],
            seed: int) -> Baselines:
        """`x`: the rows numbered `rows` (fit_sample's), float64."""
        pca = PCA(n_components=min(model.latent_dim, x.shape[0], x.shape[1]), random_state=seed).fit(x)
        # float32, as the examples are stored: the same values in half the memory (the
        # largest thing evaluate keeps, 61 MiB at 20k rows of 400); scikit-learn computes
        # float32 distances in float64 chunks.
        index = NearestNeighbors(n_neighbors=min(2, len(x))).fit(x.astype(np.float32))
        return cls(pca, index, rows, model, input_shape)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        return self.pca.inverse_transform(self.pca.transform(x))

    def pca_scores(self, x: np.ndarray) -> np.ndarray:
        """Per-row reconstruction error under the model's score (model.score)."""
        return reconstruction_error(torch.from_numpy(x), torch.from_numpy(self.reconstruct(x)),
                                    self.model.score, self.input_shape, self.model.score_band).numpy()

    def pca_step_errors(self, x: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """(rows, window) per-step errors under the model's score (each row's mean is its
        `pca_scores` value), `chunk` rows at a time: DTW's traceback holds rows x window^2 costs."""
        reconstruction = self.reconstruct(x)
        return np.concatenate([
            step_errors(torch.from_numpy(x[rows]), torch.from_numpy(reconstruction[rows]), self.input_shape,
                        self.model.score, self.model.score_band).numpy()
            for rows in (slice(start, start + chunk) for start in range(0, len(x), chunk))])

    def nearest_distance(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Each row's mean squared distance to its nearest fitted row (a fitted row's to its
        nearest *other* one); `rows`: the row numbers of `x`."""
        distance, neighbour = self.index.kneighbors(x.astype(np.float32, copy=False))
        is_self = self.reference[neighbour[:, 0]] == rows
        nearest = np.where(is_self & (distance.shape[1] > 1), distance[:, -1], distance[:, 0])
        return nearest**2 / x.shape[1]


def _in_memory_baselines(x: np.ndarray, split: np.ndarray, model: ModelConfig, input_shape: tuple[int, ...],
                         seed: int) -> Baselines:
    rows = fit_sample(split, seed)
    return Baselines.fit(x[rows], rows, model, input_shape, seed)


def pca_scores(x: np.ndarray, split: np.ndarray, model: ModelConfig, input_shape: tuple[int, ...],
               seed: int) -> np.ndarray:
    """Baselines.pca_scores of rows held in memory (tests, benchmarks)."""
    return _in_memory_baselines(x, split, model, input_shape, seed).pca_scores(x)


def pca_step_errors(x: np.ndarray, split: np.ndarray, model: ModelConfig, input_shape: tuple[int, ...],
                    seed: int) -> np.ndarray:
    """Baselines.pca_step_errors of rows held in memory."""
    return _in_memory_baselines(x, split, model, input_shape, seed).pca_step_errors(x)


def nearest_train_distance(x: np.ndarray, split: np.ndarray, model: ModelConfig, input_shape: tuple[int, ...],
                           seed: int) -> np.ndarray:
    """Baselines.nearest_distance of rows held in memory."""
    return _in_memory_baselines(x, split, model, input_shape, seed).nearest_distance(x, np.arange(len(x)))


def evaluate_scores(model: Scored, pca: Scored) -> dict[str, Any]:
    model_summary, pca_summary = summarise(model), summarise(pca)
    result = {"model": model_summary, "pca": pca_summary}
    for split in ("test", "test_normal"):
        if split in model_summary["mse"]:
            pca_mse = max(pca_summary["mse"][split], 1e-12)
            result[f"{split}_mse_ratio_vs_pca"] = model_summary["mse"][split] / pca_mse
    return result


def class_accuracy(frame: pd.DataFrame) -> dict[str, float]:
    """Classifier-head accuracy per split."""
    hits = frame["predicted_class"].to_numpy() == frame["label"].to_numpy()
    split = frame["split"].to_numpy().astype(str)
    return {s: float(hits[split == s].mean()) for s in SPLITS if np.any(split == s)}


def score_table(frame: pd.DataFrame, anomaly_labels: bool = True) -> Scored:
    """Scores with their anomaly labels; class labels (images) are not anomaly labels."""
    label = frame["label"].to_numpy() if anomaly_labels and "label" in frame.columns else None
    return Scored(split=frame["split"].to_numpy().astype(str), score=frame["score"].to_numpy(np.float64),
                  label=label)


def unigram_cross_entropy(tokens: np.ndarray, split: np.ndarray, pad: int = 0) -> np.ndarray:
    """Per-row mean -log p(token) under the training unigram distribution (the baseline a
    sequence autoencoder must beat by far); padding ignored, add-one smoothing."""
    train = tokens[split == "train"]
    counts = np.bincount(train[train != pad].ravel(), minlength=tokens.max() + 1).astype(np.float64) + 1.0
    counts[pad] = 0.0
    neg_log_p = -np.log(np.where(counts > 0, counts / counts.sum(), 1.0))
    mask = tokens != pad
    return (neg_log_p[tokens] * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)


def evaluate_tokens(tokens: np.ndarray, decoded: np.ndarray | None, score: np.ndarray,
                    split: np.ndarray) -> dict[str, Any]:
    """Cross-entropy per token (model vs unigram) and greedy exact-match, per split."""
    unigram = unigram_cross_entropy(tokens, split)
    splits = [s for s in SPLITS if np.any(split == s)]
    result: dict[str, Any] = {
        "model": {"cross_entropy": {s: float(score[split == s].mean()) for s in splits}},
        "unigram": {"cross_entropy": {s: float(unigram[split == s].mean()) for s in splits}},
    }
    if decoded is not None:
        exact = (decoded == tokens).all(axis=1)
        result["model"]["exact_match"] = {s: float(exact[split == s].mean()) for s in splits}
    return result


# --- Anomaly flags: a threshold on the score, fitted on validation rows -----------------------


@dataclass(frozen=True)
class Threshold:
    """`is_anomaly = score > value`. `method` is the method actually used; `note` says why it
    differs from the requested one (or why another split was used)."""

    value: float
    method: str
    fitted_on: str
    percentile: float | None = None
    val_f1: float | None = None
    requested: str | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def best_f1_threshold(score: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """The threshold whose flags (`score > threshold`) have the highest F1 on these rows, and
    that F1. Cuts only between distinct scores, half-way, so tied rows get the same flag."""
    order = np.argsort(-score, kind="stable")
    ranked, positive = score[order], (label[order] == 1).astype(np.float64)
    flagged = np.arange(1, len(ranked) + 1)  # flag the top k rows
    tp = np.cumsum(positive)
    f1 = 2 * tp / (flagged + positive.sum())
    cut = np.r_[ranked[:-1] > ranked[1:], True]  # k is a valid cut only before a lower score
    k = int(np.argmax(np.where(cut, f1, -1.0))) + 1
    threshold = float((ranked[k - 1] + ranked[k]) / 2) if k < len(ranked) else float(ranked[-1])
    if not ranked[k - 1] > threshold:  # flag everything, or adjacent floats rounded up
        threshold = float(np.nextafter(ranked[k - 1], -np.inf))
    return threshold, float(f1[k - 1])


def choose_threshold(scored: Scored, cfg: ThresholdConfig) -> Threshold:
    """Fit the anomaly threshold on validation scores (train scores if there is no val split).

    best_f1 needs normal and anomalous validation rows; in the one-class setup validation
    holds normal rows only, so it falls back to the percentile and says so.
    """
    fit_split = "val" if np.any(scored.split == "val") else "train"
    note = None if fit_split == "val" else "no validation rows: fitted on train scores"
    rows = scored.split == fit_split
    values = scored.score[rows]
    if cfg.method == "best_f1":
        labels = None if scored.label is None else scored.label[rows]
        present = [] if labels is None else np.unique(labels).tolist()
        if set(present) >= {0, 1}:
            value, f1 = best_f1_threshold(values, labels)
            return Threshold(value=value, method="best_f1", fitted_on=fit_split, val_f1=f1, note=note)
        why = ("the data has no anomaly labels" if labels is None
               else f"{fit_split} rows have only label {present}")
        note = (f"best_f1 needs normal and anomalous {fit_split} rows, but {why}: "
                f"used the {cfg.percentile:g}th percentile of {fit_split} scores instead")
    return Threshold(value=float(np.percentile(values, cfg.percentile)), method="percentile",
                     fitted_on=fit_split, percentile=cfg.percentile,
                     requested=cfg.method if cfg.method != "percentile" else None, note=note)


def precision_recall_f1(flags: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Of the flagged rows, how many are anomalous (precision); of the anomalous rows, how many
    are flagged (recall). 0 where the ratio is undefined (nothing flagged / no anomalies)."""
    hits = int(np.sum(flags & (label == 1)))
    return precision_recall_f1_counts(hits, int(flags.sum()), int(np.sum(label == 1)))


def precision_recall_f1_counts(hits: int, flagged: int, anomalous: int) -> dict[str, float]:
    """precision_recall_f1 from its three counts, for callers that meet the rows in pieces."""
    precision = float(hits) / max(float(flagged), 1.0)
    recall = float(hits) / max(float(anomalous), 1.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def flag_summary(scored: Scored, flags: np.ndarray) -> dict[str, Any]:
    """Flagged rows per split, and precision/recall/F1 on every split that has both labels."""
    counts = FlagCounts(labelled=scored.label is not None)
    counts.add(scored.split, flags, scored.label)
    return counts.summary()


class FlagCounts:
    """What flag_summary reports, from counts: rows met in pieces (one series at a time) add
    up to the summary of all of them."""

    def __init__(self, labelled: bool) -> None:
        self.labelled = labelled
        self._rows, self._flagged, self._hits, self._normal, self._anomalous = (
            dict.fromkeys(SPLITS, 0) for _ in range(5))

    def add(self, split: np.ndarray, flags: np.ndarray, label: np.ndarray | None) -> None:
        for name in SPLITS:
            rows = split == name
            self._rows[name] += int(rows.sum())
            self._flagged[name] += int(flags[rows].sum())
            if label is not None:
                self._hits[name] += int(np.sum(flags[rows] & (label[rows] == 1)))
                self._normal[name] += int(np.sum(label[rows] == 0))
                self._anomalous[name] += int(np.sum(label[rows] == 1))

    def summary(self) -> dict[str, Any]:
        present = [s for s in SPLITS if self._rows[s]]
        summary: dict[str, Any] = {"flagged": {s: self._flagged[s] for s in present}}
        if self.labelled:
            for s in present:
                if self._normal[s] and self._anomalous[s]:  # both labels
                    summary[s] = precision_recall_f1_counts(self._hits[s], self._flagged[s],
                                                            self._anomalous[s])
        return summary


def roc_points(score: np.ndarray, label: np.ndarray) -> pd.DataFrame:
    """ROC curve as (fpr, tpr, threshold) rows. scikit-learn's first threshold is +inf (flag
    nothing); under `score > threshold` the highest score does the same and stays finite."""
    fpr, tpr, thresholds = roc_curve(label, score)
    thresholds[0] = float(np.max(score))
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thresholds})


# --- What to draw ---------------------------------------------------------------------------------


def latent_projection(latent: np.ndarray, seed: int) -> tuple[np.ndarray, list[float]]:
    """(n, 2) view of the latents: the first two principal components (fitted on all rows) and
    their explained-variance ratios. Latents of size 1 or 2 are shown as they are."""
    latent = np.asarray(latent, dtype=np.float64)
    if latent.shape[1] <= 2:
        padded = np.zeros((len(latent), 2))
        padded[:, :latent.shape[1]] = latent
        return padded, []
    pca = PCA(n_components=2, random_state=seed).fit(latent)
    return pca.transform(latent), [float(r) for r in pca.explained_variance_ratio_]


def pick_examples(score: np.ndarray, split: np.ndarray, label: np.ndarray | None, n: int,
                  seed: int) -> dict[str, np.ndarray]:
    """Row indices for the reconstruction-example plot, by group. With anomaly labels: a seeded
    sample of normal and of anomalous test rows. Without: the lowest- and highest-scoring test
    rows (what the model finds most typical and most unusual). Falls back to all rows when
    there is no test split."""
    pool = np.flatnonzero(split == "test")
    if not len(pool):
        pool = np.arange(len(score))
    where = "test" if np.any(split == "test") else "all"
    rng = np.random.default_rng(seed)
    if label is not None and set(np.unique(label[pool]).tolist()) >= {0, 1}:
        groups = {f"normal ({where})": pool[label[pool] == 0], f"anomalous ({where})": pool[label[pool] == 1]}
        picked = {name: rng.choice(rows, size=min(n, len(rows)), replace=False)
                  for name, rows in groups.items()}
    else:
        ranked = pool[np.argsort(score[pool], kind="stable")]
        picked = {f"lowest score ({where})": ranked[:n], f"highest score ({where})": ranked[::-1][:n]}
    # Within a group, in score order, so the panels read from most to least typical.
    return {name: rows[np.argsort(score[rows], kind="stable")] for name, rows in picked.items() if len(rows)}
