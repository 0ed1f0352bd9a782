"""Training throughput: `training.fit` vs a minimal hand-written loop, side by side.

    python benchmarks/train_throughput.py               # zoo.iwae, k = 1 and 50, batch 100
    python benchmarks/train_throughput.py --steps_per_execution 1   # fit calling back every step

For each k, both paths train the same network (`zoo.iwae`, one stochastic layer)
on the same tf.data pipeline for the same number of steps, and the script prints
examples/s of each and their ratio (target: fit / hand-written ≥ 0.95).

* fit path: `training.fit.main` itself (callbacks, checkpoints, TensorBoard and
  summaries included, fit's default steps per execution unless
  `--steps_per_execution` says otherwise), with a callback timing its training steps.
* hand-written path: one `tf.function` with a GradientTape and Adam over the
  model's log-weights.

The paths alternate in blocks of `--steps` steps inside one process (each epoch
of fit is followed by a block of the hand-written loop), and the medians over
`--blocks` blocks count, so load from other processes hits both paths alike.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import keras
import tensorflow as tf

import zoo
from training import data, fit
from zoo.common import bounds


class HandwrittenLoop:
    """The same network trained by one `tf.function` (GradientTape + Adam), no Keras loop."""

    def __init__(self, k: int, batch_size: int):
        spec = zoo.get("zoo.iwae")
        config = spec.make_config(k=k, batch_size=batch_size)
        self.model = model = spec.build(config)
        optimizer = keras.optimizers.Adam(1e-3, epsilon=config.adam_epsilon)
        batches, _ = data.load(spec.dataset(config), "train", batch_size)
        self.iterator = iter(batches)
        self.step = 0

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

        self.train_step = train_step

    def seconds(self, steps: int) -> float:
        """Wall time of `steps` training steps."""
        started = time.perf_counter()
        for _ in range(steps):
            loss = self.train_step(next(self.iterator)["image"], tf.constant([self.step, 0], tf.int64))
            self.step += 1
        float(loss)
        return time.perf_counter() - started


class Interleave(keras.callbacks.Callback):
    """Times fit's training steps each epoch, then a block of the hand-written loop.

    Fit's steps are timed from the start of the first execution to the start of
    the last (Keras calls the batch hooks once per execution, with the index of its
    first step), so each timed interval holds whole steps with their callback overhead,
    and no epoch-level work (validation, checkpoint, image summaries). Having no
    batch-end hook, it does not stop Keras from dispatching the other callbacks'
    batch hooks asynchronously.
    """

    def __init__(self, handwritten: HandwrittenLoop, steps: int):
        super().__init__()
        self.handwritten, self.steps = handwritten, steps
        self.fit_step_seconds, self.handwritten_step_seconds = [], []
        handwritten.seconds(steps)  # trace and fill its shuffle buffer

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.first = time.perf_counter()
        self.last, self.last_batch = time.perf_counter(), batch

    def on_epoch_end(self, epoch, logs=None):
        if epoch > 0:  # epoch 0 traces the step function
            self.fit_step_seconds.append((self.last - self.first) / self.last_batch)
            self.handwritten_step_seconds.append(self.handwritten.seconds(self.steps) / self.steps)


def measure(k: int, batch_size: int, steps: int, blocks: int, steps_per_execution: list[str]) -> tuple[float, float, int]:
    """Median examples/s of (training.fit, hand-written loop) over `blocks` alternating blocks,
    and fit's steps per execution."""
    interleave = Interleave(HandwrittenLoop(k, batch_size), steps)
    with tempfile.TemporaryDirectory() as workdir:
        code = fit.main([
            "zoo.iwae", "--workdir", workdir, "--epochs", str(blocks + 1), "--steps_per_epoch", str(steps),
            "--validation_steps", "1", "--batch_size", str(batch_size), "--set", f"k={k}",
            "--no_export", "--verbose", "0", *steps_per_execution,
        ], extra_callbacks=[interleave])
    if code:
        raise SystemExit(f"training.fit failed with exit code {code}")
    return (batch_size / statistics.median(interleave.fit_step_seconds),
            batch_size / statistics.median(interleave.handwritten_step_seconds),
            interleave.model.steps_per_execution)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--steps", type=int, default=30, help="steps per timed block")
    parser.add_argument("--blocks", type=int, default=10, help="alternating blocks per path; medians count")
    parser.add_argument("--steps_per_execution", type=int, help="passed to training.fit (default: fit's own)")
    args = parser.parse_args(argv)
    steps_per_execution = [] if args.steps_per_execution is None else ["--steps_per_execution",
                                                                        str(args.steps_per_execution)]

    print(f"devices: {[device.name for device in tf.config.list_logical_devices()]}")
    print("| k | batch | fit steps per execution | fit examples/s | hand-written examples/s | ratio |")
    print("|---|---|---|---|---|---|")
    for k in args.ks:
        fitted, handwritten, per_execution = measure(k, args.batch_size, args.steps, args.blocks,
                                                     steps_per_execution)
        print(f"| {k} | {args.batch_size} | {per_execution} | {fitted:.0f} | {handwritten:.0f} | {fitted / handwritten:.3f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
