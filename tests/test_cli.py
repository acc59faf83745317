"""Stage entry points fail with one readable message, exit 2, and no stack trace."""

import pytest

from tests.conftest import run_pipeline as run_stage


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "model.latent_dim=0"], "model.latent_dim"),
        (["--set", "model.kind=nope"], "unknown model kind"),
        (["--set", "data.typo=1"], "data.typo: unknown key"),
    ],
)
def test_bad_params_exit_2_with_the_key(args, expected):
    result = run_stage("prepare", *args)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_data_file_exits_2_and_keeps_previous_prepared_output(tmp_path):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "spec.json").write_text("{}")
    bad = tmp_path / "bad.csv"
    bad.write_text("series_id,t,value\na,0,1.0\na,0,2.0\n")  # duplicate t
    result = run_stage("prepare", "--set", f"data.source={bad}", "--set", f"paths.prepared={prepared}")
    assert result.returncode == 2, result.stderr
    assert "strictly increasing" in result.stderr and str(bad) in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in prepared.iterdir()] == ["spec.json"]
    assert (prepared / "spec.json").read_text() == "{}"


def test_missing_data_file_says_how_to_fix(tmp_path):
    result = run_stage("prepare", "--set", f"data.source={tmp_path}/missing.csv")
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "how to fix" in result.stderr
