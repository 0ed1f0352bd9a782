"""Exact test NLL of every autoregressive model in the zoo after a fixed step budget.

    python benchmarks/autoregressive_table.py --no_download                   # the budget of docs/results.md
    python benchmarks/autoregressive_table.py --steps 20000 --eval_examples 10000 --only pixelcnn

Each row is one `python -m training.fit NAME --epochs 1 --steps_per_epoch STEPS`
run with the entry's paper config (plus the row's `--set` overrides; a finished
run in the workdir is reused), then `python -m training.evaluate WORKDIR
--max_examples N`: the exact −log p(x) in nats per image on the first N test
images, and bits per dimension. The script prints the commands it runs and a
markdown table beside the papers' numbers (binarized MNIST, trained to
convergence), and writes one PNG grid of 16 samples (seeds 0…15) per row into
`--grids`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import time

from runs import run, save_grid

import zoo

# label → (registry name, --set overrides, training steps in docs/results.md (a few minutes each on 2 CPU
# cores), the paper's test NLL in nats on binarized MNIST or None).
ROWS = {
    "pixelcnn": ("zoo.pixelcnn", [], 400, 81.30),                                # van den Oord 2016a, Table 4
    "gated_pixelcnn": ("zoo.gated_pixelcnn", [], 400, None),                     # 2016b reports no MNIST number
    "pixelrnn_row_lstm": ("zoo.pixelrnn", ["cell=row_lstm"], 300, 80.54),        # 2016a, Table 4
    "pixelrnn_diagonal_bilstm": ("zoo.pixelrnn", ["cell=diagonal_bilstm"], 300, 79.20),  # 2016a, Table 4
    "pixelcnn_pp": ("zoo.pixelcnn_pp", [], 150, None),                           # 8-bit MNIST: bits/dim only
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(ROWS), default=list(ROWS), help="rows to run")
    parser.add_argument("--steps", type=int, help="training steps per model (default: each row's; batch: the config's)")
    parser.add_argument("--eval_examples", type=int, default=2000, help="first N test images for the NLL")
    parser.add_argument("--workdir", default="runs/autoregressive_table")
    parser.add_argument("--grids", default="docs", help="folder for the PNG sample grids")
    parser.add_argument("--no_download", action="store_true", help="passed on to training.fit and evaluate")
    args = parser.parse_args(argv)

    offline = ["--no_download"] if args.no_download else []
    rows = []
    for label in args.only:
        name, overrides, steps, paper = ROWS[label]
        steps = args.steps or steps
        workdir = pathlib.Path(args.workdir) / label
        started = time.time()
        if not (workdir / "checkpoints" / "state.json").exists():
            run([sys.executable, "-m", "training.fit", name, "--workdir", str(workdir), "--epochs", "1",
                 "--steps_per_epoch", str(steps), "--validation_steps", "10", "--verbose", "2",
                 *[flag for override in overrides for flag in ("--set", override)], *offline])
        minutes = (time.time() - started) / 60
        line = run([sys.executable, "-m", "training.evaluate", str(workdir), "--max_examples",
                    str(args.eval_examples), *offline]).strip().splitlines()[-1]
        grid = pathlib.Path(args.grids) / f"{label}_{steps}steps_samples.png"
        save_grid(workdir, "samples", grid)
        rows.append((label, name, overrides, steps, paper, minutes, json.loads(line), grid))
        print(line, flush=True)

    print(f"\n{platform.node()}, {platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d')}, "
          f"NLL on the first {args.eval_examples} test images\n")
    print("| model | dataset | steps | train min | NLL (nats) | bits/dim | paper NLL | samples |")
    print("|---|---|---|---|---|---|---|---|")
    for label, name, overrides, steps, paper, minutes, result, grid in rows:
        settings = "".join(f" `{override}`" for override in overrides)
        spec = zoo.get(name)
        dataset = spec.make_config(**zoo.config.parse_assignments(overrides, spec.config_class)).dataset
        print(f"| `{name}`{settings} | {dataset} | {steps} | {minutes:.0f} | {result['nll']:.2f} | "
              f"{result['bits_per_dim']:.4f} | {paper if paper else '—'} | [{grid.name}]({grid.name}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
