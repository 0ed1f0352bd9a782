"""The networks of the GAN family (`zoo.gan.model`), as lists of Keras layers built from a `GANConfig`.

Two architectures for MNIST-sized images:

* "mlp": Goodfellow et al. 2014 (arXiv:1406.2661), authors' MNIST setup: G has two
  ReLU layers and a tanh output, D two maxout layers with dropout.
* "dcgan": Radford et al. 2016 (arXiv:1511.06434), Sec. 3, at 28×28: G projects z
  to a 7×7 map and upsamples with two stride-2 transposed convolutions (batch norm,
  ReLU, tanh output); D mirrors it with stride-2 convolutions and LeakyReLU 0.2, no
  normalization on its input layer; weights start from N(0, 0.02) (Sec. 4).

D's body (`encoder_layers`) also serves as EBGAN's encoder, and G's upsampling
stack (`decoder_layers`) as its decoder.
"""

from __future__ import annotations

import keras

from zoo.gan.layers import Maxout


def _init():
    return keras.initializers.RandomNormal(stddev=0.02)  # Radford Sec. 4


def _normalization(kind: str, constraint=None):
    if kind == "batch":
        return [keras.layers.BatchNormalization(beta_constraint=constraint, gamma_constraint=constraint)]
    if kind == "layer":
        return [keras.layers.LayerNormalization(axis=(-3, -2, -1), beta_constraint=constraint,
                                                gamma_constraint=constraint)]
    return []


@keras.saving.register_keras_serializable(package="zoo")
class ClipWeights(keras.constraints.Constraint):
    """w ← clip(w, −c, c) after every update (Arjovsky et al. 2017, Alg. 1, line 7)."""

    def __init__(self, clip: float):
        self.clip = clip

    def __call__(self, weight):
        return keras.ops.clip(weight, -self.clip, self.clip)

    def get_config(self):
        return {"clip": self.clip}


def generator_layers(config) -> list[keras.layers.Layer]:
    """Latent → image in [−1, 1]: mlp (Goodfellow et al.) or dcgan (Radford et al. Sec. 3, 28×28)."""
    if config.architecture == "mlp":
        return decoder_layers(config)
    height, width, _ = config.image_shape
    return [  # project z to the 7×7 map, then upsample
        keras.layers.Dense(height // 4 * width // 4 * 2 * config.filters, use_bias=False, kernel_initializer=_init()),
        keras.layers.BatchNormalization(), keras.layers.ReLU(),
        *decoder_layers(config),
    ]


def decoder_layers(config) -> list[keras.layers.Layer]:
    """Features → image in [−1, 1]: G's upsampling stack, also EBGAN's decoder.

    mlp: two ReLU layers and a tanh output from any feature vector. dcgan: from the
    (H/4)·(W/4)·2·filters features of a 7×7 map (D's flattened body output, or G's
    projection of z), two stride-2 transposed convolutions.
    """
    height, width, channels = config.image_shape
    if config.architecture == "mlp":
        return [
            keras.layers.Dense(config.generator_units, activation="relu"),
            keras.layers.Dense(config.generator_units, activation="relu"),
            keras.layers.Dense(height * width * channels, activation="tanh"),
            keras.layers.Reshape(config.image_shape),
        ]
    filters = config.filters
    return [
        keras.layers.Reshape((height // 4, width // 4, 2 * filters)),
        keras.layers.Conv2DTranspose(filters, 5, strides=2, padding="same", use_bias=False, kernel_initializer=_init()),
        keras.layers.BatchNormalization(), keras.layers.ReLU(),
        keras.layers.Conv2DTranspose(channels, 5, strides=2, padding="same", activation="tanh",
                                     kernel_initializer=_init()),
    ]


def encoder_layers(config, constraint=None) -> list[keras.layers.Layer]:
    """D's body, and the EBGAN autoencoder's encoder: input → features.

    The input is the image [batch, H, W, C] for dcgan and the flattened pixels
    [batch, H·W·C] for mlp, with the label's one-hot appended for conditional models.
    """
    weights = {"kernel_constraint": constraint, "bias_constraint": constraint}
    if config.architecture == "mlp":
        return [
            Maxout(config.discriminator_units, config.maxout_pieces), keras.layers.Dropout(config.dropout),
            Maxout(config.discriminator_units, config.maxout_pieces), keras.layers.Dropout(config.dropout),
        ]
    filters = config.filters
    return [  # no normalization on D's input layer (Radford Sec. 3)
        keras.layers.Conv2D(filters, 5, strides=2, padding="same", kernel_initializer=_init(), **weights),
        keras.layers.LeakyReLU(0.2),
        keras.layers.Conv2D(2 * filters, 5, strides=2, padding="same", kernel_initializer=_init(), **weights),
        *_normalization(config.normalization, constraint),
        keras.layers.LeakyReLU(0.2),
        keras.layers.Flatten(),
    ]


def build_sequence(layers, shape):
    """Builds `layers` in sequence from an input shape; returns the output shape."""
    for layer in layers:
        layer.build(shape)
        shape = layer.compute_output_shape(shape)
    return shape


def run_sequence(layers, inputs, training=False):
    """Applies `layers` in sequence."""
    for layer in layers:
        inputs = layer(inputs, training=training)
    return inputs
