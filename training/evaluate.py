"""python -m training.evaluate WORKDIR: test-set bounds of a trained run as one JSON line.

    python -m training.evaluate runs/iwae --k 5000
    {"model": "zoo.iwae", "split": "test", "k": 5000, "examples": 10000, "epochs": 3280,
     "nll": 84.8, "elbo": -86.1, "active_units": [25], ...}

`nll` is −L_k with k importance samples (Burda et al. 2016 report k = 5000);
`elbo` is the mean log-weight over the same samples. Metrics that the model
reports per stochastic layer (`active_units_1`, `active_units_2`, …) are listed
together (`active_units`). The line is also appended to WORKDIR/evaluation.jsonl
and written to TensorBoard under WORKDIR/tensorboard/evaluation.

Evaluation is batched so that batch × k stays under SAMPLES_PER_BATCH: memory
is bounded for any k.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

SAMPLES_PER_BATCH = 50_000


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", help="the --workdir of a training.fit run")
    parser.add_argument("--k", type=int, default=5000, help="importance samples per example (Burda et al.: 5000)")
    parser.add_argument("--max_examples", type=int, help="evaluate only the first N examples of the split")
    parser.add_argument("--split", default="test", choices=("test", "eval", "train"),
                        help="which role's split of the run's dataset")
    parser.add_argument("--batch_size", type=int, help=f"default: max(1, {SAMPLES_PER_BATCH} // k), at most 100")
    parser.add_argument("--no_download", action="store_true", help="fail instead of downloading missing data")
    parser.add_argument("--verbose", type=int, default=0, help="Keras progress bar (0 silent, 1 bar)")
    return parser.parse_args(argv)


def group_per_layer(logs: dict) -> dict:
    """{"active_units_1": 3, "active_units_2": 5, "nll": 90} → {"active_units": [3, 5], "nll": 90}."""
    grouped: dict = {}
    for name in sorted(logs, key=lambda key: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]):
        match = re.fullmatch(r"(.+)_(\d+)", name)
        if match:
            grouped.setdefault(match.group(1), []).append(logs[name])
        else:
            grouped[name] = logs[name]
    return grouped


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.k < 1 or (args.max_examples is not None and args.max_examples < 1):
        print("error: --k and --max_examples must be positive integers", file=sys.stderr)
        return 2

    import tensorflow as tf

    from training import data, workdir as workdir_lib

    try:
        spec, config, model, epochs = workdir_lib.load_trained_model(args.workdir)
        batch_size = args.batch_size or max(1, min(100, SAMPLES_PER_BATCH // args.k))
        dataset, examples = data.load(spec.dataset(config), args.split, batch_size,
                                      max_examples=args.max_examples, download=not args.no_download)
    except (workdir_lib.WorkdirError, data.DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    model.evaluation_samples = args.k
    model.compile(jit_compile=config.jit_compile)
    logs = model.evaluate(dataset, return_dict=True, verbose=args.verbose)
    result = {
        "model": spec.name,
        "split": data.split_name(spec.dataset(config), args.split, args.max_examples),
        "k": args.k,
        "examples": examples,
        "epochs": epochs,
        **group_per_layer({name: round(float(value), 4) for name, value in logs.items()}),
    }
    line = json.dumps(result)
    print(line)
    with open(f"{args.workdir}/evaluation.jsonl", "a") as log:
        log.write(line + "\n")
    writer = tf.summary.create_file_writer(str(workdir_lib.tensorboard_dir(args.workdir) / "evaluation"))
    with writer.as_default():
        for name, value in logs.items():
            tf.summary.scalar(f"{args.split}/{name}_k{args.k}", float(value), step=epochs)
    writer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
