"""Every bad input ends in one readable message and exit 2, before Ray starts, with the
published outputs of earlier runs unchanged (issue 7). Bad files live in tests/data/bad/
(written by its make_files.py); each case names the substrings the user must see."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from seqmodels.checkpoints import WEIGHTS_FILE, export_model
from seqmodels.config import Config
from seqmodels.data.tables import read_spec
from seqmodels.errors import DataError
from seqmodels.models.registry import build_model
from seqmodels.publish import hash_path
from seqmodels.spec import DataSpec
from seqmodels.stages import prepare, validate
from seqmodels.stages.infer import check_windows_fit
from tests.conftest import REPO, run_pipeline, tiny_config, write_params

BAD = REPO / "tests" / "data" / "bad"


@pytest.fixture
def project(tmp_path: Path, series_csv: Path) -> Config:
    """Good data prepared and validated, and an (untrained) model exported: the outputs a
    failing stage must leave alone. Windows of 4 steps so the small bad files get that far."""
    cfg = tiny_config(tmp_path, data={"window": 4, "stride": 4})
    prepare.run(cfg)
    validate.run(cfg)
    spec = read_spec(cfg.paths.prepared)
    export_model(Path(cfg.paths.model), build_model(cfg.model, spec).state_dict(), cfg.model, spec)
    write_params(cfg, tmp_path / "params.yaml")
    return cfg


def published(cfg: Config) -> dict[str, str]:
    """A hash of each published output of `cfg`, and any staging/temporary leftovers (there
    must be none: a failed stage removes what it half-wrote)."""
    paths = [cfg.paths.prepared, cfg.paths.validation_report, cfg.paths.model, cfg.paths.outputs]
    root = Path(cfg.paths.prepared).parent
    leftovers = sorted(str(p.relative_to(root)) for p in root.rglob(".*")
                       if "staging-" in p.name or "retired-" in p.name or p.name.endswith(".tmp"))
    return {**{path: hash_path(path) for path in paths if Path(path).exists()}, "leftovers": str(leftovers)}


def assert_clean_failure(code: int, stderr: str, expected: list[str]) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert stderr.count("error:") == 1, stderr  # one message
    assert "how to fix:" in stderr, stderr
    for text in expected:
        assert text in stderr, f"{text!r} not in:\n{stderr}"


DATA_CASES = {
    "missing_column": ("missing_column.csv", [], ["required column(s) ['t'] missing", "missing_column.csv"]),
    "wrong_dtype": ("wrong_dtype.csv", [], ["column 't', check coerce_dtype('int64')", "row 1: 'one'",
                                            "column 'value', check coerce_dtype('float64')", "'high'"]),
    "nan": ("nan.csv", [], ["column 'value', check not_nullable", "row 2"]),
    "inf": ("inf.csv", [], ["column 'value', check must be finite", "row 4: 'inf'", "1 problem(s)"]),
    "absurd_magnitude": ("huge.csv", [], ["column 'value', check must be within +-1e+12", "row 5: 1e+300"]),
    "duplicate_t": ("duplicate_t.csv", [], ["t must be strictly increasing",
                                            "row 1: series_id='s0', t=0"]),
    "non_increasing_t": ("decreasing_t.csv", [], ["t must be strictly increasing", "2 failing row(s)",
                                                  "row 5: series_id='s1', t=0"]),
    "empty_file": ("empty.csv", [], ["empty.csv is empty", "needs a header row"]),
    "header_only": ("header_only.csv", [], ["header_only.csv has no data rows"]),
    "truncated_parquet": ("truncated.parquet", [], ["could not read", "truncated.parquet",
                                                    "complete, valid CSV/Parquet"]),
    "latin1_csv": ("latin1.csv", [], ["latin1.csv is not UTF-8", "re-save the file as UTF-8"]),
    "series_shorter_than_window": ("short_series.csv", [], ["1 series in", "shorter than data.window=4",
                                                            "stub (3 steps)", "data.window <= 3"]),
    "single_class_labels": ("single_class.csv", [], ["single class (0) in all 8 series", "column 'label'",
                                                     "drop the label column"]),
    "empty_split": ("few_series.csv", [], ["split(s) ['val'] got no series (2 normal, 1 anomalous",
                                           "data.split"]),
    "images_of_wrong_size": ("images_wrong_size.parquet",
                             ["data.kind=images", "data.image_shape=[1,3,3]", "model.kind=conv"],
                             ["1 image(s)", "do not have 9 values", "rows [1]", "data.image_shape"]),
}
VALIDATION_REPORTED = {"wrong_dtype", "nan", "inf", "absurd_magnitude", "duplicate_t", "non_increasing_t"}


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data_stops_prepare_with_one_message_and_keeps_outputs(case, project, cli, tmp_path):
    name, extra, expected = DATA_CASES[case]
    before = published(project)
    sets = [arg for item in [f"data.source={BAD / name}", *extra] for arg in ("--set", item)]
    code, stderr = cli("prepare", "--params", str(tmp_path / "params.yaml"), *sets)
    assert_clean_failure(code, stderr, [*expected, name])
    assert published(project) == before
    report = prepare.report_path(project)
    if case in VALIDATION_REPORTED:  # the full Pandera report is on disk, named in the message
        assert str(report) in stderr
        [table] = json.loads(report.read_text())["tables"]
        assert table["valid"] is False and table["failure_cases"] and table["source"].endswith(name)
    else:
        assert not report.exists()


def test_token_ids_out_of_vocabulary_fail_validate_with_the_full_report(project, cli, tmp_path):
    prepared = shutil.copytree(BAD / "tokens_out_of_vocab", tmp_path / "tokens")
    before = {key: value for key, value in published(project).items()
              if key != project.paths.validation_report}  # validate's own report carries the failure
    code, stderr = cli("validate", "--params", str(tmp_path / "params.yaml"),
                       "--set", f"paths.prepared={prepared}")
    assert_clean_failure(code, stderr, ["column 'x', check must be 4 token ids in [0, 7)",
                                        "row 2: [4, 99, 2, 0]", project.paths.validation_report])
    report = json.loads(Path(project.paths.validation_report).read_text())
    assert report["valid"] is False and report["tables"][0]["failure_cases"][0]["index"] == 2
    assert {key: value for key, value in published(project).items() if key in before} == before


PARAM_CASES = {
    # stage, --set overrides, what the user must see
    "unknown_model_kind": ("prepare", ["model.kind=nope"], ["model.kind", "unknown model kind 'nope'"]),
    "unknown_key": ("prepare", ["model.lattent_dim=4"], ["model.lattent_dim: unknown key (typo?)"]),
    "wrong_type": ("prepare", ["train.epochs=many"], ["train.epochs: Input should be a valid integer",
                                                      "'many'"]),
    "latent_dim_zero": ("prepare", ["model.latent_dim=0"], ["model.latent_dim: Input should be greater "
                                                            "than 0"]),
    "latent_dim_negative": ("prepare", ["model.latent_dim=-3"], ["model.latent_dim", "(got -3)"]),
    "batch_size_zero": ("train", ["train.batch_size=0"], ["train.batch_size: Input should be greater "
                                                          "than 0"]),
    "window_longer_than_series": ("prepare", ["data.window=41"],
                                  ["24 series in", "shorter than data.window=41", "data.window <= 40"]),
    "workers_above_cpus": ("train", ["train.workers=4", "train.batch_size=8"],
                           ["train.workers=4 leaves no CPU for Ray Data (Ray has 4 CPUs)",
                            "train.workers <= 3"]),
    "empty_storage": ("train", ["train.storage=''"], ["train.storage is empty", "train.storage"]),
    "unknown_storage_scheme": ("train", ["train.storage=nosuch://bucket/runs"],
                               ["train.storage='nosuch://bucket/runs' cannot be used",
                                "Unrecognized filesystem type"]),
    "uncreatable_storage": ("train", ["train.storage=/proc/seqmodels-runs"],
                            ["train.storage='/proc/seqmodels-runs' cannot be used"]),
    "infer_pool_above_cpus": ("infer", ["infer.concurrency=9"],
                              ["infer.concurrency=9 predictor actors need 9 CPUs; Ray has 4"]),
}
if not torch.cuda.is_available():
    PARAM_CASES["train_gpu_without_gpu"] = ("train", ["train.use_gpu=true"],
                                            ["train.use_gpu needs 2 GPU(s)", "no CUDA GPU is visible"])
    PARAM_CASES["infer_gpu_without_gpu"] = ("infer", ["infer.use_gpu=true"],
                                            ["infer.use_gpu need 1 GPU(s)", "infer.use_gpu: false"])


@pytest.mark.parametrize("case", PARAM_CASES)
def test_bad_params_stop_the_stage_before_ray_starts(case, project, cli, tmp_path):
    import ray

    stage, overrides, expected = PARAM_CASES[case]
    before = published(project)
    code, stderr = cli(stage, "--params", str(tmp_path / "params.yaml"),
                       *[arg for item in overrides for arg in ("--set", item)])
    assert_clean_failure(code, stderr, expected)
    assert not ray.is_initialized()
    assert published(project) == before


class Payload:
    """Pickles as a call to os.system: what a crafted checkpoint would smuggle in."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_pickle_as_the_exported_model_is_refused_and_runs_nothing(project, cli, tmp_path):
    marker = tmp_path / "pwned"
    weights = Path(project.paths.model) / WEIGHTS_FILE
    torch.save({"weight": torch.zeros(2), "payload": Payload(marker)}, weights)
    before = published(project)
    code, stderr = cli("infer", "--params", str(tmp_path / "params.yaml"))
    assert_clean_failure(code, stderr, [f"refused to load {weights}", "GLOBAL posix.system",
                                        "do not load this file with weights_only=False"])
    assert not marker.exists()
    assert published(project) == before


@pytest.mark.parametrize("damage", ["truncated", "garbage", "card"])
def test_a_damaged_exported_model_names_the_file(damage, project, cli, tmp_path):
    model = Path(project.paths.model)
    if damage == "truncated":
        data = (model / WEIGHTS_FILE).read_bytes()
        (model / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
        expected = [f"cannot load checkpoint {model / WEIGHTS_FILE}", "corrupt (e.g. truncated)"]
    elif damage == "garbage":
        (model / WEIGHTS_FILE).write_bytes(pickle.dumps([1, 2, 3]) + b"\x00junk")
        expected = [f"cannot load checkpoint {model / WEIGHTS_FILE}: not a weights-only checkpoint"]
    else:
        (model / "model.json").write_text('{"model": {"kind": "recurrent"')
        expected = [f"model card {model / 'model.json'} is corrupt", "JSONDecodeError"]
    code, stderr = cli("infer", "--params", str(tmp_path / "params.yaml"))
    assert_clean_failure(code, stderr, expected)
    assert not Path(project.paths.outputs).exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "train.storage=nosuch://bucket/runs"], ["Unrecognized filesystem type"]),
        (["--set", "data.source={bad}/latin1.csv"], ["is not UTF-8"]),
        (["--set", "data.source={bad}/nan.csv"], ["column 'value', check not_nullable"]),
    ],
)
def test_the_real_entry_points_print_no_ray_or_python_traceback(args, expected, project, tmp_path):
    """A fresh interpreter through pipelines/*.py, as DVC runs it: stderr is the message only."""
    stage = "train" if "train.storage" in args[1] else "prepare"
    before = published(project)
    result = run_pipeline(stage, "--params", str(tmp_path / "params.yaml"),
                          *[arg.format(bad=BAD) for arg in args], cwd=tmp_path)
    assert_clean_failure(result.returncode, result.stderr, expected)
    assert "ray" not in result.stderr.lower().replace("array", "")
    assert published(project) == before


@pytest.mark.parametrize("windows, expected", [
    (None, "the prepared windows cannot be read"),
    (b"", "the prepared windows cannot be read: Parquet file size is 0 bytes"),
    ({"y": [1.0]}, "the prepared windows have no `x` column"),
    ({"x": [[1.0] * 40]}, "the prepared windows are list<element: double>, not fixed-size lists; "
                          "the model takes 40 (20 x 2)"),
])
def test_infer_names_windows_it_cannot_feed_the_model_before_ray_starts(windows, expected, tmp_path):
    """The infer stage's first check of the prepared windows, against the model's input
    (the width mismatch itself runs as a stage in test_console)."""
    path = tmp_path / "examples.parquet"
    if isinstance(windows, bytes):
        path.write_bytes(windows)
    elif windows is not None:
        pq.write_table(pa.table(windows), path)
    with pytest.raises(DataError) as raised:
        check_windows_fit(path, DataSpec(kind="series", input_shape=(20, 2)), tmp_path / "model")
    assert expected in raised.value.message
    assert str(path) in raised.value.message and "how to fix:" in raised.value.message
