"""The discretized logistic mixture of PixelCNN++, as a `tfd.Distribution` and a Keras 3 layer.

References:
  [1] Salimans, Karpathy, Chen, Kingma. PixelCNN++: Improving the PixelCNN with
      Discretized Logistic Mixture Likelihood and Other Modifications. ICLR 2017,
      arXiv:1701.05517. Authors' code: github.com/openai/pixel-cnn.
  [2] Mächler. Accurately Computing log(1 − exp(−|a|)). Rmpfr vignette, 2012.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

NUM_LEVELS = 256
"""8-bit pixel values k ∈ {0, …, 255}. Images enter models as k / 255 ∈ [0, 1]; the
discretized logistic works on bin centres y_k = 2k/255 − 1 ∈ [−1, 1] ([1], Sec. 2.1)."""

LOG_SCALE_FLOOR = -7.0
"""Smallest log-scale log s a DiscretizedLogisticMixtureLayer emits (authors' code,
pixel_cnn_pp/nn.py; the paper gives none). s ≥ e^−7 ≈ 9.1e−4 ≈ bin width / 8.6 keeps
1/s, and the gradients through (y − μ)/s, moderate; an interior bin can still hold up
to σ(4.3) − σ(−4.3) ≈ 0.973 of a component's mass."""

_BIN_HALF_WIDTH = 1.0 / (NUM_LEVELS - 1)  # δ: bins [y_k − δ, y_k + δ] tile [−1 − δ, 1 + δ]
_LOG_2 = math.log(2.0)


def _log1mexp(x: tf.Tensor) -> tf.Tensor:
    """log(1 − e^−x) for x > 0, switching at log 2 as in [2].

    Each branch is evaluated on an argument clipped to its own side, so the
    branch `tf.where` discards stays finite and its zero gradient stays zero
    (`tfp.math.log1mexp` gives NaN gradients for x below ~1e−7).
    """
    return tf.where(
        x < _LOG_2,
        tf.math.log(-tf.math.expm1(-tf.minimum(x, _LOG_2))),
        tf.math.log1p(-tf.exp(-tf.maximum(x, _LOG_2))),
    )


def _levels(images: tf.Tensor) -> tf.Tensor:
    """Images in [0, 1] → the nearest level k ∈ {0, …, 255}, as floats."""
    return tf.clip_by_value(tf.round(images * (NUM_LEVELS - 1)), 0.0, NUM_LEVELS - 1.0)


def _bin_centres(levels: tf.Tensor) -> tf.Tensor:
    """k → y_k = 2k/255 − 1."""
    return levels * (2.0 * _BIN_HALF_WIDTH) - 1.0


def _discretized_logistic_log_mass(levels, loc, log_scale):
    """log P(k | μ, s) for a logistic(μ, s) rounded to the nearest bin centre ([1], Eq. 2).

    With y_k = 2k/255 − 1, δ = 1/255, a = (y_k + δ − μ)/s and b = (y_k − δ − μ)/s:

        P(0) = σ(a),   P(255) = 1 − σ(b),   P(k) = σ(a) − σ(b) otherwise,

    the edge bins taking the tails from −∞ and to +∞. Computed exactly in log
    space through

        log σ(a) = −softplus(−a),   log(1 − σ(b)) = −softplus(b),
        σ(a) − σ(b) = σ(a) σ(−b) (1 − e^−(a − b)),   a − b = 2δ/s,

    so log P(k) = −softplus(−a)[k < 255] − softplus(b)[k > 0] + log(1 − e^−2δ/s)[0 < k < 255].
    Every term is finite for finite a, b and 2δ/s > 0 (log s below ~80 in float32), so
    there is no underflow to guard: the authors' code instead switches to
    log pdf(y_k) + log 2δ when σ(a) − σ(b) < 1e−5, an approximation this form
    does not need.
    """
    inverse_scale = tf.exp(-log_scale)
    centred = _bin_centres(levels) - loc
    upper = (centred + _BIN_HALF_WIDTH) * inverse_scale  # a
    lower = (centred - _BIN_HALF_WIDTH) * inverse_scale  # b
    zero = tf.zeros_like(upper)
    is_first, is_last = levels <= 0.0, levels >= NUM_LEVELS - 1.0
    return (
        tf.where(is_last, zero, -tf.nn.softplus(-upper))
        + tf.where(is_first, zero, -tf.nn.softplus(lower))
        + tf.where(is_first | is_last, zero, _log1mexp(2.0 * _BIN_HALF_WIDTH * inverse_scale))
    )


class DiscretizedLogisticMixture(tfd.Distribution):
    """A mixture of K discretized logistics over one 8-bit pixel of C channels ([1], Sec. 2).

    One mixture indicator is shared by the pixel's channels, and channel c's
    location is shifted linearly by the channels before it ([1], Eqs. 2–3):

        p(x) = Σ_k π_k Π_c P(x_c | μ_kc + Σ_{j<c} α_kcj y_j, s_kc),

    P as in Eq. 2 on bin centres y = 2x'/255 − 1 of the levels x' ∈ {0, …, 255}.
    For RGB, (α_k10, α_k20, α_k21) are the paper's (α, β, γ):
    μ_G += α y_R, μ_B += β y_R + γ y_G. Means and scales are in the [−1, 1]
    units of the authors' code.

    Values are images in [0, 1] as the data pipeline feeds them: `log_prob`
    snaps x to the nearest level round(255 x) (clipped to [0, 255]) and
    `sample` returns levels / 255, so samples round-trip exactly.

    Batch shape is that of `mixture_logits` without its last axis, event shape [C].

    Args:
      mixture_logits: [..., K], unnormalised log π.
      locs: [..., K, C], μ.
      log_scales: [..., K, C], log s; nothing is floored here.
      coefficients: [..., K, C(C − 1)/2], α_kcj at index c(c − 1)/2 + j (for RGB:
        α, β, γ), or None for channels independent given the component.
    """

    def __init__(self, mixture_logits, locs, log_scales, coefficients=None,
                 validate_args=False, allow_nan_stats=True, name="DiscretizedLogisticMixture"):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            self._mixture_logits = tf.convert_to_tensor(
                mixture_logits, dtype_hint=tf.float32, name="mixture_logits")
            dtype = self._mixture_logits.dtype
            self._locs = tf.convert_to_tensor(locs, dtype=dtype, name="locs")
            self._log_scales = tf.convert_to_tensor(log_scales, dtype=dtype, name="log_scales")
            self._coefficients = (
                None if coefficients is None
                else tf.convert_to_tensor(coefficients, dtype=dtype, name="coefficients")
            )
            channels = self._locs.shape[-1]
            if channels is None:
                raise ValueError("locs needs a static channel axis")
            num_coefficients = channels * (channels - 1) // 2
            if self._coefficients is not None and self._coefficients.shape[-1] != num_coefficients:
                raise ValueError(
                    f"coefficients need C(C − 1)/2 = {num_coefficients} entries on the last axis "
                    f"for C = {channels}; got shape {self._coefficients.shape}"
                )
            super().__init__(
                dtype=dtype,
                reparameterization_type=tfd.NOT_REPARAMETERIZED,
                validate_args=validate_args,
                allow_nan_stats=allow_nan_stats,
                parameters=parameters,
                name=name,
            )

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return dict(
            mixture_logits=tfp.util.ParameterProperties(event_ndims=1),
            locs=tfp.util.ParameterProperties(event_ndims=2),
            log_scales=tfp.util.ParameterProperties(event_ndims=2),
            coefficients=tfp.util.ParameterProperties(event_ndims=2),
        )

    @property
    def mixture_logits(self):
        return self._mixture_logits

    @property
    def locs(self):
        return self._locs

    @property
    def log_scales(self):
        return self._log_scales

    @property
    def coefficients(self):
        return self._coefficients

    @property
    def channels(self) -> int:
        return self._locs.shape[-1]

    def _event_shape(self):
        return self._locs.shape[-1:]

    def _event_shape_tensor(self):
        return tf.shape(self._locs)[-1:]

    def _channel_locs(self, channel: int, previous) -> tf.Tensor:
        """μ_kc + Σ_{j<c} α_kcj y_j for every component ([1], Eq. 3): [..., K].

        `previous` holds y_0, …, y_{c−1}, each [..., 1] to broadcast over K.
        """
        locs = self._locs[..., channel]
        if self._coefficients is not None:
            first = channel * (channel - 1) // 2
            for j, centre in enumerate(previous):
                locs = locs + self._coefficients[..., first + j] * centre
        return locs

    def channel_log_probs(self, value) -> tf.Tensor:
        """log P(x_c | x_{<c}, component k) for every k and c: [..., K, C].

        log_prob is logsumexp_k(log π_k + Σ_c of these); they give the channel
        marginals and conditionals of a pixel without enumerating 256^C values.
        """
        levels = _levels(tf.convert_to_tensor(value, dtype=self.dtype))[..., None, :]  # [..., 1, C]
        centres = _bin_centres(levels)
        return tf.stack(
            [
                _discretized_logistic_log_mass(
                    levels[..., c],
                    self._channel_locs(c, [centres[..., j] for j in range(c)]),
                    self._log_scales[..., c],
                )
                for c in range(self.channels)
            ],
            axis=-1,
        )

    def _log_prob(self, value):
        log_weights = tf.nn.log_softmax(self._mixture_logits)
        return tf.reduce_logsumexp(
            log_weights + tf.reduce_sum(self.channel_log_probs(value), axis=-1), axis=-1
        )

    def _sample_n(self, n, seed=None):
        """Exact ancestral sampling: k ~ Cat(π), then channel by channel a logistic
        draw μ + s · logit(u) rounded to its bin, whose centre conditions the next
        channel's location. (The authors' sampler clips but does not round, and
        conditions on the unrounded draw.) With a stateless seed (a pair of ints or
        an int32 [2] tensor) the samples are a fixed function of the seed."""
        component_seed, *channel_seeds = tfp.random.split_seed(
            seed, n=1 + self.channels, salt="DiscretizedLogisticMixture")
        num_components = tf.shape(self._mixture_logits)[-1]
        component = tfd.Categorical(logits=self._mixture_logits).sample(n, seed=component_seed)
        selector = tf.one_hot(component, num_components, dtype=self.dtype)  # [n, ..., K]
        tiny = float(np.finfo(self.dtype.as_numpy_dtype).tiny)
        return self._channels_by_quantiles(selector, [
            tf.random.stateless_uniform(tf.shape(component), channel_seed, minval=tiny, maxval=1.0, dtype=self.dtype)
            for channel_seed in channel_seeds])

    def sample_from_uniforms(self, uniforms) -> tf.Tensor:
        """The sample of `_sample_n` as a function of given U(0, 1) draws u, [..., 1 + C].

        The component is the inverse of the mixture's CDF at u_0: the first k with
        π_1 + … + π_k > u_0. Channel c is the logistic quantile μ + s (log u − log(1 − u))
        at u = u_{1+c} rounded to its bin (the edge bins taking the tails), and its bin
        centre conditions the next channel's location, as in `_sample_n`. For a
        deterministic sampler driven by stateless per-example uniforms (a model's
        pixel-by-pixel loop); u must lie in (0, 1).

        Returns:
          images in [0, 1] on the 256-level grid, [..., C] (batch shape broadcast with
          that of u).
        """
        uniforms = tf.convert_to_tensor(uniforms, dtype=self.dtype)
        num_components = self._mixture_logits.shape[-1]
        cumulative = tf.math.cumsum(tf.nn.softmax(self._mixture_logits), axis=-1)
        component = tf.reduce_sum(tf.cast(cumulative <= uniforms[..., :1], tf.int32), axis=-1)
        selector = tf.one_hot(  # F(K) may round below u_0
            tf.minimum(component, num_components - 1), num_components, dtype=self.dtype)
        return self._channels_by_quantiles(selector, [uniforms[..., 1 + c] for c in range(self.channels)])

    def _channels_by_quantiles(self, selector, channel_uniforms) -> tf.Tensor:
        """Channel c of the component picked by the one-hot `selector` [..., K]: the logistic
        quantile μ + s (log u − log(1 − u)) at u = channel_uniforms[c], rounded to its bin (the
        edge bins taking the tails); its bin centre conditions the next channel's location.
        → images in [0, 1] on the 256-level grid, [..., C]."""
        levels, previous = [], []
        for c, u in enumerate(channel_uniforms):
            loc = tf.reduce_sum(selector * self._channel_locs(c, previous), axis=-1)
            log_scale = tf.reduce_sum(selector * self._log_scales[..., c], axis=-1)
            latent = loc + tf.exp(log_scale) * (tf.math.log(u) - tf.math.log1p(-u))
            level = tf.clip_by_value(
                tf.round((latent + 1.0) / (2.0 * _BIN_HALF_WIDTH)), 0.0, NUM_LEVELS - 1.0)
            levels.append(level)
            previous.append(_bin_centres(level)[..., None])
        return tf.stack(levels, axis=-1) / (NUM_LEVELS - 1)


@keras.saving.register_keras_serializable(package="zoo")
class DiscretizedLogisticMixtureLayer(keras.layers.Layer):
    """Features [batch, H, W, F] → discretized logistic mixture over images [batch, H, W, C] ([1], Sec. 2).

    A per-pixel Dense (PixelCNN++'s final 1×1 "nin" layer) emits, for K
    components, [mixture logits (K) | μ (K·C) | raw log s (K·C) | raw α (K·C(C−1)/2)],
    and then

        log s = max(raw log s, LOG_SCALE_FLOOR),   α = tanh(raw α)   (authors' code).

    The result is `tfd.Independent` over [H, W] of `DiscretizedLogisticMixture`:
    event shape [H, W, C], `log_prob(images in [0, 1]) → [batch]` (nats, summed over
    sub-pixels), `sample(seed=...)` → images in [0, 1] on the 256-level grid. This
    draws every pixel given the features; autoregressive sampling, pixel by
    pixel, is the model's loop.

    Args:
      num_mixtures: K. 10 follows the authors' code (train.py, --nr_logistic_mix).
      channels: C; 3 for RGB (the paper's case), 1 for grey.
    """

    def __init__(self, num_mixtures: int = 10, channels: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.num_mixtures = num_mixtures
        self.channels = channels
        self.projection = keras.layers.Dense(self.params_size(num_mixtures, channels))

    @staticmethod
    def params_size(num_mixtures: int, channels: int) -> int:
        """K (1 + 2C + C(C − 1)/2): 100 for K = 10 and RGB ([1], Sec. 2.2), 3K for grey."""
        return num_mixtures * (1 + 2 * channels + channels * (channels - 1) // 2)

    def build(self, input_shape):
        self.projection.build(input_shape)

    def call(self, features):
        k, c = self.num_mixtures, self.channels
        num_coefficients = c * (c - 1) // 2
        logits, locs, log_scales, coefficients = tf.split(
            self.projection(features), [k, k * c, k * c, k * num_coefficients], axis=-1)
        leading = tf.shape(features)[:-1]
        per_channel = tf.concat([leading, [k, c]], axis=0)  # [..., K·C] → [..., K, C]
        mixture = DiscretizedLogisticMixture(
            mixture_logits=logits,
            locs=tf.reshape(locs, per_channel),
            log_scales=tf.maximum(tf.reshape(log_scales, per_channel), LOG_SCALE_FLOOR),
            coefficients=tf.tanh(
                tf.reshape(coefficients, tf.concat([leading, [k, num_coefficients]], axis=0))),
        )
        return tfd.Independent(mixture, reinterpreted_batch_ndims=2)

    # As the `likelihood` of an autoregressive model (`zoo.autoregressive.base`).

    @property
    def noise_size(self) -> int:
        """The U(0, 1) draws of one pixel in `draw`: the component, then one per channel."""
        return 1 + self.channels

    def log_prob(self, features, images):
        """log p(images) per example, [batch], in nats, from features [batch, H, W, F] (Eqs. 2–3)."""
        return self(features).log_prob(images)

    def draw(self, features, uniforms):
        """One pixel's values in [0, 1], [batch, C], from its features [batch, F] and its uniforms
        [batch, 1 + C] by inverse CDFs (`DiscretizedLogisticMixture.sample_from_uniforms`)."""
        mixture = self(features[:, None, None, :]).distribution
        return mixture.sample_from_uniforms(uniforms[:, None, None, :])[:, 0, 0]

    def get_config(self):
        return {**super().get_config(), "num_mixtures": self.num_mixtures, "channels": self.channels}
