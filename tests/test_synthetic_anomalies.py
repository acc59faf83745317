"""The synthetic anomaly generator's contract, on a sine with noise (no download, well under a second).

Every type must give exactly `count` labelled ranges, apart and away from the ends, change the
values inside them and nothing outside, be reproducible from its seed, and say clearly when it
cannot do what is asked; make_test_sets and the CSV writer must produce what TSB-AD reads.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from benchmarks import synthetic_anomalies as synth
from benchmarks.synthetic_anomalies import (
    ANOMALY_TYPES,
    insert_anomalies,
    label_ranges,
    make_test_sets,
    write_single_series,
)

PERIOD = 50
N = 2000
LENGTHS = {  # the number of labelled points each type may take, at PERIOD
    "spike": (1, 3), "level_shift": (PERIOD, 2 * PERIOD), "frequency_change": (2 * PERIOD, 2 * PERIOD),
    "missing_pattern": (PERIOD, PERIOD), "extra_pattern": (PERIOD, PERIOD),
    "trend_change": (2 * PERIOD, 3.5 * PERIOD),
}


def normal_series(n: int = N, noise: float = 0.1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 5 + 2 * np.sin(2 * np.pi * np.arange(n) / PERIOD) + noise * rng.normal(size=n)


def insert(kind: str, seed: int = 0, count: int = 3, normal: np.ndarray | None = None):
    normal = normal_series() if normal is None else normal
    return insert_anomalies(normal, kind, count, PERIOD, np.random.default_rng(seed))


def test_every_type_is_defined():
    assert tuple(synth._KINDS) == ANOMALY_TYPES


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", ANOMALY_TYPES)
def test_count_separate_ranges_inside_the_series_and_labels_equal_them(kind, seed):
    values, labels, ranges = insert(kind, seed)
    assert values.shape == labels.shape == (N,) and labels.dtype == np.int8
    assert len(ranges) == 3 and ranges == sorted(ranges)
    assert ranges[0][0] >= PERIOD and ranges[-1][1] <= N - PERIOD
    assert all(stop + PERIOD <= start for (_, stop), (start, _) in itertools.pairwise(ranges))
    low, high = LENGTHS[kind]
    assert all(low <= stop - start <= high for start, stop in ranges)
    expected = np.zeros(N, dtype=np.int8)
    for start, stop in ranges:
        expected[start:stop] = 1
    np.testing.assert_array_equal(labels, expected)
    assert label_ranges(labels) == ranges


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", ANOMALY_TYPES)
def test_values_change_inside_the_ranges_and_nowhere_else(kind, seed):
    normal = normal_series()
    values, labels, ranges = insert(kind, seed, normal=normal)
    np.testing.assert_array_equal(values[labels == 0], normal[labels == 0])
    for start, stop in ranges:  # visibly: by at least half the series' std somewhere
        assert np.abs(values[start:stop] - normal[start:stop]).max() > 0.5 * normal.std()


@pytest.mark.parametrize("kind", ANOMALY_TYPES)
def test_the_input_is_not_modified(kind):
    normal = normal_series()
    copy = normal.copy()
    insert(kind, normal=normal)
    np.testing.assert_array_equal(normal, copy)


@pytest.mark.parametrize("kind", ANOMALY_TYPES)
def test_the_same_seed_gives_the_same_series_and_another_seed_another(kind):
    first, second, other = insert(kind, seed=7), insert(kind, seed=7), insert(kind, seed=8)
    np.testing.assert_array_equal(first[0], second[0])
    assert first[2] == second[2]
    assert first[2] != other[2]


def cycles(values: np.ndarray) -> int:
    """Whole cycles in a stretch that holds a whole number of them: its strongest Fourier bin."""
    return int(np.argmax(np.abs(np.fft.rfft(values - values.mean()))))


def test_frequency_change_runs_one_and_a_half_or_two_times_as_fast_and_rejoins_in_phase():
    normal = 2 * np.sin(2 * np.pi * np.arange(N) / PERIOD)  # no noise: the speed can be read off
    speeds = set()
    for seed in range(6):
        values, _, ranges = insert("frequency_change", seed, normal=normal)
        for start, stop in ranges:
            speeds.add(cycles(values[start:stop]) / cycles(normal[start:stop]))
        # in phase at both joins: no step larger than the fast stretch's own (2x) slope
        assert np.abs(np.diff(values)).max() <= 2.01 * np.abs(np.diff(normal)).max()
    assert speeds == {1.5, 2.0}


def test_trend_change_is_a_ramp_up_and_back():
    normal = normal_series()
    values, _, ranges = insert("trend_change", normal=normal)
    for start, stop in ranges:
        added = values[start:stop] - normal[start:stop]
        u = np.arange(1, stop - start + 1) / (stop - start + 1)
        triangle = 1 - np.abs(2 * u - 1)  # 0 just outside the range, 1 at its middle
        height = added[0] / triangle[0]
        np.testing.assert_allclose(added, height * triangle, rtol=1e-9)
        assert normal.std() <= abs(height) <= 2 * normal.std()


def test_missing_and_extra_pattern_meet_the_series_at_both_ends():
    normal = normal_series()
    missing, _, ranges = insert("missing_pattern", normal=normal)
    for start, stop in ranges:
        np.testing.assert_allclose(np.diff(missing[start - 1: stop + 1]),
                                   (normal[stop] - normal[start - 1]) / (stop - start + 1))
    extra, _, ranges = insert("extra_pattern", normal=normal)
    for start, stop in ranges:
        assert extra[start] == normal[start] and extra[stop - 1] == normal[stop - 1]


def test_an_unknown_type_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown anomaly type 'dropout'; the types are spike, level_shift"):
        insert("dropout")


@pytest.mark.parametrize("kind", ANOMALY_TYPES)
def test_a_series_too_short_for_count_anomalies_is_a_clear_error(kind):
    longest = {"spike": 3, "trend_change": 175}.get(kind, LENGTHS[kind][1])
    enough = int(3 * longest + 4 * PERIOD)
    insert(kind, normal=normal_series(enough))  # exactly enough room is fine
    with pytest.raises(ValueError, match=rf"a series of {enough - 1} points is too short for 3 {kind}"):
        insert(kind, normal=normal_series(enough - 1))


@pytest.mark.parametrize(("normal", "count", "period", "message"), [
    (np.ones((100, 2)), 1, PERIOD, "normal must be a 1-D series"),
    (np.where(np.arange(N) == 5, np.nan, 1.0), 1, PERIOD, "with NaN or infinite values"),
    (np.full(N, 3.0), 1, PERIOD, "the anomaly scale must be positive"),
    (normal_series(), 0, PERIOD, "count must be at least 1"),
    (normal_series(), 1, 3, "period at least 4"),
])
def test_bad_requests_are_clear_errors(normal, count, period, message):
    with pytest.raises(ValueError, match=message):
        insert_anomalies(normal, "spike", count, period, np.random.default_rng(0))


def test_make_test_sets_gives_one_series_per_type_reproducibly():
    train, test = normal_series(600, seed=1), normal_series(seed=2)
    sets = make_test_sets(train, test, PERIOD, seed=3)
    assert tuple(sets) == ANOMALY_TYPES
    for kind, (values, labels) in sets.items():
        assert values.shape == labels.shape == test.shape
        assert len(label_ranges(labels)) == 3, kind
        np.testing.assert_array_equal(values[labels == 0], test[labels == 0])
    again = make_test_sets(train, test, PERIOD, seed=3)
    other = make_test_sets(train, test, PERIOD, seed=4)
    assert all(np.array_equal(sets[k][0], again[k][0]) for k in ANOMALY_TYPES)
    assert not any(np.array_equal(sets[k][1], other[k][1]) for k in ANOMALY_TYPES)


def test_make_test_sets_sizes_follow_the_training_series_spread():
    test = normal_series(seed=2)
    small = make_test_sets(normal_series(600, seed=1), test, PERIOD, seed=0)["level_shift"][0]
    large = make_test_sets(3 * normal_series(600, seed=1), test, PERIOD, seed=0)["level_shift"][0]
    np.testing.assert_allclose(large - test, 3 * (small - test), atol=1e-9)


def test_write_single_series_is_the_tsb_ad_csv_form(tmp_path):
    values, labels, _ = insert("spike")
    write_single_series(tmp_path / "a" / "spike.csv", values, labels)
    frame = pd.read_csv(tmp_path / "a" / "spike.csv", float_precision="round_trip")
    assert list(frame.columns) == ["timestamp", "value", "is_anomaly"]
    np.testing.assert_array_equal(frame["timestamp"], np.arange(N))
    np.testing.assert_array_equal(frame["value"], values)  # full precision
    np.testing.assert_array_equal(frame["is_anomaly"], labels)
    write_single_series(tmp_path / "train.csv", values, None)
    assert list(pd.read_csv(tmp_path / "train.csv").columns) == ["timestamp", "value"]
    with pytest.raises(ValueError, match="labels must be 0/1, one per value"):
        write_single_series(tmp_path / "bad.csv", values, labels[:-1])


def test_main_writes_train_one_csv_per_type_and_the_ranges(tmp_path, monkeypatch, capsys):
    """With load_kdd135_arrays replaced by a kdd135-shaped sine: TEST = TRAIN + more, a label
    after 4000; the test series is the part after TRAIN and before 4000."""
    train = normal_series(1200, seed=1)
    test = np.concatenate([train, normal_series(6301, seed=2)])
    labels = np.zeros(7501, dtype=np.int8)
    labels[4187:4199] = 1
    monkeypatch.setattr(synth, "load_kdd135_arrays", lambda: (train, test, labels))
    assert synth.main(["--out", str(tmp_path), "--seed", "5"]) == 0
    assert "period 50" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["train.csv", "anomalies.json", *(f"{kind}.csv" for kind in ANOMALY_TYPES)])
    np.testing.assert_array_equal(pd.read_csv(tmp_path / "train.csv", float_precision="round_trip")["value"],
                                  train)
    ranges = json.loads((tmp_path / "anomalies.json").read_text())
    assert list(ranges) == list(ANOMALY_TYPES)
    for kind in ANOMALY_TYPES:
        frame = pd.read_csv(tmp_path / f"{kind}.csv")
        assert len(frame) == 4000 - 1200
        assert [list(r) for r in label_ranges(frame["is_anomaly"].to_numpy())] == ranges[kind]
