"""A decoder density for models whose generator is deterministic (GANs, ALI), so that annealed importance
sampling (`zoo.common.ais`) can estimate their log p(x), as Wu et al. 2017 (arXiv:1611.04273) do:

    p(x | z) = N(x; g(z), σ² I)   in [0, 1] pixels, σ declared, not learned.

`GaussianObservations` is a mixin giving such a model the "ais" capability (`zoo.contract.DecoderDensity`
and `zoo.contract.ObservationNoise`). The chains run in u ~ N(0, I), unbounded as HMC needs; a model
whose noise is U[−1, 1] is fed z = 2Φ(u) − 1 = erf(u / √2), which has exactly that distribution, and
one whose noise is N(0, I) is fed z = u.
"""

from __future__ import annotations

import math

import tensorflow as tf

OBSERVATION_STDDEV = 0.1  # σ until `use_observation_stddev` sets it; ours (Wu et al. choose it on validation data)


class GaussianObservations:
    """The densities of AIS for a deterministic generator. The model provides `_noise_size` (the width of
    z), `_uniform_noise` (True for z ~ U[−1, 1], False for N(0, I)), `_generate_unit(noise)` (g(z) in
    [0, 1] for noise [N, width]) and `config.image_shape`."""

    observation_stddev = OBSERVATION_STDDEV

    def use_observation_stddev(self, stddev: float) -> None:
        """Sets σ of the Gaussian observation model (Wu et al. choose it on validation data)."""
        if not stddev > 0:
            raise ValueError(f"the observation stddev must be positive, got {stddev}")
        self.observation_stddev = stddev

    def prior_latents(self, shape, seed):
        """u ~ N(0, I), [*shape, width]."""
        return tf.random.stateless_normal([*shape, self._noise_size], seed=seed)

    def log_prior(self, latents):
        return tf.reduce_sum(-0.5 * tf.square(latents) - 0.5 * math.log(2.0 * math.pi), axis=-1)

    def generated_mean(self, latents):
        """g(z(u)) in [0, 1], [..., H, W, C] for u [..., width]."""
        noise = tf.reshape(latents, [-1, self._noise_size])
        if self._uniform_noise:
            noise = tf.math.erf(noise / math.sqrt(2.0))  # 2Φ(u) − 1
        images = self._generate_unit(noise)
        return tf.reshape(images, tf.concat([tf.shape(latents)[:-1], self.config.image_shape], 0))

    def log_decoder(self, images, latents):
        """log N(x_b; g(z), σ² I), [chains, batch], for images [batch, ...] and latents [chains, batch, width]."""
        residual = (images - self.generated_mean(latents)) / self.observation_stddev
        pixels = math.prod(self.config.image_shape)
        return (-0.5 * tf.reduce_sum(tf.square(residual), axis=[-3, -2, -1])
                - pixels * (math.log(self.observation_stddev) + 0.5 * math.log(2.0 * math.pi)))

    def decoder_sample(self, latents, seed):
        mean = self.generated_mean(latents)
        return mean + self.observation_stddev * tf.random.stateless_normal(tf.shape(mean), seed=seed)
