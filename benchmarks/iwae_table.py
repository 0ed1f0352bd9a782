"""Reproduce Burda et al. 2016, Table 1 (MNIST) with `training.fit` and `training.evaluate`.

    python benchmarks/iwae_table.py --epochs 3280 --eval_k 5000            # the paper's schedule
    python benchmarks/iwae_table.py --epochs 2 --eval_examples 1000 --cells 1:vae:1 1:iwae:50

Each cell (stochastic layers, objective, k) is one `python -m training.fit`
run with the paper's config (batch 20, Adam ε=1e-4, lr 1e-3·10^(-i/7) over 3^i
epochs), followed by `python -m training.evaluate --k EVAL_K`. The script prints
the commands it runs and a markdown table with the paper's numbers beside ours.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import subprocess
import sys
import time

# Burda et al. 2016, Table 1, MNIST: test NLL (nats) and active units, keyed by
# (stochastic layers, objective, k).
PAPER = {
    (1, "vae", 1): (86.76, "19"), (1, "vae", 5): (86.47, "20"), (1, "vae", 50): (86.35, "20"),
    (1, "iwae", 1): (86.76, "19"), (1, "iwae", 5): (85.54, "22"), (1, "iwae", 50): (84.78, "25"),
    (2, "vae", 1): (85.33, "16+5"), (2, "vae", 5): (85.01, "17+5"), (2, "vae", 50): (84.78, "17+5"),
    (2, "iwae", 1): (85.33, "16+5"), (2, "iwae", 5): (83.89, "21+5"), (2, "iwae", 50): (82.90, "26+7"),
}


def parse_cell(text: str) -> tuple[int, str, int]:
    layers, objective, k = text.split(":")
    if objective not in ("vae", "iwae"):
        raise argparse.ArgumentTypeError(f"cell {text!r}: objective must be vae or iwae")
    return int(layers), objective, int(k)


def run(command: list[str]) -> str:
    print("$ " + " ".join(command), flush=True)
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return result.stdout


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3280, help="training epochs per cell (paper: 3280)")
    parser.add_argument("--eval_k", type=int, default=5000, help="importance samples for test NLL (paper: 5000)")
    parser.add_argument("--eval_examples", type=int, help="evaluate on the first N test images (default: all)")
    parser.add_argument("--cells", nargs="+", type=parse_cell, default=sorted(PAPER),
                        help="cells as layers:objective:k, e.g. 1:iwae:50")
    parser.add_argument("--workdir", default="runs/iwae_table")
    parser.add_argument("--no_download", action="store_true", help="passed on to training.fit and evaluate")
    args = parser.parse_args(argv)

    rows = []
    for layers, objective, k in args.cells:
        workdir = pathlib.Path(args.workdir) / f"{objective}_l{layers}_k{k}"
        started = time.time()
        run([sys.executable, "-m", "training.fit", f"zoo.{objective}", "--workdir", str(workdir),
             "--epochs", str(args.epochs), "--set", f"stochastic_layers={layers}", "--set", f"k={k}",
             "--verbose", "2", "--no_export", *(["--resume"] if (workdir / "run.json").exists() else []),
             *(["--no_download"] if args.no_download else [])])
        train_minutes = (time.time() - started) / 60
        evaluate = [sys.executable, "-m", "training.evaluate", str(workdir), "--k", str(args.eval_k),
                    *(["--no_download"] if args.no_download else [])]
        if args.eval_examples:
            evaluate += ["--max_examples", str(args.eval_examples)]
        result = json.loads(run(evaluate).strip().splitlines()[-1])
        paper_nll, paper_units = PAPER.get((layers, objective, k), (float("nan"), "—"))
        rows.append(
            f"| {layers} | {objective.upper()} | {k} | {paper_nll:.2f} | {paper_units} | "
            f"{result['nll']:.2f} | {'+'.join(str(int(u)) for u in result['active_units'])} | "
            f"{result['epochs']} | {train_minutes:.0f} |"
        )
        print(rows[-1], flush=True)

    print(f"\nHardware: {platform.processor() or platform.machine()}; eval k={args.eval_k}, "
          f"examples={args.eval_examples or 'all'}")
    print("| layers | objective | k | paper NLL | paper active units | our NLL | our active units | epochs | train min |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
