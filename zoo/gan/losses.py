"""GAN objectives, each written once, as per-example terms.

Every function returns one value per example (shape [batch]); callers sum and
divide by the *global* batch. Classifier-style losses take logits ℓ with
D(x) = σ(ℓ) and use log σ(ℓ) = −softplus(−ℓ), log(1 − σ(ℓ)) = −softplus(ℓ), which
stay finite in float32 for any ℓ. All losses are to be *minimised*.

References:
  [1] Goodfellow et al. Generative Adversarial Nets. NeurIPS 2014, arXiv:1406.2661.
  [2] Arjovsky, Chintala, Bottou. Wasserstein GAN. ICML 2017, arXiv:1701.07875.
  [3] Gulrajani et al. Improved Training of Wasserstein GANs. NeurIPS 2017,
      arXiv:1704.00028.
  [4] Zhao, Mathieu, LeCun. Energy-based Generative Adversarial Network. ICLR 2017,
      arXiv:1609.03126.
  [5] Chen et al. InfoGAN: Interpretable Representation Learning by Information
      Maximizing Generative Adversarial Nets. NeurIPS 2016, arXiv:1606.03657.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import tensorflow as tf

LOSSES = ("minimax", "non_saturating", "wasserstein", "energy")


def discriminator_loss(real_logits: tf.Tensor, fake_logits: tf.Tensor) -> tf.Tensor:
    """−log D(x) − log(1 − D(G(z))) = softplus(−ℓ_real) + softplus(ℓ_fake).

    The negated value function V(D, G) of [1], Eq. 1. For fixed G it is minimised
    by D*(x) = p_data(x) / (p_data(x) + p_g(x)) ([1], Prop. 1).
    """
    return tf.nn.softplus(-real_logits) + tf.nn.softplus(fake_logits)


def minimax_generator_loss(fake_logits: tf.Tensor) -> tf.Tensor:
    """log(1 − D(G(z))) = −softplus(ℓ_fake), the generator's side of [1], Eq. 1.

    Saturates: when D confidently rejects samples (ℓ_fake ≪ 0) its gradient
    −σ(ℓ_fake) vanishes ([1], Sec. 3).
    """
    return -tf.nn.softplus(fake_logits)


def non_saturating_generator_loss(fake_logits: tf.Tensor) -> tf.Tensor:
    """−log D(G(z)) = softplus(−ℓ_fake) ([1], Sec. 3).

    Same fixed point as the minimax loss, but its gradient −σ(−ℓ_fake) → −1
    exactly where the minimax one vanishes.
    """
    return tf.nn.softplus(-fake_logits)


def wasserstein_critic_loss(real_scores: tf.Tensor, fake_scores: tf.Tensor) -> tf.Tensor:
    """f(G(z)) − f(x): minimising it maximises the critic's estimate of W(P_r, P_g).

    [2], Alg. 1, line 5; [3], Alg. 1, line 7 (without the penalty, added by the
    caller from `gradient_penalty`). Scores are unbounded reals, not logits.
    """
    return fake_scores - real_scores


def wasserstein_generator_loss(fake_scores: tf.Tensor) -> tf.Tensor:
    """−f(G(z)) ([2], Alg. 1, line 10; [3], Alg. 1, line 12)."""
    return -fake_scores


def _safe_sqrt(values: tf.Tensor) -> tf.Tensor:
    """√values, with gradient 0 instead of NaN (∞ · 0) where values = 0.

    The inner `tf.where` keeps 0 out of `sqrt`, so neither branch's gradient is
    infinite; for a norm √(Σ g²) this picks the subgradient 0 at g = 0.
    """
    positive = values > 0
    return tf.where(positive, tf.sqrt(tf.where(positive, values, tf.ones_like(values))), 0.0)


def gradient_penalty(
    critic: Callable[[tf.Tensor], tf.Tensor],
    real: tf.Tensor,
    fake: tf.Tensor,
    epsilon: tf.Tensor,
) -> tf.Tensor:
    """(‖∇_x̂ f(x̂)‖₂ − 1)² at x̂ = ε x + (1 − ε) x̃ ([3], Alg. 1, lines 4-7).

    Args:
      critic: images → [batch] scores f. The gradient of Σ_b f(x̂_b) is taken, so
        each example's score must depend on its own input only (no batch
        normalisation or minibatch discrimination in the critic, [3], Sec. 4).
      real: x, [batch, ...].
      fake: x̃ = G(z), same shape.
      epsilon: ε ~ U[0, 1], [batch], drawn by the caller; broadcast over the
        non-batch axes.

    Returns:
      The per-example penalty, [batch]. The inner tape records the gradient
      computation, so the caller's outer tape differentiates the penalty w.r.t.
      the critic's weights (double backpropagation). The norm is over all
      non-batch axes; a zero gradient gives penalty 1 with finite gradients.
    """
    real = tf.convert_to_tensor(real)
    epsilon = tf.reshape(tf.cast(epsilon, real.dtype), [-1] + [1] * (real.shape.rank - 1))
    interpolates = epsilon * real + (1.0 - epsilon) * fake
    with tf.GradientTape() as tape:
        tape.watch(interpolates)
        scores = critic(interpolates)
    gradients = tape.gradient(
        scores, interpolates, unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    squared_norm = tf.reduce_sum(tf.square(gradients), axis=list(range(1, real.shape.rank)))
    return tf.square(_safe_sqrt(squared_norm) - 1.0)


def energy_discriminator_loss(
    real_energy: tf.Tensor, fake_energy: tf.Tensor, margin: float
) -> tf.Tensor:
    """L_D = D(x) + [m − D(G(z))]⁺ ([4], Eq. 1).

    Energies D(·) ≥ 0 (in [4], an auto-encoder's reconstruction error); the hinge
    stops pushing fake energies up once they exceed the margin m.
    """
    return real_energy + tf.nn.relu(margin - fake_energy)


def energy_generator_loss(fake_energy: tf.Tensor) -> tf.Tensor:
    """L_G = D(G(z)) ([4], Eq. 2)."""
    return fake_energy


def pulling_away_term(representations: tf.Tensor) -> tf.Tensor:
    """f_PT(S) = 1/(N(N−1)) Σ_i Σ_{j≠i} (S_iᵀS_j / (‖S_i‖ ‖S_j‖))² ([4], Eq. 7).

    The mean squared cosine similarity between distinct rows of the batch of
    encoder representations S [N, ...] (flattened per example); added to L_G to
    discourage mode collapse. Scale-invariant in each row; a zero row counts as
    orthogonal to every other row, and N = 1 gives 0. Returns a scalar.
    """
    rows = tf.reshape(representations, [tf.shape(representations)[0], -1])
    norms = _safe_sqrt(tf.reduce_sum(tf.square(rows), axis=1, keepdims=True))
    unit_rows = tf.math.divide_no_nan(rows, norms)
    cosines = tf.matmul(unit_rows, unit_rows, transpose_b=True)
    count = tf.shape(rows)[0]
    off_diagonal = 1.0 - tf.eye(count, dtype=rows.dtype)
    pairs = tf.cast(count * (count - 1), rows.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(tf.square(cosines) * off_diagonal), pairs)


def mutual_information_bound(log_q_codes: tf.Tensor, code_entropy: tf.Tensor) -> tf.Tensor:
    """L_I = log Q(c | x) + H(c) for c ~ P(c), x = G(z, c) ([5], Eq. 5, Lemma 5.1).

    I(c; G(z, c)) = H(c) − H(c | G(z, c)) ≥ E_{c ~ P(c), x ~ G(z, c)}[log Q(c | x)] + H(c),
    since the gap is E_x[KL(P(· | x) ‖ Q(· | x))] ≥ 0. The per-example average
    of this term is the Monte Carlo estimate of the bound; it is *maximised*
    (InfoGAN minimises V(D, G) − λ L_I, [5], Eq. 6). H(c) is a constant of the
    fixed code prior, a scalar or [batch].
    """
    return log_q_codes + code_entropy


class LossPair(NamedTuple):
    """The two per-example objectives one GAN train_step minimises."""

    discriminator: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]  # (real, fake) -> [batch]
    generator: Callable[[tf.Tensor], tf.Tensor]  # (fake) -> [batch]


def loss_pair(name: str, margin: float = 1.0) -> LossPair:
    """The LossPair called `name`, one of LOSSES; `margin` is EBGAN's m ([4], Eq. 1)."""
    pairs = {
        "minimax": LossPair(discriminator_loss, minimax_generator_loss),
        "non_saturating": LossPair(discriminator_loss, non_saturating_generator_loss),
        "wasserstein": LossPair(wasserstein_critic_loss, wasserstein_generator_loss),
        "energy": LossPair(
            functools.partial(energy_discriminator_loss, margin=margin), energy_generator_loss
        ),
    }
    if name not in pairs:
        raise ValueError(f"Unknown GAN loss {name!r}; expected one of {LOSSES}")
    return pairs[name]
