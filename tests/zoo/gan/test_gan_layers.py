"""zoo.gan_layers: formulas against numpy, batch symmetries and Keras config / .keras round trips."""

import keras
import numpy as np
import pytest

from zoo.gan.layers import ConcatLabels, Maxout, MinibatchDiscrimination

BATCH, FEATURES, KERNELS, KERNEL_DIM = 6, 4, 3, 2


def _features(seed=0, shape=(BATCH, FEATURES)):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _minibatch_layer(**kwargs):
    layer = MinibatchDiscrimination(num_kernels=KERNELS, kernel_dim=KERNEL_DIM, **kwargs)
    layer.build((None, FEATURES))
    return layer


def test_minibatch_discrimination_output_is_features_then_one_value_per_kernel():
    layer = _minibatch_layer()
    features = _features()
    outputs = np.asarray(layer(features))
    assert outputs.shape == (BATCH, FEATURES + KERNELS)
    assert layer.compute_output_shape((None, FEATURES)) == (None, FEATURES + KERNELS)
    np.testing.assert_array_equal(outputs[:, :FEATURES], features)


def test_minibatch_discrimination_matches_double_loop_over_batch():
    layer = _minibatch_layer()
    features = _features(1).astype(np.float64)
    kernel = np.asarray(layer.kernel, np.float64)  # T: [A, B, C]
    matrices = np.einsum("na,abc->nbc", features, kernel)  # M_i = f(x_i) T
    expected = np.zeros((BATCH, KERNELS))
    for i in range(BATCH):
        for b in range(KERNELS):
            for j in range(BATCH):
                expected[i, b] += np.exp(-np.abs(matrices[i, b] - matrices[j, b]).sum())
    np.testing.assert_allclose(np.asarray(layer(features))[:, FEATURES:], expected, rtol=1e-5)


def test_minibatch_discrimination_is_permutation_equivariant():
    layer = _minibatch_layer()
    features = _features(2)
    permutation = np.random.default_rng(3).permutation(BATCH)
    np.testing.assert_allclose(
        np.asarray(layer(features[permutation])), np.asarray(layer(features))[permutation], rtol=1e-6
    )


def test_minibatch_discrimination_of_identical_inputs_counts_the_batch():
    layer = _minibatch_layer()
    features = np.repeat(_features(4)[:1], BATCH, axis=0)
    np.testing.assert_allclose(np.asarray(layer(features))[:, FEATURES:], BATCH, rtol=1e-6)


def test_minibatch_discrimination_rejects_non_matrix_input():
    with pytest.raises(ValueError, match=r"\[batch, A\]"):
        MinibatchDiscrimination().build((None, 4, 4, 3))


def test_minibatch_discrimination_config_round_trip_reproduces_outputs():
    layer = _minibatch_layer(name="mbd")
    clone = MinibatchDiscrimination.from_config(layer.get_config())
    clone.build((None, FEATURES))
    clone.set_weights(layer.get_weights())
    assert clone.get_config() == layer.get_config()
    np.testing.assert_array_equal(np.asarray(clone(_features())), np.asarray(layer(_features())))


def test_gan_layers_survive_keras_save_and_reload(tmp_path):
    features = keras.Input((FEATURES,))
    labels = keras.Input((), dtype="int32")
    hidden = Maxout(units=5, pieces=3)(features)
    hidden = ConcatLabels(num_classes=4)(hidden, labels)
    hidden = MinibatchDiscrimination(num_kernels=KERNELS, kernel_dim=KERNEL_DIM)(hidden)
    model = keras.Model([features, labels], keras.layers.Dense(1)(hidden))
    inputs = [_features(5), np.array([0, 3, 1, 2, 2, 0], np.int32)]
    path = tmp_path / "discriminator.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(np.asarray(reloaded(inputs)), np.asarray(model(inputs)))


@pytest.mark.parametrize("features_shape", [(BATCH, 5), (BATCH, 3, 2, 5)])
def test_concat_labels_appends_one_hot_on_last_axis(features_shape):
    num_classes = 4
    features = _features(6, features_shape)
    labels = np.array([0, 3, 1, 2, 2, 0], np.int32)
    layer = ConcatLabels(num_classes)
    outputs = np.asarray(layer(features, labels))
    assert outputs.shape == (*features_shape[:-1], 5 + num_classes)
    assert layer.compute_output_shape(features_shape, (BATCH,)) == outputs.shape
    np.testing.assert_array_equal(outputs[..., :5], features)
    one_hot = np.eye(num_classes, dtype=np.float32)[labels]
    expected = one_hot.reshape((BATCH,) + (1,) * (len(features_shape) - 2) + (num_classes,))
    np.testing.assert_array_equal(
        outputs[..., 5:], np.broadcast_to(expected, (*features_shape[:-1], num_classes))
    )


def test_concat_labels_config_round_trip():
    layer = ConcatLabels(7, name="labels")
    assert ConcatLabels.from_config(layer.get_config()).get_config() == layer.get_config()


@pytest.mark.parametrize("leading_shape", [(BATCH,), (2, BATCH)])
def test_maxout_is_max_over_pieces_of_affine_maps(leading_shape):
    units, pieces = 3, 4
    layer = Maxout(units, pieces)
    features = _features(7, (*leading_shape, FEATURES))
    outputs = np.asarray(layer(features))
    kernel, bias = (np.asarray(w, np.float64) for w in layer.projection.get_weights())
    z = (features.astype(np.float64) @ kernel + bias).reshape(*leading_shape, units, pieces)
    np.testing.assert_allclose(outputs, z.max(axis=-1), rtol=1e-5, atol=1e-6)
    assert layer.compute_output_shape((*leading_shape, FEATURES)) == outputs.shape


def test_maxout_config_round_trip_reproduces_outputs():
    layer = Maxout(3, 2, name="maxout")
    layer.build((None, FEATURES))
    clone = Maxout.from_config(layer.get_config())
    clone.build((None, FEATURES))
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(_features())), np.asarray(layer(_features())))
