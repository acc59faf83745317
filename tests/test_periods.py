"""dominant_period against TSB-AD 1.5's find_length_rank itself, on the series that exercise
each branch of its rule (a clear period, none, one too long or too short, too few points).

TSB-AD is installed from its wheel with --no-deps into a temporary folder, with the helpers
tests/test_point_metrics.py uses (same pinned SHA-256). Its slidingWindows module imports only
statsmodels, scipy and numpy, which the project's environment has (statsmodels through tslearn),
so the real function is imported, not a copy of its source.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from seqmodels.periods import autocorrelation, dominant_period
from tests.test_point_metrics import tsb_ad_module


@pytest.fixture(scope="session")
def find_length_rank(tmp_path_factory) -> Iterator[Callable]:
    """TSB_AD.utils.slidingWindows.find_length_rank."""
    pytest.importorskip("statsmodels", reason="TSB-AD's slidingWindows imports statsmodels")
    with tsb_ad_module(tmp_path_factory.mktemp("tsb_ad_periods"), "TSB_AD.utils.slidingWindows") as windows:
        yield windows.find_length_rank


def tsb_ad(find_length_rank: Callable, values: np.ndarray) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' 0/0 on a constant series
        return int(find_length_rank(values, rank=1))


def sine(period: float, n: int = 3000, noise: float = 0.1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sin(2 * np.pi * np.arange(n) / period) + noise * rng.normal(size=n)


def longer_than_the_cutoff() -> np.ndarray:
    """Period 40 for the first 20,000 points, 90 after: only the first part may count."""
    return np.concatenate([sine(40, 20_000), sine(90, 6000, seed=1)])


SERIES = {
    "sine, period 20": lambda: sine(20),
    "sine, period 57": lambda: sine(57),
    "sine, period 150": lambda: sine(150),
    "sine, period 57.5 (not a whole number)": lambda: sine(57.5),
    "sine, period 350 (beyond 303: 125)": lambda: sine(350),
    "sine, period 4 (under 6: 125)": lambda: sine(4),
    "two periods, 30 and 110": lambda: sine(30) + 1.5 * sine(110, seed=2),
    "white noise": lambda: np.random.default_rng(3).normal(size=2000),
    "random walk": lambda: np.cumsum(np.random.default_rng(4).normal(size=2000)),
    "linear trend": lambda: np.arange(1000, dtype=float),
    "trend plus sine": lambda: 0.01 * np.arange(3000) + sine(57),
    "constant": lambda: np.full(500, 3.0),
    "a NaN": lambda: np.where(np.arange(500) == 7, np.nan, sine(25, 500)),
    "integers": lambda: np.round(10 * sine(33)).astype(int),
    "2 points": lambda: np.array([1.0, 2.0]),
    "5 points": lambda: sine(3, 5),
    "10 points": lambda: sine(4, 10),
    "60 points": lambda: sine(12, 60),
    "399 points": lambda: sine(45, 399),
    "401 points": lambda: sine(45, 401),
    "26,000 points, period changes after 20,000": longer_than_the_cutoff,
    "column vector (n, 1)": lambda: sine(57)[:, None],
    "row vector (1, n)": lambda: sine(57)[None, :],
    "kdd135-like pulse train, period 183": lambda: np.exp(-((np.arange(7501) % 183) - 90.0) ** 2 / 50),
}


@pytest.mark.parametrize("case", SERIES)
def test_equals_tsb_ad(case, find_length_rank):
    values = SERIES[case]()
    assert dominant_period(values) == tsb_ad(find_length_rank, values)


def test_the_periods_are_the_ones_expected():
    assert [dominant_period(sine(p)) for p in (20, 57, 150, 350, 4)] == [20, 57, 150, 125, 125]
    assert dominant_period(longer_than_the_cutoff()) == 40
    assert dominant_period(np.full(500, 3.0)) == 125


@pytest.mark.parametrize("n", [2, 3, 10, 401, 1000, 7501, 25_000])
def test_autocorrelation_is_statsmodels_acf_exactly(n):
    acf = pytest.importorskip("statsmodels.tsa.stattools").acf
    x = sine(37, n, noise=1.0, seed=n)
    np.testing.assert_array_equal(autocorrelation(x, 400), acf(x, nlags=400, fft=True))


def test_multivariate_is_the_first_column_as_in_tsb_ads_benchmark(find_length_rank):
    """TSB-AD returns 0 for several columns; its Run_Detector_M.py uses column 0's period."""
    values = np.stack([sine(57), sine(20, seed=1), sine(150, seed=2)], axis=1)
    assert tsb_ad(find_length_rank, values) == 0
    assert dominant_period(values) == tsb_ad(find_length_rank, values[:, 0].reshape(-1, 1)) == 57


def test_a_constant_series_gives_125_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dominant_period(np.zeros(300)) == 125


@pytest.mark.parametrize("values", [np.zeros(0), np.ones(1), np.float64(2.0), np.ones((4, 5, 6))],
                         ids=["empty", "one point", "scalar", "3-D"])
def test_too_little_or_too_many_dimensions_is_a_clear_error(values):
    with pytest.raises(ValueError, match="dominant_period needs a series of at least 2 points"):
        dominant_period(values)
