"""Sample quality of every GAN in the zoo after a fixed budget, with `training.fit` and `training.evaluate`.

    python benchmarks/gan_table.py --no_download                       # the budget of docs/results.md
    python benchmarks/gan_table.py --models zoo.dcgan:5 zoo.wgan_gp:10  # name:epochs

Each model is one `python -m training.fit NAME --epochs E` run with its paper
config (a finished run in the workdir is reused, an interrupted one resumed), then `python -m training.evaluate WORKDIR` (FID, classifier score and
mode coverage of 10 000 samples against the MNIST test set, with the cached
MNIST classifier). The script prints the commands it runs and a markdown table,
and writes one PNG grid per model into `--grids` (64 samples from the seeds
0…63; a row per class for conditional models, a row per categorical code for
InfoGAN).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import time

from runs import run, save_grid

# Epochs per model in docs/results.md: 4-15 minutes each on 2 CPU cores.
BUDGET = {"zoo.gan": 5, "zoo.cgan": 5, "zoo.dcgan": 2, "zoo.infogan": 1, "zoo.ebgan": 1, "zoo.wgan_gp": 1,
          "zoo.wgan": 1}
GRID = {"zoo.cgan": "per_class", "zoo.infogan": "traversal_category"}  # the grid that shows the model's feature


def parse_model(text: str) -> tuple[str, int]:
    name, _, epochs = text.partition(":")
    if not epochs.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected name:epochs, e.g. zoo.dcgan:5")
    return name, int(epochs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", type=parse_model, default=sorted(BUDGET.items()),
                        help="name:epochs pairs (default: the docs/results.md budget)")
    parser.add_argument("--workdir", default="runs/gan_table")
    parser.add_argument("--grids", default="docs", help="folder for the PNG sample grids")
    parser.add_argument("--num_samples", type=int, default=10_000)
    parser.add_argument("--no_download", action="store_true", help="passed on to training.fit and evaluate")
    args = parser.parse_args(argv)

    offline = ["--no_download"] if args.no_download else []
    rows = []
    for name, epochs in args.models:
        short = name.removeprefix("zoo.")
        workdir = pathlib.Path(args.workdir) / short
        state = workdir / "checkpoints" / "state.json"
        done = json.loads(state.read_text())["epoch"] if state.exists() else 0
        started = time.time()
        if done < epochs:  # a finished run is reused, an interrupted one resumed
            run([sys.executable, "-m", "training.fit", name, "--workdir", str(workdir), "--epochs", str(epochs),
                 "--verbose", "2", *(["--resume"] if state.exists() else []), *offline])
        minutes = (time.time() - started) / 60
        line = run([sys.executable, "-m", "training.evaluate", str(workdir), "--num_samples", str(args.num_samples),
                    *offline]).strip().splitlines()[-1]
        result = json.loads(line)
        grid = pathlib.Path(args.grids) / f"{short}_{epochs}epochs_samples.png"
        save_grid(workdir, GRID.get(name, "samples"), grid)
        rows.append((name, epochs, minutes, result, grid))
        print(line, flush=True)

    print(f"\n{platform.node()}, {platform.processor() or platform.machine()}, "
          f"{time.strftime('%Y-%m-%d')}\n")
    print("| model | epochs | train min | FID ↓ | classifier score ↑ | modes covered | class KL ↓ | samples |")
    print("|---|---|---|---|---|---|---|---|")
    for name, epochs, minutes, result, grid in rows:
        print(f"| `{name}` | {epochs} | {minutes:.0f} | {result['fid']:.2f} | {result['classifier_score']:.2f} | "
              f"{result['modes_covered']} | {result['class_kl']:.3f} | [{grid.name}]({grid.name}) |")
    if rows:
        first = rows[0][3]
        print(f"\nFID floor (two halves of the test set): {first['fid_floor']:.2f}; "
              f"classifier test accuracy: {first['classifier_accuracy']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
