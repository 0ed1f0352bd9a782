"""G's inputs: the noise z, the class y of a conditional GAN and InfoGAN's codes c.

G(z, c, y) is fed [z, one-hot c_cat, c_cont, one-hot y], concatenated (Chen et al. 2016,
Sec. 5; Mirza & Osindero 2014, Sec. 3.2), with

* z ~ U[−1, 1]^noise_dim (Radford et al. 2016, arXiv:1511.06434, Sec. 4);
* c_cat ~ Cat(1/K) and c_cont ~ U[−1, 1]^N (InfoGAN, Chen et al. 2016, arXiv:1606.03657,
  Sec. 7.1), whose information is kept by maximising L_I(G, Q) = E[log Q(c | x)] + H(c)
  (Eq. 5) with Q(c | x) on D's features;
* y, the class (Mirza & Osindero 2014, arXiv:1411.1784): from the batch in training, drawn
  when sampling.

`LatentInputs` is the one place that knows which of these a config has. Latents are dicts
{"noise", "labels", "category", "continuous"} holding those configured.
"""

from __future__ import annotations

import math

import tensorflow as tf

from zoo.common import distributions, signatures
from zoo.common.stateless import per_example_uniform
from zoo.gan import losses as gan_losses

NOISE_STREAM, CATEGORY_STREAM, CONTINUOUS_STREAM = 0, 1, 2  # stateless streams of one seed
UNIFORM_ENTROPY = math.log(2.0)  # differential entropy of U[−1, 1], nats per code dimension


class LatentInputs:
    """How z, y and c are drawn, fed to G, bounded by Q, and set by hand in signatures and grids.

    A plain object, not a layer: the model tracks Q's heads (`category_posterior`,
    `continuous_posterior`) as its own attributes, the paths of their weights in .keras files.
    """

    def __init__(self, config):
        self.config = config
        self.category_posterior = (  # Q(c | x), Chen et al. Sec. 5; shares D's body
            distributions.CategoricalLayer(config.categorical_code) if config.categorical_code else None)
        self.continuous_posterior = (
            distributions.GaussianLayer((config.continuous_codes,)) if config.continuous_codes else None)
        self.tracked = ("mutual_information",) * bool(config.code_size)

    @property
    def size(self) -> int:
        """The width of G's input."""
        config = self.config
        return config.noise_dim + config.code_size + config.num_classes * config.conditional

    @property
    def posteriors(self) -> list:
        return [head for head in (self.category_posterior, self.continuous_posterior) if head is not None]

    def draw(self, batch, labels, seed) -> dict:
        """Training latents for `batch` examples from one step seed; y is the batch's `labels`."""
        config = self.config
        seeds = [tf.random.experimental.stateless_fold_in(seed, stream) for stream in range(3)]
        latents = {"noise": tf.random.stateless_uniform([batch, config.noise_dim], seeds[NOISE_STREAM], -1.0, 1.0)}
        if config.conditional:
            latents["labels"] = labels
        if config.categorical_code:
            latents["category"] = tf.random.stateless_uniform(
                [batch], seeds[CATEGORY_STREAM], 0, config.categorical_code, dtype=tf.int64)
        if config.continuous_codes:
            latents["continuous"] = tf.random.stateless_uniform(
                [batch, config.continuous_codes], seeds[CONTINUOUS_STREAM], -1.0, 1.0)
        return latents

    def from_seeds(self, seeds) -> dict:
        """Sampling latents, one example's each a pure function of its seed (batch-order independent)."""
        config = self.config
        latents = {"noise": per_example_uniform(seeds, [config.noise_dim], NOISE_STREAM)}
        if config.conditional:
            latents["labels"] = per_example_uniform(seeds, [], CATEGORY_STREAM, 0, config.num_classes, tf.int64)
        if config.categorical_code:
            latents["category"] = per_example_uniform(seeds, [], CATEGORY_STREAM, 0, config.categorical_code,
                                                      tf.int64)
        if config.continuous_codes:
            latents["continuous"] = per_example_uniform(seeds, [config.continuous_codes], CONTINUOUS_STREAM)
        return latents

    def generator_input(self, latents) -> tf.Tensor:
        """[z, one-hot c_cat, c_cont, one-hot y] (Chen et al. Sec. 5; Mirza & Osindero Sec. 3.2)."""
        config = self.config
        inputs = [latents["noise"]]
        if config.categorical_code:
            inputs.append(tf.one_hot(latents["category"], config.categorical_code))
        if config.continuous_codes:
            inputs.append(latents["continuous"])
        if config.conditional:
            inputs.append(tf.one_hot(latents["labels"], config.num_classes))
        return tf.concat(inputs, axis=-1)

    def information(self, latents, features) -> tf.Tensor:
        """λ-weighted L_I(G, Q) = log Q(c | x) + H(c) per example (Chen et al. Eq. 5), x = G(z, c).

        H(c) is log K for c_cat and N log 2 for c_cont ~ U[−1, 1]^N.
        """
        config = self.config
        bound = 0.0
        if config.categorical_code:
            log_q = self.category_posterior(features).log_prob(latents["category"])
            bound += config.categorical_info_weight * gan_losses.mutual_information_bound(
                log_q, math.log(config.categorical_code))
        if config.continuous_codes:
            log_q = self.continuous_posterior(features).log_prob(latents["continuous"])
            bound += config.continuous_info_weight * gan_losses.mutual_information_bound(
                log_q, config.continuous_codes * UNIFORM_ENTROPY)
        return bound

    def signatures(self, sample) -> dict:
        """The serving signatures that set y or c by hand, given `sample(seeds, **fixed latents)`.

        sample_conditional (seed, label), conditional models; sample_with_codes (seed, category,
        continuous), models with codes (category ignored without a categorical code).
        """
        config = self.config
        declared = {}
        if config.conditional:
            declared["sample_conditional"] = (
                lambda seed, label: {"images": sample(
                    seed, labels=signatures.checked_labels(label, config.num_classes, "label"))},
                [signatures.SEED, tf.TensorSpec([None], tf.int64, name="label")],
            )
        if config.code_size:
            def sample_with_codes(seed, category, continuous):
                """InfoGAN: G(z(seed), c) with the codes given."""
                fixed = {"continuous": signatures.checked_finite(continuous, "continuous")} \
                    if config.continuous_codes else {}
                if config.categorical_code:
                    fixed["category"] = signatures.checked_labels(category, config.categorical_code, "category")
                return {"images": sample(seed, **fixed)}

            declared["sample_with_codes"] = (sample_with_codes, [
                signatures.SEED, tf.TensorSpec([None], tf.int64, name="category"),
                tf.TensorSpec([None, config.continuous_codes], tf.float32, name="continuous")])
        return declared

    def grids(self, sample) -> dict:
        """TensorBoard grids that set y or c by hand, from fixed seeds, given `sample(seeds, **fixed latents)`.

        per_class: a row per class (Mirza & Osindero Fig. 2); traversal_category: a row per
        category (Chen et al. Fig. 2a); traversal_continuous_i: row r has seed r with c_i swept
        from −2 to 2 along it (Chen et al. Fig. 2c-d).
        """
        config = self.config
        grids = {}
        if config.conditional:
            seeds, classes = signatures.class_rows(config.num_classes)
            grids["per_class"] = sample(seeds, labels=classes)
        if config.categorical_code:
            seeds, categories = signatures.class_rows(config.categorical_code)
            grids["traversal_category"] = sample(seeds, category=categories)
        rows = tf.repeat(tf.range(8, dtype=tf.int64), 8)
        sweep = tf.tile(tf.linspace(-2.0, 2.0, 8), [8])
        for code in range(config.continuous_codes):
            continuous = tf.tensor_scatter_nd_update(
                self.from_seeds(rows)["continuous"], tf.stack([tf.range(64), tf.fill([64], code)], axis=1), sweep)
            grids[f"traversal_continuous_{code + 1}"] = sample(rows, continuous=continuous)
        return grids
