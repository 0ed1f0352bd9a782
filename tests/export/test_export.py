"""export/: the `.keras` file's Keras contracts, TF Serving version folders and `python -m export`."""

import json
import pathlib
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import export
import zoo
from export import __main__ as export_cli, runs
from serving import images as image_lib

SEEDS = np.array([0, 1, 2, 3, 2**40, -5], np.int64)


def staging_folders(directory: pathlib.Path) -> list:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob(".staging-*"))


@pytest.fixture(scope="module")
def tiny_model():
    """An untrained zoo.iwae: export does not care about training, and building takes no time."""
    spec = zoo.get("zoo.iwae")
    return spec.build(spec.make_config(hidden_units=(8,), latent_units=(2,)))


# Keras contracts (Keras's run_class_serialization_test).


def test_keras_file_reloads_in_a_fresh_process_with_identical_outputs(fresh_process_outputs, trained_run):
    model, inputs = trained_run.model, fresh_process_outputs.inputs
    reloaded = fresh_process_outputs.keras
    assert fresh_process_outputs.keras_report["class"] == type(model).__name__
    assert fresh_process_outputs.keras_report["config"] == json.loads(json.dumps(model.get_config()))
    np.testing.assert_array_equal(reloaded["sample"], model.sample(inputs["seeds"]))
    np.testing.assert_array_equal(reloaded["reconstruct"], model(inputs["images"]))


def test_get_config_from_config_round_trip_keeps_config_and_outputs(trained_run):
    model = trained_run.model
    config = model.get_config()
    revived = type(model).from_config(json.loads(json.dumps(config)))  # as stored in a .keras file
    assert json.dumps(revived.get_config(), sort_keys=True) == json.dumps(config, sort_keys=True)
    assert revived.config == model.config and revived.name == model.name
    revived.build((None, *model.config.image_shape))
    revived.set_weights(model.get_weights())
    np.testing.assert_array_equal(revived.sample(SEEDS), model.sample(SEEDS))


def test_serialized_model_deserializes_to_the_registered_class(trained_run):
    model = trained_run.model
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    assert serialized["registered_name"] == f"zoo>{type(model).__name__}"
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is type(model)
    assert revived.get_config() == model.get_config()


# Version folders.


def test_versions_lists_integer_folders_in_ascending_order(tmp_path):
    for name in ("10", "2", ".staging-3", "notes"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    assert export.versions(tmp_path) == [2, 10]
    assert export.versions(tmp_path / "missing") == []


def test_exports_into_a_new_folder_take_consecutive_versions_from_one(tiny_model, tmp_path):
    workdir = tmp_path / "not" / "yet" / "there"
    first = export.export(tiny_model, workdir, "iwae")
    second = export.export(tiny_model, workdir, "iwae")
    base = workdir / "serving" / "iwae"
    assert (first.version, second.version) == (1, 2)
    assert (first.savedmodel_dir, second.savedmodel_dir) == (str(base / "1"), str(base / "2"))
    assert export.versions(base) == [1, 2]
    assert all((base / version / "saved_model.pb").is_file() for version in ("1", "2"))
    assert first.keras_path == second.keras_path == str(workdir / "model.keras")
    assert pathlib.Path(first.keras_path).is_file()
    assert staging_folders(workdir) == []


def test_export_writes_the_grid_of_the_models_samples_on_seeds_0_to_15_as_a_png(tiny_model, tmp_path):
    exported = export.export(tiny_model, tmp_path, "iwae")
    assert exported.samples_path == str(tmp_path / "samples.png")
    decoded = np.asarray(Image.open(exported.samples_path))
    assert decoded.shape == (4 * 29 + 1, 4 * 29 + 1)  # 4 × 4 images of 28 × 28, 1 pixel apart
    samples = tiny_model.sample(tf.range(16, dtype=tf.int64)).numpy()
    np.testing.assert_array_equal(decoded, np.round(image_lib.grid(samples)[..., 0] * 255))
    assert staging_folders(tmp_path) == []


def test_export_refuses_an_existing_version_and_writes_nothing(tiny_model, tmp_path):
    base = tmp_path / "serving" / "iwae"
    for version in ("1", "3"):
        (base / version).mkdir(parents=True)
    with pytest.raises(export.ExportError) as raised:
        export.export(tiny_model, tmp_path, "iwae", version=3)
    assert str(base / "3") in str(raised.value)
    assert "omit --version to use 4" in str(raised.value)
    assert export.versions(base) == [1, 3]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["serving"]


@pytest.mark.parametrize("version", [0, -1])
def test_export_refuses_a_nonpositive_version(tiny_model, tmp_path, version):
    with pytest.raises(export.ExportError, match="positive integer"):
        export.export(tiny_model, tmp_path, "iwae", version=version)
    assert list(tmp_path.iterdir()) == []


# python -m export WORKDIR


@pytest.fixture
def iwae_workdir(train, tmp_path) -> pathlib.Path:
    """A copy of the zoo.iwae run's workdir; the CLI does not depend on the model, so one variant serves."""
    return pathlib.Path(shutil.copytree(train("iwae").workdir, tmp_path / "iwae"))


def test_cli_exports_the_checkpoint_as_the_next_version(run_main, iwae_workdir):
    result = run_main(export_cli.main, [iwae_workdir])
    assert result.returncode == 0, result.stderr
    base = iwae_workdir / "serving" / "iwae"
    assert f"savedmodel: {base / '2'} (version 2)" in result.stdout
    assert f"samples: {iwae_workdir / 'samples.png'}" in result.stdout
    assert "after 1 epochs" in result.stdout
    assert export.versions(base) == [1, 2]
    assert staging_folders(iwae_workdir) == []


def test_cli_refuses_an_existing_version_naming_the_folder_and_the_next(run_python, iwae_workdir):
    result = run_python(["-m", "export", iwae_workdir, "--version", "1"])
    assert result.returncode == 2, result.stderr
    assert str(iwae_workdir / "serving" / "iwae" / "1") in result.stderr
    assert "omit --version to use 2" in result.stderr
    assert "Traceback" not in result.stderr
    assert export.versions(iwae_workdir / "serving" / "iwae") == [1]
    assert staging_folders(iwae_workdir) == []


@pytest.mark.parametrize("missing, message", [
    ("run.json", "run.json is missing"),
    ("checkpoint", "has no checkpoint yet; train at least one epoch"),
])
def test_cli_on_a_folder_without_a_trained_run_exits_2_with_the_fix(run_main, tmp_path, missing, message):
    workdir = tmp_path / "run"
    workdir.mkdir()
    if missing == "checkpoint":
        spec = zoo.get("zoo.iwae")
        runs.write_run(workdir, spec, spec.make_config())
    result = run_main(export_cli.main, [workdir])
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {workdir}")
    assert message in result.stderr
    assert not (workdir / "serving").exists() and not (workdir / "model.keras").exists()
