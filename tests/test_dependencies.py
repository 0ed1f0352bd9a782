"""The packages depend one way: training → export → zoo, and serving on none of them.

The server and client run beside a SavedModel alone, so `serving` imports nothing of
`zoo`, `training` or `export`. `export` reads trained runs (`export.runs`) but never
imports `training`, which imports `export` to export at the end of a fit.
"""

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
MUST_NOT_IMPORT = {"serving": {"zoo", "training", "export"}, "export": {"training"}}


def imported_packages(path: pathlib.Path) -> dict[str, int]:
    """Top-level package of every import in a module, at any depth (function bodies too) → its first line.

    Relative imports are left out: in a top-level package they cannot leave it. So are
    `importlib.import_module("name")` and `__import__("name")` with a literal name.
    """
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        elif (isinstance(node, ast.Call) and ast.unparse(node.func) in ("importlib.import_module", "__import__")
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names = [node.args[0].value]
        else:
            continue
        for name in names:
            found.setdefault(name.split(".")[0], node.lineno)
    return found


@pytest.mark.parametrize("package", sorted(MUST_NOT_IMPORT))
def test_package_imports_none_of_the_packages_it_must_not_depend_on(package):
    modules = sorted((REPO / package).rglob("*.py"))
    assert modules, f"no modules under {package}/"
    offending = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in modules
        for name, line in imported_packages(path).items()
        if name in MUST_NOT_IMPORT[package]
    ]
    assert not offending, f"{package}/ must not import {', '.join(sorted(MUST_NOT_IMPORT[package]))}: {offending}"


def test_the_check_sees_imports_inside_functions_and_dynamic_ones(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("import os.path\nfrom serving import images\nfrom . import sibling\n\n"
                      "def run():\n    import zoo.vae\n    return importlib.import_module('training.fit')\n")
    assert imported_packages(module) == {"os": 1, "serving": 2, "zoo": 6, "training": 7}
