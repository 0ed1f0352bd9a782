"""`zoo.registry.register` holds an entry to the model contract and refuses a broken one with a
message naming what is missing, before any training run could trip over it."""

from __future__ import annotations

import dataclasses

import keras
import pytest

import contract_toy
import zoo
from zoo import contract, registry


def _entry(**changes) -> registry.ModelSpec:
    return dataclasses.replace(contract_toy.ENTRY, name="zoo.broken_toy", **changes)


class WithoutSample(contract_toy.ToyModel):
    sample = None


def build_without_sample(config) -> WithoutSample:
    return WithoutSample(config)


def build_without_annotation(config):
    return contract_toy.ToyModel(config)


class Unregistered(contract_toy.ToyModel):  # not registered with Keras: a .keras file of it would not reload
    pass


def build_unregistered(config) -> Unregistered:
    return Unregistered(config)


@dataclasses.dataclass(frozen=True)
class PlainConfig:  # not a zoo.config.TrainingConfig
    batch_size: int = 8


@pytest.mark.parametrize("changes, message", [
    (dict(build=build_without_sample), r"WithoutSample lacks sample \(zoo.contract.ZooModel\)"),
    (dict(build=build_without_annotation), r"build_without_annotation must declare the keras.Model subclass"),
    (dict(build=build_unregistered), r"Unregistered is not registered with @keras.saving.register_keras_serializable"),
    (dict(config_class=PlainConfig), r"PlainConfig.*must be a frozen dataclass subclassing zoo.config.TrainingConfig"),
    (dict(evaluation=("likelihood",)), r"evaluation 'likelihood' needs ToyModel.use_importance_samples"),
    (dict(evaluation=("perplexity",)), r"unknown evaluation perplexity; known: likelihood, exact_likelihood"),
], ids=["missing_method", "unannotated_build", "unregistered_class", "plain_config", "missing_capability",
        "unknown_evaluation"])
def test_an_entry_that_breaks_the_contract_is_refused_with_what_is_missing(changes, message):
    with pytest.raises(contract.ContractError, match=r"zoo.broken_toy.*" + message):
        registry.register(_entry(**changes))
    assert "zoo.broken_toy" not in zoo.names()


def test_an_entry_that_counts_its_vocabulary_needs_a_config_that_takes_it():
    def captioned_data(config) -> registry.DatasetSpec:
        return registry.DatasetSpec("coco_captions", binarize=False, captions=True, count_vocabulary=True)

    with pytest.raises(contract.ContractError, match=r"zoo.broken_toy counts its vocabulary.*ToyConfig needs "
                                                     r"with_vocabulary\(words\)"):
        registry.register(_entry(dataset=captioned_data))
    assert "zoo.broken_toy" not in zoo.names()


@pytest.mark.parametrize("changes", [dict(preset={"image_size": 4}), dict(tiny={"batch_sise": 2})],
                         ids=["preset", "tiny"])
def test_an_override_that_is_not_a_config_field_is_refused_listing_the_valid_keys(changes):
    with pytest.raises(zoo.ConfigError, match="valid keys: .*image_shape"):
        registry.register(_entry(**changes))
    assert "zoo.broken_toy" not in zoo.names()


@pytest.mark.parametrize("name", ["toy", "zoo.", "zoo.two words"])
def test_a_name_that_is_not_zoo_dot_identifier_is_refused(name):
    with pytest.raises(ValueError, match="zoo.<identifier>"):
        registry.register(dataclasses.replace(contract_toy.ENTRY, name=name))


def test_every_entry_of_the_zoo_passes_the_check_it_was_registered_with():
    for name in zoo.names():
        spec = zoo.get(name)
        assert contract.check_entry(name, spec.config_class, spec.build, spec.evaluation) is spec.model_class
        assert keras.saving.get_registered_object(keras.saving.get_registered_name(spec.model_class))
