"""Annealed importance sampling (AIS): log p(x) of a latent-variable model from its prior and decoder.

References:
  [1] Neal. Annealed Importance Sampling. Statistics and Computing 11, 2001, arXiv:physics/9803008.
  [2] Wu, Burda, Salakhutdinov, Grosse. On the Quantitative Analysis of Decoder-Based Generative
      Models. ICLR 2017, arXiv:1611.04273.
  [3] Grosse, Ghahramani, Adams. Sandwiching the marginal likelihood using bidirectional Monte
      Carlo. arXiv:1511.02543, 2015.

AIS walks each chain from the prior p(z) to the posterior p(z | x) through the unnormalised
densities f_β(z) = p(z) p(x | z)^β, 0 = β_0 < β_1 < … < β_M = 1 ([1], Sec. 2; [2], Sec. 3):

    z_0 ~ p(z),   log w = Σ_{m=1..M} (β_m − β_{m−1}) log p(x | z_{m−1}),   z_m ~ T_m(· | z_{m−1}),

with T_m a Markov transition that leaves f_{β_m} invariant, here one Hamiltonian Monte Carlo step
(`tfp.mcmc.HamiltonianMonteCarlo`) whose step size adapts to an acceptance rate of 0.65 as in [2],
Sec. 4. E[w] = p(x) exactly, so log (1/C) Σ_c w_c over C chains is a stochastic lower bound on
log p(x) (Jensen) that tightens as M grows.

Run backwards from an exact posterior sample (which exists for data simulated from the model,
(z, x) ~ p(z) p(x | z)), the same recursion over β_M … β_0 estimates 1/p(x), so its negated
log-mean is a stochastic upper bound; the gap between the two bounds the error of both ([3], the
bidirectional Monte Carlo check of [2], Sec. 4).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import tensorflow as tf
import tensorflow_probability as tfp

from zoo.common.bounds import log_mean_exp

# [2]'s values, read in the authors' code (github.com/tonywu95/eval_gen): sampling/samplers.py adapts HMC step
# sizes towards an acceptance rate of 0.65 by factors of 1.02 (ours: 1/1.02 down, theirs 0.98), and
# algorithms/ais.py schedules β by a sigmoid of sharpness 4 ("Section 6.2"); experiments/run.py: 10 leapfrog steps.
TARGET_ACCEPTANCE = 0.65  # HMC step sizes adapted towards this acceptance rate
STEP_SIZE_GROWTH = 1.02   # the step size grows by this factor after a step accepted more often, else shrinks
SCHEDULE_SHARPNESS = 4.0  # β_m a sigmoid of m, dense near both ends

LogDensity = Callable[[tf.Tensor], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class AISEstimate:
    """The estimate per example and what it is made of.

    log_marginal: [batch], log (1/C) Σ_c w_c (forward) or −log (1/C) Σ_c w_c (reverse).
    standard_error: [batch], of log_marginal over the C chains (delta method: the standard error of
      the mean weight divided by the mean weight).
    log_weights: [chains, batch], log w of every chain.
    acceptance: [batch], the HMC acceptance rate averaged over the chains and the M steps.
    """

    log_marginal: tf.Tensor
    standard_error: tf.Tensor
    log_weights: tf.Tensor
    acceptance: tf.Tensor


def sigmoid_schedule(num_steps: int, sharpness: float = SCHEDULE_SHARPNESS) -> tf.Tensor:
    """β_0 = 0 < β_1 < … < β_M = 1, float32 [M + 1]: σ(δ (2m/M − 1)) rescaled to [0, 1] ([3], Sec. 6)."""
    if num_steps < 1:
        raise ValueError(f"AIS needs at least one annealing step, got {num_steps}")
    raw = tf.sigmoid(sharpness * (2.0 * tf.range(num_steps + 1, dtype=tf.float32) / num_steps - 1.0))
    return (raw - raw[0]) / (raw[-1] - raw[0])


def standard_error_of_log_mean(log_weights: tf.Tensor) -> tf.Tensor:
    """[batch]: the standard error of log (1/C) Σ_c w_c given log w [C, batch], by the delta method,
    computed on weights scaled by their largest (so that nothing overflows)."""
    scaled = tf.exp(log_weights - tf.reduce_max(log_weights, axis=0))
    chains = tf.cast(tf.shape(log_weights)[0], log_weights.dtype)
    return tf.math.reduce_std(scaled, axis=0) / tf.sqrt(chains) / tf.reduce_mean(scaled, axis=0)


def hmc_transitions(
    log_prior: LogDensity,
    log_likelihood: LogDensity,
    initial_state: tf.Tensor,
    schedule: tf.Tensor,
    seed: tf.Tensor,
    frozen_sizes: tf.Tensor,
    pilot: tf.Tensor,
    *,
    num_leapfrog_steps: int,
    initial_step_size: float,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """AIS's M transitions along `schedule` with one HMC step per β (module docstring), as a `tf.while_loop`:
    (log w [chains, batch], summed acceptance [chains, batch], the step size of every transition [M, batch]).

    With `pilot` (a bool tensor) true, the step size of each example (shared by its chains) starts at
    `initial_step_size` and grows by STEP_SIZE_GROWTH after a step whose acceptance, averaged over the chains,
    exceeds TARGET_ACCEPTANCE, and shrinks by it otherwise; else transition m takes `frozen_sizes[m − 1]`.
    Pilot and counted runs draw other randomness from the same `seed` (int32 [2]).

    Args: log_prior, log_likelihood, initial_state, schedule, as of `Annealer.run`; frozen_sizes: [M, batch].
    """
    num_steps = tf.shape(schedule)[0] - 1
    chains_and_batch = tf.shape(initial_state)[:-1]

    def transition(m, state, log_weights, step_size, sizes, accepted):
        beta_before, beta = schedule[m - 1], schedule[m]
        log_weights += (beta - beta_before) * log_likelihood(state)
        size = tf.where(pilot, step_size, frozen_sizes[m - 1])
        kernel = tfp.mcmc.HamiltonianMonteCarlo(
            lambda z: log_prior(z) + beta * log_likelihood(z), step_size=size[None, :, None],
            num_leapfrog_steps=num_leapfrog_steps)
        step_seed = tf.random.experimental.stateless_fold_in(seed, 2 * m + tf.cast(pilot, tf.int32))
        state, results = kernel.one_step(state, kernel.bootstrap_results(state), seed=step_seed)
        acceptance = tf.exp(tf.minimum(results.log_accept_ratio, 0.0))  # [chains, batch]
        step_size *= tf.where(tf.reduce_mean(acceptance, axis=0) > TARGET_ACCEPTANCE,
                              STEP_SIZE_GROWTH, 1.0 / STEP_SIZE_GROWTH)
        return m + 1, state, log_weights, step_size, sizes.write(m - 1, size), accepted + acceptance

    start = (tf.constant(1), initial_state, tf.zeros(chains_and_batch),
             tf.fill(chains_and_batch[1:], initial_step_size), tf.TensorArray(tf.float32, size=num_steps),
             tf.zeros(chains_and_batch))
    _, _, log_weights, _, sizes, accepted = tf.while_loop(lambda m, *_: m <= num_steps, transition, start)
    return log_weights, accepted, sizes.stack()


class Annealer:
    """AIS of the decoder densities (`zoo.contract.DecoderDensity`) of one model, its transitions a graph traced
    once per shape.

    `density(given)` is the density that a structure of tensors `given` makes: for a conditional model, a
    batch's `conditioned_density(batch, condition)`; for a model that is its own density, the model, whatever
    `given` is. The density is made inside the graph from `given`, so that the pilot and the counted run of
    every batch, seed and schedule of the same shapes are new input to the graph traced first, not a new graph:
    a trace of HMC's transitions takes seconds, on a small model longer than annealing a batch. A new batch
    size, number of chains or number of steps traces a graph of its own (one traced for unknown sizes ran 1.6
    times as long). Python state the density reads (a GAN's observation σ) is read when tracing: make an
    Annealer per evaluation.
    """

    def __init__(self, density: Callable, *, num_leapfrog_steps: int = 10, initial_step_size: float = 0.05):
        self.density = density
        self._hmc = dict(num_leapfrog_steps=num_leapfrog_steps, initial_step_size=initial_step_size)
        self.transitions = tf.function(self._transitions, autograph=False)

    def _transitions(self, given, images, initial_state, schedule, seed, frozen_sizes, pilot):
        density = self.density(given)
        return hmc_transitions(density.log_prior, lambda latents: density.log_decoder(images, latents),
                               initial_state, schedule, seed, frozen_sizes, pilot, **self._hmc)

    def run(self, given, images: tf.Tensor, initial_state: tf.Tensor, schedule: tf.Tensor, seed: tf.Tensor
            ) -> AISEstimate:
        """AIS towards p(z | x_b) for the images x [batch, ...] under `density(given)` (module docstring).

        HMC step sizes are tuned by a pilot run and then frozen (`hmc_transitions`): the run that counts uses
        the pilot's step size at every β, so each of its transitions leaves f_β exactly invariant and E[w]
        stays p(x). (Adapting within the counted run biases it: on a linear-Gaussian model, by more than a
        nat for reverse chains of 200 steps.) The pilot starts from the same states with other randomness.

        Args:
          given: the structure of tensors that `density` makes the density of.
          images: x [batch, ...], scored by the density's log p(x_b | z).
          initial_state: z_0 [chains, batch, d]: prior samples for a forward run (schedule rising from 0 to
            1), exact posterior samples for a reverse one (schedule falling from 1 to 0).
          schedule: β_0 … β_M, float32 [M + 1], monotone, from 0 to 1 or from 1 to 0.
          seed: int32 [2], the stateless seed of every momentum and acceptance draw.
        """
        schedule = tf.convert_to_tensor(schedule, tf.float32)
        num_steps = tf.shape(schedule)[0] - 1
        inputs = (given, images, initial_state, schedule, seed)
        _, _, tuned = self.transitions(*inputs, tf.zeros([num_steps, tf.shape(initial_state)[1]]), tf.constant(True))
        log_weights, accepted, _ = self.transitions(*inputs, tuned, tf.constant(False))
        log_mean_weight = log_mean_exp(log_weights, axis=0)
        return AISEstimate(
            log_marginal=tf.where(schedule[-1] > schedule[0], log_mean_weight, -log_mean_weight),
            standard_error=standard_error_of_log_mean(log_weights),
            log_weights=log_weights,
            acceptance=tf.reduce_mean(accepted, axis=0) / tf.cast(num_steps, tf.float32),
        )

    def log_marginal(self, given, images: tf.Tensor, chains: int, num_steps: int, seed: tf.Tensor) -> AISEstimate:
        """Forward AIS of log p(x) per image of [batch, ...], from the prior of `density(given)`, `chains`
        chains per image and `num_steps` annealing steps."""
        initial = self.density(given).prior_latents([chains, tf.shape(images)[0]],
                                                    tf.random.experimental.stateless_fold_in(seed, 0))
        return self.run(given, images, initial, sigmoid_schedule(num_steps),
                        tf.random.experimental.stateless_fold_in(seed, 1))

    def bidirectional(self, given, count: int, chains: int, num_steps: int, seed: tf.Tensor
                      ) -> tuple[AISEstimate, AISEstimate]:
        """Bidirectional Monte Carlo ([3]; [2], Sec. 4) on `count` examples simulated from `density(given)`,
        (z*, x) ~ p(z) p(x | z): (forward AIS from the prior, reverse AIS from z*). The forward estimate is a
        stochastic lower bound and the reverse one an upper bound on the same log p(x); their gap bounds the
        error AIS makes with these settings, on data like the model's own."""
        density = self.density(given)
        latents = density.prior_latents([count], tf.random.experimental.stateless_fold_in(seed, 2))
        images = density.decoder_sample(latents, tf.random.experimental.stateless_fold_in(seed, 3))
        forward = self.log_marginal(given, images, chains, num_steps, seed)
        reverse = self.run(given, images, tf.tile(latents[None], [chains, 1, 1]), sigmoid_schedule(num_steps)[::-1],
                           tf.random.experimental.stateless_fold_in(seed, 4))
        return forward, reverse
