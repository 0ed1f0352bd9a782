"""tf.distribute: Mirrored over virtual CPUs, loss scaled by the global batch, two local workers."""

import glob
import json
import math
import os
import socket
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

import synthetic_texts
from training import distribute

# One plain-SGD step (learning rate 1, so the update is -gradient) from the same weights on the
# same global batch of 20, under the default strategy and under MirroredStrategy over 2 CPUs.
ONE_STEP_PER_STRATEGY = """
import json
from training import distribute
distribute.use_virtual_cpus(2)
import keras, numpy as np, tensorflow as tf, zoo
from training import data

spec = zoo.get("zoo.vae")
config = spec.make_config(hidden_units=(16,), latent_units=(4,), k=20, batch_size=20)
batch = next(iter(data.load(spec.dataset(config), "eval", 20, max_examples=20, download=False)[0]))
initial = spec.build(config).get_weights()

def one_sgd_step(strategy):
    with strategy.scope():
        model = spec.build(config)
        model.set_weights(initial)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0))
    loss = model.fit(tf.data.Dataset.from_tensors(batch), shuffle=False, verbose=0).history["loss"][0]
    update = np.concatenate([(w - w0).ravel() for w, w0 in zip(model.get_weights(), initial)])
    return {"replicas": strategy.num_replicas_in_sync, "loss": loss, "update": update.tolist()}

print(json.dumps([one_sgd_step(distribute.make_strategy(name)) for name in ("default", "mirrored")]))
"""


def _epoch_loss(stdout: str) -> float:
    (epoch_line,) = [line for line in stdout.splitlines() if " - loss: " in line]
    return float(epoch_line.split(" - loss: ")[1].split()[0])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def mirrored_runs(tmp_path_factory, fit_argv, start_fit, start_process):
    """Side by side: a tiny CLI fit under Mirrored over 2 virtual CPUs, and ONE_STEP_PER_STRATEGY."""
    workdir = tmp_path_factory.mktemp("mirrored") / "run"
    fit = start_fit(fit_argv("zoo.iwae", workdir, "--epochs", "1", "--strategy", "mirrored", "--virtual_cpus", "2"))
    one_step = start_process([sys.executable, "-c", ONE_STEP_PER_STRATEGY])
    return types.SimpleNamespace(workdir=workdir, fit=fit.wait(), one_step=one_step.wait())


def test_mirrored_over_two_virtual_cpus_trains_with_finite_loss(mirrored_runs, read_state):
    result = mirrored_runs.fit
    assert result.returncode == 0, result.explain()
    assert "strategy: MirroredStrategy, replicas: 2, global batch: 20" in result.stdout
    loss = _epoch_loss(result.stdout)
    assert math.isfinite(loss) and loss > 0
    assert read_state(mirrored_runs.workdir)["epoch"] == 1


TINY_DRAW = ("glimpses=2", "encoder_units=8", "decoder_units=8", "latent_units=4")


@pytest.mark.parametrize("name, flags", [
    ("zoo.draw", TINY_DRAW),
    ("zoo.align_draw", (*TINY_DRAW, "language_units=4", "alignment_units=6")),
    ("zoo.cvae", ("hidden_units=8", "hidden_layers=1", "latent_units=3")),
    ("zoo.avb", ("adaptive_contrast=true", "noise_basis=2", "noise_hidden_units=8", "encoder_units=8",
                 "decoder_units=8", "adversary_units=8", "latent_units=3", "contrast_samples=4")),
    ("zoo.vae_gan", ("filters=4", "latent_units=3")),
    ("zoo.neural_statistician", ("hidden_units=8", "context_units=3", "latent_units=2", "set_size=3")),
    ("zoo.text_vae", ("decoder=scnn", "vocabulary_size=50", "max_words=10", "embedding_size=8", "lstm_units=8",
                      "cnn_channels=8", "encoder_units=8", "latent_size=3")),
])
def test_models_with_their_own_steps_train_under_mirrored_over_two_virtual_cpus_with_finite_loss(
        name, flags, tmp_path, fit_argv, run_fit, read_state):
    """DRAW's T-step loop of two LSTM cells (and AlignDRAW's caption strings, tokenized per replica), the
    cVAE's per-example quadrant masks, AVB's two players and VAE-GAN's three, each with its optimizer, the
    Neural Statistician's batches of sets with sample dropout, the text VAE's word ids and annealed KL: the
    noise per replica and the loss over the global batch, several steps per compiled call."""
    workdir = tmp_path / "run"
    texts = ["--dataset", str(synthetic_texts.folder())] if name == "zoo.text_vae" else []
    result = run_fit(fit_argv(name, workdir, "--epochs", "1", "--strategy", "mirrored", "--virtual_cpus", "2",
                              "--steps_per_execution", "2", *texts,
                              model_flags=[part for flag in flags for part in ("--set", flag)]))
    assert result.returncode == 0, result.explain()
    assert "strategy: MirroredStrategy, replicas: 2, global batch: 20" in result.stdout
    loss = _epoch_loss(result.stdout)
    assert math.isfinite(loss) and loss > 0
    assert read_state(workdir)["epoch"] == 1


def test_loss_is_scaled_by_the_global_batch_so_updates_do_not_depend_on_replicas(mirrored_runs):
    """Dividing by the per-replica batch instead would double the summed gradient under 2 replicas.

    The noise ε is drawn per replica, so the two updates agree only up to Monte Carlo
    error (k = 20 keeps it near 10 %).
    """
    result = mirrored_runs.one_step
    assert result.returncode == 0, result.explain()
    single, mirrored = json.loads(result.stdout.strip().splitlines()[-1])
    assert (single["replicas"], mirrored["replicas"]) == (1, 2)
    single_update, mirrored_update = np.array(single["update"]), np.array(mirrored["update"])

    ratio = np.linalg.norm(mirrored_update) / np.linalg.norm(single_update)
    assert 0.8 < ratio < 1.25, ratio
    assert np.linalg.norm(mirrored_update - single_update) < 0.35 * np.linalg.norm(single_update)
    assert mirrored["loss"] == pytest.approx(single["loss"], rel=0.01)  # the mean over all 20 examples


def test_two_local_workers_train_and_only_the_chief_writes_the_run(tmp_path, fit_argv, start_fit, subprocess_env,
                                                                   read_state, expected_state):
    workdir = tmp_path / "shared"
    cluster = {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]}
    workers = [
        start_fit(fit_argv("zoo.vae", workdir, "--epochs", "1", "--strategy", "multi_worker"),
                  env=subprocess_env(TF_CONFIG=json.dumps({"cluster": cluster,
                                                           "task": {"type": "worker", "index": index}})))
        for index in range(2)
    ]
    chief, other = [worker.wait(timeout=300) for worker in workers]

    for result in (chief, other):
        assert result.returncode == 0, result.explain()
        assert "strategy: MultiWorkerMirroredStrategy, replicas: 2, global batch: 20" in result.stdout
    assert read_state(workdir) == expected_state("epoch-00001")
    assert sorted(os.listdir(workdir / "checkpoints")) == ["epoch-00001.weights.h5", "state.json"]
    assert json.loads((workdir / "run.json").read_text())["model"] == "zoo.vae"
    pid = lambda path: int(path.split(".")[-3])  # noqa: E731  events.out.tfevents.<time>.<host>.<pid>.<n>.v2
    assert {pid(path) for path in glob.glob(f"{workdir}/tensorboard/*/events.*")} == {workers[0].pid}
    assert {pid(path) for path in glob.glob(f"{workdir}/.worker-tensorboard/*/events.*")} == {workers[1].pid}


@pytest.mark.parametrize(
    "cluster, task_type, task_id, chief",
    [
        ({"worker": ["a:1", "b:1"]}, "worker", 0, True),
        ({"worker": ["a:1", "b:1"]}, "worker", 1, False),
        ({"chief": ["c:1"], "worker": ["a:1"]}, "chief", 0, True),
        ({"chief": ["c:1"], "worker": ["a:1"]}, "worker", 0, False),
    ],
)
def test_is_chief_picks_one_writer_per_cluster(cluster, task_type, task_id, chief):
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
    assert distribute.is_chief(types.SimpleNamespace(cluster_resolver=resolver)) is chief


def test_default_strategy_is_chief_and_described_with_one_replica():
    strategy = distribute.make_strategy("default")
    assert distribute.is_chief(strategy)
    assert distribute.describe(strategy, 20) == "strategy: _DefaultDistributionStrategy, replicas: 1, global batch: 20"


@pytest.mark.parametrize(
    "name, tf_config, message",
    [
        ("ring", None, "unknown strategy 'ring'; choose one of auto, default, mirrored, multi_worker"),
        ("multi_worker", None, "needs the cluster in the TF_CONFIG environment variable"),
        ("multi_worker", "{not json", "TF_CONFIG is not valid JSON"),
    ],
)
def test_make_strategy_errors_name_the_fix(name, tf_config, message, monkeypatch):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(distribute.StrategyError, match=message):
        distribute.make_strategy(name)


def test_virtual_cpus_must_be_positive_and_set_before_tensorflow_starts():
    with pytest.raises(distribute.StrategyError, match=">= 1"):
        distribute.use_virtual_cpus(0)
    tf.config.list_logical_devices("CPU")  # initialises this process's devices
    with pytest.raises(distribute.StrategyError, match="after TensorFlow started"):
        distribute.use_virtual_cpus(2)
