"""The `model` section of params.yaml, beside the families it configures.

`kind` is checked against the registry when params load (registry.check_fits), not here:
this module must not import the families, which import it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from seqmodels.sections import Section


class ModelConfig(Section):
    kind: str = "conv"
    latent_dim: int = Field(8, gt=0)
    hidden_size: int = Field(16, gt=0)
    num_layers: int = Field(2, gt=0)
    cell: Literal["gru", "lstm"] = "gru"
    bidirectional: bool = False
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    task_weight: float = Field(0.1, ge=0.0)
    variational: bool = False
    beta: float = Field(1.0, ge=0.0)
    kl_warmup_epochs: int = Field(0, ge=0)
    score: Literal["mse", "dtw"] = Field(
        "mse", description="Anomaly score: reconstruction MSE, or for series a DTW error that "
        "tolerates features a few steps off (see seqmodels/models/scoring.py).")
    score_band: float = Field(0.1, gt=0.0, le=1.0, description="dtw: how far (fraction of the "
                              "window) a step may align away from its own position.")
    point_score: Literal["window", "mean", "max"] = Field(
        "window", description="Series scored per time step (point labels or a time split): a step's "
        "score is the mean of the scores of the windows covering it (`window`), or the mean / max of "
        "its own error in each covering window (`mean`, `max`; the squared error, or with score=dtw "
        "the cost of the DTW path's cells in its row). On kdd135 the window means "
        "find the anomaly far better (docs/performance.md, README quality table).")
