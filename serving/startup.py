"""What every command of the project does before TensorFlow loads: keep TensorFlow's own logs out of its output.

TensorFlow's C++ side prints start-up lines that a user cannot act on: the CPU-instruction
notice, "Could not find cuda drivers" and absl's "All log messages before
absl::InitializeLog()" (while its libraries load, before TF_CPP_MIN_LOG_LEVEL is read), and
"failed call to cuInit" on a machine without a GPU (an ERROR, so only level 3 hides it).
`quiet_tensorflow()` sets TF_CPP_MIN_LOG_LEVEL=3 and imports TensorFlow with stderr held
back, and shows what was held back if the import fails. A TF_CPP_MIN_LOG_LEVEL the user set
is left alone (`TF_CPP_MIN_LOG_LEVEL=0 python -m …` shows everything), and so is a
process that asked to see the logs (`show`, e.g. training.fit's --verbose 3).

This lives in `serving/` because the server and client may import nothing of the other
packages; `training/` and `export/` use it too.
"""

from __future__ import annotations

import os
import sys
import tempfile

QUIET_LEVEL = "3"


def quiet_tensorflow(show: bool = False) -> None:
    """Call before anything imports TensorFlow; does nothing if `show` or the user set TF_CPP_MIN_LOG_LEVEL."""
    if show or "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = QUIET_LEVEL
    sys.stderr.flush()
    stderr = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow  # noqa: F401  (the start-up lines come while its libraries load)
        except BaseException:
            os.dup2(stderr, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(stderr, 2)
            os.close(stderr)
