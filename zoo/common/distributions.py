"""Keras 3 layers that map features to `tfp.distributions` objects.

`tfp.layers` are Keras 2 only; these are their small Keras 3 counterparts. Each
layer owns the Dense projection to the distribution's parameters, exposes a
static `params_size` (TFP's idea: how many features the parameters take), and
returns a `tfd.Independent` whose event is the whole `event_shape`, so
`log_prob` sums over it. Distributions stay inside models; public APIs return
tensors.

Every family uses these; the discretized logistic (mixture) of 8-bit pixels, which
PixelCNN++ and DRAW's colour models share, is `zoo.common.logistic_mixture`.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

SCALE_FLOOR = 1e-4
"""Smallest standard deviation a Gaussian layer emits: keeps log σ finite and the
log-density bounded when an input collapses onto a mean."""

SCALE_ACTIVATIONS = ("softplus", "exp")


def _flat_size(event_shape) -> int:
    return math.prod(event_shape)


def _unflatten(values: tf.Tensor, event_shape) -> tf.Tensor:
    """[..., prod(event_shape)] → [..., *event_shape]."""
    return tf.reshape(values, tf.concat([tf.shape(values)[:-1], event_shape], axis=0))


@keras.saving.register_keras_serializable(package="zoo")
class GaussianLayer(keras.layers.Layer):
    """Features → N(μ, diag σ²) over `event_shape`.

    μ = W_μ f + b_μ;  σ = softplus(W_σ f + b_σ) + SCALE_FLOOR (or exp(·) + floor).
    """

    def __init__(self, event_shape, scale_activation: str = "softplus", **kwargs):
        super().__init__(**kwargs)
        if scale_activation not in SCALE_ACTIVATIONS:
            raise ValueError(
                f"scale_activation={scale_activation!r}; expected one of {SCALE_ACTIVATIONS}"
            )
        self.event_shape = tuple(event_shape)
        self.scale_activation = scale_activation
        self.projection = keras.layers.Dense(self.params_size(self.event_shape))

    @staticmethod
    def params_size(event_shape) -> int:
        return 2 * _flat_size(event_shape)

    def build(self, input_shape):
        self.projection.build(input_shape)

    def call(self, features):
        loc, raw_scale = tf.split(self.projection(features), 2, axis=-1)
        activation = tf.nn.softplus if self.scale_activation == "softplus" else tf.exp
        scale = activation(raw_scale) + SCALE_FLOOR
        return tfd.Independent(
            tfd.Normal(_unflatten(loc, self.event_shape), _unflatten(scale, self.event_shape)),
            reinterpreted_batch_ndims=len(self.event_shape),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "event_shape": self.event_shape,
            "scale_activation": self.scale_activation,
        }


@keras.saving.register_keras_serializable(package="zoo")
class BernoulliLayer(keras.layers.Layer):
    """Features → Bernoulli(σ(ℓ)) over `event_shape`, parameterised by logits ℓ."""

    def __init__(self, event_shape, **kwargs):
        super().__init__(**kwargs)
        self.event_shape = tuple(event_shape)
        self.projection = keras.layers.Dense(self.params_size(self.event_shape))

    @staticmethod
    def params_size(event_shape) -> int:
        return _flat_size(event_shape)

    def build(self, input_shape):
        self.projection.build(input_shape)

    def call(self, features):
        logits = _unflatten(self.projection(features), self.event_shape)
        return tfd.Independent(
            tfd.Bernoulli(logits=logits, dtype=tf.float32),
            reinterpreted_batch_ndims=len(self.event_shape),
        )

    def get_config(self):
        return {**super().get_config(), "event_shape": self.event_shape}


@keras.saving.register_keras_serializable(package="zoo")
class CategoricalLayer(keras.layers.Layer):
    """Features → Categorical(softmax(ℓ)) over `num_classes` values, parameterised by logits ℓ.

    `event_shape` gives independent categorical variables (e.g. one per pixel):
    the result is a `tfd.Independent` over it; with the default `()` it is a
    single categorical variable.
    """

    def __init__(self, num_classes: int, event_shape=(), **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.event_shape = tuple(event_shape)
        self.projection = keras.layers.Dense(self.params_size(num_classes, self.event_shape))

    @staticmethod
    def params_size(num_classes: int, event_shape=()) -> int:
        return num_classes * _flat_size(event_shape)

    def build(self, input_shape):
        self.projection.build(input_shape)

    def call(self, features):
        logits = _unflatten(self.projection(features), [*self.event_shape, self.num_classes])
        return tfd.Independent(tfd.Categorical(logits=logits), reinterpreted_batch_ndims=len(self.event_shape))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "event_shape": self.event_shape}


class ConditionalDistribution(keras.layers.Layer):
    """h → p(· | h): `depth` Dense layers of `units` (tanh, as Burda et al. 2016 Sec. 5, or ReLU), then a
    distribution layer (`head`). The MLP of the VAE family's and the conditional VAE's networks."""

    def __init__(self, units: int, depth: int, head: keras.layers.Layer, activation: str = "tanh", **kwargs):
        super().__init__(**kwargs)
        self.hidden = [keras.layers.Dense(units, activation=activation) for _ in range(depth)]
        self.head = head

    def build(self, input_shape):
        for layer in self.hidden:
            layer.build(input_shape)
            input_shape = (*input_shape[:-1], layer.units)
        self.head.build(input_shape)

    def call(self, inputs):
        for layer in self.hidden:
            inputs = layer(inputs)
        return self.head(inputs)


def standard_normal(event_size: int) -> tfd.Distribution:
    """The top prior p(h) = N(0, I) over a vector of `event_size` units."""
    return tfd.Independent(
        tfd.Normal(tf.zeros([event_size]), tf.ones([event_size])), reinterpreted_batch_ndims=1
    )


def kl_between_gaussians(q: tfd.Independent, p: tfd.Independent) -> tf.Tensor:
    """KL(N(μ_q, diag σ_q²) ‖ N(μ_p, diag σ_p²)) in closed form, summed over the event:

        Σ_j [log σ_p,j − log σ_q,j + (σ_q,j² + (μ_q,j − μ_p,j)²) / 2σ_p,j² − ½]

    For p = N(0, I) this is −½ Σ_j (1 + log σ_q,j² − μ_q,j² − σ_q,j²) (Kingma & Welling 2014,
    Appendix B; Gregor et al. 2015, Eq. 11): the constant is −½ per dimension j, inside the sum.
    Mansimov et al. 2016 (Sec. 3.3) use it per step between the posterior and a learned prior.
    """
    q_normal, p_normal = q.distribution, p.distribution
    per_dimension = (tf.math.log(p_normal.scale) - tf.math.log(q_normal.scale)
                     + (tf.square(q_normal.scale) + tf.square(q_normal.loc - p_normal.loc))
                     / (2.0 * tf.square(p_normal.scale)) - 0.5)
    return tf.reduce_sum(per_dimension, axis=list(range(-len(q.event_shape), 0)))


def reparameterize(gaussian: tfd.Independent, noise: tf.Tensor) -> tf.Tensor:
    """h = μ + σ ⊙ ε for ε ~ N(0, I) (Kingma & Welling 2014, Sec. 2.4).

    Drawing the noise outside the distribution lets training use one stateless
    seed per step while exported samplers use one seed per example.
    """
    normal = gaussian.distribution
    return normal.loc + normal.scale * noise
