"""What `GANConfig.loss` changes in a GAN, one class per loss.

Each class holds everything its loss changes: D's head on the shared body
(`zoo.gan.networks.encoder_layers`), the score D outputs, the loss pair, and the
terms reported beside the losses.

* `Classifier`, loss="gan" (Goodfellow et al. 2014, arXiv:1406.2661, Eq. 1): a logit ℓ
  with D(x) = σ(ℓ), reported as a probability; G's loss is `generator_loss`.
* `Critic`, loss="wasserstein" (Arjovsky et al. 2017, arXiv:1701.07875, Alg. 1): an
  unbounded score f(x), and f(x) − f(G(z)), the critic's estimate of W(P_r, P_g) up to a
  constant.
* `Energy`, loss="energy" (EBGAN-PT, Zhao et al. 2017, arXiv:1609.03126): an autoencoder
  whose energy is D(x) = mean((Dec(Enc(x)) − x)²) (Sec. 2.3), the margin loss (Eq. 1-2),
  and the pulling-away term on the encoder's codes added to G's loss (Sec. 4.2, Eq. 7).

D outputs are dicts {"score": [batch], "features": [batch, F]} (`GAN.discriminate`); the
terms are per example. The gradient penalty, weight clipping and InfoGAN's codes are
config switches of their own (`zoo.gan.model`, `zoo.gan.latents`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo.gan import losses as gan_losses
from zoo.gan.layers import MinibatchDiscrimination
from zoo.gan.networks import decoder_layers


class Critic:
    """A linear score f(x) on D's features, unbounded, trained on the Wasserstein loss pair."""

    tracked: tuple[str, ...] = ("wasserstein_estimate",)

    def __init__(self, config):
        self.config = config
        self.losses = gan_losses.loss_pair("wasserstein")

    def head(self, constraint=None) -> list[keras.layers.Layer]:
        """Minibatch discrimination when configured (Salimans et al. 2016, Sec. 3.2), then one linear unit."""
        config = self.config
        minibatch = ([MinibatchDiscrimination(config.minibatch_kernels, config.minibatch_kernel_dim)]
                     if config.minibatch_discrimination else [])
        return [*minibatch, keras.layers.Dense(1, kernel_constraint=constraint, bias_constraint=constraint)]

    def score(self, output, images):
        del images  # the score is the head's unit
        return output[:, 0]

    def discriminator_terms(self, real, fake) -> dict:
        real, fake = real["score"], fake["score"]
        return {"discriminator_loss": self.losses.discriminator(real, fake), "d_real": real, "d_fake": fake,
                "wasserstein_estimate": real - fake}

    def generator_terms(self, fake) -> dict:
        return {"generator_loss": self.losses.generator(fake["score"])}


class Classifier(Critic):
    """A critic whose score is a logit ℓ, D(x) = σ(ℓ): the minimax or non-saturating pair of Goodfellow et al."""

    tracked = ()

    def __init__(self, config):
        self.config = config
        self.losses = gan_losses.loss_pair(config.generator_loss)

    def discriminator_terms(self, real, fake) -> dict:
        real, fake = real["score"], fake["score"]
        return {"discriminator_loss": self.losses.discriminator(real, fake),
                "d_real": tf.sigmoid(real), "d_fake": tf.sigmoid(fake)}


class Energy:
    """D(x) = mean((Dec(Enc(x)) − x)²) with Dec mirroring Enc like G (Zhao et al. Sec. 2.3), margin m."""

    tracked = ("pulling_away",)

    def __init__(self, config):
        self.config = config
        self.losses = gan_losses.loss_pair("energy", config.energy_margin)

    def head(self, constraint=None) -> list[keras.layers.Layer]:
        del constraint  # weight clipping, when set, bounds the encoder only
        return decoder_layers(self.config)

    def score(self, output, images):
        return tf.reduce_mean(tf.square(output - images), axis=[1, 2, 3])

    def discriminator_terms(self, real, fake) -> dict:
        real, fake = real["score"], fake["score"]
        return {"discriminator_loss": self.losses.discriminator(real, fake), "d_real": real, "d_fake": fake}

    def generator_terms(self, fake) -> dict:
        """L_G + λ_PT f_PT(S) on the encoder's codes S of the fakes (EBGAN-PT, Eq. 7)."""
        pulling_away = gan_losses.pulling_away_term(fake["features"])
        generator_loss = self.losses.generator(fake["score"]) + self.config.pulling_away_weight * pulling_away
        return {"generator_loss": generator_loss, "pulling_away": pulling_away}


OBJECTIVES = {"gan": Classifier, "wasserstein": Critic, "energy": Energy}


def for_config(config) -> Classifier | Critic | Energy:
    """The objective of `config.loss`."""
    return OBJECTIVES[config.loss](config)
