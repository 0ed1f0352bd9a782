"""GAN exports: every registry entry's SavedModel (TensorFlow only) and .keras reload in fresh processes.

Each tiny model is fitted two steps (so batch-norm statistics and weights are not at their
initial values), exported, and reloaded in two child processes: one that cannot import this
project or TFP and calls the SavedModel signatures, one that reopens model.keras with
`keras.models.load_model`. Both must reproduce this process's samples for the same seeds.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf

import export
import zoo

# Every distinct exported sampler: zoo.wgan_gp, zoo.wgan and zoo.ebgan export zoo.dcgan's generator and
# signatures (they differ in the critic or discriminator, which is not exported), so they are left out.
GANS = ["zoo.gan", "zoo.dcgan", "zoo.cgan", "zoo.infogan"]
SEEDS = np.array([3, 141, -7, 2**40, 0, 11], np.int64)
PERMUTATION = np.array([4, 2, 0, 5, 3, 1])
LABELS = np.array([0, 9, 3, 3, 7, 1], np.int64)
CONTINUOUS = np.linspace(-2.0, 2.0, 12, dtype=np.float32).reshape(6, 2)
RANDOM_OP = re.compile(r"Random|Rng|Multinomial|TruncatedNormal")


def calls(signatures, inputs, index):
    """Every sampler signature on the shared inputs (run here and, as source, in the reload process)."""
    del index  # every GAN gets the same inputs

    def call(name, **kwargs):
        outputs = signatures[name](**{key: tf.constant(value) for key, value in kwargs.items()})
        return {key: value.numpy() for key, value in outputs.items()}

    seeds = inputs["seeds"]
    results = {"sample": call("serving_default", seed=seeds)["images"],
               "sample_permuted": call("serving_default", seed=seeds[inputs["permutation"]])["images"],
               "sample_png": np.stack([tf.io.decode_png(png).numpy()
                                       for png in call("sample_png", seed=seeds)["images_bytes"]])}
    if "sample_conditional" in signatures:
        results["conditional"] = call("sample_conditional", seed=seeds, label=inputs["labels"])["images"]
    if "sample_with_codes" in signatures:
        results["with_codes"] = call("sample_with_codes", seed=seeds, category=inputs["labels"],
                                     continuous=inputs["continuous"])["images"]
    return results


def keras_calls(model, inputs, index):
    del index
    return {"sample": model.sample(inputs["seeds"])}


def _tiny_trained_model(name: str):
    spec = zoo.get(name)
    critic_steps = min(spec.make_config().critic_steps, 2)
    config = spec.make_config(generator_units=16, discriminator_units=8, maxout_pieces=2, filters=4, noise_dim=6,
                              image_shape=(8, 8, 1), critic_steps=critic_steps, batch_size=4 * critic_steps)
    model = spec.build(config)
    model.compile_for_training(steps_per_epoch=2)
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(size=(config.batch_size, 8, 8, 1)).astype(np.float32)}
    if config.conditional:
        batch["label"] = rng.integers(0, 10, config.batch_size)
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(2), verbose=0, shuffle=False)
    return model


@pytest.fixture(scope="module")
def reloads(tmp_path_factory, reload_exports):
    """name → {"model", "expected": this process's outputs, "savedmodel", "keras", "keras_class", "report"}."""
    directory = tmp_path_factory.mktemp("gan-exports")
    inputs = {"seeds": SEEDS, "permutation": PERMUTATION, "labels": LABELS, "continuous": CONTINUOUS}
    models = {name: _tiny_trained_model(name) for name in GANS}
    exported = [export.export(models[name], directory / name.removeprefix("zoo."), name.removeprefix("zoo."))
                for name in GANS]
    reloaded = reload_exports(directory, exported, inputs, calls, keras_calls)
    results = {}
    for index, name in enumerate(GANS):
        model = models[name]
        signatures = {key: tf.function(function, input_signature=specs)
                      for key, (function, specs) in model.serving_signatures().items()}
        results[name] = {
            "model": model,
            "expected": calls(signatures, inputs, index),
            "savedmodel": reloaded.savedmodel[index],
            "keras": reloaded.keras[index],
            "keras_class": reloaded.keras_configs[index]["class"],
            "report": reloaded.reports[index],
        }
    results["modules"] = reloaded.modules
    return results


@pytest.mark.parametrize("name", GANS)
def test_savedmodel_signatures_reproduce_the_model_in_a_process_without_this_project(name, reloads):
    run = reloads[name]
    assert set(run["savedmodel"]) == set(run["expected"])
    for key, expected in run["expected"].items():
        np.testing.assert_allclose(run["savedmodel"][key], expected, atol=1e-6, err_msg=f"{name} {key}")
    assert not {"zoo", "training", "export", "tensorflow_probability"} & set(reloads["modules"])


@pytest.mark.parametrize("name", GANS)
def test_keras_file_reloads_to_the_same_sampler_in_a_fresh_process(name, reloads):
    run = reloads[name]
    assert run["keras_class"] == "GAN"
    np.testing.assert_allclose(run["keras"]["sample"], run["expected"]["sample"], atol=1e-6)


@pytest.mark.parametrize("name", GANS)
def test_samples_depend_only_on_their_seed_and_pngs_match_the_images(name, reloads):
    served = reloads[name]["savedmodel"]
    np.testing.assert_allclose(served["sample_permuted"], served["sample"][PERMUTATION], atol=1e-6)
    assert served["sample"].shape == (6, 8, 8, 1)
    assert served["sample"].min() >= 0.0 and served["sample"].max() <= 1.0
    np.testing.assert_array_equal(served["sample_png"], np.round(served["sample"] * 255).astype(np.uint8))


@pytest.mark.parametrize("name", GANS)
def test_every_signature_is_batched_and_uses_only_stateless_random_ops(name, reloads):
    report = reloads[name]["report"]
    expected = {"serving_default", "sample_png"} | {"zoo.cgan": {"sample_conditional"},
                                                    "zoo.infogan": {"sample_with_codes"}}.get(name, set())
    assert set(report["signatures"]) == expected
    for signature, specs in report["signatures"].items():
        for role in ("inputs", "outputs"):
            for key, shape in specs[role].items():
                assert shape and shape[0] is None, f"{signature} {key} {shape}"
    for signature, op_types in report["op_types"].items():
        assert not {"PyFunc", "PyFuncStateless", "EagerPyFunc"} & set(op_types)
        assert not [op for op in op_types if RANDOM_OP.search(op) and not op.startswith("Stateless")], signature
        assert "StatelessRandomUniformV2" in op_types, signature


def test_conditional_and_code_signatures_follow_their_inputs(reloads):
    conditional = reloads["zoo.cgan"]["savedmodel"]["conditional"]
    model = reloads["zoo.cgan"]["model"]
    np.testing.assert_allclose(conditional, model.sample(SEEDS, labels=tf.constant(LABELS)), atol=1e-6)
    assert np.abs(conditional - reloads["zoo.cgan"]["savedmodel"]["sample"]).max() > 1e-4
    with_codes = reloads["zoo.infogan"]["savedmodel"]["with_codes"]
    infogan = reloads["zoo.infogan"]["model"]
    np.testing.assert_allclose(
        with_codes, infogan.sample(SEEDS, category=tf.constant(LABELS), continuous=tf.constant(CONTINUOUS)),
        atol=1e-6)
