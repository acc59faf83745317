"""Per-row reconstruction errors: the anomaly score of every real-valued model, and of the
PCA baseline it is compared with (the same function scores both, so the comparison is fair).

`mse` compares each time step with the same step of the reconstruction. `dtw` lets the
comparison warp time within a Sakoe-Chiba band (dynamic time warping): a series whose
features sit a few steps off where the decoder put them is not scored as anomalous for
that. On UCR Trace (class 3 normal) the normal class carries a short transient whose
delay after the main step jitters by about +-6 steps; held-out normals scored 3x their
training error under MSE, and class 4 (the same curve without the transient) scored below
them. With a band of 10% of the window the GRU autoencoder's test AUROC went from 0.881 to
0.965 (its VAE from 0.829 to 0.988), while PCA stayed at 0.76-0.79 under either score.
"""

from __future__ import annotations

import torch
from torch import Tensor

SCORES = ("mse", "dtw")


def mse(x: Tensor, reconstruction: Tensor) -> Tensor:
    """(B, D), (B, D) -> (B,) mean squared error per row, in float32 or the inputs' wider type."""
    dtype = torch.promote_types(torch.promote_types(x.dtype, reconstruction.dtype), torch.float32)
    return (reconstruction.to(dtype) - x.to(dtype)).pow(2).mean(dim=1)


def step_errors(x: Tensor, reconstruction: Tensor, shape: tuple[int, ...]) -> Tensor:
    """(B, D), (B, D) -> (B, window): each step's squared error, averaged over its features;
    `shape` is one row's (window, features). The mean over steps is the row's `mse`."""
    dtype = torch.promote_types(torch.promote_types(x.dtype, reconstruction.dtype), torch.float32)
    error = (reconstruction.to(dtype) - x.to(dtype)).pow(2)
    return error.reshape(len(x), shape[0], -1).mean(dim=2)


def banded_dtw(x: Tensor, y: Tensor, radius: int) -> Tensor:
    """(B, T, F), (B, T, F) -> (B,) squared-Euclidean DTW cost per row over T x F, so that
    with radius 0 (no warping) it is the MSE.

    A step i of `x` may align with steps i - radius .. i + radius of `y`. Row by row,
    D[i, j] = c[i, j] + min(D[i-1, j-1], D[i-1, j], D[i, j-1]); the in-row term is a
    running minimum, D[i, :] = cummin(m - S) + S with m = c + min(D[i-1, j-1], D[i-1, j])
    and S the row's cumulative cost, so each row is a handful of batched tensor ops.
    Written here because tslearn's dtw, the library version, runs one pair at a time:
    2.8 ms per 275-step row plus a 10 s numba compile in every process, against 0.23 ms
    per row here (4096 rows of 275 steps, band 27, one thread; checked against tslearn
    in the tests). float32 keeps it within 1e-6 of tslearn's float64.
    """
    batch, steps, features = x.shape
    x, y = x.float(), y.float()
    inf = x.new_full((batch, 1), float("inf"))
    row, row_hi = None, 0  # the previous row's D over steps [lo - 1, row_hi) of y
    for i in range(steps):
        lo, hi = max(0, i - radius), min(steps, i + radius + 1)
        cost = (x[:, i : i + 1, :] - y[:, lo:hi, :]).pow(2).sum(dim=2)
        if row is None:
            reach = torch.cat([x.new_zeros((batch, 1)), inf.expand(batch, hi - lo - 1)], dim=1)
        else:
            # the previous row over [lo - 1, hi): inf before step 0 and past its band
            known = torch.cat([inf, row] if lo == 0 else [row], dim=1)
            if hi > row_hi:
                known = torch.cat([known, inf], dim=1)
            reach = torch.minimum(known[:, :-1], known[:, 1:])
        running = cost.cumsum(dim=1)
        row, row_hi = torch.cummin(reach + cost - running, dim=1).values + running, hi
    return (row[:, -1] / (steps * features)).float()


def reconstruction_error(x: Tensor, reconstruction: Tensor, score: str, shape: tuple[int, ...],
                         band: float) -> Tensor:
    """Per-row error of flattened (B, D) rows; `shape` is one row's (window, features)
    for `dtw`, whose band radius is `band` x window (at least one step)."""
    if score == "mse":
        return mse(x, reconstruction)
    if score == "dtw":
        window = shape[0]
        radius = max(1, round(band * window))
        return banded_dtw(x.reshape(len(x), window, -1), reconstruction.reshape(len(x), window, -1), radius)
    raise ValueError(f"unknown score {score!r}; choose one of {SCORES}")
