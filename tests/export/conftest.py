"""Fixtures for export/ and training/evaluate.py: one tiny training run per variant and pytest run.

Each variant is trained once per pytest run by the real CLI (`python -m training.fit`) in a temporary
workdir that the xdist workers share, which then holds run.json, a checkpoint, model.keras and serving/<name>/1.
Tests that write into a workdir get their own copy (`workdir_copy`). Reloads in fresh
processes run once per variant (`fresh_process_outputs`); the tests only read the results.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import export
import zoo
from export import runs

REPO = pathlib.Path(__file__).resolve().parents[2]
FIT_TIMEOUT_S = 300
SUBPROCESS_TIMEOUT_S = 180

FIT_FLAGS = ["--epochs", "1", "--max_examples", "200", "--batch_size", "20", "--steps_per_epoch", "5",
             "--validation_steps", "2", "--no_download", "--verbose", "2"]
RUNS = {  # variant id → (registry name, --set overrides)
    "iwae": ("zoo.iwae", ["hidden_units=16", "latent_units=4", "k=2"]),
    "vae2": ("zoo.vae", ["stochastic_layers=2", "hidden_units=16,8", "latent_units=6,4"]),
}

SEEDS = np.array([3, 141, -7, 2**40, 0, 11], np.int64)
PERMUTATION = np.array([4, 2, 0, 5, 3, 1])
IMPORTANCE_SAMPLES = np.array([1, 7, 30, 2], np.int64)  # per image of `inputs["images"]`


def subprocess_env() -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _run_python(args, timeout=SUBPROCESS_TIMEOUT_S, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)


def describe(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"


@pytest.fixture(scope="session")
def run_python():
    """`run_python(args, timeout=…)`: runs this interpreter on `args` in the repo root, TFDS env set."""
    return _run_python


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    variant: str
    workdir: pathlib.Path
    spec: zoo.ModelSpec
    model: keras.Model  # rebuilt here and restored from the run's checkpoint

    @property
    def stochastic_layers(self) -> int:
        return self.model.config.stochastic_layers

    @property
    def keras_path(self) -> pathlib.Path:
        return self.workdir / "model.keras"

    @property
    def savedmodel_dir(self) -> pathlib.Path:
        return self.workdir / "serving" / self.spec.short_name / "1"


@pytest.fixture(scope="session")
def train(made_once):
    """`train(variant) -> TrainedRun`, fitting each variant at most once per pytest run (shared by the workers)."""
    trained_runs, failures = {}, {}

    def trained(variant: str) -> TrainedRun:
        if variant in failures:  # fail fast instead of retraining for every test
            pytest.fail(failures[variant])
        if variant not in trained_runs:
            name, assignments = RUNS[variant]
            sets = [flag for assignment in assignments for flag in ("--set", assignment)]

            def fit(workdir):
                result = _run_python(["-m", "training.fit", name, "--workdir", workdir, *FIT_FLAGS, *sets],
                                     timeout=FIT_TIMEOUT_S)
                if result.returncode != 0:
                    failures[variant] = f"training.fit {name} failed: {describe(result)}"
                    pytest.fail(failures[variant])

            workdir = made_once(f"export-run-{variant}", fit)
            spec, _, model, _ = runs.load_trained_model(workdir)
            trained_runs[variant] = TrainedRun(variant, workdir, spec, model)
        return trained_runs[variant]

    return trained


@pytest.fixture(scope="session", params=list(RUNS))
def trained_run(request, train) -> TrainedRun:
    return train(request.param)


@pytest.fixture
def workdir_copy(trained_run, tmp_path) -> pathlib.Path:
    """A private copy of the trained run's workdir, for tests that write into it."""
    return pathlib.Path(shutil.copytree(trained_run.workdir, tmp_path / trained_run.variant))


# Fresh processes reloading exported models: the SavedModels in one that has TensorFlow only (this
# project and TFP are made unimportable before anything runs), the .keras files in one with the zoo.

_INPUT_FILE = "inputs.npz"

_RELOAD_SAVEDMODELS = (pathlib.Path(__file__).resolve().parents[1] / "tensorflow_only_process.py").read_text()

_RELOAD_SAVEDMODELS_LOOP = textwrap.dedent('''
    inputs, out_dir, model_dirs = dict(np.load(sys.argv[1])), sys.argv[2], sys.argv[3:]
    report = {}
    for index, model_dir in enumerate(model_dirs):
        signatures = tf.saved_model.load(model_dir).signatures
        np.savez(f"{out_dir}/savedmodel-{index}.npz", **calls(signatures, inputs, index))
        report[model_dir] = describe(signatures)
    write_report(f"{out_dir}/savedmodel.json", report)
''')

_RELOAD_KERAS = textwrap.dedent('''
    import json, sys
    import keras
    import numpy as np
    import tensorflow as tf
    import zoo  # registers the zoo's serializables
''')

_RELOAD_KERAS_LOOP = textwrap.dedent('''
    inputs, out_dir, paths = dict(np.load(sys.argv[1])), sys.argv[2], sys.argv[3:]
    configs = []
    for index, path in enumerate(paths):
        model = keras.models.load_model(path)
        configs.append({"class": type(model).__name__, "config": model.get_config()})
        outputs = keras_calls(model, inputs, index)
        np.savez(f"{out_dir}/keras-{index}.npz", **{key: keras.ops.convert_to_numpy(value)
                                                   for key, value in outputs.items()})
    with open(f"{out_dir}/keras.json", "w") as file:
        json.dump(configs, file)
''')


def _run_reload_scripts(directory: pathlib.Path, scripts: dict, timeout: int) -> None:
    """Runs each of `scripts` (kind → (source, artifacts, cwd)) at once in a fresh process, as
    `python reload_KIND.py inputs.npz DIRECTORY *artifacts`, and fails with its output if one fails."""
    jobs = {}
    for kind, (script, artifacts, cwd) in scripts.items():
        path = directory / f"reload_{kind}.py"  # not keras.py: it would shadow `import keras`
        path.write_text(script)
        jobs[kind] = subprocess.Popen([sys.executable, path, directory / _INPUT_FILE, directory, *artifacts],
                                      cwd=cwd, env=subprocess_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
    try:
        for kind, job in jobs.items():
            stdout, stderr = job.communicate(timeout=timeout)
            result = subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)
            assert result.returncode == 0, f"{kind} reload failed: {describe(result)}"
    finally:
        for job in jobs.values():
            if job.poll() is None:
                job.kill()
                job.communicate()


@dataclasses.dataclass(frozen=True)
class Reloads:
    savedmodel: list  # per export: the arrays `calls` returned in the TensorFlow-only process
    keras: list  # per export: the arrays `keras_calls` returned on the reloaded .keras model
    keras_configs: list  # per export: {"class": the reloaded model's class name, "config": its get_config()}
    reports: list  # per export: {"signatures": name → input and output shapes, "op_types": name → ops}
    modules: list  # the top-level modules the SavedModel process imported


def _source_as(function, name: str) -> str:
    """The source of a top-level function, bound to `name` in the script it is pasted into."""
    return f"{inspect.getsource(function)}\n{name} = {function.__name__}\n"


def _reload_exports(directory: pathlib.Path, exported: list, inputs: dict, calls, keras_calls) -> Reloads:
    """Reloads each `export.Exported` in two fresh processes at once, given the arrays `inputs`:

    * one that cannot import this project or TFP loads the SavedModels and saves
      `calls(signatures, inputs, index)` (a dict of arrays) for each, with a report of
      every signature's shapes and op types;
    * one reopens each model.keras with `keras.models.load_model` and saves
      `keras_calls(model, inputs, index)`.

    `calls` and `keras_calls` are top-level functions of the test module: their source
    runs in the child processes, which import numpy as np, tensorflow as tf (and keras).
    """
    np.savez(directory / _INPUT_FILE, **inputs)
    _run_reload_scripts(directory, {
        "savedmodel": (_RELOAD_SAVEDMODELS + _source_as(calls, "calls") + _RELOAD_SAVEDMODELS_LOOP,
                       [item.savedmodel_dir for item in exported], directory),  # away from the repo
        "keras": (_RELOAD_KERAS + _source_as(keras_calls, "keras_calls") + _RELOAD_KERAS_LOOP,
                  [item.keras_path for item in exported], REPO),
    }, timeout=2 * SUBPROCESS_TIMEOUT_S)

    def arrays(name):
        with np.load(directory / f"{name}.npz") as loaded:
            return dict(loaded)

    report = json.loads((directory / "savedmodel.json").read_text())
    return Reloads(savedmodel=[arrays(f"savedmodel-{index}") for index in range(len(exported))],
                   keras=[arrays(f"keras-{index}") for index in range(len(exported))],
                   keras_configs=json.loads((directory / "keras.json").read_text()),
                   reports=[report[str(item.savedmodel_dir)] for item in exported],
                   modules=report["modules"])


@pytest.fixture(scope="session")
def reload_exports():
    """`reload_exports(directory, exported, inputs, calls, keras_calls) -> Reloads` (see `_reload_exports`)."""
    return _reload_exports


# The VAE family's exports (one per trained run).

def vae_calls(signatures, inputs, index):
    """Every VAE signature on the inputs (run, as source, in the TensorFlow-only reload process)."""
    del index  # one export

    def call(name, **kwargs):
        outputs = signatures[name](**{key: tf.constant(value) for key, value in kwargs.items()})
        return {key: value.numpy() for key, value in outputs.items()}

    seeds, images, ks = inputs["seeds"], inputs["images"], inputs["importance_samples"]
    n = len(images)
    results = {
        "sample": call("serving_default", seed=seeds)["images"],
        "sample_again": call("serving_default", seed=seeds)["images"],
        "sample_png_decoded": np.stack([tf.io.decode_png(png).numpy()
                                        for png in call("sample_png", seed=seeds)["images_bytes"]]),
        "sample_permuted": call("serving_default", seed=seeds[inputs["permutation"]])["images"],
        "reconstruct": call("reconstruct", images=images)["images"],
        "decode": call("decode", latent=inputs["latent"])["images"],
        "log_likelihood_one": call("log_likelihood", images=images, num_importance_samples=np.ones(n, np.int64),
                                   seed=seeds[:n])["log_likelihood"],
        "log_likelihood_mixed": call("log_likelihood", images=images, num_importance_samples=ks,
                                     seed=seeds[:n])["log_likelihood"],
        "log_likelihood_alone": np.concatenate([
            call("log_likelihood", images=images[i:i + 1], num_importance_samples=ks[i:i + 1],
                 seed=seeds[i:i + 1])["log_likelihood"]
            for i in range(n)
        ]),
    }
    results.update({f"encode.{key}": value for key, value in call("encode", images=images).items()})
    return results


def vae_keras_calls(model, inputs, index):
    del index
    return {"sample": model.sample(inputs["seeds"]), "reconstruct": model(inputs["images"])}


def _inputs(model, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    count = len(IMPORTANCE_SAMPLES)
    return {
        "seeds": SEEDS,
        "permutation": PERMUTATION,
        "images": (rng.random((count, *model.config.image_shape)) < 0.3).astype(np.float32),
        "latent": rng.standard_normal((count, model.latent_units[-1])).astype(np.float32),
        "importance_samples": IMPORTANCE_SAMPLES,
    }


@dataclasses.dataclass(frozen=True)
class FreshProcessOutputs:
    inputs: dict  # what both processes were given
    savedmodel: dict  # outputs of the SavedModel signatures, loaded with TensorFlow only
    savedmodel_report: dict  # signature specs, op types and imported top-level modules
    keras: dict  # outputs of the reloaded .keras model
    keras_report: dict  # its class name and get_config()


@pytest.fixture(scope="session")
def fresh_process_outputs(trained_run, tmp_path_factory) -> FreshProcessOutputs:
    """Reloads the run's SavedModel (TensorFlow only) and model.keras (with zoo) in two fresh processes."""
    directory = tmp_path_factory.mktemp(f"reload-{trained_run.variant}")
    inputs = _inputs(trained_run.model)
    exported = [export.Exported(str(trained_run.keras_path), str(trained_run.savedmodel_dir), 1,
                                str(trained_run.keras_path.with_name(export.SAMPLES_FILE)))]
    reloaded = _reload_exports(directory, exported, inputs, vae_calls, vae_keras_calls)
    return FreshProcessOutputs(inputs=inputs, savedmodel=reloaded.savedmodel[0],
                               savedmodel_report={**reloaded.reports[0], "modules": reloaded.modules},
                               keras=reloaded.keras[0], keras_report=reloaded.keras_configs[0])


# training.evaluate on a copy of a run.

EVALUATION_EXAMPLES = 200  # enough that sampling noise cannot hide L_20 − L_1 (about 2 nats here)


@dataclasses.dataclass(frozen=True)
class Evaluations:
    workdir: pathlib.Path
    examples: int  # --max_examples of both evaluations
    printed: list  # stdout of each evaluation, in order
    results: dict  # k → the parsed JSON line


@pytest.fixture(scope="session")
def evaluate_run(train, run_main, tmp_path_factory):
    """`evaluate_run(variant) -> Evaluations`: `python -m training.evaluate COPY --k K --max_examples 200`
    for K = 1, then K = 20, on a copy of the variant's run; run in this process, once per session."""
    from training import evaluate

    cache = {}

    def evaluated(variant: str) -> Evaluations:
        if variant not in cache:
            workdir = tmp_path_factory.mktemp("evaluate") / variant
            shutil.copytree(train(variant).workdir, workdir)
            printed, results = [], {}
            for k in (1, 20):
                argv = [workdir, "--k", k, "--max_examples", EVALUATION_EXAMPLES, "--no_download"]
                result = run_main(evaluate.main, argv)
                assert result.returncode == 0, result.stderr
                printed.append(result.stdout)
                results[k] = json.loads(result.stdout.splitlines()[-1])
            cache[variant] = Evaluations(workdir, EVALUATION_EXAMPLES, printed, results)
        return cache[variant]

    return evaluated


@pytest.fixture(scope="session")
def evaluations(trained_run, evaluate_run) -> Evaluations:
    return evaluate_run(trained_run.variant)
