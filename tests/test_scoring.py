"""Anomaly scores: MSE and the time-warped (banded DTW) reconstruction error."""

import numpy as np
import pytest
import torch
from tslearn.metrics import dtw, dtw_path

from seqmodels.errors import ConfigError
from seqmodels.evaluation import pca_scores
from seqmodels.models import build_model
from seqmodels.models.config import ModelConfig
from seqmodels.models.scoring import banded_dtw, dtw_step_costs, mse, reconstruction_error
from seqmodels.spec import DataSpec

SPEC = DataSpec(kind="series", input_shape=(40, 2), features=("a", "b"))


def bump(steps: int, at: int | None, width: int = 5) -> np.ndarray:
    """A flat series with a unit bump starting at `at` (none if None)."""
    series = np.zeros(steps)
    if at is not None:
        series[at : at + width] = 1.0
    return series


@pytest.mark.parametrize("radius", [0, 1, 4, 50])
def test_banded_dtw_is_tslearns_sakoe_chiba_dtw(radius):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 30, 2))
    y = np.roll(x, 2, axis=1) + rng.normal(0, 0.2, size=x.shape)
    ours = banded_dtw(torch.from_numpy(x), torch.from_numpy(y), radius).double().numpy()
    reference = np.array([dtw(a, b, global_constraint="sakoe_chiba", sakoe_chiba_radius=radius) ** 2
                          for a, b in zip(x, y, strict=True)]) / (x.shape[1] * x.shape[2])
    np.testing.assert_allclose(ours, reference, rtol=1e-5)


@pytest.mark.parametrize("radius", [0, 1, 4, 50])
def test_dtw_step_costs_follow_tslearns_optimal_path(radius):
    """Each step of x is charged the cost of its row's cells on tslearn's dtw_path (Sakoe-Chiba
    band, the same tie order), so the per-step costs sum to the path's total."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 30, 2))
    y = np.roll(x, 3, axis=1) + rng.normal(0, 0.3, size=x.shape)
    ours = dtw_step_costs(torch.from_numpy(x), torch.from_numpy(y), radius).double().numpy()
    for row, (a, b) in enumerate(zip(x, y, strict=True)):
        path, _ = dtw_path(a, b, global_constraint="sakoe_chiba", sakoe_chiba_radius=radius)
        reference = np.zeros(30)
        for i, j in path:
            reference[i] += ((a[i] - b[j]) ** 2).sum() / 2
        np.testing.assert_allclose(ours[row], reference, rtol=1e-5, atol=1e-6)
    totals = banded_dtw(torch.from_numpy(x), torch.from_numpy(y), radius).double().numpy()
    np.testing.assert_allclose(ours.mean(axis=1), totals, rtol=1e-5)


def test_dtw_forgives_a_feature_a_few_steps_off_but_not_a_missing_one():
    normal = torch.tensor(np.stack([bump(60, 20), bump(60, 24), bump(60, None)]))[..., None]
    reconstruction = torch.tensor(bump(60, 22))[None, :, None].expand(3, 60, 1)
    flat = normal.reshape(3, -1), reconstruction.reshape(3, -1)
    warped = reconstruction_error(*flat, "dtw", (60, 1), band=0.1).numpy()
    squared = reconstruction_error(*flat, "mse", (60, 1), band=0.1).numpy()
    assert squared[0] > 0 and squared[1] > 0
    assert warped[0] == pytest.approx(0, abs=1e-6) and warped[1] == pytest.approx(0, abs=1e-6)
    assert warped[2] > 0.05  # the bump is missing: no warp explains it away
    narrow = reconstruction_error(*flat, "dtw", (60, 1), band=1 / 60).numpy()
    assert narrow[0] > 0  # 2 steps off, 1 step of band


def test_dtw_never_exceeds_mse_and_equals_it_with_no_room_to_warp():
    rng = np.random.default_rng(1)
    x, y = torch.from_numpy(rng.normal(size=(16, 40 * 2))), torch.from_numpy(rng.normal(size=(16, 40 * 2)))
    warped = reconstruction_error(x, y, "dtw", (40, 2), band=0.2)
    squared = mse(x, y).float()
    assert torch.all(warped <= squared + 1e-6)  # the diagonal is one of the paths DTW may take
    assert torch.allclose(banded_dtw(x.reshape(16, 40, 2), y.reshape(16, 40, 2), 0), squared, rtol=1e-5)


def test_a_model_scores_with_the_configured_score():
    torch.manual_seed(0)
    inputs = {"x": torch.randn(5, SPEC.input_dim)}
    plain = build_model(ModelConfig(kind="recurrent", hidden_size=8, latent_dim=3), SPEC).eval()
    warped = build_model(ModelConfig(kind="recurrent", hidden_size=8, latent_dim=3, score="dtw",
                                     score_band=0.25), SPEC).eval()
    warped.load_state_dict(plain.state_dict())
    out = plain(inputs)
    expected = banded_dtw(inputs["x"].reshape(5, 40, 2), out.reconstruction.reshape(5, 40, 2), 10)
    torch.testing.assert_close(warped.score(inputs, out), expected)
    assert not torch.allclose(plain.score(inputs, out), expected)


@pytest.mark.parametrize("kind, data", [("conv", DataSpec(kind="images", input_shape=(1, 8, 8))),
                                        ("dense", DataSpec(kind="tabular", input_shape=(9,)))])
def test_dtw_is_refused_for_data_without_a_time_axis(kind, data):
    with pytest.raises(ConfigError, match=r"model\.score"):
        build_model(ModelConfig(kind=kind, score="dtw"), data)


def test_the_pca_baseline_is_scored_like_the_model():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, SPEC.input_dim))
    split = np.array(["train"] * 20 + ["test"] * 10)
    squared = pca_scores(x, split, ModelConfig(latent_dim=2), SPEC.input_shape, seed=0)
    warped = pca_scores(x, split, ModelConfig(latent_dim=2, score="dtw"), SPEC.input_shape, seed=0)
    assert squared.dtype == np.float64  # PCA keeps its float64 reconstruction error
    assert np.all(warped <= squared + 1e-6) and not np.allclose(warped, squared)
