"""Choosing a tf.distribute strategy from `--strategy` and `--virtual_cpus`."""

from __future__ import annotations

import json
import os

import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")


class StrategyError(RuntimeError):
    """A strategy that cannot be set up here, with the fix."""


def use_virtual_cpus(count: int) -> None:
    """Splits the host CPU into `count` logical devices (MirroredStrategy without GPUs).

    Must run before TensorFlow initialises its devices, i.e. first thing in a process.
    """
    if count < 1:
        raise StrategyError(f"--virtual_cpus must be >= 1, got {count}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError as error:
        raise StrategyError(
            f"cannot split the CPU into {count} devices after TensorFlow started: {error}"
        ) from None


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """tf.distribute.MultiWorkerMirroredStrategy whose `reduce` accepts what Keras 3's `fit` passes.

    Keras reduces a whole dict batch in one call (keras-team/keras#20329) and scalar
    metrics along axis 0 (tensorflow/tensorflow#72388); the collective implementation
    supports neither. Each tensor is reduced on its own, scalars across replicas only.
    """

    def reduce(self, reduce_op, value, axis=None):
        reduce = super().reduce

        def reduce_tensor(tensor):
            local = tensor.values[0] if isinstance(tensor, tf.distribute.DistributedValues) else tensor
            return reduce(reduce_op, tensor, axis if local.shape.rank else None)

        return tf.nest.map_structure(reduce_tensor, value)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """auto: MirroredStrategy over several GPUs, else the default strategy.

    mirrored: all GPUs, or all logical CPUs when there is no GPU.
    multi_worker: MultiWorkerMirroredStrategy over the cluster in TF_CONFIG.
    """
    if name not in STRATEGIES:
        raise StrategyError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise StrategyError(
                "--strategy multi_worker needs the cluster in the TF_CONFIG environment variable, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
            )
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as error:
            raise StrategyError(f"TF_CONFIG is not valid JSON: {error}") from None
        return MultiWorkerMirroredStrategy()
    # Listing devices initialises TensorFlow's context, after which collectives cannot be configured.
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(devices=[device.name for device in devices])


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the one worker that writes checkpoints, summaries and exports."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if "chief" in resolver.cluster_spec().as_dict():
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def describe(strategy: tf.distribute.Strategy, global_batch: int) -> str:
    return (
        f"strategy: {type(strategy).__name__}, replicas: {strategy.num_replicas_in_sync}, "
        f"global batch: {global_batch}"
    )
