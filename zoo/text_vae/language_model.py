"""Language models of text, p(x) = Π_t p(x_t | x_<t): the LSTM-LM baseline of Yang et al. 2017 and the
base of their VAE, whose decoder is the same network reading a latent z beside each word.

A text x_1 … x_n of the model's vocabulary is predicted word by word and then `<eos>`, from `<bos>`
(`zoo.common.text.BEGIN`, `END`): n + 1 predictions, each one a word of the perplexity
exp(Σ NLL / Σ (n + 1)) (Yang et al. 2017, Sec. 4.2). Padding after `<eos>` counts in no loss and no
metric.

Yang, Hu, Salakhutdinov, Berg-Kirkpatrick. Improved Variational Autoencoders for Text Modeling using
Dilated Convolutions. ICML 2017, arXiv:1702.08139.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf

from zoo import config as config_lib, registry
from zoo.common import signatures, steps, text
from zoo.common.serialization import ConfigSerialization
from zoo.text_vae import decoders

BEGIN_ID, END_ID = 2, 3  # ids of text.BEGIN and text.END, the first words of every text model's vocabulary
DECODERS = ("lstm", "dilated_cnn", *decoders.DILATIONS)


@dataclasses.dataclass(frozen=True)
class TextConfig(config_lib.TrainingConfig):
    """A language model of text; the paper's values for Yahoo and Yelp (Yang et al. 2017, Sec. 4)."""

    dataset: str = "yelp_polarity_reviews"  # the catalog's nearest to the paper's Yelp (Sec. 4.1); or a folder
                                            # of train.txt / validation.txt / test.txt, one text per line
    vocabulary_size: int = 20_000    # Sec. 4.1: 20k words, the rest <unk>
    vocabulary: tuple[str, ...] = ()  # (): the vocabulary_size most frequent training words (`with_vocabulary`)
    max_words: int = 200             # ours: longer texts are cut to their first 200 words (Yahoo averages 78)
    embedding_size: int = 512        # Sec. 4.2
    decoder: str = "lstm"            # "lstm", or a dilated CNN: "scnn", "mcnn", "lcnn", "vlcnn" (the paper's
                                     # dilations) or "dilated_cnn" with `dilations`
    lstm_units: int = 1024           # Sec. 4.2
    cnn_channels: int = 1024         # Fig. 2: blocks of 1024 channels through a bottleneck of 512
    kernel_size: int = 3             # Sec. 3.2
    dilations: tuple[int, ...] = ()  # for decoder="dilated_cnn"; (): the preset's (decoders.DILATIONS)
    dropout: float = 0.1             # on the decoder's inputs and features; Sec. 4.2 (from memory, unverified)
    batch_size: int = 32             # Sec. 4.2
    epochs: int = 40
    learning_rate: float = 1e-3      # Sec. 4.2: Adam, chosen from {2e-3, 1e-3, 7.5e-4}
    adam_beta_1: float = 0.5         # Sec. 4.2 (from memory, unverified)
    gradient_clip_norm: float = 5.0  # ours: on the global norm

    def __post_init__(self):
        super().__post_init__()
        config_lib.check(self, [
            (self.decoder in DECODERS, f"decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}"),
            (self.decoder != "dilated_cnn" or bool(self.dilations),
             "decoder=dilated_cnn needs its dilations, e.g. --set dilations=1,2,4; or name a preset: "
             "--set decoder=lcnn"),
            (all(d >= 1 for d in self.dilations), f"dilations must be >= 1, got {self.dilations}"),
            (self.vocabulary_size >= 1, f"vocabulary_size must be >= 1, got {self.vocabulary_size}"),
            (self.max_words >= 1, f"max_words must be >= 1, got {self.max_words}"),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
            (min(self.embedding_size, self.lstm_units, self.cnn_channels, self.kernel_size) >= 1,
             "embedding_size, lstm_units, cnn_channels and kernel_size must be >= 1"),
        ])

    @property
    def decoder_dilations(self) -> tuple[int, ...]:
        return self.dilations if self.decoder == "dilated_cnn" else decoders.DILATIONS.get(self.decoder, ())

    def with_vocabulary(self, words) -> "TextConfig":
        """This config with the `vocabulary_size` most frequent training words as its vocabulary
        (`training.fit` counts them, most frequent first, when `vocabulary` is empty)."""
        return dataclasses.replace(self, vocabulary=tuple(words)[:self.vocabulary_size])


class Perplexity(keras.metrics.Metric):
    """exp(Σ NLL / Σ words) over every text seen: the corpus perplexity, however it is batched or split
    over replicas. `update_state(nll, words)` takes per-text NLLs in nats and predicted words."""

    def __init__(self, name: str = "perplexity", **kwargs):
        super().__init__(name=name, **kwargs)
        self.nll = self.add_variable(shape=(), initializer="zeros", name="nll")
        self.words = self.add_variable(shape=(), initializer="zeros", name="words")

    def update_state(self, nll, words, sample_weight=None):
        self.nll.assign_add(tf.reduce_sum(tf.cast(nll, self.dtype)))
        self.words.assign_add(tf.reduce_sum(tf.cast(words, self.dtype)))

    def result(self):
        return tf.exp(self.nll / tf.maximum(self.words, 1.0))


def sequences(ids):
    """Word ids [batch, max_words] (padded with text.PADDING_ID) → the decoder's (inputs, targets, mask),
    each [batch, max_words + 1]: targets are the words then `<eos>`, inputs `<bos>` then the targets but
    the last, mask is True on the predicted positions (words and `<eos>`)."""
    lengths = text.lengths_of(ids)
    padded = tf.pad(ids, [[0, 0], [0, 1]])
    positions = tf.range(tf.shape(padded)[1])[None]
    targets = tf.where(positions == lengths[:, None], tf.constant(END_ID, ids.dtype), padded)
    inputs = tf.concat([tf.fill([tf.shape(ids)[0], 1], tf.constant(BEGIN_ID, ids.dtype)), targets[:, :-1]], 1)
    return inputs, targets, positions <= lengths[:, None]


@keras.saving.register_keras_serializable(package="zoo")
class LanguageModel(ConfigSerialization, keras.Model):
    """p(x) = Π_t p(x_t | x_<t) with the config's decoder (LSTM or dilated CNN) over word embeddings.

    Subclasses condition the decoder on a latent z [batch, D] (`decoder_logits(inputs, latent)`), which
    this class concatenates to every input embedding; a language model passes none.
    """

    config_class = TextConfig
    latent_size = 0  # inputs to the decoder beside each word embedding

    def __init__(self, config: TextConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.tokenizer = text.Tokenizer((text.BEGIN, text.END, *config.vocabulary), config.max_words,
                                        text.TEXT_PUNCTUATION, name="tokenizer")
        self.embedding = keras.layers.Embedding(self.tokenizer.size, config.embedding_size, name="embedding")
        if config.decoder == "lstm":
            self.decoder = decoders.LSTMDecoder(config.lstm_units, name="decoder")
        else:
            self.decoder = decoders.DilatedConvDecoder(config.cnn_channels, config.decoder_dilations,
                                                       config.kernel_size, name="decoder")
        self.dropout = keras.layers.Dropout(config.dropout)
        self.output_layer = keras.layers.Dense(self.tokenizer.size, name="output")
        self.seed_generator = keras.random.SeedGenerator(config.seed)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.tracked}
        self.perplexity = Perplexity()

    tracked = ("loss", "nll")

    def build(self, input_shape=None):
        self.tokenizer.build(None)
        self.embedding.build((None, None))
        features = self.config.embedding_size + self.latent_size
        self.decoder.build((None, None, features))
        units = self.config.lstm_units if self.config.decoder == "lstm" else self.config.cnn_channels
        self.output_layer.build((None, None, units))
        super().build(input_shape)

    @property
    def metrics(self):
        return [*self.trackers.values(), self.perplexity]

    # The likelihood.

    def decoder_logits(self, inputs, latent=None, training=False):
        """Logits of p(x_t | x_<t [, z]), [batch, T, vocabulary], for decoder inputs [batch, T] (word ids,
        `<bos>` first) and a latent [batch, D] or None."""
        features = self.dropout(self.embedding(inputs), training=training)
        if latent is not None:
            features = tf.concat([features, tf.repeat(latent[:, None], tf.shape(inputs)[1], axis=1)], -1)
        return self.output_layer(self.dropout(self.decoder(features), training=training))

    def log_likelihood_of(self, ids, latent=None, training=False):
        """(log p(x [| z]) per text, [batch] or [k, batch] for latents [k, batch, D], and the predicted words
        per text), for word ids [batch, max_words]."""
        inputs, targets, mask = sequences(ids)
        if latent is not None and latent.shape.rank == 3:  # k latents per text: k copies of the batch
            k = tf.shape(latent)[0]
            log_p, words = self.log_likelihood_of(tf.tile(ids, [k, 1]), tf.reshape(latent, [-1, latent.shape[-1]]),
                                                  training)
            return tf.reshape(log_p, [k, -1]), words[:tf.shape(ids)[0]]
        logits = self.decoder_logits(inputs, latent, training)
        per_word = -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
        mask = tf.cast(mask, per_word.dtype)
        return tf.reduce_sum(per_word * mask, axis=-1), tf.reduce_sum(mask, axis=-1)

    def _terms(self, ids, training):
        log_p, words = self.log_likelihood_of(ids, training=training)
        return {"nll": -log_p, "loss": -log_p, "words": words}

    def train_step(self, data):
        ids = data["text"]
        with tf.GradientTape() as tape:
            terms = self._terms(ids, training=True)
            loss = tf.reduce_sum(terms["loss"]) / steps.global_batch_size(ids)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return self._update_metrics(terms)

    def test_step(self, data):
        return self._update_metrics(self._terms(data["text"], training=False))

    def _update_metrics(self, terms):
        self.perplexity.update_state(terms["nll"], terms["words"])
        return {**steps.update_trackers(self.trackers, terms), "perplexity": self.perplexity.result()}

    def compile_for_training(self, steps_per_epoch: int) -> None:
        """Adam (Sec. 4.2), gradients clipped by their global norm."""
        del steps_per_epoch  # a constant learning rate
        config = self.config
        optimizer = keras.optimizers.Adam(config.learning_rate, beta_1=config.adam_beta_1,
                                          global_clipnorm=config.gradient_clip_norm)
        self.compile(optimizer=optimizer, jit_compile=config.jit_compile)
        optimizer.build(self.trainable_variables)

    # Generation, one word at a time.

    @tf.function(reduce_retracing=True)  # a graph even when called eagerly (TensorBoard, samples.txt): ~10× faster
    def generate(self, count, latent=None, seeds=None, temperature=None):
        """Word ids [count, ≤ max_words + 1], one text per row, ended by `<eos>` and then padding: ancestral
        samples, word t of row b drawn by the Gumbel-max trick from noise seeded by (seeds[b], t), logits
        divided by temperature[b]; or with seeds None the most likely word at each step (greedy). Padding and
        `<bos>`, which no text holds, are never drawn. The loop stops once every row has ended."""
        most = self.config.max_words + 1
        vocabulary_size = self.tokenizer.size

        never = tf.one_hot([text.PADDING_ID, BEGIN_ID], vocabulary_size, on_value=-math.inf, dtype=tf.float32)
        never = tf.reduce_sum(never, axis=0)  # words that never follow: padding and <bos>

        def choose(logits, t):
            logits += never
            if seeds is None:
                return tf.argmax(logits, axis=-1)
            uniform = tf.map_fn(
                lambda seed: tf.random.stateless_uniform([vocabulary_size], tf.stack([seed, tf.cast(t, tf.int64)]),
                                                         minval=1e-20, maxval=1.0),
                tf.cast(seeds, tf.int64), fn_output_signature=tf.TensorSpec([vocabulary_size], tf.float32))
            return tf.argmax(logits / temperature[:, None] - tf.math.log(-tf.math.log(uniform)), axis=-1)

        def step(t, previous, ended, state, words):
            inputs = self.embedding(previous)
            if latent is not None:
                inputs = tf.concat([inputs, latent], axis=-1)
            features, state = self.decoder.step(state, inputs)
            word = tf.where(ended, tf.constant(text.PADDING_ID, tf.int64), choose(self.output_layer(features), t))
            return t + 1, word, ended | tf.equal(word, END_ID), state, words.write(t, word)

        _, _, _, _, words = tf.while_loop(
            lambda t, previous, ended, state, words: (t < most) & ~tf.reduce_all(ended), step,
            [tf.constant(0), tf.fill([count], tf.constant(BEGIN_ID, tf.int64)), tf.zeros([count], tf.bool),
             self.decoder.start(count), tf.TensorArray(tf.int64, size=most, element_shape=[None])])
        return tf.transpose(words.stack())

    def sample(self, seeds, temperature=None):
        """One text per int64 seed, x ~ p(x) (at `temperature`, float [N], default 1)."""
        temperature = tf.ones(tf.shape(seeds), tf.float32) if temperature is None else temperature
        return self.tokenizer.words_of(self.generate(tf.shape(seeds)[0], seeds=seeds, temperature=temperature))

    def texts_in(self, texts):
        """Served texts → word ids, refusing (INVALID_ARGUMENT) a text longer than max_words."""
        return self.tokenizer.checked(texts, whole_vocabulary=False)

    def serving_signatures(self):
        """serving_default (seed → text); sample_text (seed, temperature → text); log_likelihood
        (text → log p(x) and its predicted words)."""
        temperature = tf.TensorSpec([None], tf.float32, name="temperature")
        texts = tf.TensorSpec([None], tf.string, name="text")
        return {
            "serving_default": (lambda seed: {"text": self.sample(seed)}, [signatures.SEED]),
            "sample_text": (lambda seed, temperature: {"text": self.sample(seed, checked_temperature(temperature))},
                            [signatures.SEED, temperature]),
            "log_likelihood": (self._served_log_likelihood, [texts]),
        }

    def _served_log_likelihood(self, texts):
        log_p, words = self.log_likelihood_of(self.texts_in(texts))
        return {"log_likelihood": log_p, "words": tf.cast(words, tf.int64)}

    def summaries(self, examples):
        """TensorBoard text: 8 samples from fixed seeds, so epochs are comparable."""
        del examples  # samples need no data
        return {"samples": self.sample(tf.range(8, dtype=tf.int64))}


def checked_temperature(temperature):
    """`temperature` (float [N]), failing the request (INVALID_ARGUMENT) unless every value is finite and > 0."""
    finite = signatures.checked_finite(temperature, "temperature")
    with tf.control_dependencies([tf.debugging.assert_positive(finite, message="temperature must be > 0")]):
        return tf.identity(finite)


def build(config: TextConfig) -> LanguageModel:
    check_vocabulary(config)
    model = LanguageModel(config, name="language_model")
    model.build()
    return model


def check_vocabulary(config) -> None:
    if not config.vocabulary:
        raise config_lib.ConfigError(
            f"{type(config).__name__}: the vocabulary is empty, to be counted from the training texts of "
            f"{config.dataset!r}; `python -m training.fit` counts it, or build from config.with_vocabulary(words)")


def dataset(config: TextConfig) -> registry.DatasetSpec:
    return registry.DatasetSpec(config.dataset, binarize=False, text=True,
                                vocabulary=(text.BEGIN, text.END, *config.vocabulary), max_words=config.max_words,
                                count_vocabulary=not config.vocabulary)


TINY = {"vocabulary_size": 40, "max_words": 8, "embedding_size": 8, "lstm_units": 16, "cnn_channels": 16,
        "batch_size": 8}

registry.register(registry.ModelSpec(
    "zoo.lstm_lm", "LSTM language model, the baseline of Yang et al. 2017", TextConfig, build, dataset,
    tiny=TINY, evaluation=("exact_likelihood",)))
