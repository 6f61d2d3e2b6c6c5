"""Imports run one way: genrm_rl (library) <- reward (service, adapters) <- jobs (entry points).

Every import statement counts, those inside functions included, so a lazy import cannot hide an
arrow that runs back up."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["genrm_rl", "reward", "jobs"]  # each may import only the layers before it


def imported_packages(path: Path) -> set[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add((node.module.split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("layer", LAYERS)
def test_imports_point_down_the_layers(layer):
    above = set(LAYERS[LAYERS.index(layer) + 1:])
    bad = [f"{path.relative_to(REPO)}:{line} imports {pkg}"
           for path in sorted((REPO / layer).rglob("*.py"))
           for pkg, line in sorted(imported_packages(path)) if pkg in above]
    assert not bad, f"{layer} must not import {sorted(above)}:\n" + "\n".join(bad)
