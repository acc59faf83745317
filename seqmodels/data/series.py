"""Series: a data source -> the canonical long-form table -> windows the model reads.

Canonical table: one row per (series_id, t) with one float column per feature and an
optional integer `label` (1 = anomalous). Bundled datasets ship inside PyPI packages so the
default pipeline never touches the network. Windows are cut per series after the split
(seqmodels.data.splits), over values scaled on training series alone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from seqmodels.data import schemas
from seqmodels.data.config import DataConfig
from seqmodels.data.files import feature_columns, read_table_file
from seqmodels.data.modality import Modality, PreparedData, PreparedTable
from seqmodels.data.scaling import StandardScaler
from seqmodels.data.splits import assign_splits, check_label_classes
from seqmodels.errors import DataError
from seqmodels.spec import ID_COLUMNS, SCALER_FILE, SERIES_FILE, SPLITS, DataSpec

KIND = "series"
ID_COLUMN = ID_COLUMNS[KIND]


# --- bundled sources ---------------------------------------------------------------------

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


SOURCES: dict[str, Callable[[DataConfig], pd.DataFrame]] = {
    "gunpoint": lambda cfg: _ucr_from_sktime("GunPoint", cfg),
    "trace": lambda cfg: _ucr_from_tslearn("Trace", cfg),
}


def load_source(cfg: DataConfig) -> tuple[pd.DataFrame, list[str]]:
    """The canonical table for `cfg.source` and its feature columns (not yet validated)."""
    frame = SOURCES[cfg.source](cfg) if cfg.source in SOURCES else read_table_file(Path(cfg.source), SOURCES)
    features = feature_columns(frame, cfg.features)
    keep = ["series_id", "t", *features] + (["label"] if "label" in frame.columns else [])
    missing = [c for c in ("series_id", "t") if c not in frame.columns]
    if missing:
        raise DataError(f"required column(s) {missing} missing from {cfg.source}",
                        where=cfg.source,
                        fix="the canonical table needs series_id, t, feature columns, optional label")
    return frame[keep], features


# --- table contracts ---------------------------------------------------------------------

class SeriesTable(pa.DataFrameModel):
    """Canonical long-form series table (features added by `series_schema`)."""

    series_id: Series[str] = pa.Field(nullable=False)
    t: Series[np.int64] = pa.Field(nullable=False)
    label: Series[np.int64] | None = pa.Field(isin=[0, 1], nullable=False)

    class Config:
        coerce = True

    @pa.parser("t")
    def fractional_steps_fail_coercion(cls, t: pd.Series) -> pd.Series:
        """Coercing to int64 would silently truncate a step of 1.5 to 1; as text it fails the
        coercion instead and is reported (parsers run before coercion)."""
        if t.dtype.kind not in "fO":
            return t
        return t.map(lambda v: str(v) if isinstance(v, float) and np.isfinite(v) and not v.is_integer()
                     else v)

    @pa.dataframe_check(error="t must be strictly increasing (unique) within each series_id")
    def t_strictly_increasing(cls, df: pd.DataFrame) -> Series[bool]:
        # A `t` that is not a number is reported by the dtype check; here it passes.
        t = pd.to_numeric(df["t"], errors="coerce")
        step = t.groupby(df["series_id"], sort=False).diff()
        return step.isna() | (step > 0)


class WindowTable(pa.DataFrameModel):
    """Prepared windows: `x` holds window * n_features float32 values, time-major."""

    window_id: Series[np.int64] = pa.Field(unique=True, ge=0)
    series_id: Series[str]
    split: Series[str] = pa.Field(isin=list(SPLITS))
    start: Series[np.int64] = pa.Field(ge=0)
    x: Series[object]
    label: Series[np.int64] | None = pa.Field(isin=[0, 1])

    class Config:
        strict = True


def series_schema(features: list[str]) -> pa.DataFrameSchema:
    """The canonical table with its feature columns (named by the data)."""
    return SeriesTable.to_schema().add_columns(schemas.feature_checks(features))


def canonical_table(spec: DataSpec) -> list[PreparedTable]:
    """The canonical table prepare keeps beside the windows, checked by validate too."""
    return [PreparedTable("canonical series", SERIES_FILE, series_schema(list(spec.features)))]


# --- preparation -------------------------------------------------------------------------

def series_level_labels(table: pd.DataFrame) -> pd.Series:
    """A series is anomalous if any of its rows is; NaN when the table has no labels."""
    if "label" not in table.columns:
        return pd.Series(np.nan, index=pd.Index(table["series_id"].unique(), name="series_id"))
    return table.groupby("series_id", sort=False)["label"].max()


def _check_long_enough(lengths: pd.Series, window: int, source: str) -> None:
    """Every series must hold at least one window: a shorter one would silently vanish."""
    too_short = lengths[lengths < window]
    if len(too_short):
        examples = ", ".join(f"{sid} ({n} steps)" for sid, n in too_short.head(5).items())
        raise DataError(
            f"{len(too_short)} series in {source} shorter than data.window={window}: {examples}",
            where="params.yaml: data.window",
            fix=f"set data.window <= {int(lengths.min())} (the shortest series) or drop those series",
        )


def cut_windows(table: pd.DataFrame, scaled: np.ndarray, splits: pd.Series, window: int,
                stride: int, source: str = "the data") -> pd.DataFrame:
    """Sliding windows per series over the scaled values, flattened time-major."""
    lengths = table.groupby("series_id", sort=False).size()
    _check_long_enough(lengths, window, source)
    n_features = scaled.shape[1]
    labels = table["label"].to_numpy() if "label" in table.columns else None
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
        if labels is not None:  # a window is anomalous when any of its steps is
            row_labels = np.lib.stride_tricks.sliding_window_view(labels[offset:offset + length], window)
            window_labels.append(row_labels[::stride].max(axis=1).astype(np.int64))
        offset += length
    x = np.concatenate(pieces).astype(np.float32)
    frame = pd.DataFrame({
        ID_COLUMN: np.arange(len(x), dtype=np.int64),
        "series_id": np.concatenate(ids).astype(str),
        "split": np.concatenate(splits_out).astype(str),
        "start": np.concatenate(starts).astype(np.int64),
    })
    frame["x"] = list(x)
    if labels is not None:
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
    spec = DataSpec(kind=KIND, input_shape=(cfg.window, len(features)), features=tuple(features),
                    has_labels="label" in table.columns)
    return windows, scaler, spec


def prepare(cfg: DataConfig, seed: int) -> PreparedData:
    """Load and validate the canonical table, then cut its windows. The validated table and
    the scaler are written beside the windows, so validate can recheck the table and the
    scaling that produced `x` stays on record."""
    table, features = load_source(cfg)
    table = schemas.validate_table(table, series_schema(features), table="canonical series",
                                   source=cfg.source)
    examples, scaler, spec = prepare_windows(table, features, cfg, seed)
    return PreparedData(examples, spec, f"{table['series_id'].nunique()} series -> {len(examples)} windows",
                        {SERIES_FILE: table, SCALER_FILE: scaler.to_dict()})


MODALITY = Modality(kind=KIND, sources=tuple(SOURCES), prepare=prepare, table=WindowTable,
                    extra_tables=canonical_table)
