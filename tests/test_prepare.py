import numpy as np
import pandas as pd
import pytest

from seqmodels.data.config import DataConfig, SplitFractions
from seqmodels.data.series import prepare_windows, series_level_labels
from seqmodels.data.splits import assign_splits
from seqmodels.data.tabular import prepare_rows
from seqmodels.data.windows import cut_windows
from seqmodels.errors import DataError
from tests.conftest import make_series_table

FEATURES = ["f0", "f1"]


def prepared(window=20, stride=10, **table_kwargs):
    table = make_series_table(**table_kwargs)
    cfg = DataConfig(source="unused.csv", window=window, stride=stride,
                     split=SplitFractions(val=0.2, test=0.2))
    return table, *prepare_windows(table, FEATURES, cfg, seed=3)[:3]


def test_each_series_lands_in_exactly_one_split_and_anomalies_only_in_test():
    _, windows, _, _ = prepared()
    per_series = windows.groupby("series_id")["split"].nunique()
    assert (per_series == 1).all()
    assert set(windows.loc[windows["label"] == 1, "split"]) == {"test"}
    assert set(windows["split"]) == {"train", "val", "test"}


def test_scaler_is_fitted_on_training_rows_only():
    table, windows, scaler, _ = prepared()
    train_ids = windows.loc[windows["split"] == "train", "series_id"].unique()
    train_rows = table[table["series_id"].isin(train_ids)]
    np.testing.assert_allclose(scaler.mean, train_rows[FEATURES].mean().to_numpy(), rtol=1e-9)
    # Changing test data must not move the scaler.
    test_ids = windows.loc[windows["split"] == "test", "series_id"].unique()
    shifted = table.copy()
    shifted.loc[shifted["series_id"].isin(test_ids), FEATURES] += 100.0
    _, scaler2, _, _ = prepare_windows(shifted, FEATURES, DataConfig(
        source="x.csv", window=20, stride=10, split=SplitFractions(val=0.2, test=0.2)), seed=3)
    assert scaler2 == scaler


def test_windows_have_expected_count_shape_and_values():
    table, windows, scaler, spec = prepared(window=20, stride=10)
    per_series = (40 - 20) // 10 + 1
    assert len(windows) == 24 * per_series
    assert spec.input_dim == 20 * 2
    assert all(len(x) == 40 for x in windows["x"])
    first = windows.iloc[1]  # second window of the first series: starts at t=10
    raw = table[table["series_id"] == first["series_id"]][FEATURES].to_numpy()[10:30]
    expected = ((raw - np.asarray(scaler.mean)) / np.asarray(scaler.std)).reshape(-1)
    np.testing.assert_allclose(first["x"], expected, rtol=1e-5)
    assert first["start"] == 10
    assert windows["window_id"].is_unique


def test_series_shorter_than_window_is_rejected_with_advice():
    table = make_series_table(length=15)
    splits = assign_splits(series_level_labels(table), SplitFractions(val=0.2, test=0.2), 0)
    table = table.assign(split=table["series_id"].map(splits))
    cfg = DataConfig(source="unused.csv", window=20, stride=10)
    with pytest.raises(DataError, match=r"shorter than data.window=20") as caught:
        cut_windows(table, table[FEATURES].to_numpy(np.float32), cfg, timeline=False)
    assert "data.window <= 15" in caught.value.message


def test_empty_split_is_reported():
    labels = pd.Series([0, 0], index=pd.Index(["a", "b"], name="series_id"))
    with pytest.raises(DataError, match="got no series"):
        assign_splits(labels, SplitFractions(val=0.2, test=0.2), seed=0)


def test_splits_are_deterministic_for_a_seed():
    labels = series_level_labels(make_series_table())
    fractions = SplitFractions(val=0.2, test=0.2)
    assert assign_splits(labels, fractions, 1).equals(assign_splits(labels, fractions, 1))
    assert not assign_splits(labels, fractions, 1).equals(assign_splits(labels, fractions, 2))


def test_tabular_rows_split_one_class_and_scale_on_train_only():
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"a": rng.normal(5, 2, 200), "b": rng.normal(-1, 3, 200),
                          "label": (np.arange(200) >= 180).astype(np.int64)})
    cfg = DataConfig(kind="tabular", source="rows.csv", split=SplitFractions(val=0.2, test=0.2))
    examples, scaler, spec = prepare_rows(table, ["a", "b"], cfg, seed=0)
    assert spec.input_shape == (2,) and spec.id_column == "row_id" and spec.anomaly_labels
    assert set(examples.loc[examples["label"] == 1, "split"]) == {"test"}
    assert (examples["split"] == "train").sum() == 108  # 60% of the 180 normal rows
    train = np.stack(examples.loc[examples["split"] == "train", "x"])
    np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=0), 1, atol=1e-5)
    raw_train = table.loc[(examples["split"] == "train").to_numpy(), ["a", "b"]]
    np.testing.assert_allclose(scaler.mean, raw_train.mean().to_numpy())


def test_tokens_get_eos_padding_and_a_train_only_vocabulary():
    from seqmodels.data.tokens import prepare_tokens
    from seqmodels.spec import EOS, PAD, UNK

    words = ["ab", "abc", "b", "ca", "toolongword", "ba", "cab", "bb", "aa", "zzz"]
    cfg = DataConfig(kind="tokens", source="words.txt", max_length=4, max_examples=None,
                     split=SplitFractions(val=0.2, test=0.2))
    examples, vocab, spec = prepare_tokens(words, cfg, seed=0)
    assert len(examples) == 9  # "toolongword" exceeds max_length
    assert spec.input_shape == (5,) and spec.vocab_size == len(vocab["tokens"])
    train_chars = {ch for w, s in zip(examples["seq_id"], examples["split"], strict=True) if s == "train"
                   for ch in [w for w in words if len(w) <= 4][w]}
    assert set(vocab["tokens"][4:]) == train_chars
    for row in examples["x"]:
        length = int(np.argmax(row == EOS)) + 1
        assert (row[length:] == PAD).all() and (row[:length - 1] >= UNK).all()
