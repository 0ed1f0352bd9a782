"""python -m training.fit zoo.<name>: train a zoo model, checkpoint, summarise, export.

    python -m training.fit zoo.iwae --workdir runs/iwae --set k=5 --set stochastic_layers=2

Flags set the run (epochs, batch, strategy, workdir); model hyperparameters are
config fields, changed with `--set key=value`. `--epochs`, `--batch_size`,
`--learning_rate` and `--dataset` are shorthands for the config fields of the
same name. Training uses the model's own `train_step` under `fit`; this module
knows nothing model-specific.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from serving import startup


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.fit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="registry name, e.g. zoo.vae or zoo.iwae")
    parser.add_argument("--workdir", help="where everything of the run goes (default: runs/<name>)")
    parser.add_argument("--epochs", type=int, help="config field epochs")
    parser.add_argument("--steps_per_epoch", type=int, help="cap on training steps per epoch")
    parser.add_argument("--validation_steps", type=int, help="cap on evaluation steps per epoch")
    parser.add_argument("--steps_per_execution", type=int, default=10,
                        help="training steps per compiled call; callbacks run once per call "
                             "(lowered to a divisor of the steps per epoch)")
    parser.add_argument("--max_examples", type=int, help="use only the first N examples of each split")
    parser.add_argument("--batch_size", type=int, help="config field batch_size (global batch)")
    parser.add_argument("--learning_rate", type=float, help="config field learning_rate")
    parser.add_argument("--dataset", help="config field dataset, e.g. mnist, binarized_mnist, or the path of a folder of texts")
    parser.add_argument("--strategy", default="auto", help="auto, default, mirrored or multi_worker")
    parser.add_argument("--virtual_cpus", type=int, default=0,
                        help="split the host CPU into N logical devices (try mirrored without GPUs)")
    parser.add_argument("--resume", action="store_true", help="continue from the workdir's last checkpoint")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field; repeatable")
    parser.add_argument("--no_download", action="store_true",
                        help="fail instead of downloading data missing from TFDS_DATA_DIR")
    parser.add_argument("--no_export", action="store_true", help="skip the export at the end")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2, 3),
                        help="Keras progress: 0 silent, 1 bar, 2 line per epoch; 3 as 2, plus TensorFlow's own logs")
    return parser.parse_args(argv)


def main(argv=None, extra_callbacks=()) -> int:
    """Runs the CLI; `extra_callbacks` lets benchmarks observe the exact same fit."""
    args = parse_args(argv)
    startup.quiet_tensorflow(show=args.verbose == 3)
    for flag in ("steps_per_epoch", "validation_steps", "steps_per_execution", "max_examples"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            return _fail(f"--{flag} must be at least 1, got {value}")
    # Virtual devices must be configured before TensorFlow touches any device.
    from training import distribute

    try:
        if args.virtual_cpus:
            distribute.use_virtual_cpus(args.virtual_cpus)
        strategy = distribute.make_strategy(args.strategy)
    except distribute.StrategyError as error:
        return _fail(error)

    import export
    import zoo
    from export import runs
    from training import callbacks as callbacks_lib, checkpoint, data

    try:
        spec = zoo.get(args.model)
        workdir = args.workdir or f"runs/{spec.short_name}"
        overrides = zoo.config.parse_assignments(args.assignments, spec.config_class)
        flags = {assignment.partition("=")[0].strip(): f"--set {assignment}" for assignment in args.assignments}
        if args.dataset is not None:
            args.dataset = data.canonical_name(args.dataset)
        for field in ("epochs", "batch_size", "learning_rate", "dataset"):
            if getattr(args, field) is not None:
                overrides[field] = getattr(args, field)
                flags[field] = f"--{field} {getattr(args, field)}"
        if args.resume:
            spec, saved = runs.read_run(workdir)
            config = zoo.config.replace(saved, **overrides)
        elif runs.has_checkpoint(runs.checkpoint_dir(workdir)):
            raise runs.WorkdirError(
                f"{workdir} already holds a run; pass --resume to continue it or choose another --workdir"
            )
        else:
            config = spec.make_config(**overrides)
        if config.batch_size % strategy.num_replicas_in_sync:
            raise zoo.ConfigError(
                f"batch_size={config.batch_size} does not split over {strategy.num_replicas_in_sync} "
                f"replicas; use a multiple of {strategy.num_replicas_in_sync}"
            )
        runs.check_writable(workdir)
        dataset_spec = spec.dataset(config)
        if dataset_spec.count_vocabulary:  # a new run of a model whose words come from its data
            config = config.with_vocabulary(data.counted_vocabulary(
                dataset_spec, max_examples=args.max_examples, download=not args.no_download))
            dataset_spec = spec.dataset(config)
            print(f"vocabulary: {len(config.vocabulary)} words, counted from the training "
                  f"{'texts' if dataset_spec.text else 'captions'} of {dataset_spec.name}")
        train, train_examples = data.load(dataset_spec, "train", config.batch_size,
                                          max_examples=args.max_examples, download=not args.no_download)
        evaluation, eval_examples = data.load(dataset_spec, "eval", config.batch_size,
                                              max_examples=args.max_examples, download=not args.no_download)
        data.check_image_shape(train, dataset_spec, config.image_shape)
        steps_per_epoch = data.steps(train_examples, config.batch_size, "train")
        if steps_per_epoch == 0:
            raise zoo.ConfigError(
                f"batch_size={config.batch_size} exceeds the {train_examples} training examples; "
                f"lower --batch_size or raise --max_examples"
            )
    except (zoo.UnknownModelError, zoo.ConfigError, runs.WorkdirError, data.DataError) as error:
        return _fail(error)

    if args.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, args.steps_per_epoch)
    if args.validation_steps:
        evaluation = evaluation.take(args.validation_steps)  # a finite pass, however many steps per call
    steps_per_execution = steps_per_call(steps_per_epoch, args.steps_per_execution, spec,
                                         strategy.num_replicas_in_sync)
    chief = distribute.is_chief(strategy)
    with strategy.scope():
        model = spec.build(config)
        try:
            model.compile_for_training(steps_per_epoch)  # may read files the config names (a model to start from)
        except zoo.ConfigError as error:
            return _fail(error)
        model.steps_per_execution = steps_per_execution
        try:
            restored = runs.load_checkpoint(model, runs.checkpoint_dir(workdir)) if args.resume else None
        except runs.WorkdirError as error:
            return _fail(_architecture_change(spec, saved, overrides, flags, workdir, steps_per_epoch) or error)
    initial_epoch = restored["epoch"] if restored else 0

    print(f"model: {spec.name} ({type(model).__name__}, {model.count_params():,} parameters)")
    print(f"dataset: {config.dataset} (binarize: {dataset_spec.binarize}), {train_examples} train / "
          f"{eval_examples} eval examples, {steps_per_epoch} steps per epoch ({steps_per_execution} per execution)")
    print(distribute.describe(strategy, config.batch_size))
    print(f"workdir: {workdir}" + (f" (resuming after epoch {initial_epoch})" if initial_epoch else ""))
    print(f"config: {json.dumps(_abridged(zoo.config.to_dict(config)))}")

    log_dir = str(runs.tensorboard_dir(workdir)) if chief else f"{workdir}/.worker-tensorboard"
    checkpointer = checkpoint.Checkpointer(workdir, spec, config, restored, enabled=chief)
    examples = next(iter(evaluation.take(1)))[dataset_spec.example_key][:32]
    # The loss before training sets the divergence check's scale, even if the first call already explodes.
    starting_loss = (callbacks_lib.starting_loss(model, evaluation.take(1))
                     if config.divergence_factor is not None else None)
    callbacks = [
        callbacks_lib.StopOnDivergence(config.divergence_factor, starting_loss),
        checkpointer,
        callbacks_lib.ScalarSummaries(log_dir, every=min(100, steps_per_epoch)),
        callbacks_lib.RunSummaries(log_dir, {"model": spec.name, **zoo.config.to_dict(config)}, examples),
        *extra_callbacks,
    ]
    started = time.monotonic()
    try:
        with checkpointer.stop_on_signals():
            history = model.fit(
                train,
                epochs=config.epochs,
                initial_epoch=initial_epoch,
                steps_per_epoch=steps_per_epoch,
                validation_data=evaluation,
                callbacks=callbacks,
                shuffle=False,
                verbose=min(args.verbose, 2),
            )
    except callbacks_lib.DivergenceError as error:
        return _fail(f"{error}; training stopped and {_how_to_continue(workdir, config, error.exploded)}")
    if checkpointer.stopped_by is not None:
        where = f"saved {checkpointer.saved}" if chief else "the chief worker saves the checkpoint"
        print(f"\nstopped by {checkpointer.stopped_by.name} after {checkpointer.completed_epochs} complete "
              f"epochs; {where}; continue with --resume", file=sys.stderr)
        return 130

    if chief:
        exported = None if args.no_export else export.export(model, workdir, spec.short_name)
        print("\n" + "\n".join(summary(spec, workdir, history.history, time.monotonic() - started, exported,
                                        download=not args.no_download)))
    return 0


def summary(spec, workdir, history: dict, seconds: float, exported, download: bool = True) -> list[str]:
    """The lines printed at the end of a run: its final metrics, its files and the commands to go on with.

    `history` is Keras's (metric → a value per epoch trained now); `seconds` the time from the first
    step to the end of the export; `exported` an `export.Exported`, or None when the run was not exported.
    """
    from export import runs
    from training import evaluate

    epochs = max(map(len, history.values()), default=0)
    lines = [f"trained {spec.name} for {epochs} epoch{'s' * (epochs != 1)} in {_duration(seconds)}; "
             f"workdir {workdir}"]
    for run, names in (("train", [name for name in history if not name.startswith("val_")]),
                       ("validation", [name for name in history if name.startswith("val_")])):
        if epochs and names:
            values = ", ".join(f"{name.removeprefix('val_')} {history[name][-1]:.4g}" for name in sorted(names))
            lines.append(f"  {run + ':':12}{values}")
    if exported is None:
        lines.append("not exported (--no_export); export the last checkpoint with:")
        lines.append(f"  python -m export {workdir}")
    else:
        lines += [f"  {'model:':12}{exported.keras_path}",
                  f"  {'SavedModel:':12}{exported.savedmodel_dir}",
                  f"  {'samples:':12}{exported.samples_path}"]
    lines += ["next:", f"  tensorboard --logdir {runs.tensorboard_dir(workdir)}",
              f"  {evaluate.command(workdir, spec.evaluation, download)}"]
    if exported is not None:
        base_path = os.path.abspath(os.path.dirname(exported.savedmodel_dir))
        lines += [f"  python -m serving.server --model_name {spec.short_name} --model_base_path {base_path}",
                  f"  python -m serving.client --model {spec.short_name} --num_samples 16 --out samples.png"
                  f"   # in another shell, while the server runs"]
    return lines


LISTED_ITEMS = 8  # a longer list in the printed config (a counted vocabulary) shows its first items


def _abridged(values: dict) -> dict:
    """The config for printing: a list of more than 4 × LISTED_ITEMS items becomes "<N items: a, b, …>"
    (run.json keeps it whole)."""
    return {key: f"<{len(value)} items: {', '.join(map(str, value[:LISTED_ITEMS]))}, …>"
            if isinstance(value, (list, tuple)) and len(value) > 4 * LISTED_ITEMS else value
            for key, value in values.items()}


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def steps_per_call(steps_per_epoch: int, requested: int, spec, replicas: int) -> int:
    """Training steps per compiled call: `requested`, capped by the `zoo.ModelSpec`'s
    `max_steps_per_execution`, lowered to a divisor of the epoch; 1 with several replicas."""
    if replicas > 1:
        # Keras wraps each of several steps per call in a tf.cond, where the optimizer's
        # cross-replica merge_call fails ("You must feed a value for placeholder"):
        # keras-team/keras#19246. One step per call until that is fixed.
        return 1
    return largest_divisor_at_most(steps_per_epoch, min(requested, spec.max_steps_per_execution or requested))


def largest_divisor_at_most(steps_per_epoch: int, requested: int) -> int:
    """The steps per execution to use: the largest divisor of `steps_per_epoch` not above `requested`.

    Keras runs whole executions, so a non-divisor would stretch every epoch (and shift
    the epoch-based learning-rate schedule) to the next multiple.
    """
    return max(d for d in range(1, min(requested, steps_per_epoch) + 1) if steps_per_epoch % d == 0)


def _architecture_change(spec, saved, overrides: dict, flags: dict, workdir, steps_per_epoch: int) -> str | None:
    """When no checkpoint loads on --resume: the message naming the overrides that changed the model, if they did."""
    from export import runs

    def build(config):
        model = spec.build(config)
        model.compile_for_training(steps_per_epoch)
        return model

    directory = runs.checkpoint_dir(workdir)
    changed = runs.overrides_that_do_not_fit(build, saved, overrides, directory) if overrides else []
    if not changed:
        return None
    named = " ".join(flags[key] for key in changed)
    trained = ", ".join(f"{key}={_as_set_value(getattr(saved, key))}" for key in changed)
    return (f"{named} change{'s' if len(changed) == 1 else ''} the model: the checkpoints in {directory} were "
            f"trained with {trained} ({runs.RUN_FILE}) and do not load into the model it builds. They are intact: "
            f"resume without changing the architecture (drop {named}), or train the changed model in another "
            f"--workdir")


def _as_set_value(value) -> str:
    """A config value as `--set` reads it: tuples comma-separated."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _how_to_continue(workdir, config, exploded: bool) -> str:
    """After a divergence: what is on disk, and the command line to go on from it."""
    from export import runs

    lower = f"{config.learning_rate / 10:g}"
    last = runs.latest_checkpoint(runs.checkpoint_dir(workdir))
    resume = "--resume " if last else ""
    if exploded:  # a finite loss past the ceiling: it may be a loss that legitimately jumps
        larger = f"{config.divergence_factor * 10:g}"
        jumps = (f" If this loss can legitimately jump that far, {'resume' if last else 'rerun'} with a larger "
                 f"factor ({resume}--set divergence_factor={larger}) or with {resume}--set divergence_factor=none, "
                 f"which stops only on NaN or Inf.")
    else:
        jumps = ""
    if last is None:
        return (f"no checkpoint had been saved yet. Rerun with a lower learning rate (e.g. --learning_rate {lower}) "
                f"or check the data.{jumps}")
    kept = runs.read_run(workdir)[1].learning_rate  # run.json is written with the checkpoints
    where = f"the last good checkpoint ({last['path']}, epoch {last['epoch']}) is intact"
    if kept != config.learning_rate:
        return (f"{where}, and run.json keeps its learning_rate={kept:g}: --resume continues with that, "
                f"--resume --learning_rate X with another rate.{jumps}")
    return (f"{where}. Continue from it with a lower learning rate, e.g. --resume --learning_rate {lower}, "
            f"or check the data.{jumps}")


def _fail(error) -> int:
    print(f"error: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
