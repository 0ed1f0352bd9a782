"""training.sample_quality: the metrics against closed forms, the cached classifier, Inception from a local file."""

import math

import keras
import numpy as np
import pytest

from training import sample_quality

TINY = sample_quality.ClassifierSettings(epochs=1, max_examples=2000)  # ~90% accurate, trained in seconds
NUM_CLASSES = 10


def _real_images(count: int) -> np.ndarray:
    return np.concatenate(list(sample_quality.real_images("mnist", "test", max_examples=count, download=False)))


@pytest.fixture(scope="module")
def classifier_cache(tmp_path_factory):
    """ZOO_CACHE_DIR for this module, holding the TINY mnist classifier (trained here, once)."""
    cache = tmp_path_factory.mktemp("zoo_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZOO_CACHE_DIR", str(cache))
        sample_quality.load_classifier("mnist", TINY, download=False)
        yield cache


@pytest.fixture(scope="module")
def extractor(classifier_cache):
    return sample_quality.classifier_extractor("mnist", TINY, download=False)


@pytest.fixture(scope="module")
def real_images():
    return _real_images(600)


@pytest.fixture
def count_training(monkeypatch):
    """The list of datasets `train_classifier` is called for, from now on."""
    calls = []
    train = sample_quality.train_classifier

    def counting(dataset, settings, **kwargs):
        calls.append(dataset)
        return train(dataset, settings, **kwargs)

    monkeypatch.setattr(sample_quality, "train_classifier", counting)
    return calls


# Fréchet distance.


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    """With Σ = diag(σ²): FID = Σ_i (μ_a,i − μ_b,i)² + Σ_i (σ_a,i − σ_b,i)²."""
    rng = np.random.default_rng(0)
    mean_a, mean_b = rng.normal(size=(2, 6))
    scale_a, scale_b = rng.uniform(0.1, 3.0, size=(2, 6))
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((scale_a - scale_b) ** 2)
    assert sample_quality.frechet_distance(mean_a, np.diag(scale_a**2), mean_b, np.diag(scale_b**2)) == \
        pytest.approx(expected, rel=1e-10)


def test_frechet_distance_of_rotated_gaussians_is_the_closed_form():
    """Σ_a = Q diag(a) Qᵀ and Σ_b = Q diag(b) Qᵀ commute: FID = ‖μ_a − μ_b‖² + Σ_i (√a_i − √b_i)²."""
    rng = np.random.default_rng(1)
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    a, b = rng.uniform(0.0, 4.0, size=(2, 8))
    a[0] = 0.0  # singular covariance
    mean_a, mean_b = rng.normal(size=(2, 8))
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    cov_a, cov_b = rotation @ np.diag(a) @ rotation.T, rotation @ np.diag(b) @ rotation.T
    assert sample_quality.frechet_distance(mean_a, cov_a, mean_b, cov_b) == pytest.approx(expected, rel=1e-9)


def test_fid_is_symmetric():
    rng = np.random.default_rng(2)
    features_a = rng.normal(size=(300, 16))
    features_b = rng.normal(0.3, 1.5, size=(200, 16)) @ rng.normal(size=(16, 16))
    assert sample_quality.fid(features_a, features_b) == pytest.approx(sample_quality.fid(features_b, features_a),
                                                                       rel=1e-9)


def test_fid_of_fewer_samples_than_dimensions_matches_the_symmetric_square_root():
    """fid() factors Σ_a by the centred features when N_a ≤ D; frechet_distance uses Σ_a^{1/2}."""
    rng = np.random.default_rng(6)
    few, many = rng.normal(size=(5, 20)), rng.normal(0.5, 2.0, size=(40, 20))
    expected = sample_quality.frechet_distance(*sample_quality.gaussian_statistics(few),
                                               *sample_quality.gaussian_statistics(many))
    # Σ_a^{1/2} of a singular Σ_a turns rounding-level eigenvalues (~1e-16) into ~1e-8 terms.
    assert sample_quality.fid(few, many) == pytest.approx(expected, rel=1e-7)
    assert sample_quality.fid(many, few) == pytest.approx(expected, rel=1e-7)


def test_fid_of_one_dimensional_features_is_the_closed_form():
    rng = np.random.default_rng(7)
    a, b = rng.normal(1.0, 2.0, size=(100, 1)), rng.normal(-1.0, 0.5, size=(80, 1))
    expected = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert sample_quality.fid(a, b) == pytest.approx(expected, rel=1e-9)


def test_fid_of_a_set_with_itself_is_zero(extractor, real_images):
    features, _ = extractor([real_images])
    scale = np.trace(np.cov(features, rowvar=False))
    assert abs(sample_quality.fid(features, features)) < 1e-6 * scale


def test_fid_grows_with_the_scale_of_added_noise(extractor, real_images):
    features, _ = extractor([real_images])
    rng = np.random.default_rng(3)
    noise = rng.standard_normal(real_images.shape).astype(np.float32)
    distances = [sample_quality.fid(features, extractor([np.clip(real_images + scale * noise, 0.0, 1.0)])[0])
                 for scale in (0.0, 0.05, 0.1, 0.2, 0.4)]
    assert distances[0] < 1e-6 * distances[1]
    assert all(earlier < later for earlier, later in zip(distances, distances[1:])), distances


# Classifier score and mode coverage.


@pytest.mark.parametrize("posterior", [[0.2, 0.3, 0.5], [0.0, 1.0, 0.0]])
def test_classifier_score_is_one_when_every_sample_has_the_same_posterior(posterior):
    assert sample_quality.classifier_score(np.tile(posterior, (50, 1))) == pytest.approx(1.0, abs=1e-12)


def test_classifier_score_is_the_number_of_classes_for_confident_evenly_spread_predictions():
    one_hot = np.eye(NUM_CLASSES)[np.arange(200) % NUM_CLASSES]
    assert sample_quality.classifier_score(one_hot) == pytest.approx(NUM_CLASSES, rel=1e-12)


def test_classifier_score_lies_between_one_and_the_number_of_classes():
    posteriors = np.random.default_rng(4).dirichlet(np.full(NUM_CLASSES, 0.3), size=500)
    assert 1.0 <= sample_quality.classifier_score(posteriors) <= NUM_CLASSES


def test_evenly_spread_samples_cover_every_class_with_zero_kl():
    modes, kl = sample_quality.mode_coverage(np.eye(NUM_CLASSES)[np.arange(500) % NUM_CLASSES], NUM_CLASSES)
    assert modes == NUM_CLASSES and kl == pytest.approx(0.0, abs=1e-12)


def test_samples_of_one_class_cover_one_mode_with_kl_log_k():
    modes, kl = sample_quality.mode_coverage(np.tile(np.eye(NUM_CLASSES)[3], (500, 1)), NUM_CLASSES)
    assert modes == 1 and kl == pytest.approx(math.log(NUM_CLASSES), rel=1e-12)


def test_a_class_is_covered_from_a_tenth_of_its_even_share():
    """1000 samples, 10 classes: a class needs 10 samples (0.1 · 1000 / 10); 9 are strays."""
    labels = np.concatenate([np.arange(991) % 8, np.full(9, 8)])  # class 8: 9 samples, class 9: none
    assert sample_quality.mode_coverage(np.eye(NUM_CLASSES)[labels], NUM_CLASSES)[0] == 8
    labels[:1] = 8  # now 10
    assert sample_quality.mode_coverage(np.eye(NUM_CLASSES)[labels], NUM_CLASSES)[0] == 9


def test_with_few_samples_one_sample_covers_a_class():
    assert sample_quality.mode_coverage(np.eye(NUM_CLASSES)[[0, 1, 1, 7]], NUM_CLASSES)[0] == 3


def test_a_sampler_returning_the_real_images_scores_zero_fid(extractor, real_images):
    result = sample_quality.measure(lambda seeds: real_images[seeds.numpy()], [real_images[:250], real_images[250:]],
                                    extractor, len(real_images))
    assert result["fid"] < 1e-6 * result["fid_floor"]
    assert result["modes_covered"] == NUM_CLASSES and 0.0 <= result["class_kl"] < 0.5
    assert 1.0 <= result["classifier_score"] <= NUM_CLASSES
    assert (result["feature_extractor"], result["num_samples"]) == ("classifier", len(real_images))
    assert result["classifier_accuracy"] == extractor.accuracy


# The cached classifier.


def test_the_classifier_features_are_its_penultimate_layer_and_its_posteriors_a_softmax(extractor, real_images):
    features, probabilities = extractor([real_images[:7], real_images[7:20]])
    assert features.shape == (20, 128) and probabilities.shape == (20, NUM_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert 0.5 < extractor.accuracy <= 1.0  # even the tiny classifier (~70%) is far above chance (10%)


def test_a_cached_classifier_is_loaded_not_retrained(classifier_cache, count_training):
    path = sample_quality.classifier_path("mnist", TINY)
    assert path.parent.parent == classifier_cache and path.exists() and path.with_suffix(".json").exists()
    modified = path.stat().st_mtime_ns
    _, accuracy = sample_quality.load_classifier("mnist", TINY, download=False)
    assert count_training == [] and path.stat().st_mtime_ns == modified
    assert accuracy == pytest.approx(sample_quality.classifier_extractor("mnist", TINY, download=False).accuracy)


def test_each_training_setting_has_its_own_cache_file():
    paths = {sample_quality.classifier_path(dataset, settings)
             for dataset in ("mnist", "fashion_mnist")
             for settings in (sample_quality.ClassifierSettings(), TINY, sample_quality.ClassifierSettings(seed=1),
                              sample_quality.ClassifierSettings(epochs=2))}
    assert len(paths) == 8
    assert sample_quality.classifier_path("mnist", TINY) == sample_quality.classifier_path(
        "mnist", sample_quality.ClassifierSettings(epochs=1, max_examples=2000))


def test_cache_folder_follows_zoo_cache_dir_then_xdg_cache_home_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ZOO_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert sample_quality.cache_dir() == tmp_path / "home" / ".cache" / "generative_zoo"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sample_quality.cache_dir() == tmp_path / "xdg" / "generative_zoo"
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "zoo"))
    assert sample_quality.cache_dir() == tmp_path / "zoo"


def test_a_corrupt_cache_file_is_retrained_into_the_same_classifier(classifier_cache, monkeypatch, tmp_path,
                                                                      count_training):
    """Retraining is seeded, so the classifier that replaces a corrupt file equals the original."""
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path))
    path = sample_quality.classifier_path("mnist", TINY)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a zip file")
    model, _ = sample_quality.load_classifier("mnist", TINY, download=False)
    assert count_training == ["mnist"]
    reloaded = keras.models.load_model(path)
    original = keras.models.load_model(classifier_cache / path.relative_to(tmp_path))
    for retrained, first in zip(reloaded.get_weights(), original.get_weights()):
        np.testing.assert_allclose(retrained, first, atol=1e-6)
    assert not list(path.parent.glob(".*"))  # no temporary files left behind


def test_a_dataset_without_a_classifier_is_an_error_naming_the_known_ones():
    with pytest.raises(sample_quality.SampleQualityError, match="binarized_mnist, fashion_mnist, mnist"):
        sample_quality.classifier_extractor("omniglot")


# Inception-v3 from a local file.


def test_inception_input_is_rgb_299_in_minus_one_to_one():
    images = np.stack([np.zeros((28, 28, 1)), np.ones((28, 28, 1))]).astype(np.float32)
    prepared = keras.ops.convert_to_numpy(sample_quality.inception_preprocess(images))
    assert prepared.shape == (2, 299, 299, 3)
    np.testing.assert_allclose(prepared[0], -1.0)
    np.testing.assert_allclose(prepared[1], 1.0)
