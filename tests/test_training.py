import subprocess
import sys

import numpy as np
import pytest
import torch

from seqmodels.config import TrainConfig
from seqmodels.errors import TrainingDivergedError
from seqmodels.models import build_model
from seqmodels.models.config import ModelConfig
from seqmodels.spec import DataSpec
from seqmodels.training import (
    FitState,
    fit,
    in_memory_batches,
    kl_weight,
    make_optimizer,
    make_scheduler,
    seed_everything,
)
from tests.conftest import REPO

SPEC = DataSpec(kind="series", input_shape=(10, 1), features=("a",))


def loaders(n=32, batch=8):
    generator = torch.Generator().manual_seed(0)
    t = torch.linspace(0, 6.28, SPEC.window)
    data = torch.sin(t + torch.rand(n, 1, generator=generator) * 6.28)
    return in_memory_batches({"x": data}, batch, shuffle=False)


def run(train_cfg, model_cfg=None, state=None, data=None):
    seed_everything(0)
    model = build_model(model_cfg or ModelConfig(kind="dense", hidden_size=16, latent_dim=2), SPEC)
    optimizer = make_optimizer(model, train_cfg)
    scheduler = make_scheduler(optimizer, train_cfg)
    data = data or loaders()
    return fit(model, optimizer, scheduler, data, data, train_cfg, model.cfg, device=torch.device("cpu"),
               state=state, log=None)


def test_plain_pytorch_fit_lowers_the_loss():
    state = run(TrainConfig(epochs=30, lr=0.01, workers=1, batch_size=8))
    assert state.history[-1]["train_loss"] < 0.3 * state.history[0]["train_loss"]
    assert state.best_val_loss == min(h["val_loss"] for h in state.history)


def test_resuming_from_state_continues_at_the_next_epoch():
    state = run(TrainConfig(epochs=3, workers=1, batch_size=8))
    restored = FitState.from_dict(state.to_dict())
    resumed = run(TrainConfig(epochs=5, workers=1, batch_size=8), state=restored)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3, 4]


def test_early_stopping_triggers_on_a_plateau():
    # lr tiny -> no improvement beyond float noise; patience 2 stops long before 50 epochs.
    state = run(TrainConfig(epochs=50, lr=1e-12, patience=2, workers=1, batch_size=8))
    assert state.stopped_early
    assert len(state.history) < 50
    assert state.epochs_since_best == 2


def test_nan_loss_stops_with_epoch_and_step():
    def poisoned(epoch):
        batches = list(loaders()(epoch))
        batches[2] = {"x": torch.full_like(batches[2]["x"], float("nan"))}
        return batches

    with pytest.raises(TrainingDivergedError, match="epoch 0, step 2"):
        run(TrainConfig(epochs=2, workers=1, batch_size=8), data=poisoned)


def test_bf16_autocast_path_runs_on_cpu():
    state = run(TrainConfig(epochs=2, precision="bf16", workers=1, batch_size=8),
                ModelConfig(kind="recurrent", hidden_size=8, latent_dim=2))
    assert len(state.history) == 2


def test_kl_warmup_is_linear():
    cfg = ModelConfig(kind="dense", variational=True, kl_warmup_epochs=4)
    assert [kl_weight(cfg, e) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_library_trains_without_importing_ray_or_dvc():
    code = (
        "import sys, torch\n"
        "from tests.test_training import run\n"
        "from seqmodels.config import TrainConfig\n"
        "state = run(TrainConfig(epochs=2, workers=1, batch_size=8))\n"
        "assert len(state.history) == 2\n"
        "leaked = sorted(m for m in ('ray', 'dvc', 'dvclive') if m in sys.modules)\n"
        "assert not leaked, leaked\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_onecycle_schedule_warms_up_then_anneals():
    cfg = TrainConfig(schedule="onecycle", epochs=10, lr=0.1)
    optimizer = make_optimizer(torch.nn.Linear(2, 2), cfg)
    scheduler = make_scheduler(optimizer, cfg)
    lrs = []
    for _ in range(cfg.epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    peak = int(np.argmax(lrs))
    assert 0 < peak < 9 and lrs[peak] == pytest.approx(0.1, rel=0.05)
    assert lrs[0] < 0.01 and lrs[-1] < 0.01
