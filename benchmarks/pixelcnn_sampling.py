"""Naive vs cached PixelCNN sampling (Ramachandran et al. 2017), side by side in one run.

    python benchmarks/pixelcnn_sampling.py                          # both entries, 28×28, batch 1 and 16
    python benchmarks/pixelcnn_sampling.py --models zoo.gated_pixelcnn --batches 1 16 64 --repeats 5

For each registry entry (its default config: 28×28 binarized MNIST), batch size and
execution mode, both samplers run `model.sample` on the same seeds, untrained
weights (speed does not depend on them). Modes: "serving", the loop as the
exported signatures trace it (a `tf.function` whose seeds have an unknown batch
size) run by TensorFlow's graph executor; "xla", the loop compiled by XLA
(`model.sample(seeds, jit_compile=True)`, local sampling and TensorBoard grids).
Each timing is the median of `--repeats` calls after a warm-up call that traces
(and compiles) the loop. The script checks that both samplers drew identical
images, then prints images/s and the speed-up (target: ≥ 20×) per mode as a
markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import zoo  # noqa: E402

TARGET = 20.0


MODES = ("serving", "xla")


def sampling_function(model, sampler: str, mode: str):
    """seeds → images, as `mode` runs the sampler."""
    if mode == "serving":  # as export traces serving_default: seeds int64 [None]
        return tf.function(lambda seeds: model.sample(seeds, sampler=sampler),
                           input_signature=[tf.TensorSpec([None], tf.int64)])
    return lambda seeds: model.sample(seeds, sampler=sampler, jit_compile=True)


def seconds_per_call(model, seeds, sampler: str, mode: str, repeats: int) -> tuple[float, np.ndarray]:
    sample = sampling_function(model, sampler, mode)
    images = sample(seeds).numpy()  # traces (and compiles) the loop
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sample(seeds).numpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times), images


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["zoo.pixelcnn", "zoo.gated_pixelcnn"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per cell (median reported)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every model, as in training.fit")
    args = parser.parse_args(argv)

    print(f"TensorFlow {tf.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, devices: {[device.name for device in tf.config.list_logical_devices()]}")
    print("| model | batch | mode | naive images/s | cached images/s | speed-up | identical |")
    print("|---|---|---|---|---|---|---|")
    worst = {mode: float("inf") for mode in args.modes}
    for name in args.models:
        spec = zoo.get(name)
        config = spec.make_config(**zoo.config.parse_assignments(args.overrides, spec.config_class))
        model = spec.build(config)
        for batch, mode in itertools.product(args.batches, args.modes):
            seeds = tf.range(batch, dtype=tf.int64)
            naive, naive_images = seconds_per_call(model, seeds, "naive", mode, args.repeats)
            cached, cached_images = seconds_per_call(model, seeds, "cached", mode, args.repeats)
            identical = bool(np.array_equal(naive_images, cached_images))
            worst[mode] = min(worst[mode], naive / cached)
            print(f"| {name} {config.image_shape[0]}×{config.image_shape[1]} | {batch} | {mode} | {batch / naive:.2f} | "
                  f"{batch / cached:.1f} | {naive / cached:.1f}× | {'yes' if identical else 'NO'} |", flush=True)
    print()
    for mode, speed_up in worst.items():
        print(f"{mode}: smallest speed-up {speed_up:.1f}× (target ≥ {TARGET:.0f}×): "
              f"{'met' if speed_up >= TARGET else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
