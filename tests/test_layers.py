"""The layers point one way: ``util/`` is plumbing and imports no domain package, ``models/`` does not import
``inference/``, ``watching/`` (cameras, history, alerts) sits on ``inference/``, and nothing below the
scripts imports them or the service."""
import ast

import pytest

from helpers import ROOT

DOMAIN = {"crowd_datasets", "models", "inference", "watching", "serving", "engine", "options", "train", "run_test",
          "serve"}
FORBIDDEN = {"util": DOMAIN, "models": DOMAIN - {"models", "crowd_datasets"},
             "crowd_datasets": DOMAIN - {"crowd_datasets"}, "inference": DOMAIN - {"inference", "crowd_datasets",
                                                                                   "models"},
             "watching": DOMAIN - {"watching", "inference", "crowd_datasets", "models"}}

# ``from models import Counter`` keeps working for code written for the earlier layout: a lazy import at
# attribute access, after both packages have loaded.
ALLOWED = {"models/__init__.py": {"inference"}}


def imported_packages(path) -> set:
    """The top-level names a module imports (absolute imports only; relative ones stay in its package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_only_the_layers_below_it(package):
    wrong = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        wrong[name] = sorted(imported_packages(path) & FORBIDDEN[package] - ALLOWED.get(name, set()))
    assert {path: names for path, names in wrong.items() if names} == {}
