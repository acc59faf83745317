"""Turn a data source into the canonical long-form series table.

Canonical table: one row per (series_id, t) with one float column per feature and an
optional integer `label` (1 = anomalous). Bundled datasets ship inside PyPI packages so the
default pipeline never touches the network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from seqmodels.data.config import DataConfig
from seqmodels.data.files import feature_columns, read_table_file
from seqmodels.errors import DataError


def _one_class_table(name: str, splits: list[tuple[np.ndarray, np.ndarray]], cfg: DataConfig) -> pd.DataFrame:
    """Labelled UCR arrays (X: series x channels x time) as the canonical table, in a one-class
    setup: data.normal_class is normal (label 0), every other class is anomalous. The UCR
    train/test split is pooled; prepare re-splits by series so the split fractions apply."""
    classes = sorted({str(c) for _, y in splits for c in y})
    if cfg.normal_class not in classes:
        raise DataError(
            f"data.normal_class={cfg.normal_class!r} is not a class of {name}",
            where="params.yaml: data.normal_class",
            fix=f"choose one of {classes}",
        )
    frames, offset = [], 0
    for X, y in splits:
        n, channels, length = X.shape
        table = pd.DataFrame(
            {
                "series_id": np.repeat([f"{name.lower()}-{offset + i:04d}" for i in range(n)], length),
                "t": np.tile(np.arange(length, dtype=np.int64), n),
                "label": np.repeat((np.asarray(y).astype(str) != cfg.normal_class).astype(np.int64), length),
            }
        )
        for c in range(channels):
            table[f"x{c}" if channels > 1 else "value"] = X[:, c, :].reshape(-1).astype(np.float64)
        frames.append(table)
        offset += n
    return pd.concat(frames, ignore_index=True)


def _ucr_from_sktime(name: str, cfg: DataConfig) -> pd.DataFrame:
    """A UCR dataset bundled with sktime (extract_path=None reads the packaged copy: no download)."""
    from sktime.datasets import load_UCR_UEA_dataset

    splits = [load_UCR_UEA_dataset(name, split=split, return_X_y=True, return_type="numpy3D")
              for split in ("train", "test")]
    return _one_class_table(name, splits, cfg)


def _ucr_from_tslearn(name: str, cfg: DataConfig) -> pd.DataFrame:
    """A UCR dataset cached inside tslearn (Trace: 4 classes, 200 series of 275 steps), offline."""
    from tslearn.datasets import CachedDatasets

    x_train, y_train, x_test, y_test = CachedDatasets().load_dataset(name)
    # tslearn stores (series, time, channels); the table builder expects (series, channels, time).
    splits = [(x_train.transpose(0, 2, 1), y_train), (x_test.transpose(0, 2, 1), y_test)]
    return _one_class_table(name, splits, cfg)


BUNDLED: dict[str, Callable[[DataConfig], pd.DataFrame]] = {
    "gunpoint": lambda cfg: _ucr_from_sktime("GunPoint", cfg),
    "trace": lambda cfg: _ucr_from_tslearn("Trace", cfg),
}


@dataclass(frozen=True)
class ImageSource:
    images: np.ndarray  # (N, C, H, W) float in [0, 1]
    labels: np.ndarray | None  # class ids
    n_classes: int


def _digits() -> ImageSource:
    """scikit-learn's bundled handwritten digits: 1797 8x8 images, 10 classes, values 0..16."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return ImageSource(images=(digits.images[:, None] / 16.0).astype(np.float32),
                       labels=digits.target.astype(np.int64), n_classes=10)


def _shuttle() -> pd.DataFrame:
    """Statlog Shuttle as bundled by river (ODDS anomaly version): 49,097 rows x 9 sensor
    readings, 7% anomalies. Read straight from the package's CSV: no download."""
    from importlib.resources import files

    frame = pd.read_csv(files("river.datasets") / "shuttle.csv.gz")
    return frame.rename(columns={"anomaly": "label"})


BUNDLED_TABLES: dict[str, Callable[[], pd.DataFrame]] = {"shuttle": _shuttle}


def load_rows(cfg: DataConfig) -> tuple[pd.DataFrame, list[str]]:
    """Tabular rows (feature columns + optional 0/1 `label`), not yet validated."""
    bundled = BUNDLED_TABLES.get(cfg.source)
    frame = bundled() if bundled else read_table_file(Path(cfg.source), BUNDLED)
    features = [c for c in feature_columns(frame, cfg.features) if c != "row_id"]
    return frame[features + (["label"] if "label" in frame.columns else [])], features


def _english_words() -> list[str]:
    """The `english-words` package's web2 list (234k words, MIT): lower-case, letters only."""
    from english_words import get_english_words_set

    return sorted(get_english_words_set(["web2"], lower=True, alpha=True))


BUNDLED_TEXT: dict[str, Callable[[], list[str]]] = {"english-words": _english_words}


def load_sequences(cfg: DataConfig) -> list[str]:
    """Bundled text, or a UTF-8 text file with one sequence per line."""
    if cfg.source in BUNDLED_TEXT:
        return BUNDLED_TEXT[cfg.source]()
    path = Path(cfg.source)
    if not path.is_file():
        raise DataError(f"text file {path} does not exist", where="params.yaml: data.source",
                        fix=f"point data.source at a text file or one of {sorted(BUNDLED_TEXT)}")
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})",
                        where=str(path), fix="re-save the file as UTF-8") from None


BUNDLED_IMAGES: dict[str, Callable[[], ImageSource]] = {"digits": _digits}


def load_images(cfg: DataConfig) -> ImageSource:
    """Bundled images, or a Parquet/CSV file of the Images table (image_id, x[, label])."""
    if cfg.source in BUNDLED_IMAGES:
        return BUNDLED_IMAGES[cfg.source]()
    if cfg.image_shape is None:
        raise DataError("an image file source needs data.image_shape: [channels, height, width]",
                        where="params.yaml: data.image_shape",
                        fix=f"set data.image_shape, or use a bundled source: {sorted(BUNDLED_IMAGES)}")
    frame = read_table_file(Path(cfg.source), BUNDLED)
    if "x" not in frame.columns:
        raise DataError(f"{cfg.source} has no 'x' column", where=cfg.source,
                        fix="store each image flattened (C*H*W floats in [0, 1]) in a list column 'x'")
    width = int(np.prod(cfg.image_shape))
    lengths = frame["x"].map(len)
    if (lengths != width).any():
        bad = frame.index[lengths != width][:5].tolist()
        raise DataError(f"{int((lengths != width).sum())} image(s) in {cfg.source} do not have "
                        f"{width} values for data.image_shape={list(cfg.image_shape)} (rows {bad})",
                        where=cfg.source, fix="resize the images or correct data.image_shape")
    images = np.stack(frame["x"].to_numpy()).astype(np.float32).reshape(-1, *cfg.image_shape)
    labels = frame["label"].to_numpy(np.int64) if "label" in frame.columns else None
    n_classes = int(labels.max()) + 1 if labels is not None else 0
    return ImageSource(images=images, labels=labels, n_classes=n_classes)


def load_source(cfg: DataConfig) -> tuple[pd.DataFrame, list[str]]:
    """The canonical table for `cfg.source` and its feature columns (not yet validated)."""
    frame = BUNDLED[cfg.source](cfg) if cfg.source in BUNDLED else read_table_file(Path(cfg.source), BUNDLED)
    features = feature_columns(frame, cfg.features)
    keep = ["series_id", "t", *features] + (["label"] if "label" in frame.columns else [])
    missing = [c for c in ("series_id", "t") if c not in frame.columns]
    if missing:
        raise DataError(f"required column(s) {missing} missing from {cfg.source}",
                        where=cfg.source,
                        fix="the canonical table needs series_id, t, feature columns, optional label")
    return frame[keep], features
