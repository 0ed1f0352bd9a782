"""The head of every script that reloads SavedModels in a fresh process as a serving machine would:
TensorFlow only. The test fixtures prepend this file's text to their scripts; it is not imported.

This project, TFP and the contract suite's toy are made unimportable before anything else runs;
`op_types` and `shapes` describe a loaded signature.
"""

import json  # noqa: F401  (for the scripts that follow)
import sys


class Unavailable:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("zoo", "training", "export", "serving", "tensorflow_probability", "contract_toy"):
            raise ImportError(f"{name} is not installed on a serving machine")


sys.meta_path.insert(0, Unavailable())
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def op_types(function):
    """Every op type in a signature's graph and the functions it calls (the while loop's bodies)."""
    graph = function.graph.as_graph_def()
    types = {node.op for node in graph.node}
    for library_function in graph.library.function:
        types |= {node.op for node in library_function.node_def}
    return sorted(types)


def shapes(specs):
    return {key: spec.shape.as_list() for key, spec in specs.items()}
