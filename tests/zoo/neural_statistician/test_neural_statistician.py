"""zoo.neural_statistician: the statistic network's pooling, the set bound against its pieces, the samplers,
and few-shot classification by context posteriors (training.few_shot)."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import zoo
from training import few_shot
from training.evaluate import main as evaluate_main
from training.fit import main as fit_main
from zoo.common import distributions
from zoo.neural_statistician import model as statistician, pictures

tfd = tfp.distributions
NAMES = ["zoo.neural_statistician", "zoo.neural_statistician_synthetic", "zoo.neural_statistician_spatial"]


def _model(name="zoo.neural_statistician", **overrides):
    return statistician.build(zoo.get(name).make_tiny_config(**overrides))


def _sets(model, count, set_size=None, seed=0):
    """Sets as the data pipeline gives them: binary pixels for image items, floats for vectors."""
    config = model.config
    values = np.random.default_rng(seed).random((count, set_size or config.set_size, *config.item_shape))
    return tf.constant((values < 0.5) if not config.item_size else 4.0 * values, tf.float32)


@pytest.mark.parametrize("name", NAMES)
def test_the_context_posterior_ignores_the_order_of_the_items_but_not_the_items(name):
    model = _model(name)
    sets = _sets(model, 3)
    mean, stddev = model.context(sets)
    shuffled = tf.gather(sets, np.random.default_rng(1).permutation(sets.shape[1]), axis=1)
    shuffled_mean, shuffled_stddev = model.context(shuffled)
    np.testing.assert_allclose(shuffled_mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(shuffled_stddev, stddev, rtol=1e-5, atol=1e-6)
    changed = tf.concat([_sets(model, 3, set_size=1, seed=2), sets[:, 1:]], axis=1)
    assert not np.allclose(model.context(changed)[0], mean, atol=1e-4)


def test_with_one_item_per_set_the_bound_is_a_vae_bound_over_c_and_z_with_the_learned_prior_p_z_given_c():
    """S = 1: L_D = E_q(c|x) E_q(z|x,c) log p(x | z, c) − E_q(c|x) KL(q(z | x, c) ‖ p(z | c)) − KL(q(c | x) ‖ N(0, I)),
    built here from the networks and tfp's own KL, with the same noise."""
    model = _model()
    items = _sets(model, 4, set_size=1)
    context_noise, latent_noises = model._noise(1, items, tf.constant([3, 4]))
    terms = model._terms(items, context_noise, latent_noises)

    encoding = model.item_encoder(tf.reshape(items, [4, 1, -1]))[:, 0]  # [B, hidden]
    q_c = model.statistic_network(tf.concat([encoding, tf.ones([4, 1])], -1))  # the mean of one item, its count
    context = q_c.distribution.loc + q_c.distribution.scale * context_noise[0]
    q_z = model.inference_networks[0](tf.concat([encoding, context], -1))
    p_z = model.latent_decoders[0](context)
    latent = q_z.distribution.loc + q_z.distribution.scale * latent_noises[0][0, :, 0]
    p_x = model.observation_decoder(tf.concat([context, latent], -1))
    expected = (p_x.log_prob(items[:, 0]) - tfd.kl_divergence(q_z, p_z)
                - tfd.kl_divergence(q_c, distributions.standard_normal(model.config.context_units)))
    np.testing.assert_allclose(terms["elbo"], expected, rtol=1e-5, atol=1e-3)
    # L_1 is the bound's single-sample estimate with every KL sampled: log w = log p(x, z, c) − log q(z, c | x).
    log_weight = (p_x.log_prob(items[:, 0]) + p_z.log_prob(latent) - q_z.log_prob(latent)
                  + distributions.standard_normal(model.config.context_units).log_prob(context) - q_c.log_prob(context))
    np.testing.assert_allclose(-terms["nll"], log_weight, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("name", ["zoo.neural_statistician_synthetic", "zoo.neural_statistician_spatial"])
def test_the_closed_form_kls_of_the_bound_match_monte_carlo_over_many_samples(name):
    """mean_j log w_j estimates the same E_q[log p(D, c, z) − log q(c, z | D)] as the bound with its KLs of c and
    of every z layer in closed form, from the same draws."""
    model = _model(name)
    terms = model.bound_terms(_sets(model, 2), tf.constant([5, 6]), k=20_000)
    monte_carlo = tf.reduce_mean(terms["log_weights"], axis=0)
    standard_error = tf.math.reduce_std(terms["log_weights"], axis=0) / np.sqrt(20_000)
    np.testing.assert_array_less(np.abs(monte_carlo - terms["elbo"]), 4 * standard_error + 1e-3)


def test_more_importance_samples_tighten_the_set_bound():
    model = _model("zoo.neural_statistician_synthetic")
    sets = _sets(model, 4)
    bound = {k: np.mean([-model.bound_terms(sets, tf.constant([seed, 0]), k=k)["nll"] for seed in range(20)], axis=0)
             for k in (1, 50)}
    assert np.all(bound[50] > bound[1])


def test_sets_drawn_from_a_set_depend_on_its_context_and_are_a_function_of_the_seed():
    model = _model("zoo.neural_statistician_spatial")
    sets = _sets(model, 2)
    seeds = tf.constant([7, 7], tf.int64)
    drawn = model.sample_from_set(sets, seeds).numpy()
    assert drawn.shape == tuple(sets.shape)
    np.testing.assert_array_equal(model.sample_from_set(sets, seeds).numpy(), drawn)
    assert not np.allclose(drawn[0], drawn[1])  # one seed, two sets: different contexts
    alone = model.sample_from_set(sets[:1], seeds[:1]).numpy()[0]
    np.testing.assert_allclose(alone, drawn[0], rtol=0, atol=1e-5)  # batch-free, up to float rounding
    assert model.sample_from_set(sets, seeds, set_size=7).shape == (2, 7, 2)


def test_a_set_is_drawn_as_its_items_in_a_row_its_points_or_its_histogram():
    items = tf.reshape(tf.range(2 * 3 * 4, dtype=tf.float32), [1, 2, 3, 4, 1])
    row = pictures.side_by_side_items(items).numpy()
    np.testing.assert_array_equal(row[0, :, :4, 0], items[0, 0, ..., 0])
    np.testing.assert_array_equal(row[0, :, 4:, 0], items[0, 1, ..., 0])
    points = tf.constant([[[0.5, 0.5], [3.2, 1.9], [3.7, 1.1], [9.0, 9.0]]])  # the last one is off the canvas
    canvas = pictures.point_clouds(points, (4, 5, 1)).numpy()[0, ..., 0]
    expected = np.zeros((4, 5))
    expected[3, 0], expected[2, 3] = 0.5, 1.0  # y up: y in [0, 1) is the bottom row; two points share (3, 1)
    np.testing.assert_array_equal(canvas, expected)
    bars = pictures.histograms(tf.constant([[-4.9, 0.1, 0.2, 0.3, 4.9]]), (3, 10, 1)).numpy()[0, ..., 0]
    np.testing.assert_array_equal(bars.sum(axis=0), [1, 0, 0, 0, 0, 3, 0, 0, 0, 1])  # heights relative to the fullest
    assert bars[:, 5].all() and bars[2, 0] == 1 and bars[0, 0] == 0  # bars grow from the bottom row


def test_kl_between_diagonal_gaussians_matches_tfp():
    rng = np.random.default_rng(0)
    mean_q, mean_p = rng.normal(size=(2, 3, 4))
    stddev_q, stddev_p = rng.uniform(0.2, 2.0, size=(2, 3, 4))
    expected = tfd.kl_divergence(tfd.Independent(tfd.Normal(mean_q, stddev_q), 1),
                                 tfd.Independent(tfd.Normal(mean_p, stddev_p), 1))
    np.testing.assert_allclose(few_shot.kl_between_diagonal_gaussians(mean_q, stddev_q, mean_p, stddev_p), expected,
                               rtol=1e-6)


def _gaussian_mean_context(sets):
    """The exact posterior of the mean μ of N(μ, 1) items under a flat prior: N(mean of the set, 1/S)."""
    sets = np.asarray(sets, np.float64).reshape(len(sets), sets.shape[1], -1)
    return sets.mean(axis=1), np.full((len(sets), sets.shape[2]), 1.0 / np.sqrt(sets.shape[1]))


@pytest.mark.parametrize("spacing, lowest, highest", [(8.0, 0.99, 1.0), (0.0, 0.1, 0.3)])
def test_few_shot_episodes_find_well_separated_classes_and_guess_among_identical_ones(spacing, lowest, highest):
    rng = np.random.default_rng(0)
    items_by_class = {label: rng.normal(spacing * label, 1.0, size=(30, 2)) for label in range(8)}
    accuracy = few_shot.few_shot_accuracy(_gaussian_mean_context, items_by_class, ways=5, shots=1, episodes=200)
    assert lowest <= accuracy <= highest  # 5-way: chance is 0.2


def test_nearest_centroid_leaves_each_set_out_of_its_own_class_mean():
    means = np.array([[0.0], [1.0], [10.0], [11.0], [4.0]])
    labels = np.array([0, 0, 1, 1, 1])
    # Row 4 (label 1): the other label-1 rows average 10.5, label 0 averages 0.5: nearer to 0, wrong; the rest right.
    assert few_shot.nearest_centroid_accuracy(means, labels) == pytest.approx(4 / 5)
    assert few_shot.nearest_centroid_accuracy(np.array([[0.0], [5.0]]), np.array([0, 1])) == 0.0  # alone: wrong


def test_few_shot_settings_follow_table_1_within_the_classes_at_hand():
    assert few_shot.settings(1623, 19) == [(5, 1), (5, 5), (20, 1), (20, 5)]
    assert few_shot.settings(10, 19) == [(5, 1), (5, 5), (10, 1), (10, 5)]
    assert few_shot.settings(3, 4) == [(3, 1)]


def test_a_statistician_trained_briefly_on_sets_of_separated_gaussians_classifies_them_few_shot():
    """Four 1-D classes, N(−15, 1), N(−5, 1), N(5, 1), N(15, 1), so far apart that one item tells its class
    (the Bayes error is 6e-7): after 300 steps on sets of 10, 5-shot 4-way episodes from fresh draws go to the
    right class nearly always."""
    model = _model("zoo.neural_statistician_synthetic", set_size=10, batch_size=32, learning_rate=3e-3)
    model.compile_for_training(steps_per_epoch=300)
    rng = np.random.default_rng(0)
    centres = np.array([-15.0, -5.0, 5.0, 15.0])

    def sets(count):
        return tf.constant(rng.normal(rng.choice(centres, size=(count, 1, 1)), 1.0, size=(count, 10, 1)), tf.float32)

    model.fit(tf.data.Dataset.from_tensor_slices({"image": sets(300 * 32)}).batch(32), epochs=1, verbose=0,
              shuffle=False)
    items_by_class = {label: rng.normal(centre, 1.0, size=(40, 1)) for label, centre in enumerate(centres)}
    accuracy = few_shot.few_shot_accuracy(lambda s: model.context(tf.constant(s, tf.float32)), items_by_class,
                                          ways=4, shots=5, episodes=50)
    assert accuracy >= 0.95, accuracy


def test_sample_dropout_pools_a_random_subset_with_at_least_one_item_and_its_count():
    model = _model(sample_dropout=0.9, set_size=5)
    sets = _sets(model, 400)
    pooled = model._sample_dropout(sets, tf.constant([1, 2])).numpy()
    assert pooled.any(axis=1).all()
    assert 0.15 < pooled.mean() < 0.3  # 0.1 of the items, plus the best of those sets that kept none: 0.22
    subset = tf.boolean_mask(sets[0], pooled[0])[None]
    np.testing.assert_allclose(model.context_posterior(model._encode(sets[:1]), pooled[:1]).distribution.loc,
                               model.context(subset)[0], rtol=1e-5, atol=1e-6)


def _cli(run_main, main, *args):
    result = run_main(main, args)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


TINY_FLAGS = ["--epochs", "1", "--set", "hidden_units=16", "--set", "context_units=3", "--set", "latent_units=2", "--batch_size", "4",
              "--steps_per_epoch", "2", "--validation_steps", "2", "--no_download", "--verbose", "2"]


def test_cli_fit_on_sets_of_digits_then_evaluate_reports_the_set_bound_few_shot_accuracy_and_clusters(tmp_path,
                                                                                                     run_main):
    fit = _cli(run_main, fit_main, "zoo.neural_statistician", "--workdir", tmp_path, "--max_examples", "300",
               "--set", "set_size=3", *TINY_FLAGS)
    assert "dataset: mnist (binarize: True)" in fit.stdout
    result = json.loads(_cli(run_main, evaluate_main, tmp_path, "--k", "3", "--episodes", "10", "--max_examples",
                             "300", "--no_download").stdout)
    assert result["model"] == "zoo.neural_statistician" and result["k"] == 3
    assert result["examples"] == sum(count // 3 for count in _held_out_counts(300))  # sets of 7, 8 and 9
    assert {"nll", "elbo", "kl_c", "kl_z", "nll_per_item", "context_cluster_accuracy",
            "few_shot_accuracy_3way_1shot"} <= set(result)
    assert 0.0 <= result["few_shot_accuracy_3way_1shot"] <= 1.0 and result["nll"] > 0


def _held_out_counts(max_examples):
    from training import data
    from zoo.registry import DatasetSpec

    dataset, _ = data.load(DatasetSpec("mnist", binarize=False, labels=True), "test", 1000,
                           max_examples=max_examples, download=False)
    labels = np.concatenate([batch["label"].numpy() for batch in dataset])
    return [int(np.sum(labels == digit)) for digit in (7, 8, 9)]


def test_cli_fit_on_synthetic_1d_sets_then_evaluate_scatters_the_context_means_by_family(tmp_path, run_main):
    _cli(run_main, fit_main, "zoo.neural_statistician_synthetic", "--workdir", tmp_path, "--max_examples", "40",
         "--set", "set_size=20", *TINY_FLAGS)
    result = json.loads(_cli(run_main, evaluate_main, tmp_path, "--k", "2", "--max_examples", "40", "--no_download").stdout)
    assert result["examples"] == 40 and "context_cluster_accuracy" in result
    assert not any(key.startswith("few_shot") for key in result)
    events = b"".join(path.read_bytes() for path in (tmp_path / "tensorboard" / "evaluation").iterdir())
    assert b"test/context_means" in events
