"""Keras 3 layers shared by GAN discriminators and generators.

References:
  [1] Goodfellow, Warde-Farley, Mirza, Courville, Bengio. Maxout Networks. ICML 2013,
      arXiv:1302.4389.
  [2] Mirza, Osindero. Conditional Generative Adversarial Nets. 2014, arXiv:1411.1784.
  [3] Salimans, Goodfellow, Zaremba, Cheung, Radford, Chen. Improved Techniques for
      Training GANs. NeurIPS 2016, arXiv:1606.03498.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="zoo")
class MinibatchDiscrimination(keras.layers.Layer):
    """Appends per-kernel closeness to the rest of the minibatch ([3], Sec. 3.2).

    For features f(x_i) ∈ R^A and a learned tensor T ∈ R^{A×B×C}:

        M_i = f(x_i) T ∈ R^{B×C},
        c_b(x_i, x_j) = exp(−‖M_{i,b} − M_{j,b}‖_{L1}),
        o(x_i)_b = Σ_{j=1}^n c_b(x_i, x_j),

    and the output is concat[f(x_i), o(x_i)] ∈ R^{A+B}. The sum includes j = i
    as in the paper (a constant 1 per kernel); the authors' code drops it and
    adds a learned per-kernel bias, which only shifts o.

    n is the batch this layer sees: under tf.distribute that is the
    per-replica batch, so o depends on how the global batch is split. Since
    each output depends on the whole batch, a critic using this layer is not
    compatible with a per-example gradient penalty.

    Args:
      num_kernels: B.
      kernel_dim: C.
      kernel_initializer: for T; Keras's "random_normal" is N(0, 0.05²), the
        authors' θ initialiser (they also weight-normalise T; this layer does not).
    """

    def __init__(
        self,
        num_kernels: int = 100,
        kernel_dim: int = 5,
        kernel_initializer="random_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_kernels = num_kernels
        self.kernel_dim = kernel_dim
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(
                f"MinibatchDiscrimination expects features [batch, A]; got shape {tuple(input_shape)}"
            )
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.num_kernels, self.kernel_dim),
            initializer=self.kernel_initializer,
            name="kernel",
        )

    def call(self, features):
        matrices = tf.tensordot(features, self.kernel, axes=1)  # M: [n, B, C]
        l1 = tf.reduce_sum(tf.abs(matrices[:, None] - matrices[None, :]), axis=-1)  # [n, n, B]
        closeness = tf.reduce_sum(tf.exp(-l1), axis=1)  # o: [n, B]
        return tf.concat([features, closeness], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None if input_shape[-1] is None else input_shape[-1] + self.num_kernels)

    def get_config(self):
        return {
            **super().get_config(),
            "num_kernels": self.num_kernels,
            "kernel_dim": self.kernel_dim,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@keras.saving.register_keras_serializable(package="zoo")
class ConcatLabels(keras.layers.Layer):
    """Conditions on a class by appending its one-hot code y as features ([2], Sec. 4.1).

    call(features, labels): int labels [batch] become one-hot [batch, K],
    broadcast over every non-batch, non-channel axis and concatenated on the
    last axis: [B, D] → [B, D + K]; [B, H, W, C] → [B, H, W, C + K].
    """

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes

    def call(self, features, labels):
        one_hot = tf.one_hot(tf.cast(labels, tf.int32), self.num_classes, dtype=features.dtype)
        rank = features.shape.rank
        one_hot = tf.reshape(one_hot, [-1] + [1] * (rank - 2) + [self.num_classes])
        spatial = tf.concat([tf.shape(features)[:-1], [self.num_classes]], axis=0)
        return tf.concat([features, tf.broadcast_to(one_hot, spatial)], axis=-1)

    def compute_output_shape(self, features_shape, labels_shape=None):
        channels = features_shape[-1]
        return (*features_shape[:-1], None if channels is None else channels + self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="zoo")
class Maxout(keras.layers.Layer):
    """h_i(x) = max_{j ∈ [1, k]} z_ij, z_ij = xᵀW_{·ij} + b_ij ([1], Eq. 1).

    One Dense of units · pieces outputs, grouped as [..., units, pieces] and
    maximised over the pieces; the original GAN's MNIST discriminator is built
    from these (Goodfellow et al. 2014, arXiv:1406.2661, Sec. 5).
    """

    def __init__(self, units: int, pieces: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.pieces = pieces
        self.projection = keras.layers.Dense(units * pieces)

    def build(self, input_shape):
        self.projection.build(input_shape)

    def call(self, inputs):
        z = self.projection(inputs)
        z = tf.reshape(z, tf.concat([tf.shape(z)[:-1], [self.units, self.pieces]], axis=0))
        return tf.reduce_max(z, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "pieces": self.pieces}
