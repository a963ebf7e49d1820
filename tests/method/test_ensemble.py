import dataclasses
import json

import pytest
import torch

from sedlib.method.ensemble import HeadConfig, HeadEnsemble, head_forward
from tests._reference import reference_heads


def test_batched_forward_matches_independent_per_member_modules(tiny_ensemble):
    features = torch.randn(7, tiny_ensemble.config.feature_dim)
    batched = tiny_ensemble(features)
    assert batched.shape == (4, 7, 5)
    for member, head in enumerate(reference_heads(tiny_ensemble)):
        torch.testing.assert_close(batched[member], head(features), rtol=1e-5, atol=1e-6)


def test_subset_forward_equals_rows_of_full_forward(tiny_ensemble):
    features = torch.randn(6, tiny_ensemble.config.feature_dim)
    full = tiny_ensemble(features)
    subset = tiny_ensemble(features, members=torch.tensor([3, 1]))
    torch.testing.assert_close(subset, full[[3, 1]], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(tiny_ensemble(features, members=torch.tensor([2]))[0], full[2], rtol=1e-6, atol=1e-6)


def test_each_member_can_read_its_own_batch(tiny_ensemble):
    batches = torch.randn(4, 3, tiny_ensemble.config.feature_dim)
    logits = tiny_ensemble(batches)
    for member in range(4):
        torch.testing.assert_close(logits[member], tiny_ensemble(batches[member])[member], rtol=1e-6, atol=1e-6)


def test_forward_rejects_features_of_the_wrong_width(tiny_ensemble):
    with pytest.raises(ValueError, match="input width 12"):
        tiny_ensemble(torch.randn(3, 11))


def test_initialisation_follows_the_published_code():
    config = HeadConfig(num_members=3, feature_dim=64, hidden_dim=256, num_classes=100)
    ensemble = HeadEnsemble(config, generator=torch.Generator().manual_seed(0))
    for name in ("mlp.fc1.weight", "mlp.fc2.weight", "head.weight"):
        weight = ensemble.get_parameter(name)
        assert weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert not torch.equal(weight[0], weight[1])  # members differ
    for name in ("mlp.fc1.bias", "mlp.fc2.bias", "head.bias", "norm2.bias", "norm.bias"):
        assert torch.count_nonzero(ensemble.get_parameter(name)) == 0
    assert torch.all(ensemble.norm2.weight == 1) and torch.all(ensemble.norm.weight == 1)
    assert torch.all(ensemble.ls2.gamma == 1e-4)


def test_same_generator_seed_gives_the_same_ensemble(tiny_config):
    first = HeadEnsemble(tiny_config, generator=torch.Generator().manual_seed(5))
    second = HeadEnsemble(tiny_config, generator=torch.Generator().manual_seed(5))
    for (name, a), (_, b) in zip(first.named_parameters(), second.named_parameters()):
        assert torch.equal(a, b), name


def test_parameter_names_follow_timm_vit():
    names = {
        name
        for name, _ in HeadEnsemble(
            HeadConfig(num_members=1, feature_dim=4, hidden_dim=4, num_classes=2)
        ).named_parameters()
    }
    assert names == {
        "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
        "ls2.gamma", "norm.weight", "norm.bias", "head.weight", "head.bias",
    }  # fmt: skip


def test_soup_is_the_uniform_weight_average(tiny_ensemble):
    soup = tiny_ensemble.soup()
    assert soup.num_members == 1
    for name, p in soup.named_parameters():
        stacked = tiny_ensemble.get_parameter(name)
        torch.testing.assert_close(p[0], sum(stacked[m] for m in range(4)) / 4)


def test_soup_of_identical_members_predicts_like_one_member(tiny_config):
    single = HeadEnsemble(dataclasses.replace(tiny_config, num_members=1), generator=torch.Generator().manual_seed(3))
    copies = HeadEnsemble(tiny_config)
    with torch.no_grad():
        for name, p in copies.named_parameters():
            p.copy_(single.get_parameter(name).expand_as(p))
    features = torch.randn(5, tiny_config.feature_dim)
    torch.testing.assert_close(copies.soup()(features), single(features))


def test_head_forward_counts_members_from_the_parameters(tiny_ensemble):
    params = tiny_ensemble.member_params(torch.tensor([0, 2]))
    assert head_forward(params, torch.randn(3, 12)).shape == (2, 3, 5)


def test_save_and_load_round_trip(tmp_path, tiny_ensemble):
    path = tmp_path / "ens.safetensors"
    sidecar = tiny_ensemble.save(path)
    assert sidecar == tmp_path / "ens.json"
    assert json.loads(sidecar.read_text())["config"]["num_members"] == 4
    loaded = HeadEnsemble.load(path, expected=tiny_ensemble.config)
    for (name, a), (_, b) in zip(tiny_ensemble.named_parameters(), loaded.named_parameters()):
        assert torch.equal(a, b), name


def test_load_refuses_an_unexpected_config(tmp_path, tiny_ensemble):
    path = tmp_path / "ens.safetensors"
    tiny_ensemble.save(path)
    expected = dataclasses.replace(tiny_ensemble.config, num_classes=6)
    with pytest.raises(ValueError, match=r"ens.safetensors.*num_classes \(stored 5, expected 6\)"):
        HeadEnsemble.load(path, expected=expected)


def test_load_detects_a_sidecar_that_does_not_describe_the_weights(tmp_path, tiny_ensemble, tiny_config):
    path = tmp_path / "ens.safetensors"
    tiny_ensemble.save(path)
    other = HeadEnsemble(dataclasses.replace(tiny_config, num_classes=7))
    other_path = tmp_path / "other.safetensors"
    other.save(other_path)
    (tmp_path / "ens.json").write_text((tmp_path / "other.json").read_text())
    with pytest.raises(ValueError, match="'head.weight' has shape"):
        HeadEnsemble.load(path)


def test_load_detects_a_sidecar_with_the_same_shapes_but_another_config(tmp_path, tiny_ensemble):
    path = tmp_path / "ens.safetensors"
    tiny_ensemble.save(path)
    description = json.loads((tmp_path / "ens.json").read_text())
    description["config"]["norm_eps"] = 1e-5
    (tmp_path / "ens.json").write_text(json.dumps(description))
    with pytest.raises(ValueError, match="does not belong to ens.safetensors"):
        HeadEnsemble.load(path)


def test_load_names_a_missing_sidecar(tmp_path, tiny_ensemble):
    path = tmp_path / "ens.safetensors"
    tiny_ensemble.save(path)
    (tmp_path / "ens.json").unlink()
    with pytest.raises(FileNotFoundError, match="ens.json"):
        HeadEnsemble.load(path)


@pytest.mark.parametrize("field, value", [("num_members", 0), ("hidden_dim", 2.5), ("norm_eps", 0.0)])
def test_head_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=f"HeadConfig.{field}"):
        HeadConfig(**{"num_members": 2, field: value})


def test_soup_and_load_leave_the_global_random_state_alone(tmp_path, tiny_ensemble):
    path = tmp_path / "ens.safetensors"
    tiny_ensemble.save(path)
    state = torch.get_rng_state()
    tiny_ensemble.soup()
    HeadEnsemble.load(path)
    assert torch.equal(torch.get_rng_state(), state)


def test_save_refuses_a_path_that_would_collide_with_the_sidecar(tmp_path, tiny_ensemble):
    with pytest.raises(ValueError, match="end in .safetensors"):
        tiny_ensemble.save(tmp_path / "ens.json")


def test_load_names_an_invalid_sidecar_config(tmp_path, tiny_ensemble):
    path = tmp_path / "ens.safetensors"
    tiny_ensemble.save(path)
    description = json.loads((tmp_path / "ens.json").read_text())
    description["config"]["num_heads"] = 3
    (tmp_path / "ens.json").write_text(json.dumps(description))
    with pytest.raises(ValueError, match=r"ens.json: invalid config .*num_heads"):
        HeadEnsemble.load(path)


def test_members_from_one_head_state_are_copies(tiny_ensemble, tiny_config):
    state = {name: p[2].clone() for name, p in tiny_ensemble.named_parameters()}
    copies = HeadEnsemble.from_member_state(state, num_members=3, norm_eps=tiny_config.norm_eps)
    assert copies.config == dataclasses.replace(tiny_config, num_members=3, layer_scale_init=1e-4)
    features = torch.randn(6, tiny_config.feature_dim)
    expected = tiny_ensemble(features)[2]
    for member in copies(features):
        torch.testing.assert_close(member, expected)
    with pytest.raises(ValueError, match=r"missing \['ls2.gamma'\]"):
        HeadEnsemble.from_member_state({k: v for k, v in state.items() if k != "ls2.gamma"}, 2)
    with pytest.raises(ValueError, match="norm.bias has shape"):
        HeadEnsemble.from_member_state({**state, "norm.bias": torch.zeros(3)}, 2)


def test_load_names_a_truncated_file(tmp_path, tiny_ensemble):
    path = tmp_path / "ens.safetensors"
    tiny_ensemble.save(path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"ens.safetensors: not a readable safetensors file .*damaged or truncated"):
        HeadEnsemble.load(path)
