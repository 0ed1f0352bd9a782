"""Training throughput: `training.fit` vs a minimal hand-written loop, side by side.

    python benchmarks/train_throughput.py               # zoo.iwae, k = 1 and 50, batch 100

For each k, both paths train the same network (`zoo.iwae`, one stochastic layer)
on the same tf.data pipeline for the same number of steps, and the script prints
examples/s of each and their ratio (target: fit / hand-written ≥ 0.95).

* fit path: `training.fit.main` itself (callbacks, checkpoints, TensorBoard and
  summaries included), timed by a callback over the second epoch, after tracing
  and the shuffle buffer are warm.
* hand-written path: one `tf.function` with a GradientTape and Adam over the
  model's log-weights, timed over the same number of steps after a warm-up.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import keras
import tensorflow as tf

import zoo
from training import data, fit
from zoo import bounds


class _EpochTimer(keras.callbacks.Callback):
    """Wall time of the training batches of the last epoch (validation excluded)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds = time.perf_counter() - self.started


def fit_examples_per_second(k: int, batch_size: int, steps: int, workdir: str) -> float:
    timer = _EpochTimer()
    code = fit.main([
        "zoo.iwae", "--workdir", workdir, "--epochs", "2", "--steps_per_epoch", str(steps),
        "--validation_steps", "1", "--batch_size", str(batch_size), "--set", f"k={k}",
        "--no_export", "--verbose", "0",
    ], extra_callbacks=[timer])
    if code:
        raise SystemExit(f"training.fit failed with exit code {code}")
    return steps * batch_size / timer.seconds


def handwritten_examples_per_second(k: int, batch_size: int, steps: int) -> float:
    spec = zoo.get("zoo.iwae")
    config = spec.make_config(k=k, batch_size=batch_size)
    model = spec.build(config)
    optimizer = keras.optimizers.Adam(1e-3, epsilon=config.adam_epsilon)
    batches, _ = data.load(spec.dataset(config), "train", batch_size)
    iterator = iter(batches)

    @tf.function
    def train_step(images, seed):
        noise = [
            tf.random.stateless_normal([k, batch_size, units], seed=seed + layer)
            for layer, units in enumerate(model.latent_units)
        ]
        with tf.GradientTape() as tape:
            log_weights = model._importance_terms(images, noise)["log_weights"]
            loss = -tf.reduce_mean(bounds.iwae_bound(log_weights))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    def run(count, offset):
        for step in range(count):
            loss = train_step(next(iterator)["image"], tf.constant([offset + step, 0], tf.int64))
        return float(loss)

    run(steps, 0)  # trace and fill the shuffle buffer
    started = time.perf_counter()
    run(steps, steps)
    return steps * batch_size / (time.perf_counter() - started)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per path")
    args = parser.parse_args(argv)

    print(f"devices: {[device.name for device in tf.config.list_logical_devices()]}")
    print("| k | batch | fit examples/s | hand-written examples/s | ratio |")
    print("|---|---|---|---|---|")
    for k in args.ks:
        handwritten = handwritten_examples_per_second(k, args.batch_size, args.steps)
        with tempfile.TemporaryDirectory() as workdir:
            fitted = fit_examples_per_second(k, args.batch_size, args.steps, workdir)
        print(f"| {k} | {args.batch_size} | {fitted:.0f} | {handwritten:.0f} | {fitted / handwritten:.3f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
