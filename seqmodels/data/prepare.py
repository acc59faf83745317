"""Pure functions from a canonical series table to model-ready windows.

Splitting happens per series (never per window) so overlapping windows of one series can
not leak between train and test. In the one-class setup, only normal series (label 0) are
split into train/val/test; every anomalous series goes to test, where it is what the
anomaly score must find. The scaler is fitted on training rows alone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from seqmodels.data.config import DataConfig
from seqmodels.data.scaling import StandardScaler
from seqmodels.data.splits import assign_splits, check_label_classes, split_examples
from seqmodels.errors import DataError
from seqmodels.spec import EOS, PAD, SPECIAL_TOKENS, UNK, DataSpec


def series_level_labels(table: pd.DataFrame) -> pd.Series:
    """A series is anomalous if any of its rows is; NaN when the table has no labels."""
    if "label" not in table.columns:
        return pd.Series(np.nan, index=pd.Index(table["series_id"].unique(), name="series_id"))
    return table.groupby("series_id", sort=False)["label"].max()


def cut_windows(table: pd.DataFrame, scaled: np.ndarray, splits: pd.Series, window: int,
                stride: int, source: str = "the data") -> pd.DataFrame:
    """Sliding windows per series over the scaled values, flattened time-major."""
    lengths = table.groupby("series_id", sort=False).size()
    too_short = lengths[lengths < window]
    if len(too_short):
        examples = ", ".join(f"{sid} ({n} steps)" for sid, n in too_short.head(5).items())
        raise DataError(
            f"{len(too_short)} series in {source} shorter than data.window={window}: {examples}",
            where="params.yaml: data.window",
            fix=f"set data.window <= {int(lengths.min())} (the shortest series) or drop those series",
        )
    n_features = scaled.shape[1]
    has_label = "label" in table.columns
    labels = table["label"].to_numpy() if has_label else None
    pieces, ids, starts, splits_out, window_labels = [], [], [], [], []
    offset = 0
    for series_id, length in lengths.items():
        values = scaled[offset:offset + length]
        view = np.lib.stride_tricks.sliding_window_view(values, (window, n_features))[::stride, 0]
        begin = np.arange(0, length - window + 1, stride)
        pieces.append(view.reshape(len(begin), window * n_features))
        ids.append(np.full(len(begin), series_id, dtype=object))
        starts.append(begin)
        splits_out.append(np.full(len(begin), splits[series_id], dtype=object))
        if has_label:
            row_labels = np.lib.stride_tricks.sliding_window_view(labels[offset:offset + length], window)
            window_labels.append(row_labels[::stride].max(axis=1).astype(np.int64))
        offset += length
    x = np.concatenate(pieces).astype(np.float32)
    frame = pd.DataFrame({
        "window_id": np.arange(len(x), dtype=np.int64),
        "series_id": np.concatenate(ids).astype(str),
        "split": np.concatenate(splits_out).astype(str),
        "start": np.concatenate(starts).astype(np.int64),
    })
    frame["x"] = list(x)
    if has_label:
        frame["label"] = np.concatenate(window_labels)
    return frame


def sort_canonical(table: pd.DataFrame) -> pd.DataFrame:
    """Group rows by series (in order of first appearance) keeping each series' row order."""
    order = pd.Index(table["series_id"].unique())
    key = order.get_indexer(table["series_id"])
    return table.iloc[np.argsort(key, kind="stable")].reset_index(drop=True)


def prepare_windows(table: pd.DataFrame, features: list[str], cfg: DataConfig,
                    seed: int) -> tuple[pd.DataFrame, StandardScaler, DataSpec]:
    """Validated canonical table -> (windows, scaler fitted on train, spec)."""
    table = sort_canonical(table)
    labels = series_level_labels(table)
    if "label" in table.columns:
        check_label_classes(labels, cfg.source, "series")
    splits = assign_splits(labels, cfg.split, seed, cfg.source)
    train_rows = table["series_id"].map(splits).eq("train").to_numpy()
    scaler = StandardScaler.fit(table.loc[train_rows], features)
    windows = cut_windows(table, scaler.transform(table), splits, cfg.window, cfg.stride, cfg.source)
    spec = DataSpec(kind="series", input_shape=(cfg.window, len(features)), features=tuple(features),
                    has_labels="label" in table.columns)
    return windows, scaler, spec


def prepare_images(images: np.ndarray, labels: np.ndarray | None, n_classes: int, cfg: DataConfig,
                   seed: int) -> tuple[pd.DataFrame, DataSpec]:
    """(N, C, H, W) images already scaled to [0, 1] -> the Images table and its spec."""
    if images.ndim != 4:
        raise DataError(f"images must have shape (N, C, H, W); got {images.shape}", where=cfg.source)
    n = images.shape[0]
    if labels is not None:
        check_label_classes(pd.Series(labels), cfg.source, "images")
    frame = pd.DataFrame({"image_id": np.arange(n, dtype=np.int64),
                          "split": split_examples(n, cfg.split, seed)})
    frame["x"] = list(images.reshape(n, -1).astype(np.float32))
    if labels is not None:
        frame["label"] = labels.astype(np.int64)
    spec = DataSpec(kind="images", input_shape=tuple(images.shape[1:]), has_labels=labels is not None,
                    n_classes=n_classes)
    return frame, spec


def prepare_rows(table: pd.DataFrame, features: list[str], cfg: DataConfig,
                 seed: int) -> tuple[pd.DataFrame, StandardScaler, DataSpec]:
    """Tabular rows -> scaled examples. One-class like series: each row is its own "series",
    so normal rows split train/val/test and anomalous rows all go to test."""
    row_ids = pd.Index(np.arange(len(table), dtype=np.int64), name="row_id")
    labels = (pd.Series(table["label"].to_numpy(), index=row_ids) if "label" in table.columns
              else pd.Series(np.nan, index=row_ids))
    if "label" in table.columns:
        check_label_classes(labels, cfg.source, "rows")
    splits = assign_splits(labels, cfg.split, seed, cfg.source).reindex(row_ids)
    scaler = StandardScaler.fit(table.loc[splits.to_numpy() == "train"], features)
    frame = pd.DataFrame({"row_id": row_ids.to_numpy(), "split": splits.to_numpy().astype(str)})
    frame["x"] = list(scaler.transform(table))
    if "label" in table.columns:
        frame["label"] = table["label"].to_numpy(np.int64)
    spec = DataSpec(kind="tabular", input_shape=(len(features),), features=tuple(features),
                    has_labels="label" in table.columns)
    return frame, scaler, spec


def prepare_tokens(sequences: list[str], cfg: DataConfig,
                   seed: int) -> tuple[pd.DataFrame, dict, DataSpec]:
    """Character sequences -> padded token ids with EOS, vocabulary fitted on train only.

    Each row's `x` holds max_length + 1 ids: the characters, EOS, then PAD. Characters
    never seen in training map to UNK.
    """
    kept = [s for s in sequences if 0 < len(s) <= cfg.max_length]
    if not kept:
        raise DataError(f"no sequence of 1..{cfg.max_length} characters in {cfg.source}",
                        where="params.yaml: data.max_length", fix="raise data.max_length")
    rng = np.random.default_rng(seed)
    if cfg.max_examples is not None and len(kept) > cfg.max_examples:
        kept = [kept[i] for i in np.sort(rng.choice(len(kept), cfg.max_examples, replace=False))]
    splits = split_examples(len(kept), cfg.split, seed)
    alphabet = sorted({ch for s, split in zip(kept, splits, strict=True) if split == "train" for ch in s})
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *alphabet])}
    width = cfg.max_length + 1
    ids = np.full((len(kept), width), PAD, dtype=np.int32)
    for row, text in enumerate(kept):
        ids[row, :len(text)] = [vocab.get(ch, UNK) for ch in text]
        ids[row, len(text)] = EOS
    frame = pd.DataFrame({"seq_id": np.arange(len(kept), dtype=np.int64), "split": splits})
    frame["x"] = list(ids)
    spec = DataSpec(kind="tokens", input_shape=(width,), vocab_size=len(vocab))
    return frame, {"tokens": list(vocab)}, spec
