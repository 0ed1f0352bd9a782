"""A VAE of text (Bowman et al. 2016) with an LSTM or dilated CNN decoder (Yang et al. 2017).

An LSTM encoder reads the text; its last state gives q(z | x) = N(μ, diag σ²), z of 32 dimensions.
The decoder is the language model of `language_model.py` with z beside every word embedding (Sec. 2.2).
Training maximises the ELBO with the KL term's weight β annealed (Sec. 4.2):

    L_β(x) = E_q[log p(x | z)] − β_s KL(q(z | x) ‖ N(0, I)),   β_s = β_0 + (1 − β_0) min(1, s / S),

β_0 = `kl_weight_start`, S = `kl_annealing_steps` training steps; the test metrics are the bound itself
(β = 1), or L_k with k importance samples (Burda et al. 2016, Eq. 8) after `use_importance_samples(k)`.

Yang et al.'s finding, reproduced in docs/text_vae.md: an LSTM decoder models the text without z (the KL
collapses to 0), while a dilated CNN decoder, whose receptive field is short, must use z (KL > 0).

Bowman, Vilnis, Vinyals, Dai, Jozefowicz, Bengio. Generating Sentences from a Continuous Space. CoNLL 2016.
Yang, Hu, Salakhutdinov, Berg-Kirkpatrick. Improved Variational Autoencoders for Text Modeling using
Dilated Convolutions. ICML 2017, arXiv:1702.08139.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from zoo import config as config_lib, registry
from zoo.common import bounds, distributions, signatures, steps
from zoo.common.metrics import ActiveUnits
from zoo.common.stateless import per_example_normal
from zoo.text_vae import language_model
from zoo.text_vae.language_model import LanguageModel, TextConfig

LOGITS_PER_CHUNK = 1 << 24  # logits of the importance samples that test metrics compute at once (64 MB)


@dataclasses.dataclass(frozen=True)
class TextVAEConfig(TextConfig):
    latent_size: int = 32            # Sec. 4.2
    encoder_units: int = 1024        # Sec. 4.2: an LSTM encoder as large as the LSTM decoder
    kl_weight_start: float = 0.01    # Sec. 4.2: β rises linearly from 0.01 to 1 (from memory, unverified)
    kl_annealing_steps: int = 10_000  # Sec. 4.2: over the first S steps, S chosen from {10k, 40k, 80k}
    encoder_init: str = ""           # "+init" (Sec. 4.2): a trained zoo.lstm_lm's model.keras, whose embedding
                                     # and LSTM the encoder starts from; "": random

    def __post_init__(self):
        super().__post_init__()
        config_lib.check(self, [
            (self.latent_size >= 1, f"latent_size must be >= 1, got {self.latent_size}"),
            (self.encoder_units >= 1, f"encoder_units must be >= 1, got {self.encoder_units}"),
            (0.0 <= self.kl_weight_start <= 1.0, f"kl_weight_start must be in [0, 1], got {self.kl_weight_start}"),
            (self.kl_annealing_steps >= 0, f"kl_annealing_steps must be >= 0, got {self.kl_annealing_steps}"),
        ])


def kl_weight(step, start: float, annealing_steps: int):
    """β_s = β_0 + (1 − β_0) min(1, s / S): from `start` at step 0 to 1 at step S and after."""
    if annealing_steps == 0:
        return tf.constant(1.0)
    progress = tf.minimum(1.0, tf.cast(step, tf.float32) / annealing_steps)
    return start + (1.0 - start) * progress


@keras.saving.register_keras_serializable(package="zoo")
class TextVAE(LanguageModel):
    """q(z | x) by an LSTM over the text; p(x | z) the language model with z beside every word."""

    config_class = TextVAEConfig
    tracked = ("loss", "nll", "elbo", "reconstruction", "kl", "kl_weight")

    def __init__(self, config: TextVAEConfig, **kwargs):
        super().__init__(config, **kwargs)
        self.encoder_embedding = keras.layers.Embedding(self.tokenizer.size, config.embedding_size,
                                                        name="encoder_embedding")
        self.encoder_lstm = keras.layers.LSTM(config.encoder_units, name="encoder_lstm")
        self.posterior_layer = distributions.GaussianLayer((config.latent_size,), name="posterior")
        self.prior = distributions.standard_normal(config.latent_size)
        self.active_units = ActiveUnits(config.latent_size)
        self.evaluation_samples = 1
        self.annealing = (config.kl_weight_start, config.kl_annealing_steps)

    @property
    def latent_size(self) -> int:
        return self.config.latent_size

    def build(self, input_shape=None):
        self.encoder_embedding.build((None, None))
        self.encoder_lstm.build((None, None, self.config.embedding_size))
        self.posterior_layer.build((None, self.config.encoder_units))
        super().build(input_shape)

    @property
    def metrics(self):
        return [*super().metrics, self.active_units]

    def posterior(self, ids):
        """q(z | x) for word ids [batch, max_words]: the encoder LSTM's state after the last word."""
        embedded = self.encoder_embedding(ids)
        return self.posterior_layer(self.encoder_lstm(embedded, mask=tf.not_equal(ids, 0)))

    def _terms(self, ids, training):
        """Per-text terms: the bound at β = 1 with one z ~ q(z | x) ("elbo", KL in closed form), L_k with the
        evaluation's k samples ("nll" = −L_k; k = 1 in training) and the β-weighted training loss."""
        seed = steps.replica_seed(self.seed_generator)
        posterior = self.posterior(ids)
        noise = tf.random.stateless_normal([1, tf.shape(ids)[0], self.latent_size], seed)
        z = distributions.reparameterize(posterior, noise)
        reconstruction, words = self.log_likelihood_of(ids, z, training)
        reconstruction = reconstruction[0]
        kl = distributions.kl_between_gaussians(posterior, self.prior)
        if training or self.evaluation_samples == 1:
            log_weights = reconstruction + self.prior.log_prob(z[0]) - posterior.log_prob(z[0])
            nll = -log_weights
        else:
            nll = -self.importance_bound(ids, posterior, self.evaluation_samples, seed)
        beta = kl_weight(self.optimizer.iterations, *self.annealing) if training else tf.constant(1.0)
        return {"loss": -(reconstruction - beta * kl), "nll": nll, "elbo": reconstruction - kl,
                "reconstruction": reconstruction, "kl": kl, "kl_weight": beta, "words": words,
                "posterior_mean": posterior.distribution.loc}

    def importance_bound(self, ids, posterior, k: int, seed):
        """L_k = log (1/k) Σ_j p(x, z_j) / q(z_j | x), z_j ~ q(z | x) (Burda et al. 2016, Eq. 8), per text,
        summed in chunks of samples whose logits fit LOGITS_PER_CHUNK."""
        batch = tf.shape(ids)[0]
        logits_per_sample = batch * (self.config.max_words + 1) * self.tokenizer.size
        per_chunk = tf.maximum(1, LOGITS_PER_CHUNK // logits_per_sample)

        def log_weights(start, count):
            noise = tf.random.stateless_normal([count, batch, self.latent_size],
                                               tf.random.experimental.stateless_fold_in(seed, tf.cast(start, tf.int64)))
            z = distributions.reparameterize(posterior, noise)
            reconstruction, _ = self.log_likelihood_of(ids, z)
            return reconstruction + self.prior.log_prob(z) - posterior.log_prob(z)

        return bounds.iwae_bound_in_chunks(log_weights, tf.fill([batch], k), per_chunk)

    def test_step(self, data):
        terms = self._terms(data["text"], training=False)
        self.active_units.update_state(terms["posterior_mean"])
        return {**self._update_metrics(terms), "active_units": self.active_units.result()}

    def use_importance_samples(self, k: int) -> None:
        """Evaluates (`test_step`) with k importance samples: `nll` is then −L_k (the issue's k up to 1000)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.evaluation_samples = k

    def compile_for_training(self, steps_per_epoch: int) -> None:
        """As the language model; with `encoder_init`, the encoder first takes a trained language model's
        embedding and LSTM ("+init", Sec. 4.2)."""
        if self.config.encoder_init:
            self.initialize_encoder(self.config.encoder_init)
        super().compile_for_training(steps_per_epoch)

    def initialize_encoder(self, path: str) -> None:
        """Copies the word embedding and LSTM weights of the zoo.lstm_lm saved at `path` (its model.keras)
        into the encoder; its vocabulary, embedding size and LSTM units must be this model's."""
        try:
            trained = keras.models.load_model(path)
        except (OSError, ValueError) as error:
            raise config_lib.ConfigError(
                f"encoder_init={path!r} does not load ({error}); pass the model.keras of a trained zoo.lstm_lm "
                f"run, e.g. --set encoder_init=runs/lstm_lm/model.keras") from None
        problems = []
        if not isinstance(trained, LanguageModel) or trained.config.decoder != "lstm":
            problems.append("it is not an LSTM language model (zoo.lstm_lm)")
        else:
            for field in ("vocabulary", "embedding_size"):
                if getattr(trained.config, field) != getattr(self.config, field):
                    problems.append(f"its {field} differs")
            if trained.config.lstm_units != self.config.encoder_units:
                problems.append(f"its lstm_units={trained.config.lstm_units} differ from encoder_units="
                                f"{self.config.encoder_units}")
        if problems:
            raise config_lib.ConfigError(f"encoder_init={path!r} cannot start this encoder: {'; '.join(problems)}. "
                                         f"Train the language model on the same data with the same sizes")
        self.encoder_embedding.set_weights(trained.embedding.get_weights())
        self.encoder_lstm.set_weights(trained.decoder.lstm.get_weights())

    # Paths through the latent space; these back the serving signatures.

    def encode(self, ids):
        distribution = self.posterior(ids).distribution
        return {"mean": distribution.loc, "stddev": distribution.scale}

    def decode(self, latent):
        """The most likely word at each step given z (greedy), as text."""
        return self.tokenizer.words_of(self.generate(tf.shape(latent)[0], latent=latent))

    def reconstruct(self, ids):
        """decode(E_q[z | x])."""
        return self.decode(self.encode(ids)["mean"])

    def sample(self, seeds, temperature=None):
        """x ~ p(x | z) with z ~ N(0, I), one text per int64 seed (at `temperature`, float [N], default 1)."""
        temperature = tf.ones(tf.shape(seeds), tf.float32) if temperature is None else temperature
        latent = per_example_normal(seeds, [self.latent_size], stream=0)
        ids = self.generate(tf.shape(seeds)[0], latent=latent, seeds=seeds, temperature=temperature)
        return self.tokenizer.words_of(ids)

    def serving_signatures(self):
        """The language model's samplers, and encode (text → mean, stddev), decode (latent → text, greedy),
        reconstruct (text → text)."""
        texts = tf.TensorSpec([None], tf.string, name="text")
        latent = tf.TensorSpec([None, self.latent_size], tf.float32, name="latent")
        served = super().serving_signatures()
        del served["log_likelihood"]  # its exact form is the language model's; here it would be a bound
        return {
            **served,
            "encode": (lambda texts: self.encode(self.texts_in(texts)), [texts]),
            "decode": (lambda latent: {"text": self.decode(signatures.checked_finite(latent, "latent"))}, [latent]),
            "reconstruct": (lambda texts: {"text": self.reconstruct(self.texts_in(texts))}, [texts]),
        }

    def summaries(self, examples):
        """TensorBoard text: 8 samples from fixed seeds; 8 validation texts each with its reconstruction;
        greedy decodes of 8 evenly spaced points between the first two texts' posterior means."""
        given = examples[:8]
        means = self.encode(examples[:2])["mean"]
        weights = tf.linspace(0.0, 1.0, 8)[:, None]
        line = (1.0 - weights) * means[0] + weights * means[-1]
        return {"samples": self.sample(tf.range(8, dtype=tf.int64)),
                "reconstructions": tf.strings.join([self.tokenizer.words_of(given), self.reconstruct(given)],
                                                   separator="  →  "),
                "interpolation": self.decode(line)}


def build(config: TextVAEConfig) -> TextVAE:
    language_model.check_vocabulary(config)
    model = TextVAE(config, name="text_vae")
    model.build()
    return model


registry.register(registry.ModelSpec(
    "zoo.text_vae", "VAE of text with an LSTM or dilated CNN decoder (Yang et al. 2017)", TextVAEConfig, build,
    language_model.dataset, tiny={**language_model.TINY, "latent_size": 4, "encoder_units": 16},
    evaluation=("likelihood",)))

