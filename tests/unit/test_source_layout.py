"""The source tree's own layout rules (STYLE.md, issue 9): no module under ``src/`` over 600 lines
and no class over 400 (generated migrations aside), and the README's layout section names every
module of every package, so it shows the tree as it is.

Not core, but as fast and pure: a module that outgrows its home, or one added without a word in
the README, fails here instead of being found by the next reader.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "proxy_failover"
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 400


def _sources() -> list[Path]:
    migrations = PACKAGE / "store" / "migrations"
    return [p for p in sorted(PACKAGE.rglob("*.py")) if migrations not in p.parents]


def test_no_module_is_over_600_lines_and_no_class_over_400() -> None:
    sources = _sources()
    assert len(sources) > 50  # the walk found the package
    long_modules = {
        str(path.relative_to(PACKAGE)): lines
        for path in sources
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    long_classes = {
        f"{path.relative_to(PACKAGE)}:{node.name}": lines
        for path in sources
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
        and (lines := (node.end_lineno or node.lineno) - node.lineno + 1) > MAX_CLASS_LINES
    }
    assert (long_modules, long_classes) == ({}, {}), "split by what it does (STYLE.md)"


def _layout_sections() -> dict[str, str]:
    """The README's layout block, by its top-level labels (``core/``, ``client.py``, ...): each
    label with the lines that continue it."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## How it is built", 1)[1].split("```", 2)[1]
    sections: dict[str, str] = {}
    label = ""
    for line in block.splitlines():
        found = re.match(r"^  (\S+)", line)
        if found:
            label = found.group(1)
        if label:
            sections[label] = sections.get(label, "") + line + "\n"
    return sections


def _named(name: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text, re.IGNORECASE) is not None


def test_the_readme_layout_names_every_module_of_every_package() -> None:
    sections = _layout_sections()
    missing: list[str] = []
    for package in sorted(p for p in PACKAGE.iterdir() if (p / "__init__.py").exists()):
        text = sections.get(f"{package.name}/", "")
        # Entry points: their packages (api/, cli/, ui/) and modules; the rest, every module of
        # every sub-package too (adapters/dataplanes/...).
        deep = package.name != "entrypoints"
        children = sorted(package.rglob("*") if deep else package.iterdir())
        for child in children:
            if "migrations" in child.relative_to(package).parts[:-1] or child.name == "static":
                continue
            is_module = child.suffix == ".py" and child.stem != "__init__"
            is_package = (child / "__init__.py").exists() or child.name == "migrations"
            if (is_module or is_package) and not _named(child.stem, text):
                missing.append(str(child.relative_to(PACKAGE)))
    block = "".join(sections.values())
    for module in sorted(PACKAGE.glob("*.py")):
        if module.stem not in {"__init__", "__main__"} and not _named(module.name, block):
            missing.append(module.name)
    assert missing == [], "name these in README.md's layout section (## How it is built)"
