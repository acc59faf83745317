import os

import pytest

from seqmodels.publish import clean_stale_staging, hash_path, publishing, write_text_atomic


def test_publish_replaces_target_in_one_step(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with publishing(target) as staging:
        (staging / "new.txt").write_text("new")
        assert (target / "old.txt").exists()  # still the old version while writing
    assert sorted(os.listdir(target)) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging/retired leftovers


def test_failure_keeps_previous_output_and_removes_staging(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "good.txt").write_text("good")
    with pytest.raises(RuntimeError), publishing(target) as staging:
        (staging / "partial.txt").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (target / "good.txt").read_text() == "good"
    assert not (target / "partial.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_leftovers_of_a_killed_run_are_cleaned_but_target_kept(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (tmp_path / ".out.staging-deadbeef").mkdir()
    (tmp_path / ".out.retired-cafebabe").mkdir()
    clean_stale_staging(target)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_text_write_leaves_no_temp_files(tmp_path):
    path = tmp_path / "m" / "metrics.json"
    write_text_atomic(path, "{}")
    write_text_atomic(path, '{"a": 1}')
    assert path.read_text() == '{"a": 1}'
    assert os.listdir(path.parent) == ["metrics.json"]
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_directory_hash_depends_on_names_and_content(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("1")
    first = hash_path(tmp_path / "a")
    (tmp_path / "a" / "x").write_text("2")
    second = hash_path(tmp_path / "a")
    (tmp_path / "a" / "x").rename(tmp_path / "a" / "y")
    assert len({first, second, hash_path(tmp_path / "a")}) == 3
