"""Callbacks that know nothing about the model type: divergence guard and summaries."""

from __future__ import annotations

import json
import math

import keras
import tensorflow as tf

from serving import images as image_lib


class DivergenceError(RuntimeError):
    """Training diverged: the loss became NaN or Inf, or exploded past its running range.

    `exploded` is True for a finite loss past the ceiling, which a loss that may
    legitimately jump that far can avoid with a larger `divergence_factor`.
    """

    def __init__(self, message: str, exploded: bool = False):
        super().__init__(message)
        self.exploded = exploded


class StopOnDivergence(keras.callbacks.Callback):
    """Raises as soon as the training loss is NaN or Inf or explodes, before any checkpoint of it is saved.

    Keras logs the epoch's running mean of the loss, once per call of
    `steps_per_execution` steps, so a late explosion would be diluted by the steps
    before it (at step 900 of 938, by 900 times). Each report is turned back into
    the mean of the steps it covers: with running mean m_n after n steps of the
    epoch and m_p after the p steps of the report before,

        mean of steps p+1..n = (n · m_n − p · m_p) / (n − p).

    That mean explodes when it exceeds `highest + factor · scale`, where `highest`
    and `lowest` are the extremes of the loss so far (`starting_loss`, the model's
    loss before training, then every report's mean) and `scale = max(|highest|,
    |lowest|)`. The ceiling never comes down, so the usual decrease of early
    training and the noise between reports stay far below it (with the default
    factor 10, a positive loss must grow eleven-fold past its largest value), while a
    divergence passes it by orders of magnitude (a VAE at learning rate 1e9: 544 to
    about 5e19 in one step). Without `starting_loss` the first report sets the
    scale, and a run that explodes within its first call can only be stopped by NaN
    or Inf. `factor=None` checks NaN and Inf only: for losses whose scale means
    nothing, such as a GAN's.

    Async-safe: Keras runs it off the training thread and re-raises its error at
    the next step, so the check costs the training loop no device sync.
    """

    async_safe = True

    def __init__(self, factor: float | None, starting_loss: float | None = None):
        super().__init__()
        self.factor = factor
        known = starting_loss is not None and math.isfinite(starting_loss)
        self.extremes = (starting_loss, starting_loss) if known else None
        self.epoch = 0
        self.reported = (0, 0.0)  # (steps, running mean) of this epoch's last report

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.reported = (0, 0.0)  # Keras resets its metrics as each epoch begins

    def on_train_batch_end(self, batch, logs=None):
        if "loss" not in (logs or {}):
            return
        steps, running_mean = batch + 1, float(logs["loss"])  # `batch` is the last step of the call
        before, mean_before = self.reported
        self.reported = steps, running_mean
        if steps <= before:
            return
        loss = (steps * running_mean - before * mean_before) / (steps - before)
        if not math.isfinite(running_mean):
            loss = running_mean  # inf - inf would read as NaN
        if math.isfinite(loss) and (self.factor is None or self._within_range(loss)):
            return
        where = f"step {steps}" if steps == before + 1 else f"steps {before + 1}-{steps}"
        message = f"loss became {loss:.4g} at epoch {self.epoch + 1}, {where}"
        if math.isfinite(loss):
            lowest, highest = self.extremes
            message += (f": more than divergence_factor={self.factor:g} times its scale "
                        f"({max(abs(lowest), abs(highest)):.4g}) above its largest value so far ({highest:.4g})")
        raise DivergenceError(message, exploded=math.isfinite(loss))

    def _within_range(self, loss: float) -> bool:
        """Whether `loss` is below the ceiling; if so, it joins the extremes."""
        lowest, highest = self.extremes or (loss, loss)
        scale = max(abs(lowest), abs(highest))
        if scale > 0 and loss > highest + self.factor * scale:
            return False
        self.extremes = min(lowest, loss), max(highest, loss)
        return True


def starting_loss(model: keras.Model, batches: tf.data.Dataset) -> float | None:
    """The model's loss on `batches` before training (None if it reports none), leaving no trace:
    its non-trainable variables, such as the random streams `test_step` draws from, are put back."""
    variables = model.non_trainable_variables
    values = [variable.numpy() for variable in variables]
    loss = model.evaluate(batches, verbose=0, return_dict=True).get("loss")
    for variable, value in zip(variables, values):
        variable.assign(value)
    return None if loss is None else float(loss)


class ScalarSummaries(keras.callbacks.Callback):
    """TensorBoard scalars: per epoch in runs `train` and `validation`, per step in `steps`.

    Epoch tags follow Keras's TensorBoard callback (`epoch_loss`, …,
    `epoch_learning_rate`). Per-step scalars (the batch logs and the learning
    rate) are written every `every` steps (at the first batch hook on or after each
    multiple, when Keras runs several steps per call). Keras's own callback dispatches summary
    ops for every metric on every batch, which costs ~20% of a small model's step
    time; this one does no work on the steps it does not record, and is async-safe
    (Keras calls its batch hook off the training thread).
    """

    async_safe = True

    def __init__(self, log_dir: str, every: int):
        super().__init__()
        self.writers = {
            run: tf.summary.create_file_writer(f"{log_dir}/{run}") for run in ("train", "validation", "steps")
        }
        self.every = every

    def _write(self, run: str, step: int, scalars: dict) -> None:
        with self.writers[run].as_default(step=step):
            for name, value in scalars.items():
                tf.summary.scalar(name, float(value))

    def _learning_rate(self) -> float:
        # A constant rate is a variable, mirrored under MirroredStrategy: float() cannot read that, and
        # NumPy 2 warns on np.array(variable) (tf.Variable.__array__ takes no copy=); a tensor reads cleanly.
        return float(tf.convert_to_tensor(self.model.optimizer.learning_rate))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start_step = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        step = self.epoch_start_step + batch + 1
        if step % self.every < self.model.steps_per_execution:
            self._write("steps", step, {**(logs or {}), "learning_rate": self._learning_rate()})

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        train = {f"epoch_{name}": value for name, value in logs.items() if not name.startswith("val_")}
        validation = {f"epoch_{name[4:]}": value for name, value in logs.items() if name.startswith("val_")}
        self._write("train", epoch, {**train, "epoch_learning_rate": self._learning_rate()})
        self._write("validation", epoch, validation)
        for writer in self.writers.values():
            writer.flush()


class RunSummaries(keras.callbacks.Callback):
    """TensorBoard extras: the run's config as text once, the model's summaries every epoch.

    `model.summaries(examples)` (name → images [N, H, W, C] in [0, 1], drawn as a grid, or strings [N],
    written as text) on a fixed batch of evaluation examples, so epochs are comparable. Scalars are
    written by `ScalarSummaries` next to these.
    """

    def __init__(self, log_dir: str, run_config: dict, examples: tf.Tensor):
        super().__init__()
        self.writer = tf.summary.create_file_writer(f"{log_dir}/images")
        self.run_config = run_config
        self.examples = examples

    def on_train_begin(self, logs=None):
        text = "```\n" + json.dumps(self.run_config, indent=2) + "\n```"
        with self.writer.as_default():
            tf.summary.text("config", text, step=0)
        self.writer.flush()

    def on_epoch_end(self, epoch, logs=None):
        with self.writer.as_default():
            for name, batch in self.model.summaries(self.examples).items():
                if batch.dtype == tf.string:
                    tf.summary.text(name, batch, step=epoch + 1)
                else:
                    tile = image_lib.grid(batch.numpy(), columns=8)
                    tf.summary.image(name, tile[None], step=epoch + 1)
        self.writer.flush()
