"""The suite's own layout rules: shared helpers live in tests/helpers only, no test module imports
another test module or a conftest, and files are named by the behaviour they pin.

Not core, but as fast and pure: a helper copied into a test file, or a test importing another's
privates, fails here instead of growing back.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _modules() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text()) for path in sorted(TESTS.rglob("*.py"))}


def _imported(tree: ast.Module) -> list[tuple[str, int]]:
    """(module, relative level) of every import in the file, nested ones included."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
        elif isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
    return found


def test_no_test_module_imports_another_test_module_or_a_conftest() -> None:
    offenders = [
        f"{path.relative_to(TESTS)}: {'.' * level}{module}"
        for path, tree in _modules().items()
        for module, level in _imported(tree)
        if level > 0 or (module.startswith("tests.") and not module.startswith("tests.helpers"))
    ]
    assert offenders == []


def test_shared_fakes_are_defined_once_in_helpers() -> None:
    definitions: dict[str, list[str]] = {}
    for path, tree in _modules().items():
        for node in tree.body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef) and node.name in {
                "FakeClock",
                "free_port",
                "ScriptedProber",
                "Tokens",
                "Api",
            }:
                definitions.setdefault(node.name, []).append(str(path.relative_to(TESTS)))
    assert all(len(paths) == 1 for paths in definitions.values()), definitions
    assert all(paths[0].startswith("helpers/") for paths in definitions.values()), definitions


def test_test_files_are_named_by_behaviour_not_by_review_round() -> None:
    assert sorted(p.name for p in TESTS.rglob("test_qa*.py")) == []
