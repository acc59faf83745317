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


def step_errors(x: Tensor, reconstruction: Tensor, shape: tuple[int, ...], score: str = "mse",
                band: float = 0.1) -> Tensor:
    """(B, D), (B, D) -> (B, window): the error spent on each step, averaged over its
    features, so that its mean over the steps is the row's `reconstruction_error` under the
    same score: the squared error of each step (`mse`), or the cost of the DTW path's cells
    in each step's row (`dtw`). `shape` is one row's (window, features)."""
    if score == "dtw":
        window = shape[0]
        return dtw_step_costs(x.reshape(len(x), window, -1), reconstruction.reshape(len(x), window, -1),
                              _radius(band, window))
    dtype = torch.promote_types(torch.promote_types(x.dtype, reconstruction.dtype), torch.float32)
    error = (reconstruction.to(dtype) - x.to(dtype)).pow(2)
    return error.reshape(len(x), shape[0], -1).mean(dim=2)


def _radius(band: float, window: int) -> int:
    """The DTW band radius: `band` x window steps, at least one."""
    return max(1, round(band * window))


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
    steps, features = x.shape[1:]
    *_, (last, _, _) = _dtw_rows(x.float(), y.float(), radius)
    return (last[:, -1] / (steps * features)).float()


def _dtw_rows(x: Tensor, y: Tensor, radius: int):
    """Yield (D[i, lo:hi], lo, hi) for each row i of the banded DTW cost matrix."""
    batch, steps, _ = x.shape
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
        yield row, lo, hi


def dtw_step_costs(x: Tensor, y: Tensor, radius: int) -> Tensor:
    """(B, T, F), (B, T, F) -> (B, T): the cost of the optimal banded DTW path spent on
    each step of `x` (the cells of its row on the path), over F: the per-step form of
    `banded_dtw`, whose row mean it equals. The path is traced back from (T-1, T-1),
    preferring the diagonal, then the step above, then the one to the left on ties, as
    tslearn's dtw_path does (checked against it in the tests)."""
    x, y = x.float(), y.float()
    batch, steps, features = x.shape
    cost = x.new_full((batch, steps, steps), float("inf"))
    for i, (row, lo, hi) in enumerate(_dtw_rows(x, y, radius)):
        cost[:, i, lo:hi] = row
    rows = torch.arange(batch, device=x.device)
    i = torch.full((batch,), steps - 1, device=x.device)
    j = i.clone()
    spent, active = x.new_zeros((batch, steps)), torch.ones(batch, dtype=torch.bool, device=x.device)
    inf = x.new_full((batch,), float("inf"))
    for _ in range(2 * steps - 1):
        spent[rows, i] += torch.where(active, (x[rows, i] - y[rows, j]).pow(2).sum(dim=1), 0.0)
        active &= (i > 0) | (j > 0)
        moves = torch.stack([
            torch.where((i > 0) & (j > 0), cost[rows, (i - 1).clamp(min=0), (j - 1).clamp(min=0)], inf),
            torch.where(i > 0, cost[rows, (i - 1).clamp(min=0), j], inf),
            torch.where(j > 0, cost[rows, i, (j - 1).clamp(min=0)], inf),
        ], dim=1).argmin(dim=1)
        i = torch.where(active & (moves <= 1), i - 1, i)
        j = torch.where(active & (moves != 1), j - 1, j)
    return spent / features


def reconstruction_error(x: Tensor, reconstruction: Tensor, score: str, shape: tuple[int, ...],
                         band: float) -> Tensor:
    """Per-row error of flattened (B, D) rows; `shape` is one row's (window, features)
    for `dtw`, whose band radius is `band` x window (at least one step)."""
    if score == "mse":
        return mse(x, reconstruction)
    if score == "dtw":
        window = shape[0]
        return banded_dtw(x.reshape(len(x), window, -1), reconstruction.reshape(len(x), window, -1),
                          _radius(band, window))
    raise ValueError(f"unknown score {score!r}; choose one of {SCORES}")
