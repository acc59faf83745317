import pytest

from seqmodels.config import Config, apply_override, config_from_mapping, load_config
from seqmodels.errors import ConfigError
from tests.conftest import REPO


def test_repository_params_load_and_match_defaults():
    cfg = load_config(REPO / "params.yaml")
    assert cfg.model.kind == "conv"
    assert cfg.train.per_worker_batch_size == cfg.train.batch_size // cfg.train.workers
    # params.yaml documents every default: nothing in it differs from the typed defaults.
    assert cfg == Config()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"model": {"lattent_dim": 4}}, "model.lattent_dim: unknown key"),
        ({"model": {"latent_dim": 0}}, "model.latent_dim"),
        ({"model": {"kind": "transformer"}}, "unknown model kind 'transformer'"),
        ({"train": {"batch_size": "big"}}, "train.batch_size"),
        ({"train": {"batch_size": 0}}, "train.batch_size"),
        ({"train": {"workers": 4, "batch_size": 2}}, "batch_size (2) must be a multiple of workers (4)"),
        ({"train": {"workers": 2, "batch_size": 9}}, "e.g. 8"),
        ({"train": {"schedule": "step"}}, "train.schedule"),
        ({"data": {"split": {"val": 0.6, "test": 0.5}}}, "val + test must be < 1"),
    ],
)
def test_bad_params_name_the_key(raw, expected):
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(raw, "params.yaml")
    assert expected in caught.value.message
    assert "params.yaml" in caught.value.message


def test_overrides_are_yaml_typed_and_nested():
    raw = {"train": {"epochs": 5}}
    apply_override(raw, "train.epochs=7")
    apply_override(raw, "model.variational=true")
    assert raw == {"train": {"epochs": 7}, "model": {"variational": True}}
    with pytest.raises(ConfigError):
        apply_override(raw, "no-equals-sign")


def test_missing_params_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_the_tiny_test_config_keeps_every_path_under_the_test_folder(tmp_path):
    """A path left at its default would make tests write into the checkout's DVC outputs."""
    from tests.conftest import tiny_config

    paths = tiny_config(tmp_path).paths
    outside = {name: value for name, value in paths.model_dump().items()
               if not str(value).startswith(str(tmp_path))}
    assert outside == {}
