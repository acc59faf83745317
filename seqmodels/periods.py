"""The dominant period of a series, as TSB-AD 1.5 picks the sliding window of its VUS metrics.

VUS-ROC / VUS-PR (seqmodels.point_metrics) average over buffer widths 0..sliding_window, so
the window changes the figures. TSB-AD sets it per series from the autocorrelation
(`TSB_AD.utils.slidingWindows.find_length_rank(data, rank=1)`, the rank its benchmark scripts
pass to `get_metrics`); to put our VUS beside its published tables, `dominant_period` is that
rule, step for step:

1. squeeze the input; keep the first 20,000 points;
2. the autocorrelation at lags 0..400 (statsmodels' `acf(data, nlags=400, fft=True)`: biased,
   mean removed) and drop lags 0-2;
3. the strict local maxima of what is left (scipy's `argrelextrema(acf, np.greater)`: interior
   points above both neighbours), and the highest of them (ties as TSB-AD's `np.argsort` breaks
   them);
4. 125 when there is no local maximum (TSB-AD's bare `except`: white noise has some, a
   constant, a straight line or a series of under 6 points has none, and a NaN anywhere makes
   every autocorrelation NaN) and when the maximum's index in the dropped-lags array is below 3
   or above 300, i.e. a lag under 6 or over 303 (TSB-AD compares the index, not the lag);
5. otherwise that lag.

The autocorrelation is computed here with numpy's FFT, the same operations statsmodels' acf
performs (same padding to a 5-smooth length, same divisions), so the values are identical, not
just close, and a tie between two maxima cannot break differently; that keeps the package free
of a runtime dependency on statsmodels and scipy for six lines of arithmetic. The tests check
both the acf and the final period against TSB-AD itself.

Where this differs from TSB-AD, deliberately:

- multivariate input (2-D with more than one column, time along axis 0): TSB-AD's function
  returns 0, which its VUS then uses as "no buffer at all". Its own multivariate benchmark
  (benchmark_exp/Run_Detector_M.py) never lets that happen: it calls
  `find_length_rank(data[:, 0].reshape(-1, 1), rank=1)`, the period of the first channel. We do
  the same, so VUS figures on multivariate series match TSB-AD-M's published ones; a median over
  channels would be more robust to an aperiodic first channel, but it would not be TSB-AD's
  number, which is the point of this function;
- fewer than 2 points, or more than 2 dimensions after squeezing: a ValueError saying so (TSB-AD
  fails there with a TypeError or an unrelated "negative dimensions" error).
"""

from __future__ import annotations

import numpy as np

MAX_POINTS = 20_000
MAX_LAG = 400
FIRST_LAG = 3
DEFAULT_PERIOD = 125
MIN_INDEX, MAX_INDEX = 3, 300
"""Bounds on the local maximum's index into acf[FIRST_LAG:] (not on the lag itself)."""


def dominant_period(values: np.ndarray) -> int:
    """TSB-AD 1.5's `find_length_rank(values, rank=1)`; for several columns, that of column 0."""
    data = np.asarray(values).squeeze()
    if data.ndim == 2:
        data = data[:, 0]
    if data.ndim != 1 or data.shape[0] < 2:
        raise ValueError(f"dominant_period needs a series of at least 2 points (or a 2-D array, "
                         f"time along axis 0), got shape {np.shape(values)}")
    data = data[:MAX_POINTS].astype(np.float64)
    corr = autocorrelation(data, MAX_LAG)[FIRST_LAG:]
    peaks = local_maxima(corr)
    if peaks.size == 0:
        return DEFAULT_PERIOD
    best = int(peaks[np.argsort(corr[peaks])[-1]])  # TSB-AD: argsort(...)[::-1][0]
    if best < MIN_INDEX or best > MAX_INDEX:
        return DEFAULT_PERIOD
    return best + FIRST_LAG


def autocorrelation(x: np.ndarray, nlags: int) -> np.ndarray:
    """statsmodels' `acf(x, nlags=nlags, fft=True)` (biased, demeaned), lags 0..min(nlags, n-1).

    NaN everywhere for a constant or NaN-holding series (0/0), without a warning."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean()
    nobs = centred.shape[0]
    spectrum = np.fft.fft(centred, n=regular_length(2 * nobs + 1))
    acov = (np.fft.ifft(spectrum * np.conjugate(spectrum))[:nobs] / np.full(nobs, float(nobs))).real
    with np.errstate(invalid="ignore", divide="ignore"):
        return acov[: nlags + 1] / acov[0]


def local_maxima(a: np.ndarray) -> np.ndarray:
    """Indices of points strictly above both neighbours: scipy's `argrelextrema(a, np.greater)`
    (its default mode "clip" never counts the two end points); NaN is above nothing."""
    if a.shape[0] < 3:
        return np.empty(0, dtype=np.intp)
    middle = a[1:-1]
    return np.flatnonzero((middle > a[:-2]) & (middle > a[2:])) + 1


def regular_length(target: int) -> int:
    """The smallest 5-smooth number (2^a 3^b 5^c) >= target: the FFT length statsmodels pads to."""
    n = max(int(target), 1)
    while True:
        rest = n
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return n
        n += 1
