"""Exports of the autoregressive family beyond the contract suite's: the conditional, categorical Gated
PixelCNN (a `--set` variant, not a registry entry), whose `sample_conditional` and labelled
`log_likelihood` only it has; and that every sampler graph holds the raster-order loop.

One process without this project or TFP calls the SavedModel signatures (the raster-order loop
runs inside the SavedModel); one reopens model.keras with `keras.models.load_model`. Both must
reproduce this process's samples bit for bit and its log-likelihoods.
"""

import re

import numpy as np
import pytest
import tensorflow as tf

import export
import zoo

SEEDS = tf.constant([3, 141, -7, 2**40, 0, 11], tf.int64)
LABELS = tf.constant([0, 9, 3, 3, 7, 1], tf.int64)
RANDOM_OP = "Random|Rng|Multinomial|TruncatedNormal"
TINY = {  # variant → (registry name, overrides); the registry entries' own exports are tests/contract's
    "gated-categorical-conditional": ("zoo.gated_pixelcnn", dict(
        image_shape=(7, 7, 1), filters=4, layers=2, output_filters=8, likelihood="categorical", conditional=True,
        dataset="mnist")),
}
EXPORTED = list(TINY)


def tiny_model(variant: str):
    name, overrides = TINY[variant]
    spec = zoo.get(name)
    model = spec.build(spec.make_config(**overrides))
    rng = np.random.default_rng(0)  # not the initial weights
    model.set_weights([rng.normal(0.0, 0.3, weight.shape).astype(np.float32) for weight in model.get_weights()])
    return model


def images_for(model, count: int) -> np.ndarray:
    """Random images on the model's grid: binary for Bernoulli models, 8-bit levels otherwise."""
    rng = np.random.default_rng(1)
    levels = 2 if getattr(model.config, "likelihood", "") == "bernoulli" else 256
    return (rng.integers(0, levels, size=(count, *model.config.image_shape)) / (levels - 1)).astype(np.float32)


def calls(signatures, inputs, index):
    """The sampler and the log-likelihood of export `index` (run, as source, in the reload process)."""
    def call(name, **kwargs):
        outputs = signatures[name](**{key: tf.constant(value) for key, value in kwargs.items()})
        return {key: value.numpy() for key, value in outputs.items()}

    labels = {"label": inputs["labels"]} if "sample_conditional" in signatures else {}
    results = {"sample": call("serving_default", seed=inputs["seeds"])["images"],
               "log_likelihood": call("log_likelihood", images=inputs[f"images-{index}"], **labels)["log_likelihood"]}
    if labels:
        results["conditional"] = call("sample_conditional", seed=inputs["seeds"], **labels)["images"]
    return results


def keras_calls(model, inputs, index):
    labels = inputs["labels"] if model.config.conditional else None
    return {"sample": model.sample(inputs["seeds"]),
            "log_likelihood": model.log_likelihood(inputs[f"images-{index}"], labels)}


@pytest.fixture(scope="module")
def reloads(tmp_path_factory, reload_exports):
    """variant → {"model", "inputs", "savedmodel", "keras", "report"}: the tiny models, exported and reloaded
    by a process without this project or TFP (SavedModel) and by one with it (`keras.models.load_model`)."""
    directory = tmp_path_factory.mktemp("autoregressive-exports")
    models = {variant: tiny_model(variant) for variant in EXPORTED}
    inputs = {"seeds": SEEDS.numpy(), "labels": LABELS.numpy(),
              **{f"images-{index}": images_for(models[variant], len(SEEDS)) for index, variant in enumerate(EXPORTED)}}
    exported = [export.export(models[variant], directory / variant, models[variant].name) for variant in EXPORTED]
    reloaded = reload_exports(directory, exported, inputs, calls, keras_calls)
    results = {
        variant: {
            "model": models[variant],
            "inputs": {**inputs, "images": inputs[f"images-{index}"]},
            "savedmodel": reloaded.savedmodel[index],
            "keras": reloaded.keras[index],
            "report": reloaded.reports[index],
        }
        for index, variant in enumerate(EXPORTED)
    }
    results["modules"] = reloaded.modules
    return results


@pytest.mark.parametrize("variant", EXPORTED)
def test_keras_file_reloaded_in_a_fresh_process_gives_identical_samples(reloads, variant):
    model, inputs, reloaded = reloads[variant]["model"], reloads[variant]["inputs"], reloads[variant]["keras"]
    labels = inputs["labels"] if model.config.conditional else None
    np.testing.assert_array_equal(reloaded["sample"], model.sample(inputs["seeds"]))
    np.testing.assert_allclose(reloaded["log_likelihood"], model.log_likelihood(inputs["images"], labels), rtol=1e-6)


@pytest.mark.parametrize("variant", EXPORTED)
def test_savedmodel_served_without_zoo_or_tfp_reproduces_samples_and_log_likelihoods(reloads, variant):
    model, inputs, served = reloads[variant]["model"], reloads[variant]["inputs"], reloads[variant]["savedmodel"]
    assert not {"zoo", "training", "export", "tensorflow_probability"} & set(reloads["modules"])
    labels = inputs["labels"] if model.config.conditional else None
    np.testing.assert_array_equal(served["sample"], model.sample(inputs["seeds"]))
    np.testing.assert_allclose(served["log_likelihood"], model.log_likelihood(inputs["images"], labels), rtol=1e-5)
    if labels is not None:
        np.testing.assert_array_equal(served["conditional"], model.sample(inputs["seeds"], labels))


@pytest.mark.parametrize("variant", EXPORTED)
def test_every_signature_input_and_output_has_a_leading_batch_dimension(reloads, variant):
    signatures = reloads[variant]["report"]["signatures"]
    assert set(signatures) == set(reloads[variant]["model"].serving_signatures())
    for name, signature in signatures.items():
        for role in ("inputs", "outputs"):
            for key, shape in signature[role].items():
                assert shape and shape[0] is None, f"{name} {role[:-1]} {key} has shape {shape}"


@pytest.mark.parametrize("variant", EXPORTED)
def test_sampler_graphs_hold_the_pixel_loop_and_only_stateless_random_ops(reloads, variant):
    for name, op_types in reloads[variant]["report"]["op_types"].items():
        stateful = [op for op in op_types if re.search(RANDOM_OP, op) and not op.startswith("Stateless")]
        assert not stateful, f"{name} uses stateful random ops {stateful}"
        assert not {"PyFunc", "PyFuncStateless", "EagerPyFunc"} & set(op_types), name
    for sampler in ("serving_default", "sample_png"):
        op_types = set(reloads[variant]["report"]["op_types"][sampler])
        assert "StatelessRandomUniformV2" in op_types
        assert op_types & {"While", "StatelessWhile"}  # the raster-order loop runs inside the SavedModel
