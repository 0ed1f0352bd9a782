"""The per-pixel likelihoods of the autoregressive image models: Bernoulli or a 256-way softmax.

van den Oord, Kalchbrenner, Kavukcuoglu. Pixel Recurrent Neural Networks. ICML 2016,
arXiv:1601.06759 ("2016a").

Each conditional p(x_i | x_<i) of the chain rule (2016a Eq. 1) is, per sub-pixel,

* a Bernoulli with logit ℓ on binary values {0, 1} (2016a Table 1: sigmoid for MNIST), or
* a Categorical with logits ℓ_0 … ℓ_255 over the levels round(255 x) (2016a Sec. 2.2:
  "a discrete distribution ... a multinomial modelled by a softmax").

`levels` names the two: 1 for the Bernoulli (one logit per sub-pixel), and the number of
categories otherwise (`NUM_LEVELS` = 256 for 8-bit data). Pure functions, the output head
of 2016a Table 1, and `PixelLogitsLikelihood`, the `likelihood` (`zoo.autoregressive.base`)
of every model whose network ends in per-pixel logits.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from zoo.autoregressive.masked_conv import MaskedConv2D
from zoo.common import distributions
from zoo.common.logistic_mixture import NUM_LEVELS

tfd = tfp.distributions

LIKELIHOODS = {"bernoulli": 1, "categorical": NUM_LEVELS}  # name → levels


def params_size(levels: int, channels: int) -> int:
    """Outputs of the network per pixel: C logits (Bernoulli), or C·levels (Categorical)."""
    if levels == 1:
        return distributions.BernoulliLayer.params_size((channels,))
    return distributions.CategoricalLayer.params_size(levels, (channels,))


def config_checks(config) -> list:
    """The (ok, message) checks of `zoo.config.check` that every logits-likelihood config shares."""
    return [
        (config.likelihood in LIKELIHOODS, "likelihood must be 'bernoulli' or 'categorical'"),
        (len(config.image_shape) == 3 and min(config.image_shape) >= 1, "image_shape must be (height, width, channels)"),
        (not (config.likelihood == "categorical" and config.dataset == "binarized_mnist"),
         "likelihood=categorical models 256 grey levels and binarized_mnist has 2: set dataset=mnist or fashion_mnist"),
        (config.output_filters >= 1, "output_filters must be >= 1"),
        (config.batch_size >= 1 and config.epochs >= 1, "batch_size and epochs must be >= 1"),
    ]


def pixel_logits(outputs, channels: int, levels: int):
    """The network's outputs [..., C·levels] as logits [..., C] (Bernoulli) or [..., C, levels]."""
    if levels == 1:
        return outputs
    return tf.reshape(outputs, tf.concat([tf.shape(outputs)[:-1], [channels, levels]], 0))


def pixel_distribution(logits, levels: int) -> tfd.Distribution:
    """p(x_i | x_<i) per sub-pixel: Bernoulli on {0, 1}, or Categorical over levels 0 … levels − 1."""
    if levels > 1:
        return tfd.Categorical(logits=logits)
    return tfd.Bernoulli(logits=logits, dtype=tf.float32)


def pixel_values(images, levels: int):
    """Images in [0, 1] as the distribution's values: as they are, or levels round((levels − 1) x)."""
    if levels > 1:
        return tf.cast(tf.clip_by_value(tf.round(images * (levels - 1)), 0.0, levels - 1.0), tf.int32)
    return images


def log_likelihood(logits, images, levels: int):
    """log p(x) = Σ_i log p(x_i | x_<i) per image [batch], in nats, from logits at every pixel
    ([batch, H, W, C] or [batch, H, W, C, levels]) (2016a Eq. 1)."""
    pixels = tfd.Independent(pixel_distribution(logits, levels), reinterpreted_batch_ndims=3)
    return pixels.log_prob(pixel_values(images, levels))


def draw_pixel(logits, uniforms, levels: int):
    """A pixel's values in [0, 1] from U(0, 1) draws by inversion: 1[u < σ(ℓ)] (Bernoulli), or the
    level k with F(k − 1) ≤ u < F(k), divided by levels − 1 (Categorical).

    Args:
      logits: [batch, C] or [batch, C, levels].
      uniforms: [batch, C], one draw per sub-pixel.
    """
    if levels == 1:
        return tf.cast(uniforms < tf.sigmoid(logits), tf.float32)
    cumulative = tf.cumsum(tf.nn.softmax(logits), axis=-1)
    drawn = tf.reduce_sum(tf.cast(cumulative <= uniforms[..., None], tf.float32), axis=-1)
    return tf.minimum(drawn, levels - 1.0) / (levels - 1)  # F(levels − 1) may round below u


class PixelLogitsLikelihood:
    """The `likelihood` of a model whose network ends in per-pixel logits (PixelCNN, PixelRNN):
    a Bernoulli (`levels` = 1) or a `levels`-way Categorical per sub-pixel.

    A plain object, no weights: the logits come from the model's `output_head`.
    """

    def __init__(self, likelihood: str, channels: int):
        self.levels = LIKELIHOODS[likelihood]
        self.channels = channels
        self.params_size = params_size(self.levels, channels)
        self.noise_size = channels  # one uniform per sub-pixel

    def logits(self, outputs):
        """The network's outputs [..., C·levels] as logits (`pixel_logits`)."""
        return pixel_logits(outputs, self.channels, self.levels)

    def log_prob(self, logits, images):
        """log p(x) = Σ_i log p(x_i | x_<i) per image, exact, in nats: [batch] (2016a Eq. 1)."""
        return log_likelihood(logits, images, self.levels)

    def draw(self, logits, uniforms):
        """A pixel's values in [0, 1] by inversion of its conditional (`draw_pixel`)."""
        return draw_pixel(logits, uniforms, self.levels)


def output_head(output_filters: int, likelihood: PixelLogitsLikelihood, initializer) -> list:
    """The head of 2016a Table 1, as two layers: ReLU, 1×1 conv (mask B) to `output_filters` maps,
    ReLU, 1×1 conv to the logits; `apply_head` runs it."""
    return [
        MaskedConv2D(output_filters, 1, "B", kernel_initializer=initializer, name="output_hidden"),
        MaskedConv2D(likelihood.params_size, 1, "B", kernel_initializer=initializer, name="output_logits"),
    ]


def apply_head(head, features):
    """The head on the network's features [batch, H, W, F] → outputs [batch, H, W, C·levels]."""
    for layer in head:
        features = layer(tf.nn.relu(features))
    return features
