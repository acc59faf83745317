"""Per-step metrics against TSB-AD 1.5 itself, and the behaviour that makes them worth having.

TSB-AD pins numpy<2, so it is never installed in the project's environment: a session fixture
installs its wheel with `pip install --no-deps` into a temporary folder and imports only its
evaluation modules (numpy and scikit-learn are all they need). The wheel comes from PyPI
(`pip download`, about 180 kB), or from the file named by $TSB_AD_WHEEL when one is on disk;
either way its SHA-256 must be that of the published tsb-ad 1.5 wheel.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from seqmodels import point_metrics as pm
from seqmodels.point_metrics import TSB_AD_NAMES, PointMetrics, point_metrics

TSB_AD_REQUIREMENT = "tsb-ad==1.5"
TSB_AD_WHEEL_SHA256 = "4db218b330e8daf845447a714e5367d934d41b67bba4d2310dc41225d962127f"


def pip(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"pip {' '.join(args)} failed (set TSB_AD_WHEEL to a local "
                    f"TSB_AD-1.5-py3-none-any.whl when PyPI is out of reach):\n{result.stderr}")


def tsb_ad_wheel(folder: Path) -> Path:
    """The tsb-ad 1.5 wheel: $TSB_AD_WHEEL if set, else downloaded into `folder`."""
    if os.environ.get("TSB_AD_WHEEL"):
        wheel = Path(os.environ["TSB_AD_WHEEL"])
    else:
        pip("download", "--no-deps", "--only-binary=:all:", "--dest", str(folder), TSB_AD_REQUIREMENT)
        wheel = next(folder.glob("*.whl"))
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert digest == TSB_AD_WHEEL_SHA256, f"{wheel} is not the tsb-ad 1.5 wheel (sha256 {digest})"
    return wheel


@contextmanager
def tsb_ad_module(root: Path, module: str) -> Iterator[ModuleType]:
    """A module of TSB-AD 1.5 imported from a --no-deps install of its wheel into `root`;
    TSB-AD leaves sys.path and sys.modules afterwards."""
    target = root / "site-packages"
    pip("install", "--no-deps", "--no-index", "--target", str(target), str(tsb_ad_wheel(root)))
    sys.path.insert(0, str(target))
    try:
        yield importlib.import_module(module)
    finally:
        sys.path.remove(str(target))
        for name in [m for m in sys.modules if m == "TSB_AD" or m.startswith("TSB_AD.")]:
            del sys.modules[name]


@pytest.fixture(scope="session")
def tsb_ad_get_metrics(tmp_path_factory) -> Iterator[Callable]:
    """TSB_AD.evaluation.metrics.get_metrics."""
    with tsb_ad_module(tmp_path_factory.mktemp("tsb_ad"), "TSB_AD.evaluation.metrics") as metrics:
        yield metrics.get_metrics


def reference(get_metrics: Callable, score: np.ndarray, labels: np.ndarray, window: int) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's "precision is ill-defined" at high thresholds
        found = get_metrics(score, labels, slidingWindow=window)
    return {ours: float(found[theirs]) for ours, theirs in TSB_AD_NAMES.items()}


# --- score / label arrays --------------------------------------------------------------------

def one_range(seed: int = 0, n: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Uniform noise, one 30-step range whose middle scores a little higher."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, dtype=int)
    labels[400:430] = 1
    score = rng.random(n)
    score[410:420] += 0.3
    return score, labels


def several_ranges(seed: int = 1, n: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Ranges at both ends of the series (TSB-AD's edge rules), a one-step range, two ranges
    whose buffers overlap, and a long one; Gaussian scores shifted up on the labels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, dtype=int)
    for start, stop in ((0, 15), (300, 301), (305, 320), (600, 660), (990, 1000)):
        labels[start:stop] = 1
    score = rng.normal(size=n) + 0.8 * labels
    return score, labels


def long_ucr_like(seed: int = 2, n: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """A long series with one 12-step anomaly (as in the UCR archive), scored by a smooth
    error (a moving average of noise) with a bump over the anomaly."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, dtype=int)
    labels[12345:12357] = 1
    error = np.abs(np.convolve(rng.normal(size=n + 49), np.ones(50) / 50, mode="valid"))
    score = error + 0.5 * np.exp(-0.5 * ((np.arange(n) - 12350) / 8) ** 2)
    return score, labels


def float32_on_grid(seed: int = 4, n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """float32 scores, a third of them exactly on TSB-AD's float32 threshold grid."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, dtype=int)
    labels[200:230] = 1
    labels[400:405] = 1
    score = rng.random(n).astype(np.float32)
    score[[0, 1]] = 0, 1
    grid = np.linspace(np.float32(0), np.float32(1), 100)
    score[rng.choice(n, 200, replace=False)] = grid[rng.integers(1, 99, 200)]
    return score, labels


CASES = {
    "one range, window 50": lambda: (*one_range(), 50),
    "one range, window 8": lambda: (*one_range(), 8),
    "several ranges, window 40": lambda: (*several_ranges(), 40),
    "several ranges, window 0": lambda: (*several_ranges(), 0),
    "perfect score": lambda: (several_ranges()[1].astype(float), several_ranges()[1], 20),
    "constant score": lambda: (np.ones(1000), several_ranges()[1], 20),
    "ties": lambda: (np.round(several_ranges()[0], 1), several_ranges()[1], 25),
    "float32 on the threshold grid": lambda: (*float32_on_grid(), 20),
    "20,000 steps, 12-step anomaly, window 100": lambda: (*long_ucr_like(), 100),
}

TSB_AD_NAN_HERE_ZERO = {"constant score": {"affiliation_f"}}
"""TSB-AD's Affiliation-F is NaN when no threshold flags a step; ours is 0 (documented)."""


@pytest.mark.parametrize("case", CASES)
def test_every_metric_matches_tsb_ad(case, tsb_ad_get_metrics):
    score, labels, window = CASES[case]()
    expected = reference(tsb_ad_get_metrics, score, labels, window)
    ours = point_metrics(score, labels, sliding_window=window).as_dict()
    for name in TSB_AD_NAN_HERE_ZERO.get(case, ()):
        assert math.isnan(expected.pop(name)) and ours.pop(name) == 0.0
    assert ours == pytest.approx(expected, abs=1e-6, rel=0)


# --- behaviour -------------------------------------------------------------------------------

def test_the_keys_are_stable_and_every_one_is_checked_against_tsb_ad():
    assert [f.name for f in fields(PointMetrics)] == list(TSB_AD_NAMES) == [
        "auc_roc", "auc_pr", "vus_pr", "vus_roc", "standard_f1", "pa_f1_optimistic", "event_f1",
        "r_f1", "affiliation_f"]


def peaked(at: int, n: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(5)
    score = rng.random(n) * 0.5
    score[at - 3:at + 3] += 1.0
    return score


def test_vus_pr_rewards_a_peak_inside_the_anomaly_and_credits_one_just_before_it():
    labels = np.zeros(2000, dtype=int)
    labels[1000:1012] = 1
    found = {where: point_metrics(peaked(at), labels, sliding_window=40)
             for where, at in (("inside", 1006), ("just before", 994), ("far away", 400))}
    vus_pr = {where: metrics.vus_pr for where, metrics in found.items()}
    assert vus_pr["inside"] > 2 * vus_pr["just before"]
    # A near miss is no better than a far one step by step, but VUS's buffer gives it credit.
    assert found["just before"].auc_pr < 0.01 and found["far away"].auc_pr < 0.01
    assert vus_pr["just before"] > 5 * vus_pr["far away"]


def test_pa_f1_is_optimistic_a_random_score_on_long_ranges_looks_good():
    rng = np.random.default_rng(6)
    labels = np.zeros(10_000, dtype=int)
    for start in (1000, 4000, 7000):
        labels[start:start + 100] = 1
    score = rng.random(10_000)  # no information at all
    found = point_metrics(score, labels, sliding_window=50)
    assert found.pa_f1_optimistic > 0.5
    assert max(found.standard_f1, found.vus_pr, found.auc_pr) < 0.2


@pytest.mark.parametrize("case", ["one range, window 50", "several ranges, window 40", "ties"])
def test_pa_f1_is_at_least_standard_f1(case):
    score, labels, window = CASES[case]()
    found = point_metrics(score, labels, sliding_window=window)
    assert found.pa_f1_optimistic >= found.standard_f1


def test_a_perfect_score_is_perfect_on_every_threshold_free_metric():
    labels = several_ranges()[1]
    found = point_metrics(labels * 2.0, labels, sliding_window=20)
    assert (found.auc_roc, found.auc_pr) == (1.0, 1.0)
    assert found.vus_roc > 0.99 and found.vus_pr > 0.9


def test_a_one_step_anomaly_on_the_last_step_is_never_an_event_as_in_tsb_ad():
    labels = np.zeros(100, dtype=int)
    labels[-1] = 1
    found = point_metrics(labels.astype(float), labels, sliding_window=10)
    assert found.event_f1 == 0.0 and found.auc_roc == 1.0


@pytest.mark.parametrize("case", ["several ranges, window 40", "ties", "float32 on the threshold grid",
                                  "constant score"])
def test_counting_a_few_steps_at_a_time_changes_no_metric(case, monkeypatch):
    """The counts over every step are made CHUNK_STEPS at a time (evaluate pools millions of
    steps); chunks of 7 cut through ranges, ties and runs, and every figure stays the same,
    and the threshold-free ones equal scikit-learn's to rounding."""
    score, labels, window = CASES[case]()
    whole = point_metrics(score, labels, sliding_window=window)
    monkeypatch.setattr(pm, "CHUNK_STEPS", 7)
    chunked = point_metrics(score, labels, sliding_window=window)
    assert chunked.as_dict() == pytest.approx(whole.as_dict(), abs=1e-12, rel=0)
    assert chunked.auc_roc == pytest.approx(roc_auc_score(labels, score), abs=1e-12)
    assert chunked.auc_pr == pytest.approx(average_precision_score(labels, score), abs=1e-12)
    precision, recall, _ = precision_recall_curve(labels, score)
    f1 = np.max(2 * precision * recall / (precision + recall + 0.00001))
    assert chunked.standard_f1 == pytest.approx(f1, abs=1e-12)


def test_range_helpers_equal_the_full_arrays_they_replace():
    rng = np.random.default_rng(5)
    values = rng.normal(size=200)
    mask = rng.random(200) < 0.3
    starts, stops = pm.runs(mask)
    at = np.arange(201)
    prefix = np.concatenate(([0], np.cumsum(mask)))
    assert np.array_equal(pm._covered_before(starts, stops, at), prefix[at])
    assert np.array_equal(pm._covered_before(starts[:0], stops[:0], at), np.zeros(201))
    lo, hi = np.array([0, 5, 9, 199, 40]), np.array([3, 5, 200, 200, 60])
    expected = [values[a:b].max() if b > a else -np.inf for a, b in zip(lo, hi, strict=True)]
    assert np.array_equal(pm._range_max(values, lo, hi), expected)


GOOD_SCORE, GOOD_LABELS = one_range()


@pytest.mark.parametrize(("score", "labels", "window", "message"), [
    (GOOD_SCORE[:-1], GOOD_LABELS, 10, r"score has 999 steps but labels has 1000"),
    (GOOD_SCORE, np.where(np.arange(1000) == 7, 2, GOOD_LABELS), 10, r"0 \(normal\) or 1.*step 7 has 2"),
    (GOOD_SCORE, np.where(np.arange(1000) == 3, np.nan, GOOD_LABELS), 10, r"step 3 has nan"),
    (np.where(np.arange(1000) == 5, np.nan, GOOD_SCORE), GOOD_LABELS, 10, r"1 NaN or infinite.*step 5"),
    (np.where(np.arange(1000) == 9, np.inf, GOOD_SCORE), GOOD_LABELS, 10, r"step 9: inf"),
    (GOOD_SCORE, np.zeros(1000), 10, r"no anomalous step in 1000 steps"),
    (GOOD_SCORE, np.ones(1000), 10, r"every one of the 1000 steps is labelled anomalous"),
    (GOOD_SCORE.reshape(100, 10), GOOD_LABELS.reshape(100, 10), 10, r"must be 1-D.*\(100, 10\)"),
    (GOOD_SCORE.astype(str), GOOD_LABELS, 10, r"score must be numeric"),
    (GOOD_SCORE, GOOD_LABELS, -1, r"sliding_window must be an integer >= 0, got -1"),
    (GOOD_SCORE, GOOD_LABELS, 2.5, r"sliding_window must be an integer >= 0, got 2.5"),
], ids=["lengths", "label 2", "label NaN", "NaN score", "inf score", "no anomaly", "only anomalies",
        "2-D", "strings", "negative window", "fractional window"])
def test_bad_input_raises_one_clear_message(score, labels, window, message):
    with pytest.raises(ValueError, match=message):
        point_metrics(score, labels, sliding_window=window)
