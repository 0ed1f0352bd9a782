"""The TF Serving SavedModel of a trained run, loaded in a fresh process with TensorFlow only.

The reloading process (see `fresh_process_outputs`) cannot import this project or TFP;
its outputs are compared with the same run's model restored from its checkpoint here.
"""

import re

import numpy as np
import pytest
import tensorflow as tf

from zoo.common.stateless import per_example_normal_rows

SIGNATURES = {"serving_default", "sample_png", "reconstruct", "encode", "decode", "log_likelihood"}
PYTHON_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
RANDOM_OP = re.compile(r"Random|Rng|Multinomial|TruncatedNormal")


@pytest.fixture
def served(fresh_process_outputs):
    return fresh_process_outputs.savedmodel


@pytest.fixture
def inputs(fresh_process_outputs):
    return fresh_process_outputs.inputs


@pytest.fixture
def report(fresh_process_outputs):
    return fresh_process_outputs.savedmodel_report


def test_serving_needs_neither_tfp_nor_this_project(report):
    # `import tensorflow` itself imports keras in TF 2.21, so keras is not checked here.
    assert not {"tensorflow_probability", "zoo", "training", "export"} & set(report["modules"])


def test_signature_set_is_exactly_the_declared_one(report, trained_run):
    assert set(report["signatures"]) == SIGNATURES == set(trained_run.model.serving_signatures())


def test_every_signature_input_and_output_has_a_leading_batch_dimension(report):
    for name, signature in report["signatures"].items():
        for role in ("inputs", "outputs"):
            assert signature[role], f"{name} has no {role}"
            for key, shape in signature[role].items():
                assert shape and shape[0] is None, f"{name} {role[:-1]} {key} has shape {shape}"


def test_graphs_hold_no_python_ops_and_only_stateless_random_ops(report):
    for name, op_types in report["op_types"].items():
        assert not PYTHON_OPS & set(op_types), name
        stateful = [op for op in op_types if RANDOM_OP.search(op) and not op.startswith("Stateless")]
        assert not stateful, f"{name} uses stateful random ops {stateful}"
    for sampler in ("serving_default", "log_likelihood"):  # the walk reaches the samplers' noise
        assert "StatelessRandomNormalV2" in report["op_types"][sampler]


def test_serving_default_gives_one_image_in_the_unit_interval_per_seed(served, inputs, trained_run):
    samples = served["sample"]
    assert samples.shape == (len(inputs["seeds"]), *trained_run.model.config.image_shape)
    assert samples.shape[1:] == (28, 28, 1)
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    differences = np.abs(samples[:, None] - samples[None]).max(axis=(2, 3, 4))
    assert np.all(differences[~np.eye(len(samples), dtype=bool)] > 0), "two seeds gave the same image"


def test_serving_default_matches_the_in_process_sampler(served, inputs, trained_run):
    np.testing.assert_allclose(served["sample"], trained_run.model.sample(inputs["seeds"]), rtol=0, atol=1e-6)


def test_sample_png_encodes_the_serving_default_images_as_8_bit_pngs(served):
    decoded = served["sample_png_decoded"]  # tf.io.decode_png of each string in the reloading process
    assert decoded.dtype == np.uint8 and decoded.shape == served["sample"].shape
    np.testing.assert_array_equal(decoded, np.round(served["sample"] * 255).astype(np.uint8))


def test_serving_default_is_identical_across_calls(served):
    np.testing.assert_array_equal(served["sample_again"], served["sample"])


def test_serving_default_is_independent_of_batch_order(served, inputs):
    # The noise is a function of each row's seed alone; a matmul over a reordered batch may
    # still round differently in the last bit, hence a tolerance rather than equality.
    np.testing.assert_allclose(served["sample_permuted"], served["sample"][inputs["permutation"]], rtol=0, atol=1e-6)


def test_reconstruct_encode_and_decode_match_the_in_process_model(served, inputs, trained_run):
    model = trained_run.model
    np.testing.assert_allclose(served["reconstruct"], model(inputs["images"]), rtol=0, atol=1e-6)
    np.testing.assert_allclose(served["decode"], model.decode(inputs["latent"]), rtol=0, atol=1e-6)
    encoded = model.encode(inputs["images"])
    assert {f"encode.{key}" for key in encoded} == {key for key in served if key.startswith("encode.")}
    assert len(encoded) == 2 * trained_run.stochastic_layers
    for key, value in encoded.items():
        np.testing.assert_allclose(served[f"encode.{key}"], value, rtol=1e-5, atol=1e-6)


def test_log_likelihood_matches_the_in_process_model(served, inputs, trained_run):
    count = len(inputs["images"])
    expected = trained_run.model.log_likelihood(
        inputs["images"], inputs["importance_samples"], inputs["seeds"][:count])
    np.testing.assert_allclose(served["log_likelihood_mixed"], expected, rtol=1e-5)


def test_log_likelihood_with_one_sample_is_the_log_weight(served, inputs, trained_run):
    """L_1 = log w = log p(x, h) − log q(h | x) for h drawn with the request's seed (Burda et al., Eq. 8)."""
    model = trained_run.model
    count = len(inputs["images"])
    noise = [per_example_normal_rows(inputs["seeds"][:count], 0, 1, units, stream=layer)[:, 0][None]  # [k=1, b, u]
             for layer, units in enumerate(model.latent_units)]
    log_weights = model._importance_terms(tf.constant(inputs["images"]), noise)["log_weights"][0]
    np.testing.assert_allclose(served["log_likelihood_one"], log_weights, rtol=1e-5)


def test_log_likelihood_with_many_samples_is_finite_and_per_example(served, inputs):
    mixed = served["log_likelihood_mixed"]  # k = IMPORTANCE_SAMPLES, up to 30, in one batch
    assert mixed.shape == (len(inputs["images"]),)
    assert np.all(np.isfinite(mixed))
    np.testing.assert_allclose(mixed, served["log_likelihood_alone"], rtol=1e-6)
    one_sample = inputs["importance_samples"] == 1
    np.testing.assert_allclose(mixed[one_sample], served["log_likelihood_one"][one_sample], rtol=1e-6)
