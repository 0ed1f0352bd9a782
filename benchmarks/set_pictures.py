"""Pictures of a trained model of sets (the Neural Statistician) for docs/: held-out sets beside sets drawn from
their contexts, sets from fresh contexts, and the test sets' context means coloured by label.

    TFDS_DATA_DIR=/path/to/tensorflow_datasets python benchmarks/set_pictures.py runs/ns_mnist \
        docs/neural_statistician_mnist --no_download

writes PREFIX_given_and_drawn.png (a row per given test set: the set, then three sets drawn from q(c | D)),
PREFIX_fresh.png (sets from c ~ p(c)) and PREFIX_context_means.png (the first two coordinates of every
test set's context mean, a colour per label).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

GIVEN_SETS = 8  # rows of the given-and-drawn grid, spread over the test sets (which come class after class)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=pathlib.Path)
    parser.add_argument("prefix", help="path prefix of the PNG files")
    parser.add_argument("--split", default="test", choices=("test", "eval"))
    parser.add_argument("--no_download", action="store_true")
    args = parser.parse_args()

    import tensorflow as tf

    from export import runs
    from serving import images
    from training import few_shot

    spec, config, model, _ = runs.load_trained_model(args.workdir)
    sets, labels = few_shot.evaluation_sets(spec.dataset(config), args.split, None, not args.no_download)
    chosen = np.linspace(0, len(sets) - 1, GIVEN_SETS).astype(int)
    grids = model.summaries(tf.constant(sets[chosen]))
    images.save_png(f"{args.prefix}_given_and_drawn.png",
                    images.grid(grids["given_sets_then_sets_from_their_context"].numpy(), columns=4))
    images.save_png(f"{args.prefix}_fresh.png", images.grid(grids["sets_from_fresh_contexts"].numpy(), columns=4))
    means = few_shot.contexts(model.context, sets)[0]
    images.save_png(f"{args.prefix}_context_means.png", few_shot.scatter_image(means, labels))
    print(f"wrote {args.prefix}_given_and_drawn.png, _fresh.png, _context_means.png (labels of the given rows: "
          f"{labels[chosen].tolist()})")


if __name__ == "__main__":
    main()
