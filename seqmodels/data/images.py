"""Images: a bundled image set or a file of flattened images -> the prepared Images table.

Images arrive already scaled to [0, 1], so nothing is fitted on train; they split at
random (seqmodels.data.splits.split_examples) since images are independent examples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from seqmodels.data.config import DataConfig
from seqmodels.data.files import read_table_file
from seqmodels.data.modality import Modality, PreparedData
from seqmodels.data.splits import check_label_classes, split_examples
from seqmodels.errors import DataError
from seqmodels.spec import HELDOUT_FILE, ID_COLUMNS, SPLITS, DataSpec

KIND = "images"
ID_COLUMN = ID_COLUMNS[KIND]


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


SOURCES: dict[str, Callable[[], ImageSource]] = {"digits": _digits}


def load_images(cfg: DataConfig) -> ImageSource:
    """Bundled images, or a Parquet/CSV file of the Images table (image_id, x[, label])."""
    if cfg.source in SOURCES:
        return SOURCES[cfg.source]()
    if cfg.image_shape is None:
        raise DataError("an image file source needs data.image_shape: [channels, height, width]",
                        where="params.yaml: data.image_shape",
                        fix=f"set data.image_shape, or use a bundled source: {sorted(SOURCES)}")
    frame = read_table_file(cfg.source, SOURCES)
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


class ImageTable(pa.DataFrameModel):
    """Prepared images: `x` holds C*H*W float32 values; `label` is a class id."""

    image_id: Series[np.int64] = pa.Field(unique=True, ge=0)
    split: Series[str] = pa.Field(isin=list(SPLITS))
    x: Series[object]
    label: Series[np.int64] | None = pa.Field(ge=0)

    class Config:
        strict = True


def prepare_images(images: np.ndarray, labels: np.ndarray | None, n_classes: int, cfg: DataConfig,
                   seed: int) -> tuple[pd.DataFrame, DataSpec]:
    """(N, C, H, W) images already scaled to [0, 1] -> the Images table and its spec."""
    if images.ndim != 4:
        raise DataError(f"images must have shape (N, C, H, W); got {images.shape}", where=cfg.source)
    n = images.shape[0]
    if labels is not None:
        check_label_classes(pd.Series(labels), cfg.source, "images")
    frame = pd.DataFrame({ID_COLUMN: np.arange(n, dtype=np.int64),
                          "split": split_examples(n, cfg.split, seed)})
    frame["x"] = list(images.reshape(n, -1).astype(np.float32))
    if labels is not None:
        frame["label"] = labels.astype(np.int64)
    spec = DataSpec(kind=KIND, input_shape=tuple(images.shape[1:]), has_labels=labels is not None,
                    n_classes=n_classes)
    return frame, spec


def prepare(cfg: DataConfig, seed: int) -> PreparedData:
    """Load the images and split them; there is no scaler or vocabulary to keep."""
    source = load_images(cfg)
    examples, spec = prepare_images(source.images, source.labels, source.n_classes, cfg, seed)
    heldout = examples.loc[examples["split"].eq("test")].drop(columns=["split", ID_COLUMN])
    return PreparedData(examples, spec, f"{len(examples)} images", {HELDOUT_FILE: heldout})


MODALITY = Modality(kind=KIND, sources=tuple(SOURCES), prepare=prepare, table=ImageTable)
