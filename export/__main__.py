"""python -m export WORKDIR [--version N]: export a trained run's latest checkpoint."""

from __future__ import annotations

import argparse
import sys

import export
from export import runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument("workdir", help="the --workdir of a training.fit run")
    parser.add_argument("--version", type=int, help="TF Serving version number (default: next free)")
    args = parser.parse_args(argv)
    try:
        spec, _, model, epochs = runs.load_trained_model(args.workdir)
        exported = export.export(model, args.workdir, spec.short_name, args.version)
    except (runs.WorkdirError, export.ExportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"exported {spec.name} after {epochs} epochs")
    print(f"keras: {exported.keras_path}")
    print(f"savedmodel: {exported.savedmodel_dir} (version {exported.version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
