"""python -m export WORKDIR [--version N]: export a trained run's latest checkpoint.

TensorFlow's own logs are hidden unless TF_CPP_MIN_LOG_LEVEL is set (0 shows them all).
"""

from __future__ import annotations

import argparse
import sys

import export
from serving import startup


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", help="the --workdir of a training.fit run")
    parser.add_argument("--version", type=int, help="TF Serving version number (default: next free)")
    args = parser.parse_args(argv)
    startup.quiet_tensorflow()
    from export import runs

    try:
        spec, _, model, epochs = runs.load_trained_model(args.workdir)
        exported = export.export(model, args.workdir, spec.short_name, args.version)
    except (runs.WorkdirError, export.ExportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"exported {spec.name} after {epochs} epochs")
    print(f"keras: {exported.keras_path}")
    print(f"savedmodel: {exported.savedmodel_dir} (version {exported.version})")
    print(f"samples: {exported.samples_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
