"""VAE-GAN: a VAE whose reconstruction error is measured in a discriminator's feature space.

Larsen, Sønderby, Larochelle, Winther. Autoencoding beyond pixels using a learned similarity
metric. ICML 2016, arXiv:1512.09300.

Encoder Enc(x) = q(z | x), decoder Dec(z) (the GAN's generator) and discriminator Dis(x), whose
l-th layer Dis_l(x) replaces the pixels in the reconstruction term (Sec. 2.2, Eq. 6–7):

    L_prior     = KL(q(z | x) ‖ N(0, I))                      (closed form)
    L_llike     = −E_q[log N(Dis_l(x) | Dis_l(Dec(z)), I)]  = ½ ‖Dis_l(x) − Dis_l(x̃)‖² + const
    L_GAN       = log Dis(x) + log(1 − Dis(Dec(z_p))) + log(1 − Dis(x̃)),   z_p ~ N(0, I),

the GAN term seeing prior samples x_p = Dec(z_p) and reconstructions x̃ = Dec(z), z ~ q(z | x)
(Sec. 2.3). Algorithm 1 updates each player on its own terms, from one forward pass:

    Enc:  L_prior + L_llike
    Dec:  γ · L_llike − L_GAN    (Dec fools Dis: it lowers Dis's log-probability of calling x̃, x_p fake)
    Dis:  −L_GAN                 (Dis classifies x as real, x̃ and x_p as fake; not trained on L_llike)

Written as losses, Dis minimises softplus(−ℓ(x)) + softplus(ℓ(x_p)) + softplus(ℓ(x̃)) (ℓ its logit), and
Dec's GAN side is the generator loss of `zoo.gan.losses` on both fakes (`generator_loss`: the
non-saturating −log Dis(x̃) by default, Goodfellow et al. 2014 Sec. 3; "minimax" is log(1 − Dis(x̃)),
the authors' code's gradient reversal). The sign is the classic trap of ports of Alg. 1, whose
"θ_Dec ← −∇(γ L_llike − L_GAN)" with the L_GAN above would help Dis; a test checks that a decoder
step raises Dis's belief that its fakes are real.

Networks are the GAN family's DCGAN networks at 28×28 (`zoo.gan.networks`): Dis_l is the flattened
output of Dis's convolutional body, the encoder a copy of that body with a Gaussian head.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from zoo import config as config_lib, registry
from zoo.common import distributions, signatures, steps
from zoo.common.serialization import ConfigSerialization
from zoo.common.stateless import per_example_normal
from zoo.gan import losses as gan_losses
from zoo.gan.networks import build_sequence, encoder_layers, generator_layers, run_sequence

LATENT_STREAM = 0  # stream of a request seed (zoo.common.stateless)
POSTERIOR, PRIOR = 0, 1  # streams of a training step's seed


@dataclasses.dataclass(frozen=True)
class VAEGANConfig(config_lib.TrainingConfig):
    architecture: str = "dcgan"             # the GAN family's 28×28 DCGAN networks (zoo.gan.networks)
    filters: int = 64                       # Dis: filters, 2·filters; Dec mirrors it
    normalization: str = "batch"            # Dis's hidden layers (Larsen et al. use batch norm throughout)
    latent_units: int = 128                 # the authors' CelebA scripts: n_hidden 128
    similarity_weight: float = 1e-2         # γ of Alg. 1; the authors' AEGAN default recon_vs_gan_weight 1e-2
                                            # (their 64×64 CelebA scripts use 1e-6)
    generator_loss: str = "non_saturating"  # Dec's GAN side: "non_saturating" or "minimax" (see module docstring)
    dataset: str = "mnist"
    batch_size: int = 64                    # the authors' scripts: batch_size 64
    epochs: int = 25                        # ours: a budget, as zoo.dcgan
    learning_rate: float = 3e-4             # Sec. 4: RMSProp, learning rate 3e-4 (from memory; see docs/vae_gan.md)
    divergence_factor: float | None = None  # off: the logged loss sums three players' losses that trade off
                                            # (NaN and Inf still stop training)

    def __post_init__(self):
        super().__post_init__()
        config_lib.check(self, [
            (self.architecture == "dcgan", "architecture must be 'dcgan' (Dis_l is a convolutional feature map)"),
            (self.normalization in ("batch", "layer", "none"), "normalization must be 'batch', 'layer' or 'none'"),
            (self.generator_loss in ("non_saturating", "minimax"), "generator_loss must be 'non_saturating' or 'minimax'"),
            (self.similarity_weight >= 0, "similarity_weight (γ) must be >= 0"),
            (self.latent_units >= 1 and self.filters >= 1, "latent_units and filters must be >= 1"),
            (self.image_shape[0] % 4 == 0 and self.image_shape[1] % 4 == 0,
             "the DCGAN networks need image height and width divisible by 4"),
        ])


@keras.saving.register_keras_serializable(package="zoo")
class VAEGAN(ConfigSerialization, keras.Model):
    """Enc, Dec and Dis trained by Algorithm 1 of Larsen et al. (see module docstring).

    Data contract: batches are dicts with "image", float32 [batch, *image_shape] in [0, 1]; the networks
    work on pixels in [−1, 1], like the GAN family's.
    """

    config_class = VAEGANConfig

    def __init__(self, config: VAEGANConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.encoder_body = encoder_layers(config)
        self.encoder_head = distributions.GaussianLayer((config.latent_units,))
        self.decoder = generator_layers(config)
        self.discriminator_body = encoder_layers(config)  # its output is Dis_l
        self.discriminator_head = keras.layers.Dense(1)
        self.generator_loss = gan_losses.loss_pair(config.generator_loss).generator
        self.seed_generator = keras.random.SeedGenerator(config.seed)
        names = ["loss", "encoder_loss", "decoder_loss", "discriminator_loss", "kl", "feature_error",
                 "pixel_error", "d_real", "d_reconstruction", "d_prior_sample"]
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}

    def build(self, input_shape=None):
        image = (None, *self.config.image_shape)
        self.encoder_head.build(build_sequence(self.encoder_body, image))
        build_sequence(self.decoder, (None, self.config.latent_units))
        self.discriminator_head.build(build_sequence(self.discriminator_body, image))
        super().build(input_shape)

    @property
    def metrics(self):
        return list(self.trackers.values())

    # The three networks, on pixels in [−1, 1].

    def encode(self, images, training=False):
        """q(z | x) = N(μ(x), diag σ(x)²) for images in [−1, 1]."""
        return self.encoder_head(run_sequence(self.encoder_body, images, training))

    def decode(self, latents, training=False):
        """x̃ = Dec(z) in [−1, 1]."""
        return run_sequence(self.decoder, latents, training)

    def discriminate(self, images, training=False):
        """(Dis_l(x) [batch, F], the logit ℓ(x) with Dis(x) = σ(ℓ) [batch])."""
        features = run_sequence(self.discriminator_body, images, training)
        return features, self.discriminator_head(features)[:, 0]

    # The objective: each player's terms of Algorithm 1, per example.

    def _terms(self, images, seed, training):
        real = images * 2.0 - 1.0
        batch = tf.shape(real)[0]
        posterior = self.encode(real, training)
        noise = tf.random.stateless_normal([batch, self.config.latent_units],
                                           seed=tf.random.experimental.stateless_fold_in(seed, POSTERIOR))
        reconstruction = self.decode(distributions.reparameterize(posterior, noise), training)
        prior_sample = self.decode(tf.random.stateless_normal(
            [batch, self.config.latent_units], seed=tf.random.experimental.stateless_fold_in(seed, PRIOR)), training)
        real_features, real_logits = self.discriminate(real, training)
        reconstruction_features, reconstruction_logits = self.discriminate(reconstruction, training)
        _, prior_logits = self.discriminate(prior_sample, training)
        kl = distributions.kl_between_gaussians(posterior, distributions.standard_normal(self.config.latent_units))
        feature_error = 0.5 * tf.reduce_sum(tf.square(real_features - reconstruction_features), -1)  # L_llike
        terms = {
            "kl": kl, "feature_error": feature_error,
            "encoder_loss": kl + feature_error,
            "decoder_loss": self.config.similarity_weight * feature_error
                            + self.generator_loss(reconstruction_logits) + self.generator_loss(prior_logits),
            "discriminator_loss": gan_losses.discriminator_loss(real_logits, reconstruction_logits)
                                  + tf.nn.softplus(prior_logits),  # −L_GAN, x̃ and x_p both fake
            "pixel_error": tf.reduce_mean(tf.square((reconstruction - real) / 2.0), axis=[1, 2, 3]),
            "d_real": tf.sigmoid(real_logits), "d_reconstruction": tf.sigmoid(reconstruction_logits),
            "d_prior_sample": tf.sigmoid(prior_logits),
        }
        terms["loss"] = terms["encoder_loss"] + terms["decoder_loss"] + terms["discriminator_loss"]
        return terms

    def train_step(self, data):
        """Algorithm 1: one forward pass, then each player descends its own loss on its own weights."""
        images = data["image"]
        global_batch = steps.global_batch_size(images)
        with tf.GradientTape(persistent=True) as tape:
            terms = self._terms(images, steps.replica_seed(self.seed_generator), training=True)
            losses = {player: tf.reduce_sum(terms[f"{player}_loss"]) / global_batch for player in self.players}
        for player, variables in self.players.items():
            gradients = tape.gradient(losses[player], variables)
            self.optimizers[player].apply_gradients(zip(gradients, variables))
        del tape
        return steps.update_trackers(self.trackers, terms)

    def test_step(self, data):
        return steps.update_trackers(
            self.trackers, self._terms(data["image"], steps.replica_seed(self.seed_generator), training=False))

    @property
    def players(self) -> dict:
        """Each player's trainable weights: encoder, decoder, discriminator."""
        def weights(layers):
            return [variable for layer in layers for variable in layer.trainable_variables]

        return {"encoder": weights([*self.encoder_body, self.encoder_head]), "decoder": weights(self.decoder),
                "discriminator": weights([*self.discriminator_body, self.discriminator_head])}

    def compile_for_training(self, steps_per_epoch: int):
        """RMSProp per player (Sec. 4) in `optimizers`, which checkpoints save; `optimizer` is the decoder's."""
        del steps_per_epoch  # a constant learning rate
        self.optimizers = {player: keras.optimizers.RMSprop(self.config.learning_rate, name=f"{player}_optimizer")
                           for player in self.players}  # named: a weights file finds each by its name
        self.compile(optimizer=self.optimizers["decoder"], jit_compile=self.config.jit_compile)
        for player, variables in self.players.items():
            self.optimizers[player].build(variables)  # slots now, so train_step is traced once

    # Samplers and paths; these back the serving signatures.

    def _to_unit(self, images):
        return (images + 1.0) / 2.0

    def sample(self, seeds):
        """Dec(z) in [0, 1] for z ~ N(0, I), one image per int64 seed."""
        return self._to_unit(self.decode(per_example_normal(seeds, [self.config.latent_units], LATENT_STREAM)))

    def reconstruct(self, images):
        """Dec(E_q[z | x]) in [0, 1] for images in [0, 1]."""
        return self._to_unit(self.decode(self.encode(images * 2.0 - 1.0).mean()))

    def serving_signatures(self):
        images = tf.TensorSpec([None, *self.config.image_shape], tf.float32, name="images")
        finite = signatures.checked_finite
        return {
            **signatures.seed_signatures(self.sample),
            "reconstruct": (lambda images: {"images": self.reconstruct(finite(images, "images"))}, [images]),
            "encode": (lambda images: {"mean": self.encode(finite(images, "images") * 2.0 - 1.0).mean()}, [images]),
            "decode": (lambda latent: {"images": self._to_unit(self.decode(finite(latent, "latent")))},
                       [tf.TensorSpec([None, self.config.latent_units], tf.float32, name="latent")]),
        }

    def summaries(self, images):
        """TensorBoard grids: 64 prior samples, and inputs beside their reconstructions."""
        return {"prior_samples": self.sample(tf.range(64, dtype=tf.int64)),
                "reconstructions": signatures.side_by_side(images, self.reconstruct(images))}


def build(config: VAEGANConfig) -> VAEGAN:
    model = VAEGAN(config, name="vae_gan")
    model.build()
    return model


def dataset(config: VAEGANConfig) -> registry.DatasetSpec:
    return registry.DatasetSpec(config.dataset, binarize=False)


TINY = dict(filters=4, latent_units=3, image_shape=(8, 8, 1), batch_size=8)

registry.register(registry.ModelSpec(
    "zoo.vae_gan", "VAE-GAN (Larsen et al. 2016): reconstruction in a discriminator's feature space",
    VAEGANConfig, build, dataset, tiny=TINY, evaluation=("sample_quality",)))
