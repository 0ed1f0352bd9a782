"""The contract suite's fixtures: every registry entry, and a toy entry registered here, built once
from its tiny config, exported once by `export.export`, and reloaded in two fresh processes (one
for all the SavedModels, with TensorFlow only; one for all the .keras files)."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import contract_toy
import export
import synthetic_texts
import zoo
from training import data as training_data
from zoo import config as config_lib, registry
from zoo.common import text
from zoo.registry import DatasetSpec

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
ENTRIES = [*zoo.names(), contract_toy.ENTRY.name]  # a new registry entry is covered by being registered
SEEDS = np.array([3, 141, -7, 2**40, 0, 11], np.int64)
PERMUTATION = np.array([4, 2, 0, 5, 3, 1])
RELOAD_TIMEOUT_S = 600


@pytest.fixture(scope="module", autouse=True)
def toy_entry_registered():
    """The toy entry is in the registry while a module of this suite runs, and only then."""
    registry.register(contract_toy.ENTRY)
    yield
    registry.unregister(contract_toy.ENTRY.name)


@dataclasses.dataclass
class Entry:
    spec: zoo.ModelSpec
    config: object
    model: object  # built from the tiny config; tests must not train it
    image_shape: tuple

    def batch(self, size: int | None = None, seed: int = 0) -> dict:
        """A batch as the data pipeline would give it: binary or 8-bit images (or sets of items of one class,
        for a model of sets), labels and captions when the entry needs them; word ids for a model of text."""
        rng = np.random.default_rng(seed)
        size = size or self.config.batch_size
        data = self.spec.dataset(self.config)
        if data.text:
            tokenizer = text.Tokenizer(data.vocabulary, data.max_words, text.TEXT_PUNCTUATION)
            return {"text": tokenizer(tf.constant(self.texts(size, offset=seed * size)))}
        shape = ((size, data.set_size, *(data.item_shape or self.config.image_shape)) if data.set_size
                 else (size, *self.image_shape))
        images = (rng.random(shape) < 0.5) if data.binarize else rng.integers(0, 256, shape) / 255.0
        batch = {"image": tf.constant(images, tf.float32)}
        if data.labels or data.set_size:
            batch["label"] = tf.constant(rng.integers(0, 2, size), tf.int64)  # 2: every conditional model has >= 2
        if data.captions:
            tokenizer = text.Tokenizer(data.vocabulary, data.max_words)
            batch["caption"] = tokenizer(tf.constant(self.captions(size, offset=seed * size)))
        return batch

    def texts(self, size: int, offset: int = 0) -> np.ndarray:
        """`size` validation texts of the suite's folder of texts (`synthetic_texts`), again from the first
        when they run out, each cut to the model's max_words words (a served text may have no more)."""
        lines = (synthetic_texts.folder() / "validation.txt").read_text().splitlines()
        chosen = tf.constant([lines[(offset + i) % len(lines)] for i in range(size)])
        words = text.words(chosen, text.TEXT_PUNCTUATION)[:, :self.config.max_words]
        return tf.strings.reduce_join(words, axis=-1, separator=" ").numpy().astype(str)

    def strings(self, size: int) -> np.ndarray:
        """`size` strings a signature of the entry takes: texts for a model of text, else captions."""
        return self.texts(size) if self.spec.dataset(self.config).text else self.captions(size)

    def captions(self, size: int, offset: int = 0) -> np.ndarray:
        """`size` caption strings of the entry's dataset (the suite's synthetic one)."""
        name = self.spec.dataset(self.config).name
        dataset, _ = training_data.load(DatasetSpec(name, binarize=False, captions=True), "eval", offset + size,
                                        max_examples=offset + size, download=False)
        return next(iter(dataset))["caption"].numpy()[offset:].astype(str)


_ENTRIES: dict[str, Entry] = {}


def built(name: str) -> Entry:
    """The entry's tiny model, built once per session."""
    if name not in _ENTRIES:
        spec = zoo.get(name)
        config = spec.make_tiny_config()
        if spec.dataset(config).text:  # the suite's texts stand in for the entry's corpus
            config = config_lib.replace(config, dataset=str(synthetic_texts.folder()))
        if spec.dataset(config).count_vocabulary:  # as training.fit does, from the suite's data
            config = config.with_vocabulary(training_data.counted_vocabulary(spec.dataset(config), download=False))
        model = spec.build(config)
        image_shape = tuple(model.sample(tf.constant([0], tf.int64)).shape[1:])
        _ENTRIES[name] = Entry(spec, config, model, image_shape)
    return _ENTRIES[name]


@pytest.fixture
def entry(request) -> Entry:
    return built(request.param)


def pytest_generate_tests(metafunc):
    if "entry" in metafunc.fixturenames:
        metafunc.parametrize("entry", ENTRIES, indirect=True, ids=[name.removeprefix("zoo.") for name in ENTRIES])


# Fresh processes. The SavedModel one cannot import this project, TFP or the toy: a serving machine has
# TensorFlow only (tests/tensorflow_only_process.py).

_SAVEDMODELS = (HERE.parent / "tensorflow_only_process.py").read_text() + textwrap.dedent('''
    def numpy(outputs):  # PNG strings ("..._bytes") decoded, so that every output is a plain array
        return {key: np.stack([tf.io.decode_png(png).numpy() for png in value.numpy()])
                if key.endswith("_bytes") else value.numpy() for key, value in outputs.items()}

    out_dir, report = sys.argv[1], {}
    for index, model_dir in enumerate(sys.argv[2:]):
        signatures = tf.saved_model.load(model_dir).signatures
        with np.load(f"{out_dir}/inputs-{index}.npz") as loaded:
            inputs = dict(loaded)
        outputs = {}
        for name, function in signatures.items():
            given = {key.split(".", 1)[1]: tf.constant(value) for key, value in inputs.items()
                     if key.split(".", 1)[0] == name}
            outputs.update({f"{name}.{key}": value for key, value in numpy(function(**given)).items()})
        permuted = {key: tf.constant(value[inputs["permutation"]]) for key, value in inputs.items()
                    if key.startswith("serving_default.")}
        permuted = {key.split(".", 1)[1]: value for key, value in permuted.items()}
        outputs.update({f"serving_default_permuted.{key}": value.numpy()
                        for key, value in signatures["serving_default"](**permuted).items()})
        np.savez(f"{out_dir}/savedmodel-{index}.npz", **outputs)
        report[model_dir] = describe(signatures)
    write_report(f"{out_dir}/savedmodel.json", report)
''')

_KERAS = textwrap.dedent('''
    import json, sys
    import keras
    import numpy as np
    import tensorflow as tf
    import zoo  # registers the zoo's serializables
    import contract_toy  # and the toy's

    out_dir, classes = sys.argv[1], []
    for index, path in enumerate(sys.argv[2:]):
        model = keras.models.load_model(path)
        classes.append(type(model).__name__)
        seeds = np.load(f"{out_dir}/inputs-{index}.npz")["serving_default.seed"]
        np.savez(f"{out_dir}/keras-{index}.npz", sample=keras.ops.convert_to_numpy(model.sample(tf.constant(seeds))))
    with open(f"{out_dir}/keras.json", "w") as file:
        json.dump(classes, file)
''')


@dataclasses.dataclass(frozen=True)
class Reloaded:
    inputs: dict  # "<signature>.<input>" → what every declared signature was called with
    expected: dict  # "<signature>.<output>" → the declared functions' outputs in this process
    savedmodel: dict  # the same keys → the SavedModel's outputs in the TensorFlow-only process
    savedmodel_report: dict  # signature shapes and op types there
    savedmodel_modules: list  # top-level modules that process imported
    sample: np.ndarray  # `sample(seeds)` of the model, eagerly in this process
    keras_sample: np.ndarray  # the same of the reloaded .keras model
    keras_class: str
    samples_path: str  # the export's grid of samples, samples.png (samples.txt for a model of text)


def signature_inputs(entry: Entry, seed: int = 0) -> dict:
    """Inputs for every declared signature, "<signature>.<input>" → array of batch len(SEEDS):
    SEEDS for seeds, ones for other integers (a valid label, category or sample count for any
    model), uniform [0, 1) draws for floats (images, latents, codes, sets of two items), the
    dataset's captions for strings."""
    rng = np.random.default_rng(seed)
    inputs = {"permutation": PERMUTATION}
    for name, (_, specs) in entry.model.serving_signatures().items():
        for spec in specs:
            shape = [len(SEEDS), *(2 if size is None else size for size in spec.shape[1:])]  # None: a set's size
            if spec.name == "seed":
                value = SEEDS
            elif spec.dtype == tf.string:
                value = entry.strings(len(SEEDS))
            elif spec.dtype.is_integer:
                value = np.ones(shape, spec.dtype.as_numpy_dtype)
            else:
                value = rng.random(shape).astype(spec.dtype.as_numpy_dtype)
            inputs[f"{name}.{spec.name}"] = value
    return inputs


def declared_outputs(model, inputs: dict) -> dict:
    """Every declared signature's function called eagerly in this process, PNGs decoded: the reference the
    SavedModel's traced graphs must reproduce (eager calls skip a second trace, several seconds per entry)."""
    outputs = {}
    for name, (function, specs) in model.serving_signatures().items():
        for key, value in function(*[tf.constant(inputs[f"{name}.{spec.name}"]) for spec in specs]).items():
            if key.endswith("_bytes"):
                value = tf.stack([tf.io.decode_png(png) for png in tf.unstack(value)])
            outputs[f"{name}.{key}"] = value.numpy()
    return outputs


def _run_all(directory: pathlib.Path, scripts: dict) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE), os.environ.get("PYTHONPATH", "")])}
    jobs = {}
    for kind, (script, artifacts) in scripts.items():
        path = directory / f"reload_{kind}.py"
        path.write_text(script)
        jobs[kind] = subprocess.Popen([sys.executable, path, directory, *artifacts],
                                      cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
    try:
        for kind, job in jobs.items():
            _, stderr = job.communicate(timeout=RELOAD_TIMEOUT_S)
            assert job.returncode == 0, f"{kind} reload failed (exit {job.returncode}):\n{stderr[-4000:]}"
    finally:
        for job in jobs.values():
            if job.poll() is None:
                job.kill()
                job.communicate()


@pytest.fixture(scope="module")
def reloads(tmp_path_factory) -> dict[str, Reloaded]:
    """name → what its export gave after reloading, for every entry (exported and reloaded once; module
    scope, so that the toy entry is registered when it is built)."""
    directory = tmp_path_factory.mktemp("contract-reloads")
    exported = {name: export.export(built(name).model, directory / name, built(name).spec.short_name)
                for name in ENTRIES}
    inputs = {name: signature_inputs(built(name)) for name in ENTRIES}
    for index, name in enumerate(ENTRIES):
        np.savez(directory / f"inputs-{index}.npz", **inputs[name])
    _run_all(directory, {
        "savedmodel": (_SAVEDMODELS, [exported[name].savedmodel_dir for name in ENTRIES]),
        "keras": (_KERAS, [exported[name].keras_path for name in ENTRIES]),
    })
    report = json.loads((directory / "savedmodel.json").read_text())
    keras_classes = json.loads((directory / "keras.json").read_text())

    def arrays(name):
        with np.load(directory / f"{name}.npz", allow_pickle=True) as loaded:  # texts are object arrays
            return dict(loaded)

    return {name: Reloaded(inputs=inputs[name], expected=declared_outputs(built(name).model, inputs[name]),
                           savedmodel=arrays(f"savedmodel-{index}"),
                           savedmodel_report=report[exported[name].savedmodel_dir],
                           savedmodel_modules=report["modules"],
                           sample=built(name).model.sample(tf.constant(SEEDS)).numpy(),
                           keras_sample=arrays(f"keras-{index}")["sample"], keras_class=keras_classes[index],
                           samples_path=exported[name].samples_path)
            for index, name in enumerate(ENTRIES)}
