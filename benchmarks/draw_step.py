"""DRAW at the paper's size on this machine: training examples/s and the cost of L_k.

    python benchmarks/draw_step.py                        # zoo.draw's paper config, batch 100
    python benchmarks/draw_step.py --set attention=false

Times `model.train_step` (the step `training.fit` runs, compiled as the config says) on
random binary batches after one tracing step, and `log_likelihood` of one image with k =
zoo.draw.model.SAMPLES_PER_CHUNK importance samples (one chunk), the unit the served
budget MAX_SERVED_IMPORTANCE_SAMPLES is counted in. Prints medians over `--repeats`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import tensorflow as tf

import zoo
from zoo import config as config_lib
from zoo.draw import model as draw


def _median_seconds(function, repeats: int) -> float:
    function()  # traces
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    spec = zoo.get("zoo.draw")
    config = spec.make_config(**config_lib.parse_assignments(args.assignments, spec.config_class))
    model = spec.build(config)
    model.compile_for_training(steps_per_epoch=1)
    rng = np.random.default_rng(0)
    batch = {"image": tf.constant(rng.random((config.batch_size, *config.image_shape)) < 0.2, tf.float32)}
    train_step = tf.function(model.train_step, jit_compile=config.jit_compile)
    step_seconds = _median_seconds(lambda: float(train_step(batch)["loss"]), args.repeats)

    image = batch["image"][:1]
    log_likelihood = tf.function(model.log_likelihood)
    samples = tf.constant([draw.SAMPLES_PER_CHUNK], tf.int64)
    chunk_seconds = _median_seconds(lambda: log_likelihood(image, samples, tf.constant([0], tf.int64)).numpy(),
                                    max(1, args.repeats // 2))
    print(f"devices: {[device.name for device in tf.config.list_logical_devices()]}")
    print(f"T={config.glimpses} units={config.encoder_units}/{config.decoder_units} z={config.latent_units} "
          f"attention={config.attention} batch={config.batch_size}")
    print(f"train_step: {step_seconds:.3f} s, {config.batch_size / step_seconds:.1f} examples/s")
    print(f"log_likelihood, 1 image x {draw.SAMPLES_PER_CHUNK} samples: {chunk_seconds:.2f} s; "
          f"the served budget of {draw.MAX_SERVED_IMPORTANCE_SAMPLES} samples: "
          f"~{chunk_seconds * draw.MAX_SERVED_IMPORTANCE_SAMPLES / draw.SAMPLES_PER_CHUNK:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
