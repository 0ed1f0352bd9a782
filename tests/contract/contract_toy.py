"""A toy registry entry: the smallest model the contract accepts.

Each pixel is an independent Bernoulli with a learned logit, trained by maximum
likelihood. The contract suite registers it beside the zoo's entries to show that a
new entry is covered without a test of its own.
"""

import dataclasses

import keras
import tensorflow as tf

from zoo import config as config_lib, registry
from zoo.common import signatures, steps
from zoo.common.serialization import ConfigSerialization
from zoo.common.stateless import per_example_uniform


@dataclasses.dataclass(frozen=True)
class ToyConfig(config_lib.TrainingConfig):
    image_shape: tuple[int, ...] = (4, 4, 1)


@keras.saving.register_keras_serializable(package="zoo_tests")
class ToyModel(ConfigSerialization, keras.Model):
    config_class = ToyConfig

    def __init__(self, config: ToyConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.logits = self.add_weight(shape=config.image_shape, initializer="zeros", name="logits")
        self.trackers = {"loss": keras.metrics.Mean(name="loss")}
        self.built = True  # no sub-layers: the one weight exists already

    @property
    def metrics(self):
        return list(self.trackers.values())

    def _nll(self, data):
        logits = tf.broadcast_to(self.logits, tf.shape(data["image"]))
        return {"loss": tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(data["image"], logits), [1, 2, 3])}

    def train_step(self, data):
        with tf.GradientTape() as tape:
            terms = self._nll(data)
            loss = tf.reduce_sum(terms["loss"]) / steps.global_batch_size(data["image"])
        self.optimizer.apply_gradients(zip(tape.gradient(loss, [self.logits]), [self.logits]))
        return steps.update_trackers(self.trackers, terms)

    def test_step(self, data):
        return steps.update_trackers(self.trackers, self._nll(data))

    def compile_for_training(self, steps_per_epoch: int) -> None:
        self.compile(optimizer=keras.optimizers.Adam(self.config.learning_rate), jit_compile=self.config.jit_compile)

    def sample(self, seeds):
        uniforms = per_example_uniform(seeds, list(self.config.image_shape), stream=0, minval=0.0, maxval=1.0)
        return tf.cast(uniforms < tf.sigmoid(self.logits), tf.float32)

    def serving_signatures(self):
        return signatures.seed_signatures(self.sample)

    def summaries(self, images):
        return {"samples": self.sample(tf.range(16, dtype=tf.int64))}


def build(config: ToyConfig) -> ToyModel:
    return ToyModel(config, name="toy")


ENTRY = registry.ModelSpec("zoo.contract_toy", "independent Bernoulli pixels (a test entry)", ToyConfig, build,
                           lambda config: registry.DatasetSpec(config.dataset, binarize=True),
                           evaluation=("exact_likelihood",))
