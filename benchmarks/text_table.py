"""Yang et al. 2017's comparison on a corpus of texts: LSTM-LM against LSTM-VAE and dilated CNN VAEs.

    python benchmarks/text_table.py --dataset ../shared/data/quotes          # the budget of docs/text_vae.md
    python benchmarks/text_table.py --dataset yelp_polarity_reviews --epochs 40 --paper_sizes   # with internet

Each row is one `python -m training.fit NAME --dataset DATASET --epochs EPOCHS` run with the row's `--set`
overrides (a finished run in the workdir is reused, and its evaluation if it has one; the "+init" rows start
their encoder from the LSTM-LM row's model.keras), then `python -m training.evaluate WORKDIR --k K`: the test NLL per text (−L_K), the
KL, the perplexity over words and <eos>, and the active units of the latent. The script prints the
commands it runs and a markdown table beside Yang et al.'s two findings: the LSTM-VAE's KL collapses to 0,
a dilated CNN VAE keeps KL > 0.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import time

from runs import run

# label → (registry name, --set overrides of the row)
ROWS = {
    "lstm_lm": ("zoo.lstm_lm", []),
    "scnn_lm": ("zoo.lstm_lm", ["decoder=scnn"]),
    "lstm_vae": ("zoo.text_vae", ["decoder=lstm"]),
    "lstm_vae_init": ("zoo.text_vae", ["decoder=lstm"]),
    "scnn_vae": ("zoo.text_vae", ["decoder=scnn"]),
    "mcnn_vae": ("zoo.text_vae", ["decoder=mcnn"]),
    "lcnn_vae": ("zoo.text_vae", ["decoder=lcnn"]),
    "lcnn_vae_init": ("zoo.text_vae", ["decoder=lcnn"]),
    "cnn3_vae": ("zoo.text_vae", ["decoder=dilated_cnn", "dilations=1"]),  # ours: a receptive field of 3 words
}
# Sizes for a small corpus on 2 CPU cores, about 2 minutes an epoch (the quotes: 9 466 training texts, 25 words
# on average, 90% within 49; 4 000 words cover 89% of the training words).
SMALL = ["vocabulary_size=4000", "max_words=40", "embedding_size=128", "lstm_units=256", "cnn_channels=256",
         "dropout=0.3"]
VAE_SMALL = ["encoder_units=256"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a folder of texts, or a TFDS text dataset")
    parser.add_argument("--only", nargs="+", choices=sorted(ROWS), default=list(ROWS), help="rows to run")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--annealing_epochs", type=float, default=2.0, help="KL weight from 0.01 to 1 over these")
    parser.add_argument("--k", type=int, default=100, help="importance samples of the test NLL")
    parser.add_argument("--paper_sizes", action="store_true", help="the configs' paper sizes, not SMALL's")
    parser.add_argument("--workdir", default="runs/text_table")
    parser.add_argument("--no_download", action="store_true", help="passed on to training.fit and evaluate")
    args = parser.parse_args(argv)

    offline = ["--no_download"] if args.no_download else []
    sizes = [] if args.paper_sizes else SMALL
    root = pathlib.Path(args.workdir)
    rows = []
    for label in args.only:
        name, overrides = ROWS[label]
        workdir = root / label
        started = time.time()
        settings = [*sizes, *overrides]
        if name == "zoo.text_vae":
            settings += [] if args.paper_sizes else VAE_SMALL
            steps_per_epoch = _steps_per_epoch(args.dataset)
            settings.append(f"kl_annealing_steps={round(args.annealing_epochs * steps_per_epoch)}")
        if label.endswith("_init"):
            settings.append(f"encoder_init={root / 'lstm_lm' / 'model.keras'}")
        if not (workdir / "model.keras").exists():
            run([sys.executable, "-m", "training.fit", name, "--workdir", str(workdir), "--dataset", args.dataset,
                 "--epochs", str(args.epochs), "--verbose", "2",
                 *[flag for setting in settings for flag in ("--set", setting)], *offline])
        k = ["--k", str(args.k)] if name == "zoo.text_vae" else []
        logs = _evaluated(workdir, args.k if k else None)
        if logs is None:
            output = run([sys.executable, "-m", "training.evaluate", str(workdir), *k, *offline])
            logs = json.loads(output.strip().splitlines()[-1])
        rows.append((label, logs, time.time() - started))

    print(f"\n{platform.node()}: {args.dataset}, {args.epochs} epochs, test NLL −L_{args.k} for the VAEs\n")
    print("| model | NLL per text | KL | perplexity | active units | minutes |")
    print("|---|---|---|---|---|---|")
    for label, logs, seconds in rows:
        kl = f"{logs['kl']:.2f}" if "kl" in logs else "—"
        active = f"{logs['active_units']:.0f}" if "active_units" in logs else "—"
        print(f"| {label} | {logs['nll']:.2f} | {kl} | {logs['perplexity']:.2f} | {active} | {seconds / 60:.1f} |")
    return 0


def _evaluated(workdir: pathlib.Path, k: int | None) -> dict | None:
    """The run's last whole-test-split evaluation with these k importance samples, if it has one."""
    path = workdir / "evaluation.jsonl"
    if not path.exists():
        return None
    logs = json.loads(path.read_text().splitlines()[-1])
    return logs if logs.get("k") == k and not logs["split"].endswith("]") else None


def _steps_per_epoch(dataset: str) -> int:
    """Training steps per epoch of the configs' batch of 32: the training texts // 32."""
    from training import data
    from zoo.common import text
    from zoo.registry import DatasetSpec

    spec = DatasetSpec(data.canonical_name(dataset), binarize=False, text=True, vocabulary=(text.BEGIN, text.END))
    _, count = data.load(spec, "train", 32)
    return count // 32


if __name__ == "__main__":
    sys.exit(main())
