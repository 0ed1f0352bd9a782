"""AlignDRAW: DRAW conditioned on a caption, attending to its words while it draws.

Mansimov, Parisotto, Ba, Salakhutdinov. Generating Images from Captions with Attention.
ICLR 2016, arXiv:1511.02793, Sec. 3.

A bidirectional LSTM reads the caption y; h^lang_k = [→h_k, ←h_k] for word k (Sec. 3.1). At each
step t an alignment model weighs the words against the previous generator state (Sec. 3.3):

    e_k^t = vᵀ tanh(U h^lang_k + W h^gen_{t−1} + b),   α^t = softmax_k(e^t),   s_t = Σ_k α_k^t h^lang_k

and the generator is DRAW's decoder with a learned prior (Sec. 3.2):

    z_t ~ p(z_t | Z_{1:t−1}) = N(μ(h^gen_{t−1}), σ(h^gen_{t−1})),  p(z_1) = N(0, I)
    h^gen_t = LSTM^gen(h^gen_{t−1}, [z_t, s_t]),  c_t = c_{t−1} + write(h^gen_t),  x ~ Π Bernoulli(σ(c_T))

with (μ, log σ) = tanh(W_p h^gen_{t−1} + b_p) as in the authors' code. The inference LSTM reads
[read(x, x̂_t, h^gen_{t−1}), h^gen_{t−1}] as DRAW's encoder does, and the loss is −L,

    L = E_q[log p(x | y, Z)] − Σ_t KL(q(z_t | x, y, Z_{1:t−1}) ‖ p(z_t | y, Z_{1:t−1}))   (Sec. 3.4)

with each step's KL between the two Gaussians in closed form. Everything but the condition is
`zoo.draw.model.DRAW`; this class fills its two hooks. The model owns its tokenizer
(`zoo.common.text.Tokenizer`): the data pipeline applies it for training, so steps see word ids,
and the SavedModel applies it to the caption strings of a request.

Two details of the authors' released code are not followed: it reverses the batch where the
backward LSTM should read each caption's words in reverse (here `tf.reverse_sequence` over each
caption's length), and its softmax runs over the padding too (here padding gets weight 0).
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from zoo import config as config_lib, registry
from zoo.common import distributions, signatures, text
from zoo.draw import model as draw

MNIST_CAPTION_WORDS = ("the", "digit", "is", "on", "at", "of", "left", "right", "top", "bottom", "image", ".",
                       *map(str, range(10)))
"""The 22 words of MNIST with captions (the authors' generator, mnist-captions/create-captions.py)."""

SUMMARY_CAPTIONS = (
    "the digit 7 is on the left of the digit 1 .", "the digit 3 is at the top of the digit 5 .",
    "the digit 0 is at the bottom left of the image .", "the digit 9 is at the top right of the image .",
    # Held out of `mnist_captions` (training.captions.HELD_OUT): never seen in training.
    "the digit 1 is on the left of the digit 7 .", "the digit 3 is at the top of the digit 9 .",
    "the digit 6 is at the top left of the image .", "the digit 8 is at the bottom right of the image .",
)


@dataclasses.dataclass(frozen=True)
class AlignDRAWConfig(draw.DRAWConfig):
    # Architecture: the authors' MNIST-with-captions model (mansimov/text2image,
    # mnist-captions/models/mnist-captions.json); Sec. 4.1 of the paper gives no sizes.
    glimpses: int = 32                  # runSteps 32
    encoder_units: int = 300            # dimRNNEnc 300
    decoder_units: int = 300            # dimRNNDec 300
    latent_units: int = 150             # dimZ 150
    read_size: int = 8                  # dimReadAttent 8
    write_size: int = 8                 # dimWriteAttent 8
    language_units: int = 128           # dimLangRNN 128, per direction
    alignment_units: int = 512          # dimAlign 512: the width of U h^lang + W h^gen + b
    vocabulary: tuple[str, ...] = MNIST_CAPTION_WORDS  # the authors' one-hot input has dimY 23; () counts the
                                                       # training captions' words (`with_vocabulary`)
    max_words: int = 12                 # the longest MNIST caption; longer captions are cut in training and
                                        # refused when served
    summary_captions: tuple[str, ...] = SUMMARY_CAPTIONS  # TensorBoard rows; `sample` draws from these
    # Data and optimisation: the same file (batch_size 100, lr 0.001, Adam as in Sec. 4).
    dataset: str = "mnist_captions"     # Sec. 4.1: 60×60 canvases of one or two digits with captions
    image_shape: tuple[int, ...] = (60, 60, 1)
    batch_size: int = 100
    learning_rate: float = 1e-3

    def __post_init__(self):
        super().__post_init__()
        config_lib.check(self, [
            (min(self.language_units, self.alignment_units, self.max_words) >= 1,
             "language_units, alignment_units and max_words must be >= 1"),
            (len(self.summary_captions) >= 1, "summary_captions needs at least one caption"),
        ])

    def with_vocabulary(self, words) -> "AlignDRAWConfig":
        """This config with the words of the training captions as its vocabulary (`training.fit` counts them
        when `vocabulary` is empty), followed by any word of `summary_captions` they lack, so that the
        captions `sample` draws from read as written."""
        vocabulary, known = list(words), set(words)
        for caption in text.words(tf.constant(self.summary_captions)).to_list():
            for word in (word.decode() for word in caption):
                if word not in known:
                    vocabulary.append(word)
                    known.add(word)
        return dataclasses.replace(self, vocabulary=tuple(vocabulary))


SUMMARY_SEEDS = 8  # columns of the TensorBoard caption grid: seeds 0 … 7 for every caption


@keras.saving.register_keras_serializable(package="zoo")
class CaptionEncoder(keras.layers.Layer):
    """Word ids [batch, W] and lengths [batch] → h^lang [batch, W, 2 × units] (Sec. 3.1).

    Words enter one-hot, as in the authors' code. The forward LSTM reads words 1 … L of each
    caption, the backward one words L … 1 (`tf.reverse_sequence` over each caption's length L);
    neither reads padding before a word, so h^lang_k of a word does not depend on padding.
    """

    def __init__(self, vocabulary_size: int, units: int, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.units = units
        self.forward = keras.layers.LSTM(units, return_sequences=True, name="forward")
        self.backward = keras.layers.LSTM(units, return_sequences=True, name="backward")

    def build(self, input_shape):
        words = (None, None, self.vocabulary_size)
        self.forward.build(words)
        self.backward.build(words)

    def call(self, ids, lengths):
        one_hot = tf.one_hot(ids, self.vocabulary_size)
        reverse = lambda values: tf.reverse_sequence(values, lengths, seq_axis=1, batch_axis=0)  # noqa: E731
        return tf.concat([self.forward(one_hot), reverse(self.backward(reverse(one_hot)))], axis=-1)

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size, "units": self.units}


@keras.saving.register_keras_serializable(package="zoo")
class Alignment(keras.layers.Layer):
    """(U h^lang precomputed, h^lang, mask, h^gen_{t−1}) → (s_t, α^t) (Sec. 3.3).

    e_k^t = vᵀ tanh(U h^lang_k + W h^gen_{t−1} + b); α^t is the softmax of e^t over the caption's
    words, 0 on padding; s_t = Σ_k α_k^t h^lang_k.
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.language = keras.layers.Dense(units, use_bias=False, name="U")
        self.generator = keras.layers.Dense(units, name="W")  # its bias is b
        self.score = keras.layers.Dense(1, use_bias=False, name="v")

    def build(self, language_shape, generator_shape):
        self.language.build(language_shape)
        self.generator.build(generator_shape)
        self.score.build((None, None, self.units))

    def call(self, projected_language, language, mask, generator_state):
        scores = self.score(tf.tanh(projected_language + self.generator(generator_state)[:, None, :]))[..., 0]
        weights = tf.nn.softmax(tf.where(mask, scores, -1e9), axis=-1) * tf.cast(mask, scores.dtype)
        return tf.einsum("bk,bkd->bd", weights, language), weights

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="zoo")
class StepPrior(keras.layers.Layer):
    """h^gen_{t−1} → p(z_t | Z_{1:t−1}) = N(μ, diag σ²), (μ, log σ) = tanh(W_p h^gen_{t−1} + b_p) (Sec. 3.2).

    The tanh bounds log σ to (−1, 1), as in the authors' code.
    """

    def __init__(self, latent_units: int, **kwargs):
        super().__init__(**kwargs)
        self.latent_units = latent_units
        self.projection = keras.layers.Dense(2 * latent_units)

    def build(self, input_shape):
        self.projection.build(input_shape)

    def call(self, generator_state):
        loc, log_scale = tf.split(tf.tanh(self.projection(generator_state)), 2, axis=-1)
        return distributions.tfd.Independent(distributions.tfd.Normal(loc, tf.exp(log_scale)),
                                             reinterpreted_batch_ndims=1)

    def get_config(self):
        return {**super().get_config(), "latent_units": self.latent_units}


@keras.saving.register_keras_serializable(package="zoo")
class AlignDRAW(draw.DRAW):
    """AlignDRAW for binary images and text captions (Sec. 3).

    Data contract: batches are dicts with "image", float32 [batch, *image_shape] in {0, 1}, and
    "caption", int64 [batch, max_words], the caption's word ids (`self.tokenizer`, which the data
    pipeline applies); the serving signatures take the text.
    """

    config_class = AlignDRAWConfig

    def __init__(self, config: AlignDRAWConfig, **kwargs):
        super().__init__(config, **kwargs)
        self.tokenizer = text.Tokenizer(config.vocabulary, config.max_words, name="tokenizer")
        self.caption_encoder = CaptionEncoder(self.tokenizer.size, config.language_units, name="language")
        self.alignment = Alignment(config.alignment_units, name="alignment")
        self.step_prior = StepPrior(config.latent_units, name="p_z")

    def build(self, input_shape):
        config = self.config
        language = (None, None, 2 * config.language_units)
        self.tokenizer.build(None)
        self.caption_encoder.build(None)
        self.alignment.build(language, (None, config.decoder_units))
        self.step_prior.build((None, config.decoder_units))
        super().build(input_shape)

    # The condition: the caption's features, and the two hooks of DRAW's loop that read them.

    def _caption_context(self, ids):
        """The features of captions' word ids [batch, max_words]: h^lang, U h^lang and the mask of real words."""
        lengths = text.lengths_of(ids)
        language = self.caption_encoder(ids, lengths)
        return {"language": language, "projected_language": self.alignment.language(language),
                "mask": tf.sequence_mask(lengths, self.config.max_words)}

    def _context(self, data):
        """The caption's features from a batch's word ids (tokenized by the data pipeline, `dataset` below)."""
        return self._caption_context(data["caption"])

    def _step_prior(self, t, previous_decoder_output, context):
        """p(z_1) = N(0, I); p(z_t | Z_{1:t−1}) from h^gen_{t−1} after (Sec. 3.2)."""
        return self.prior if t == 0 else self.step_prior(previous_decoder_output)

    def _decoder_input_units(self) -> int:
        return self.config.latent_units + 2 * self.config.language_units

    def _decoder_input(self, z, previous_decoder_output, context):
        """([z_t, s_t], α^t): the generator reads the sample and the aligned caption (Sec. 3.2–3.3)."""
        sentence, weights = self.alignment(context["projected_language"], context["language"], context["mask"],
                                           previous_decoder_output)
        return tf.concat([z, sentence], axis=-1), weights

    # Samplers and paths of the serving signatures.

    def call(self, inputs):
        """Reconstruction σ(c_T) of {"image", "caption" (word ids)} with every z_t at its posterior mean."""
        return self._reconstruction(inputs["image"], self._context(inputs))

    def draw_from_caption(self, captions, seeds, checked: bool = False):
        """(σ(c_t) for t = 1 … T [N, T, *image_shape], α^t [N, T, max_words]) for caption strings [N]
        and int64 seeds [N]; z_t ~ p(z_t | y, Z_{1:t−1}) from the seed alone. `checked`: refuse
        captions the vocabulary cannot read (`zoo.common.text.Tokenizer.checked`)."""
        ids = (self.tokenizer.checked if checked else self.tokenizer)(captions)
        canvases, weights, _ = self._draw_from_prior(self._prior_noise(seeds), self._caption_context(ids))
        return tf.sigmoid(tf.stack(canvases, axis=1)), tf.stack(weights, axis=1)

    def sample_from_caption(self, captions, seeds):
        """x ~ p(x | y), one image (the Bernoulli means σ(c_T)) per caption and seed."""
        return self.draw_from_caption(captions, seeds)[0][:, -1]

    def sample(self, seeds):
        """x ~ p(x | y) with y = summary_captions[seed mod their number], one image per int64 seed."""
        captions = tf.constant(self.config.summary_captions)
        return self.sample_from_caption(tf.gather(captions, seeds % len(self.config.summary_captions)), seeds)

    def log_likelihood(self, images, captions, num_importance_samples, seeds):
        """L_k of log p(x | y) per image (Burda et al. 2016, Eq. 8), q over z_1 … z_T (`DRAW.log_likelihood`)."""
        context = self._caption_context(self.tokenizer(captions))
        return self._log_likelihood(images, context, num_importance_samples, seeds)

    def serving_signatures(self):
        """Samplers from seeds (captions from `summary_captions`) and from caption strings, the drawing
        step by step with the words attended to, and reconstructions; captions are checked."""
        caption = tf.TensorSpec([None], tf.string, name="caption")
        images = tf.TensorSpec([None, *self.config.image_shape], tf.float32, name="images")

        def from_caption(caption, seed):
            canvases, weights = self.draw_from_caption(caption, seed, checked=True)
            return {"images": canvases[:, -1], "alignments": weights}

        def canvas_sequence(caption, seed):
            return {"images": self.draw_from_caption(caption, seed, checked=True)[0]}

        def reconstruct(images, caption):
            context = self._caption_context(self.tokenizer.checked(caption))
            return {"images": self._reconstruction(signatures.checked_finite(images, "images"), context)}

        return {
            **signatures.seed_signatures(self.sample),
            "sample_from_caption": (from_caption, [caption, signatures.SEED]),
            "canvas_sequence": (canvas_sequence, [caption, signatures.SEED]),
            "reconstruct": (reconstruct, [images, caption]),
        }

    def summaries(self, images):
        """TensorBoard grids: a row per summary caption (held-in first, then held-out) of seeds
        0 … SUMMARY_SEEDS − 1, and the canvas strips of seed 0 for each caption (`DRAW._canvas_strips`)."""
        del images  # the grids depend on the captions alone
        count = len(self.config.summary_captions)
        captions = tf.repeat(tf.constant(self.config.summary_captions), SUMMARY_SEEDS)
        seeds = tf.tile(tf.range(SUMMARY_SEEDS, dtype=tf.int64), [count])
        first_seeds = tf.zeros([count], tf.int64)
        context = self._caption_context(self.tokenizer(tf.constant(self.config.summary_captions)))
        return {
            "caption_samples": self.sample_from_caption(captions, seeds),
            **self._canvas_strips(self._prior_noise(first_seeds), context),
        }


def build(config: AlignDRAWConfig) -> AlignDRAW:
    if not config.vocabulary:
        raise config_lib.ConfigError(
            f"{type(config).__name__}: the vocabulary is empty, to be counted from the training captions of "
            f"{config.dataset!r}; `python -m training.fit` counts it, or build from config.with_vocabulary(words)")
    model = AlignDRAW(config, name="align_draw")
    model.build((None, *config.image_shape))
    return model


def dataset(config: AlignDRAWConfig) -> registry.DatasetSpec:
    return registry.DatasetSpec(config.dataset, binarize=config.likelihood == "bernoulli", captions=True,
                                vocabulary=config.vocabulary, max_words=config.max_words,
                                count_vocabulary=not config.vocabulary)


registry.register(registry.ModelSpec(
    "zoo.align_draw", "AlignDRAW (Mansimov et al. 2016): images drawn from MNIST captions, attending to the words",
    AlignDRAWConfig, build, dataset,
    tiny={**draw.TINY, "image_shape": (12, 12, 1), "language_units": 4, "alignment_units": 6, "read_size": 3},
    evaluation=("likelihood", "caption_accuracy")))

# The authors' MS COCO model (mansimov/text2image, coco/models/coco-captions-32x32.json): T 32, 550 LSTM
# units, #z 275, read and write 9 × 9, 128 language units per direction, alignment 512, batch 100, lr 0.001.
# Their dimY 25323 is their vocabulary; here it is every word of the training captions. The likelihood is ours
# (the authors' code reads σ(c) as DRAW does; a discretized logistic gives nats and bits/dim of 8-bit images).
COCO_SUMMARY_CAPTIONS = (
    "a yellow school bus parked in a parking lot .", "a red school bus parked in a parking lot .",
    "a very large commercial plane flying in blue skies .", "a herd of elephants walking across a dry grass field .",
    # Compositions the paper draws to show generalisation (Fig. 1; recalled, not re-checked against the PDF).
    "a stop sign is flying in blue skies .", "a herd of elephants flying in the blue skies .",
    "a toilet seat sits open in the grass field .", "a person skiing on sand clad vast desert .",
)
registry.register(registry.ModelSpec(
    "zoo.align_draw_coco", "AlignDRAW (Mansimov et al. 2016, Sec. 4.2): 32×32 MS COCO images drawn from captions",
    AlignDRAWConfig, build, dataset,
    preset={"dataset": "coco_captions", "image_shape": (32, 32, 3), "likelihood": "discretized_logistic",
            "glimpses": 32, "encoder_units": 550, "decoder_units": 550, "latent_units": 275, "read_size": 9,
            "write_size": 9, "vocabulary": (), "max_words": 32, "summary_captions": COCO_SUMMARY_CAPTIONS},
    tiny={**draw.TINY, "image_shape": (32, 32, 3), "language_units": 4, "alignment_units": 6, "read_size": 3},
    evaluation=("likelihood",)))
