import itertools

import pytest
import torch

from seqmodels.checkpoints import CheckpointError, export_model, load_exported_model, safe_load
from seqmodels.models import build_model, model_kinds
from seqmodels.models.config import ModelConfig
from seqmodels.spec import DataSpec
from seqmodels.training import seed_everything

SPEC = DataSpec(kind="series", input_shape=(12, 2), features=("a", "b"), has_labels=True)
VARIANTS = [
    {"kind": "recurrent", "cell": "gru"},
    {"kind": "recurrent", "cell": "lstm", "bidirectional": True, "num_layers": 2},
    {"kind": "dense"},
    {"kind": "conv", "num_layers": 2},
]
CASES = [dict(v, variational=var) for v, var in itertools.product(VARIANTS, [False, True])]


def model_for(case, seed=0):
    seed_everything(seed)
    return build_model(ModelConfig(hidden_size=16, latent_dim=3, **case), SPEC)


def batch(n=6, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(n, SPEC.input_dim, generator=generator)}


def test_registry_lists_the_implemented_kinds():
    assert {"recurrent", "dense", "conv"} <= set(model_kinds())


@pytest.mark.parametrize("case", CASES, ids=str)
def test_shapes_and_loss_parts(case):
    model = model_for(case).eval()
    inputs = batch()
    out = model(inputs)
    assert out.latent.code.shape == (6, 3)
    assert out.reconstruction.shape == (6, SPEC.input_dim)
    assert model.score(inputs, out).shape == (6,)
    losses = model.loss(inputs, out)
    assert set(losses) == {"total", "recon", "task", "kl"}
    assert (losses["kl"] > 0) == case["variational"]
    if case["kind"] == "recurrent":
        assert out.aux.shape == (6, SPEC.window - 1, SPEC.n_features)
        assert losses["task"] > 0


@pytest.mark.parametrize("case", CASES, ids=str)
def test_gradients_reach_every_parameter(case):
    model = model_for(case).train()
    inputs = batch()
    model.loss(inputs, model(inputs))["total"].backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize("case", CASES, ids=str)
def test_overfits_a_tiny_batch(case):
    model = model_for(case).train()
    inputs = batch(n=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.loss(inputs, model(inputs))["recon"].item()
    for _ in range(150):
        optimizer.zero_grad()
        model.loss(inputs, model(inputs))["total"].backward()
        optimizer.step()
    last = model.loss(inputs, model.eval()(inputs))["recon"].item()
    assert last < 0.3 * first


@pytest.mark.parametrize("case", CASES, ids=str)
def test_export_and_load_gives_identical_outputs(case, tmp_path):
    model = model_for(case).eval()
    export_model(tmp_path, model.state_dict(), model.cfg, SPEC)
    loaded, cfg, spec = load_exported_model(tmp_path)
    assert cfg == model.cfg and spec == SPEC
    inputs = batch()
    torch.testing.assert_close(loaded(inputs).reconstruction, model(inputs).reconstruction, rtol=0, atol=0)


def test_same_seed_same_model_different_seed_different_model():
    a, b, c = model_for(CASES[0], 0), model_for(CASES[0], 0), model_for(CASES[0], 1)
    inputs = batch()
    torch.testing.assert_close(a.eval()(inputs).reconstruction, b.eval()(inputs).reconstruction)
    assert not torch.allclose(a(inputs).reconstruction, c.eval()(inputs).reconstruction)


@pytest.mark.parametrize("layers", [1, 2])
def test_prediction_head_cannot_see_the_step_it_predicts(layers):
    model = model_for({"kind": "recurrent", "bidirectional": True, "num_layers": layers}).eval()
    inputs = batch(n=2)
    changed = {"x": inputs["x"].clone()}
    changed["x"][:, -SPEC.n_features:] += 5.0  # change only the last time step
    # Predictions for steps 1..T-2 are made from steps 0..T-3 and must not move.
    torch.testing.assert_close(model(inputs).aux[:, :-1], model(changed).aux[:, :-1])


def test_variational_latent_is_deterministic_in_eval_and_random_in_train():
    model = model_for({"kind": "dense", "variational": True})
    inputs = batch()
    torch.testing.assert_close(model.eval()(inputs).latent.z, model(inputs).latent.z)
    model.train()
    assert not torch.allclose(model(inputs).latent.z, model(inputs).latent.z)


def test_truncated_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(100)}, path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match=str(path)):
        safe_load(path)


IMAGE_SPEC = DataSpec(kind="images", input_shape=(1, 8, 8), has_labels=True, n_classes=10)


@pytest.mark.parametrize("variational", [False, True])
def test_conv_on_images_has_a_classifier_head_fused_into_the_loss(variational):
    seed_everything(0)
    model = build_model(ModelConfig(kind="conv", hidden_size=8, latent_dim=4, num_layers=2,
                                    task_weight=0.5, variational=variational), IMAGE_SPEC).eval()
    generator = torch.Generator().manual_seed(0)
    inputs = {"x": torch.rand(5, 64, generator=generator), "label": torch.tensor([0, 1, 2, 3, 9])}
    out = model(inputs)
    assert out.reconstruction.shape == (5, 64)
    assert out.aux.shape == (5, 10)
    losses = model.loss(inputs, out)
    expected_task = torch.nn.functional.cross_entropy(out.aux, inputs["label"])
    torch.testing.assert_close(losses["task"], expected_task)
    torch.testing.assert_close(losses["total"], losses["recon"] + 0.5 * losses["task"]
                               + model.cfg.beta * losses["kl"])
    predicted = model.extra_outputs(out)["predicted_class"]
    assert torch.equal(predicted, out.aux.argmax(dim=1))


def test_conv_crops_odd_sizes_back_to_the_input():
    spec = DataSpec(kind="series", input_shape=(37, 3), features=("a", "b", "c"))
    model = build_model(ModelConfig(kind="conv", hidden_size=4, latent_dim=2, num_layers=3), spec)
    assert model({"x": torch.zeros(2, 37 * 3)}).reconstruction.shape == (2, 111)


@pytest.mark.parametrize(("kind", "data_kind"), [("recurrent", "tabular"), ("recurrent", "images"),
                                                  ("conv", "tabular")])
def test_a_family_refuses_data_it_cannot_model(kind, data_kind):
    from seqmodels.errors import ConfigError

    shapes = {"tabular": (9,), "images": (1, 8, 8)}
    spec = DataSpec(kind=data_kind, input_shape=shapes[data_kind])
    with pytest.raises(ConfigError, match=f"cannot model data.kind='{data_kind}'") as caught:
        build_model(ModelConfig(kind=kind), spec)
    assert "dense" in caught.value.message


def test_dense_models_tabular_rows():
    spec = DataSpec(kind="tabular", input_shape=(9,), has_labels=True)
    model = build_model(ModelConfig(kind="dense", hidden_size=8, latent_dim=2), spec)
    assert model({"x": torch.zeros(3, 9)}).reconstruction.shape == (3, 9)


TOKEN_SPEC = DataSpec(kind="tokens", input_shape=(7,), vocab_size=10)
WORDS = torch.tensor([[4, 5, 6, 2, 0, 0, 0],   # 3 letters + EOS + padding
                      [7, 8, 2, 0, 0, 0, 0],
                      [9, 4, 5, 6, 7, 2, 0],
                      [5, 2, 0, 0, 0, 0, 0]])


def seq2seq_model(variational=False):
    seed_everything(0)
    return build_model(ModelConfig(kind="seq2seq", hidden_size=32, latent_dim=8, num_layers=1,
                                   variational=variational), TOKEN_SPEC)


@pytest.mark.parametrize("variational", [False, True])
def test_seq2seq_shapes_and_every_parameter_learns(variational):
    model = seq2seq_model(variational).train()
    out = model({"x": WORDS})
    assert out.reconstruction.shape == (4, 7, 10)  # teacher-forced logits
    assert out.latent.code.shape == (4, 8)
    model.loss({"x": WORDS}, out)["total"].backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []
    decoded = model.eval().output_reconstruction({"x": WORDS}, model({"x": WORDS}))
    assert decoded.shape == (4, 7) and decoded.dtype == torch.long


def test_seq2seq_padding_changes_neither_latent_nor_loss():
    model = seq2seq_model().eval()
    garbage = WORDS.clone()
    garbage[garbage == 0] = 9  # overwrite every padding position after EOS
    clean_out, dirty_out = model({"x": WORDS}), model({"x": garbage})
    torch.testing.assert_close(clean_out.latent.code, dirty_out.latent.code)
    torch.testing.assert_close(model.score({"x": WORDS}, clean_out), model.score({"x": garbage}, dirty_out))
    torch.testing.assert_close(model.loss({"x": WORDS}, clean_out)["recon"],
                               model.loss({"x": garbage}, dirty_out)["recon"])


def test_seq2seq_overfits_and_greedy_decoding_reproduces_the_words():
    model = seq2seq_model().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        optimizer.zero_grad()
        model.loss({"x": WORDS}, model({"x": WORDS}))["total"].backward()
        optimizer.step()
    model.eval()
    decoded = model.output_reconstruction({"x": WORDS}, model({"x": WORDS}))
    assert torch.equal(decoded, WORDS)  # EOS in place, PAD after it


def test_seq2seq_export_and_load_gives_identical_decoding(tmp_path):
    model = seq2seq_model().eval()
    export_model(tmp_path, model.state_dict(), model.cfg, TOKEN_SPEC)
    loaded, _, _ = load_exported_model(tmp_path)
    torch.testing.assert_close(loaded({"x": WORDS}).reconstruction, model({"x": WORDS}).reconstruction,
                               rtol=0, atol=0)


def test_an_unknown_kind_is_a_config_error_naming_the_known_ones():
    from seqmodels.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown model kind 'transformer'") as caught:
        build_model(ModelConfig(kind="transformer"), SPEC)
    assert all(kind in caught.value.message for kind in model_kinds())
