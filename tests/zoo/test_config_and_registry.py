"""zoo.registry look-ups and zoo.config's typed overrides and JSON round trips."""

import dataclasses
import json

import pytest

import zoo
from zoo import config as config_lib, registry
from zoo.vae import VAEConfig


def test_unknown_model_error_lists_known_models():
    with pytest.raises(zoo.UnknownModelError) as raised:
        zoo.get("zoo.nonexistent")
    message = str(raised.value)
    assert "'zoo.nonexistent'" in message
    for name in zoo.names():
        assert name in message
    assert {"zoo.vae", "zoo.iwae"} <= set(zoo.names())


def test_unknown_model_error_is_a_key_error():
    with pytest.raises(KeyError):
        zoo.get("nonexistent")


@pytest.mark.parametrize("name", ["vae", "iwae"])
def test_short_and_full_names_resolve_to_same_entry(name):
    assert zoo.get(name) is zoo.get(f"zoo.{name}")
    assert zoo.get(name).short_name == name


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(ValueError, match="zoo.vae"):
        registry.register(zoo.get("zoo.vae"))


def test_iwae_preset_sets_iwae_objective_and_k_50():
    config = zoo.get("zoo.iwae").make_config()
    assert (config.objective, config.k) == ("iwae", 50)
    assert zoo.get("zoo.vae").make_config() == VAEConfig()


def test_make_config_overrides_take_precedence_over_preset():
    config = zoo.get("iwae").make_config(k=5, stochastic_layers=2)
    assert (config.objective, config.k, config.stochastic_layers) == ("iwae", 5, 2)


def test_make_config_unknown_override_lists_valid_keys():
    with pytest.raises(zoo.ConfigError, match="valid keys: .*learning_rate"):
        zoo.get("vae").make_config(learning_rat=1e-3)


@pytest.mark.parametrize(
    "assignment, key, expected",
    [
        ("k=5", "k", 5),
        ("learning_rate=0.01", "learning_rate", 0.01),
        ("learning_rate=1", "learning_rate", 1.0),
        ("adam_epsilon=1e-4", "adam_epsilon", 1e-4),
        ("jit_compile=true", "jit_compile", True),
        ("jit_compile=False", "jit_compile", False),
        ("jit_compile=0", "jit_compile", False),
        ("dataset=binarized_mnist", "dataset", "binarized_mnist"),
        ("objective = iwae ", "objective", "iwae"),
        ("hidden_units=16,32", "hidden_units", (16, 32)),
        ("hidden_units=64", "hidden_units", (64,)),
        ("image_shape=28, 28, 1", "image_shape", (28, 28, 1)),
        ("latent_units=None", "latent_units", None),
        ("latent_units=", "latent_units", None),
    ],
)
def test_parse_assignments_gives_values_of_the_field_type(assignment, key, expected):
    values = config_lib.parse_assignments([assignment], VAEConfig)
    assert values == {key: expected}
    assert type(values[key]) is type(expected)
    if isinstance(expected, tuple):
        assert all(type(item) is int for item in values[key])


def test_parse_assignments_result_builds_a_config():
    values = config_lib.parse_assignments(
        ["stochastic_layers=2", "hidden_units=8,4", "latent_units=4,2", "k=5"], VAEConfig
    )
    config = config_lib.replace(VAEConfig(), **values)
    assert config.architecture == ((8, 4), (4, 2))
    assert config.k == 5


def test_parse_assignments_rejects_unknown_key_listing_valid_keys():
    with pytest.raises(zoo.ConfigError) as raised:
        config_lib.parse_assignments(["kk=5"], VAEConfig)
    message = str(raised.value)
    assert "kk" in message
    for name in config_lib.field_names(VAEConfig):
        assert name in message


@pytest.mark.parametrize(
    "assignment, key, type_name",
    [
        ("k=abc", "k", "int"),
        ("k=2.5", "k", "int"),
        ("learning_rate=fast", "learning_rate", "float"),
        ("jit_compile=maybe", "jit_compile", "bool"),
        ("hidden_units=16,x", "hidden_units", "int"),
    ],
)
def test_parse_assignments_rejects_malformed_value_naming_key_and_type(assignment, key, type_name):
    with pytest.raises(zoo.ConfigError) as raised:
        config_lib.parse_assignments([assignment], VAEConfig)
    message = str(raised.value)
    assert f"{key}=" in message
    assert type_name in message


@pytest.mark.parametrize("assignment", ["k", "=5"])
def test_parse_assignments_rejects_text_without_key_and_value(assignment):
    with pytest.raises(zoo.ConfigError, match="key=value"):
        config_lib.parse_assignments([assignment], VAEConfig)


@pytest.mark.parametrize(
    "overrides, complaint",
    [
        ({"objective": "foo"}, "objective"),
        ({"likelihood": "poisson"}, "likelihood"),
        ({"scale_activation": "relu"}, "scale_activation"),
        ({"learning_rate_schedule": "cosine"}, "learning_rate_schedule"),
        ({"k": 0}, "k must be"),
        ({"stochastic_layers": 3}, "hidden_units and latent_units"),
        ({"stochastic_layers": 2, "hidden_units": (8,), "latent_units": (4,)}, "stochastic_layers=2"),
    ],
)
def test_vae_config_rejects_invalid_values(overrides, complaint):
    with pytest.raises(zoo.ConfigError, match=complaint):
        VAEConfig(**overrides)


def test_vae_config_accepts_other_depths_when_both_tuples_are_set():
    config = VAEConfig(stochastic_layers=3, hidden_units=(8, 8, 8), latent_units=(4, 3, 2))
    assert config.architecture == ((8, 8, 8), (4, 3, 2))


@pytest.mark.parametrize("layers", [1, 2])
def test_vae_config_defaults_to_paper_architecture(layers):
    expected = {1: ((200,), (50,)), 2: ((200, 100), (100, 50))}[layers]
    assert VAEConfig(stochastic_layers=layers).architecture == expected


def test_vae_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        VAEConfig().k = 5


@pytest.mark.parametrize(
    "config",
    [
        VAEConfig(),
        zoo.get("iwae").make_config(),
        VAEConfig(stochastic_layers=2, hidden_units=(16, 8), latent_units=(4, 2), image_shape=(6, 6, 1)),
        VAEConfig(learning_rate=1.0, likelihood="gaussian", scale_activation="exp", jit_compile=True),
    ],
    ids=["default", "iwae", "two-layer-tuples", "gaussian-exp-jit"],
)
def test_to_dict_json_from_dict_round_trip_equals_original(config):
    restored = config_lib.from_dict(VAEConfig, json.loads(json.dumps(config_lib.to_dict(config))))
    assert restored == config
    assert type(restored.learning_rate) is float


def test_from_dict_coerces_json_integers_for_float_fields():
    restored = config_lib.from_dict(VAEConfig, {"learning_rate": 1, "image_shape": [6, 6, 1]})
    assert type(restored.learning_rate) is float
    assert restored.image_shape == (6, 6, 1)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(zoo.ConfigError, match="valid keys"):
        config_lib.from_dict(VAEConfig, {"not_a_field": 1})


@pytest.mark.parametrize("likelihood, binarize", [("bernoulli", True), ("gaussian", False)])
def test_dataset_spec_binarizes_only_for_bernoulli_likelihood(likelihood, binarize):
    spec = zoo.get("vae")
    config = spec.make_config(likelihood=likelihood, dataset="binarized_mnist")
    assert spec.dataset(config) == zoo.DatasetSpec("binarized_mnist", binarize=binarize)
