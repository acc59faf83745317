"""Who trains, who validates, who tests: the split rules every modality shares.

Splitting happens per series (never per window) so overlapping windows of one series can
not leak between train and test. In the one-class setup, only normal series (label 0) are
split into train/val/test; every anomalous series goes to test, where it is what the
anomaly score must find. Independent examples (images, sequences) split at random.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from seqmodels.data.config import SplitFractions
from seqmodels.errors import DataError
from seqmodels.spec import SPLITS


def check_label_classes(labels: pd.Series, source: str, unit: str, count: int | None = None) -> None:
    """A label column must hold two classes: with one, evaluation has nothing to compare
    (AUROC needs normal and anomalous examples, accuracy needs two classes). Data without
    labels is fine: it simply has no label column. `count`: how many `unit` the labels stand
    for, when `labels` are only the distinct values of a table read in blocks."""
    classes = sorted(pd.unique(labels.dropna()).tolist())
    if len(classes) == 1:
        raise DataError(
            f"the label column has a single class ({classes[0]}) in all {count or len(labels)} {unit}",
            where=f"{source}: column 'label'",
            fix="evaluation needs both normal (0) and anomalous (1) examples (or two classes for "
                "images): add examples of the other class, or drop the label column for unlabelled data",
        )


def assign_splits(series_labels: pd.Series, fractions: SplitFractions, seed: int,
                  source: str = "the data") -> pd.Series:
    """Map series_id -> split. `series_labels` holds each series' label (or NaN if none)."""
    rng = np.random.default_rng(seed)
    anomalous = series_labels.index[series_labels.fillna(0) > 0]
    normal = np.array(sorted(series_labels.index[series_labels.fillna(0) == 0]))
    rng.shuffle(normal)
    n_test = round(len(normal) * fractions.test)
    n_val = round(len(normal) * fractions.val)
    splits = pd.Series("train", index=pd.Index(normal, name="series_id"), dtype=object)
    splits.iloc[:n_test] = "test"
    splits.iloc[n_test:n_test + n_val] = "val"
    splits = pd.concat([splits, pd.Series("test", index=pd.Index(anomalous, name="series_id"))])
    required = {"train": True, "val": fractions.val > 0, "test": fractions.test > 0 or len(anomalous) > 0}
    counts = splits.value_counts()
    empty = [s for s in SPLITS if required[s] and counts.get(s, 0) == 0]
    if empty:
        raise DataError(
            f"split(s) {empty} got no series ({len(normal)} normal, {len(anomalous)} anomalous series "
            f"in {source})",
            where="params.yaml: data.split",
            fix="provide more series or change data.split.val / data.split.test",
        )
    return splits


def split_examples(n: int, fractions: SplitFractions, seed: int) -> np.ndarray:
    """Random train/val/test assignment for independent examples (images, sequences)."""
    order = np.random.default_rng(seed).permutation(n)
    n_test, n_val = round(n * fractions.test), round(n * fractions.val)
    splits = np.empty(n, dtype=object)
    splits[order[:n_test]] = "test"
    splits[order[n_test:n_test + n_val]] = "val"
    splits[order[n_test + n_val:]] = "train"
    return splits.astype(str)


def time_splits(lengths: pd.Series, fractions: SplitFractions, window: int,
                source: str = "the data") -> np.ndarray:
    """(series, 3) sizes of each series' train, val and test stretches, in SPLITS order
    (`lengths`: series_id -> steps): each series is cut in time order into train, then val,
    then test, so a model is tested on the future of the history it trained on. Each stretch
    a fraction asks for must hold a window."""
    length = lengths.to_numpy(np.int64)
    n_test = np.round(length * fractions.test).astype(np.int64)  # numpy rounds half to even, as round()
    n_val = np.round(length * fractions.val).astype(np.int64)
    sizes = np.stack([length - n_val - n_test, n_val, n_test], axis=1)
    wanted = np.array([True, fractions.val > 0, fractions.test > 0])
    short_rows = np.flatnonzero(((sizes < window) & wanted).any(axis=1))
    if len(short_rows):
        short = [f"{lengths.index[i]} ({length[i]} steps -> {sizes[i, s]} of {name})"
                 for i in short_rows[:5] for s, name in enumerate(SPLITS)
                 if wanted[s] and sizes[i, s] < window]
        count = int(((sizes < window) & wanted).sum())
        raise DataError(
            f"the time split leaves {count} stretch(es) shorter than data.window={window}, so a split "
            f"would be empty: {', '.join(short[:5])} (in {source})",
            where="params.yaml: data.split",
            fix="change data.split.val / data.split.test, lower data.window, or supply longer series",
        )
    return sizes
