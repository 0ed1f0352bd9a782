"""zoo.common.metrics.ActiveUnits (Burda et al. 2016, Sec. 5.2)."""

import numpy as np
import pytest

from zoo.common.metrics import ACTIVITY_THRESHOLD, ActiveUnits


def _posterior_means(num_examples=600, seed=0):
    """Units 0, 2, 4 vary (variance 1, 0.05, 4), unit 1 is constant, unit 3 varies below the threshold."""
    rng = np.random.default_rng(seed)
    standard = rng.standard_normal((num_examples, 5))
    standard = (standard - standard.mean(axis=0)) / standard.std(axis=0)  # exact unit variance
    stddevs = np.array([1.0, 0.0, np.sqrt(0.05), np.sqrt(ACTIVITY_THRESHOLD / 4), 2.0])
    offsets = np.array([0.0, 3.0, -1.0, 5.0, 10.0])
    return (standard * stddevs + offsets).astype(np.float32)


def test_counts_units_with_variance_above_threshold():
    metric = ActiveUnits(5)
    metric.update_state(_posterior_means())
    assert float(metric.result()) == 3.0


@pytest.mark.parametrize("batch_sizes", [[600], [100] * 6, [1, 299, 7, 293]])
def test_count_is_invariant_to_splitting_data_into_batches(batch_sizes):
    means = _posterior_means()
    metric = ActiveUnits(5)
    for batch in np.split(means, np.cumsum(batch_sizes)[:-1]):
        metric.update_state(batch)
    assert float(metric.result()) == 3.0
    np.testing.assert_allclose(metric.total, means.sum(axis=0), rtol=1e-5, atol=1e-3)
    assert float(metric.count) == len(means)


def test_reset_state_forgets_previous_batches():
    metric = ActiveUnits(5)
    metric.update_state(_posterior_means())
    metric.reset_state()
    metric.update_state(np.tile(_posterior_means()[:1], (10, 1)))  # every unit constant
    assert float(metric.result()) == 0.0


def test_get_config_round_trip_keeps_units():
    metric = ActiveUnits(7, name="active_units_2")
    restored = ActiveUnits.from_config(metric.get_config())
    assert (restored.units, restored.name) == (7, "active_units_2")
    assert restored.total.shape == (7,)
