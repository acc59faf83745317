"""A stage's console, as `dvc repro` shows it: the stage's own lines and real problems, and
none of the lines Ray 2.60 prints that look like failures and are not (the token-auth
notice, "max_restarts > 0" from the core worker, "Progress bars disabled", deprecation
warnings about Ray's own calls). Each stage runs in a fresh interpreter on a local Ray, with
no token of the user's and a HOME of its own, as on a new machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqmodels.checkpoints import export_model
from seqmodels.config import Config
from seqmodels.data.tables import examples_to_arrow, read_spec
from seqmodels.distributed.runtime import shutdown_ray
from seqmodels.models.registry import build_model
from seqmodels.spec import EXAMPLES_FILE, DataSpec
from seqmodels.stages import prepare
from tests.conftest import REPO, tiny_config, write_params

# What each false alarm of Ray 2.60 starts with, or holds.
NOISE = {
    "token-auth notice": "Token authentication is",
    "actor restart warning": "max_restarts > 0",
    "progress notice": "Progress bars disabled",
    "deprecation warning": "DeprecationWarning",
}
AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@pytest.fixture(scope="module", autouse=True)
def _ray_teardown():
    yield
    shutdown_ray()


def fresh_env(home: Path, **extra: str) -> dict[str, str]:
    """This environment without any Ray address or token, HOME moved to `home`, and the
    repository importable by Ray's workers as by the stage."""
    env = {name: value for name, value in os.environ.items() if name not in (*AUTH_ENV, "RAY_ADDRESS")}
    home.mkdir(exist_ok=True)
    python_path = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return {**env, "HOME": str(home), "PYTHONPATH": python_path, **extra}


def run_stage(stage: str, cfg: Config, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """pipelines/<stage>.py in a fresh interpreter, as DVC runs it."""
    params = write_params(cfg, tmp_path / "params.yaml")
    return subprocess.run([sys.executable, str(REPO / "pipelines" / f"{stage}.py"), "--params", str(params),
                           *args], cwd=tmp_path, env=fresh_env(tmp_path / "home"), capture_output=True,
                          text=True, timeout=240)


def assert_no_noise(result: subprocess.CompletedProcess) -> None:
    console = result.stdout + result.stderr
    found = {name: line for name, text in NOISE.items()
             for line in console.splitlines() if text in line}
    assert not found, f"Ray's false alarms on the console: {found}\n--- console:\n{console}"


def assert_no_token_file(tmp_path: Path) -> None:
    """The local Ray ran with a token of its own, not one Ray wrote into ~/.ray."""
    assert not (tmp_path / "home" / ".ray" / "auth_token").exists()


@pytest.fixture
def project(tmp_path: Path, series_csv: Path) -> Config:
    """Prepared windows and an exported (untrained) model: what the infer stage reads."""
    cfg = tiny_config(tmp_path)
    prepare.run(cfg)
    spec = read_spec(cfg.paths.prepared)
    export_model(Path(cfg.paths.model), build_model(cfg.model, spec).state_dict(), cfg.model, spec)
    return cfg


def test_infer_prints_its_result_and_none_of_rays_false_alarms(project, tmp_path):
    result = run_stage("infer", project, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("wrote 72 rows (latent_dim=4)"), result.stdout
    assert_no_noise(result)
    assert_no_token_file(tmp_path)


def replace_windows(cfg: Config, values: np.ndarray) -> None:
    """The prepared windows' `x`, replaced by `values` (one row per window)."""
    examples = Path(cfg.paths.prepared) / EXAMPLES_FILE
    table = pq.read_table(examples)
    x = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1])
    pq.write_table(table.set_column(table.schema.get_field_index("x"), "x", x), examples)


def test_windows_narrower_than_the_model_fail_before_ray_with_a_fix(project, tmp_path):
    """Prepared with another window than the model was trained on: named from the file's
    schema, before Ray starts, rather than as a reshape error inside a predictor actor."""
    rows = pq.ParquetFile(Path(project.paths.prepared) / EXAMPLES_FILE).metadata.num_rows
    replace_windows(project, np.zeros((rows, 10), np.float32))
    result = run_stage("infer", project, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "the prepared windows hold 10 values each; the model takes 40 (20 x 2)" in result.stderr
    assert "how to fix: prepare and train with the same data settings" in result.stderr
    assert "Traceback" not in result.stderr and "ray" not in result.stderr.lower(), result.stderr
    assert not Path(project.paths.outputs).exists()  # nothing published


def test_an_error_inside_a_predictor_still_reaches_the_console(project, tmp_path):
    """Windows of the right width but float64 reach the model as double tensors, which the
    float32 LSTM refuses in the predictor actor: the stage fails (at once: a local
    predictor is not restarted) and the model's own error is shown."""
    rows = pq.ParquetFile(Path(project.paths.prepared) / EXAMPLES_FILE).metadata.num_rows
    replace_windows(project, np.zeros((rows, 40), np.float64))
    result = run_stage("infer", project, tmp_path)
    assert result.returncode != 0
    expected = "ValueError: RNN input dtype (torch.float64) does not match weight dtype (torch.float32)"
    assert expected in result.stderr, result.stderr
    assert_no_noise(result)
    assert not Path(project.paths.outputs).exists()  # nothing published


@pytest.mark.slow
def test_train_prints_its_epochs_and_none_of_rays_false_alarms(project, tmp_path):
    """Ray Train's own actors (controller, dataset manager, split coordinators) print on
    this console too."""
    result = run_stage("train", project, tmp_path, "--set", "train.epochs=1")
    assert result.returncode == 0, result.stderr
    assert "epoch 1/1 train_loss=" in result.stderr
    assert result.stdout.startswith("trained recurrent for 1 epochs"), result.stdout
    assert_no_noise(result)
    assert_no_token_file(tmp_path)


def test_a_local_ray_starts_with_a_token_of_its_own_unless_the_user_set_one(tmp_path):
    """Ray reads the mode when imported, so it is imported first, as a stage may; a user's
    mode or token file is kept (a fresh interpreter each: both are process-wide)."""
    script = """if True:
        import os, ray
        from ray._raylet import get_authentication_mode
        from seqmodels.distributed.runtime import local_token_auth
        local_token_auth()
        print(os.environ.get("RAY_AUTH_MODE"), len(os.environ.get("RAY_AUTH_TOKEN", "")),
              int(get_authentication_mode()))
    """
    token_mode = 1  # ray._raylet.AuthenticationMode.TOKEN

    def run(**env: str) -> list[str]:
        done = subprocess.run([sys.executable, "-c", script], env=fresh_env(tmp_path / "home", **env),
                              capture_output=True, text=True, timeout=120, check=True)
        return done.stdout.split()

    assert run() == ["token", "64", str(token_mode)]
    assert run(RAY_AUTH_MODE="disabled") == ["disabled", "0", "0"]
    token_file = tmp_path / "token"
    token_file.write_text("a-token-of-the-users")
    assert run(RAY_AUTH_TOKEN_PATH=str(token_file)) == ["token", "0", str(token_mode)]


@pytest.mark.slow
def test_a_long_inference_off_a_terminal_prints_progress_lines(tmp_path, monkeypatch, capfd):
    """Many small blocks, written in several tasks: the sink's row counts reach the driver
    while the run goes on, and a line comes every ray.progress_interval_s."""
    from seqmodels.distributed import infer as distributed_infer
    from seqmodels.distributed import runtime

    monkeypatch.setattr(runtime, "INFER_BLOCK_BYTES", 32 << 10)
    monkeypatch.setattr(distributed_infer, "INFER_FILE_BYTES", 128 << 10)
    monkeypatch.setattr(runtime, "progress_bars_shown", lambda: False)
    cfg = tiny_config(tmp_path, infer={"batch_size": 250}, ray={"progress_interval_s": 0.2})
    spec = DataSpec(kind="series", input_shape=(20, 1), features=("value",))
    export_model(tmp_path / "model", build_model(cfg.model, spec).state_dict(), cfg.model, spec)
    rows = 20_000
    windows = pd.DataFrame({"window_id": np.arange(rows), "series_id": [f"s{i // 50}" for i in range(rows)],
                            "split": "test", "start": (np.arange(rows) % 50) * 20,
                            "x": list(np.random.default_rng(0).normal(size=(rows, 20)).astype(np.float32))})
    pq.write_table(examples_to_arrow(windows, 20), tmp_path / "examples.parquet")
    capfd.readouterr()
    distributed_infer.predict_to_parquet(cfg, tmp_path / "model", tmp_path / "examples.parquet",
                                         tmp_path / "out", label="score")
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("score: ")]
    assert lines, "no progress line"
    pattern = re.compile(r"score: ([\d,]+)/20,000 rows \((\d+)%\), [\d,]+ rows/s(, ETA \d.*)?")
    assert all(pattern.fullmatch(line) for line in lines), lines
    done = [int(pattern.fullmatch(line).group(1).replace(",", "")) for line in lines]
    assert done == sorted(done) and done[0] > 0 and done[-1] <= rows
    assert pq.read_table(tmp_path / "out").num_rows == rows
