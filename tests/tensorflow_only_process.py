"""The head of every script that reloads SavedModels in a fresh process as a serving machine would:
TensorFlow only. The test fixtures prepend this file's text to their scripts; it is not imported.

This project, TFP and the contract suite's toy are made unimportable before anything else runs;
`op_types` and `shapes` describe a loaded signature.
"""

import json
import sys


class Unavailable:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("zoo", "training", "export", "serving", "tensorflow_probability", "contract_toy"):
            raise ImportError(f"{name} is not installed on a serving machine")


sys.meta_path.insert(0, Unavailable())
import numpy as np  # noqa: E402, F401  (the scripts that follow use np and tf)
import tensorflow as tf  # noqa: E402, F401


def op_types(function):
    """Every op type in a signature's graph and the functions it calls (the while loop's bodies)."""
    graph = function.graph.as_graph_def()
    types = {node.op for node in graph.node}
    for library_function in graph.library.function:
        types |= {node.op for node in library_function.node_def}
    return sorted(types)


def shapes(specs):
    return {key: spec.shape.as_list() for key, spec in specs.items()}


def describe(signatures):
    """A loaded SavedModel's signatures: name → input and output shapes, and name → op types."""
    return {"signatures": {name: {"inputs": shapes(function.structured_input_signature[1]),
                                  "outputs": shapes(function.structured_outputs)}
                           for name, function in signatures.items()},
            "op_types": {name: op_types(function) for name, function in signatures.items()}}


def write_report(path, report):
    """Writes `report` as JSON with "modules": the top-level modules this process imported."""
    with open(path, "w") as file:
        json.dump({**report, "modules": sorted({name.split(".")[0] for name in sys.modules})}, file)
