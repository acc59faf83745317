"""What every part of the project agrees on about prepared data, with no dependencies.

Models, data preparation, training and the stages all read these names and shapes, so
they live at the bottom of the package: this module imports nothing from seqmodels (and
nothing heavier than the standard library), and no module it would import can import it
back in a cycle.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

SPLITS = ("train", "val", "test")

# Files of the prepared-data folder (paths.prepared).
SPEC_FILE = "spec.json"
SCALER_FILE = "scaler.json"
EXAMPLES_FILE = "examples.parquet"  # windows (series), images, rows or sequences: one model input per row
SERIES_FILE = "series.parquet"  # the canonical series table the windows were cut from
VOCAB_FILE = "vocab.json"
# The test split's raw rows (unscaled, in the input's own columns): never trained or
# thresholded on, so the default `score` batch is new data the detector has not seen.
HELDOUT_FILE = "heldout.parquet"

# Token ids every vocabulary starts with (tokens modality).
PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")

# The per-row id column of each modality's prepared table.
ID_COLUMNS = {"series": "window_id", "images": "image_id", "tabular": "row_id", "tokens": "seq_id"}


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about its input; saved beside the prepared data.

    `input_shape` is (window, n_features) for series and (channels, height, width) for
    images; rows always store it flattened (C-order) in the `x` column. `n_classes > 1`
    means `label` is a class id (classifier heads); otherwise `label`, when present, is
    the anomaly flag.
    """

    kind: str
    input_shape: tuple[int, ...]
    features: tuple[str, ...] = ()
    has_labels: bool = False
    n_classes: int = 0
    vocab_size: int = 0  # tokens: ids are < vocab_size
    # series only: labels per time step rather than per series, and whether the outputs
    # score every time step (a timeline) rather than only whole windows
    point_labels: bool = False
    timeline: bool = False
    time_dtype: str = "int64"  # of the canonical table's `t`: "int64" or "datetime64[ns]"
    stride: int = 0  # series: steps between window starts (new data is cut the same way)

    @property
    def discrete(self) -> bool:
        """Token ids rather than real values in `x`."""
        return self.kind == "tokens"

    @property
    def window(self) -> int:
        return self.input_shape[0]

    @property
    def n_features(self) -> int:
        return self.input_shape[-1] if self.kind == "series" else 1

    @property
    def input_dim(self) -> int:
        return math.prod(self.input_shape)

    @property
    def id_column(self) -> str:
        return ID_COLUMNS[self.kind]

    @property
    def anomaly_labels(self) -> bool:
        return self.has_labels and self.n_classes <= 1

    @property
    def model_inputs(self) -> list[str]:
        """Columns a training batch needs: the labels only feed a classifier head."""
        return ["x", "label"] if self.has_labels and self.n_classes > 1 else ["x"]

    def to_dict(self) -> dict:
        return {**asdict(self), "features": list(self.features), "input_shape": list(self.input_shape)}

    @classmethod
    def from_dict(cls, raw: dict) -> DataSpec:
        return cls(kind=raw["kind"], input_shape=tuple(int(n) for n in raw["input_shape"]),
                   features=tuple(raw.get("features", ())), has_labels=bool(raw["has_labels"]),
                   n_classes=int(raw.get("n_classes", 0)), vocab_size=int(raw.get("vocab_size", 0)),
                   point_labels=bool(raw.get("point_labels", False)),
                   timeline=bool(raw.get("timeline", False)),
                   time_dtype=str(raw.get("time_dtype", "int64")),
                   stride=int(raw.get("stride", 0)))
