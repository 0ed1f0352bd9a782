"""The model contract, checked on every registry entry (and on a toy entry registered by this suite).

A family's own tests check its math; what every entry must do for `training/`, `export/` and
`serving/` is checked here, so a new entry is covered by being registered.
"""

from __future__ import annotations

import json
import pathlib
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import export
import zoo
from serving import images as image_lib
from zoo import config as config_lib, contract

LEGACY = pathlib.Path(__file__).resolve().parent / "legacy"
STATEFUL_RANDOM = re.compile(r"^(?!Stateless).*(Random|Rng|Multinomial|TruncatedNormal)")
PYTHON_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


def _finite(logs: dict) -> dict:
    return {name: float(value) for name, value in logs.items() if not np.isfinite(float(value))}


def test_entry_builds_a_built_model_that_satisfies_the_contract(entry):
    assert isinstance(entry.model, contract.ZooModel)
    assert type(entry.model) is entry.spec.model_class
    assert entry.model.built and entry.model.count_params() > 0
    assert entry.model.config == entry.config


def test_config_and_model_survive_json_and_get_config_round_trips(entry):
    values = json.loads(json.dumps(config_lib.to_dict(entry.config)))
    assert config_lib.from_dict(entry.spec.config_class, values) == entry.config
    restored = type(entry.model).from_config(json.loads(json.dumps(entry.model.get_config())))
    restored.build_from_config(entry.model.get_build_config())  # as keras.models.load_model does
    assert restored.config == entry.config
    assert [w.shape for w in restored.weights] == [w.shape for w in entry.model.weights]


def test_one_train_step_changes_the_weights_and_gives_finite_metrics(entry):
    model = entry.spec.build(entry.config)  # a fresh copy: the shared one is exported unchanged
    model.compile_for_training(steps_per_epoch=2)
    before = [w.numpy() for w in model.trainable_weights]
    logs = model.train_step(entry.batch())
    assert logs and not _finite(logs), f"non-finite training metrics: {_finite(logs)}"
    changed = [not np.array_equal(old, new.numpy()) for old, new in zip(before, model.trainable_weights)]
    assert any(changed), "a train step left every weight as it was"
    if "likelihood" in entry.spec.evaluation:
        model.use_importance_samples(3)
    model.reset_metrics()
    logs = model.test_step(entry.batch(seed=1))
    assert logs and not _finite(logs), f"non-finite test metrics: {_finite(logs)}"


def test_a_decoder_density_anneals_from_its_prior_and_one_step_is_importance_sampling_from_it(entry):
    """Entries declaring "ais" (or "conditional_ais", under each condition on a batch): the densities have the
    contract's shapes and are finite on data the model simulates, and AIS with one annealing step is
    log (1/C) Σ_c p(x | z_c) with z_c ~ p(z), C chains."""
    from zoo.common import ais

    if "ais" in entry.spec.evaluation:
        densities = {"p(x)": entry.model}
    elif "conditional_ais" in entry.spec.evaluation:
        batch = entry.batch(size=2)
        densities = {condition: entry.model.conditioned_density(batch, condition)
                     for condition in entry.model.ais_conditions()}
        assert densities, "conditional_ais declared without conditions"
    else:
        pytest.skip(f"{entry.spec.name} declares no decoder density")
    for condition, density in densities.items():
        latents = density.prior_latents([3, 2], tf.constant([1, 2]))
        images = density.decoder_sample(latents[0], tf.constant([3, 4]))
        assert images.shape == (2, *entry.config.image_shape), condition
        assert density.log_prior(latents).shape == (3, 2), condition
        log_decoder = density.log_decoder(images, latents)
        assert log_decoder.shape == (3, 2) and np.all(np.isfinite(log_decoder)), condition
        seed = tf.constant([5, 6])
        estimate = ais.Annealer(lambda given, density=density: density).log_marginal((), images, chains=4,
                                                                                   num_steps=1, seed=seed)
        prior = density.prior_latents([4, 2], tf.random.experimental.stateless_fold_in(seed, 0))
        importance = tf.reduce_logsumexp(density.log_decoder(images, prior), axis=0) - np.log(4.0)
        np.testing.assert_allclose(estimate.log_marginal, importance, rtol=1e-5, atol=1e-4, err_msg=condition)


def _is_text(entry) -> bool:
    return entry.spec.dataset(entry.config).text


def test_samples_and_summaries_are_images_in_the_unit_interval_or_texts(entry):
    seeds = tf.constant([5, 6, 7], tf.int64)
    samples = entry.model.sample(seeds).numpy()
    np.testing.assert_array_equal(entry.model.sample(seeds).numpy(), samples)  # a pure function of the seeds
    summaries = entry.model.summaries(entry.batch(size=4)[entry.spec.dataset(entry.config).example_key])
    assert summaries
    if _is_text(entry):
        assert samples.shape == (3,) and samples.dtype == object
        for name, texts in summaries.items():
            assert texts.dtype == tf.string and texts.shape.rank == 1, name
        return
    assert samples.shape == (3, *entry.image_shape)
    for name, images in summaries.items():
        images = np.asarray(images)
        assert images.ndim == 4 and images.shape[-1] == entry.image_shape[-1], name
        assert 0.0 <= images.min() and images.max() <= 1.0, name


def test_the_exports_samples_are_the_models_samples_on_seeds_0_to_15_in_8_bits_or_as_text(entry, reloads):
    path = reloads[entry.spec.name].samples_path
    samples = entry.model.sample(tf.range(export.SAMPLE_GRID_SIZE, dtype=tf.int64)).numpy()
    if _is_text(entry):
        assert pathlib.Path(path).name == export.TEXT_SAMPLES_FILE
        assert pathlib.Path(path).read_text().splitlines() == [sample.decode() for sample in samples]
        return
    expected = np.round(image_lib.grid(samples) * 255)
    height, width, _ = entry.image_shape
    assert expected.shape[:2] == (4 * (height + 1) + 1, 4 * (width + 1) + 1)
    np.testing.assert_array_equal(np.asarray(Image.open(path)).reshape(expected.shape), expected)


def test_keras_file_reloads_in_a_fresh_process_with_identical_samples(entry, reloads):
    reloaded = reloads[entry.spec.name]
    assert reloaded.keras_class == type(entry.model).__name__
    np.testing.assert_array_equal(reloaded.keras_sample, reloaded.sample)


def test_every_savedmodel_signature_in_a_tensorflow_only_process_gives_the_models_outputs(entry, reloads):
    reloaded = reloads[entry.spec.name]
    assert not {"zoo", "training", "export", "tensorflow_probability"} & set(reloaded.savedmodel_modules)
    served = {key: value for key, value in reloaded.savedmodel.items() if not key.startswith("serving_default_")}
    assert set(served) == set(reloaded.expected)
    for key, expected in reloaded.expected.items():
        if expected.dtype == object:  # texts
            np.testing.assert_array_equal(served[key], expected, err_msg=key)
        else:
            np.testing.assert_allclose(served[key], expected, atol=1e-5, rtol=1e-5, err_msg=key)


def test_savedmodel_pngs_are_the_samples_in_8_bits(entry, reloads):
    if _is_text(entry):
        pytest.skip("a model of text serves texts, not PNGs")
    served = reloads[entry.spec.name].savedmodel
    expected = np.round(np.clip(served["serving_default.images"], 0.0, 1.0) * 255.0)
    np.testing.assert_array_equal(served["sample_png.images_bytes"], expected)


def test_savedmodel_samples_do_not_depend_on_batch_order(entry, reloads):
    reloaded = reloads[entry.spec.name]
    served = reloaded.savedmodel
    # Each sample is a function of its own seed; the last bit may still depend on where the row stands.
    # TensorFlow's CPU exp and sigmoid use a vectorised polynomial for whole 16-float packets and the
    # scalar libm call for the remainder of a tensor, which differ by an ulp: a row whose elements move
    # between the two (DRAW's [batch, N, width] filterbanks) rounds differently. Noise drawn from the
    # wrong seed moves a sample by far more than 1e-6.
    for key in [key for key in served if key.startswith("serving_default.")]:
        permuted, in_order = served[key.replace(".", "_permuted.", 1)], served[key][reloaded.inputs["permutation"]]
        if _is_text(entry):
            np.testing.assert_array_equal(permuted, in_order, err_msg=key)
        else:
            np.testing.assert_allclose(permuted, in_order, rtol=0, atol=1e-6, err_msg=key)


def test_every_signature_has_a_batch_dimension_and_only_stateless_core_ops(entry, reloads):
    report = reloads[entry.spec.name].savedmodel_report
    assert {"serving_default", *(() if _is_text(entry) else ("sample_png",))} <= set(report["signatures"])
    for name, shapes in report["signatures"].items():
        for tensor, shape in {**shapes["inputs"], **shapes["outputs"]}.items():
            assert shape and shape[0] is None, f"{name}.{tensor} has no batch dimension: {shape}"
    for name, ops in report["op_types"].items():
        assert not [op for op in ops if STATEFUL_RANDOM.match(op)], f"{name} draws stateful randomness"
        assert not PYTHON_OPS & set(ops), f"{name} calls back into Python"


def test_every_float_input_of_every_signature_refuses_nan_and_inf(entry, reloads):
    """A NaN image, latent or code has no meaning; it must not flow through into an answer."""
    inputs = reloads[entry.spec.name].inputs  # valid inputs of every signature
    for name, (function, specs) in entry.model.serving_signatures().items():
        traced = tf.function(function, input_signature=specs)
        for spec in specs:
            if not spec.dtype.is_floating:
                continue
            for bad in (np.nan, np.inf):
                given = {other.name: np.array(inputs[f"{name}.{other.name}"]) for other in specs}
                given[spec.name].reshape(-1)[-1] = bad
                with pytest.raises(tf.errors.InvalidArgumentError, match=f"input '{spec.name}' must be finite"):
                    traced(*[tf.constant(given[other.name]) for other in specs])


@pytest.mark.parametrize("path", sorted(LEGACY.glob("*.keras")), ids=lambda path: path.stem)
def test_keras_files_written_before_the_package_move_still_load_with_the_same_samples(path):
    expected = np.load(LEGACY / "samples.npz")
    model = keras.models.load_model(path)
    assert type(model) is zoo.get(path.stem).model_class
    # The samples were stored on one machine; another CPU's kernels (oneDNN on or off) may round the last bit
    # of a float differently. A weight that loads wrongly moves them by far more than 1e-6.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.sample(tf.constant(expected["seeds"]))),
                               expected[path.stem], rtol=0, atol=1e-6)
