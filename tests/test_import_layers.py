"""The floors of kimidoc, as import contracts: each package imports only from floors below it.

Every import in ``kimidoc/`` counts, lazy ones inside functions included (the tree is read with
``ast``, nothing is imported), and so do module names handed to ``importlib.import_module``. Two
packages on the same floor are siblings and import neither each other nor themselves through a
circle; ``kimidoc/__init__.py`` is the facade over all floors. LangChain is imported only by
``integrations/``. A piece that needs an upward import sits on the wrong floor.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "kimidoc"

# floor -> the top-level modules and packages on it (../shared/DESIGN.md, "Floors")
FLOORS: dict[int, tuple[str, ...]] = {
    1: ("messages", "progress"),
    2: ("model",),
    3: ("vision", "placement"),
    4: ("chat", "documents"),
    5: ("tools", "testing"),
    6: ("backends",),
    7: ("context", "integrations"),
    8: ("agents",),
    9: ("cli",),
}
FLOOR_OF = {unit: floor for floor, units in FLOORS.items() for unit in units}
FACADE = "__init__"  # kimidoc/__init__.py: lazy re-exports from every floor
ONLY_IN = {
    "langchain": "integrations",
    "langchain_core": "integrations",
}  # third-party -> the one unit allowed to import it
_MODULE_NAME = re.compile(r"^kimidoc(\.\w+)+$")


@dataclass(frozen=True)
class Import:
    source: str  # file, relative to the root
    line: int
    importer: str  # dotted module name of the file
    target: str  # dotted module imported


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else FACADE


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def imports_of(path: Path, root: Path) -> list[Import]:
    """Every module ``path`` imports, at any depth of its code, with relative imports resolved."""
    name, is_package = module_name(path, root)
    here = name.split(".") if is_package else name.split(".")[:-1]
    rel = str(path.relative_to(root))
    out: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=rel)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from kimidoc.model import int4`` imports the module kimidoc.model.int4
            targets = [f"{module}.{a.name}" if _exists(root, f"{module}.{a.name}") else module for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_NAME.match(node.value):
            # module names for importlib (lazy re-export tables); only names of real modules count
            if _exists(root, node.value):
                targets = [node.value]
        out.extend(Import(rel, node.lineno, name, t) for t in targets if t)
    return out


def _exists(root: Path, module: str) -> bool:
    p = root.joinpath(*module.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def all_imports(root: Path) -> list[Import]:
    return [imp for f in sorted((root / PACKAGE).rglob("*.py")) for imp in imports_of(f, root)]


def violations(root: Path) -> list[str]:
    """Broken contracts, one line each, naming the file and line."""
    found: list[str] = []
    # modules and packages; package data (kimidoc/data) and caches are neither
    units = {
        p.stem if p.is_file() else p.name
        for p in (root / PACKAGE).iterdir()
        if (p.suffix == ".py" or (p / "__init__.py").is_file())
    }
    for unit in sorted(units - set(FLOOR_OF) - {FACADE}):
        found.append(f"{PACKAGE}/{unit}: on no floor; add it to FLOORS (and to DESIGN.md)")
    for imp in all_imports(root):
        top = imp.target.split(".")[0]
        a = unit_of(imp.importer)
        if top in ONLY_IN and a != ONLY_IN[top]:
            found.append(f"{imp.source}:{imp.line}: imports {imp.target}; only {PACKAGE}/{ONLY_IN[top]} may")
        if top != PACKAGE:
            continue
        b = unit_of(imp.target)
        if a == b or a == FACADE:
            continue
        if b == FACADE:
            found.append(
                f"{imp.source}:{imp.line}: imports the facade {PACKAGE}; import the module that holds the name"
            )
            continue
        fa, fb = FLOOR_OF.get(a), FLOOR_OF.get(b)
        if fa is None or fb is None:
            continue  # reported above as a unit on no floor
        if fb > fa:
            found.append(f"{imp.source}:{imp.line}: {a} (floor {fa}) imports {imp.target} (floor {fb}), upward")
        elif fb == fa:
            found.append(f"{imp.source}:{imp.line}: {a} imports {imp.target}, a sibling on floor {fa}")
    return found


def test_every_import_goes_down_a_floor():
    assert violations(ROOT) == []


def test_the_floors_are_the_packages_that_exist():
    # Guards the table itself: a floor naming a package that no longer exists is a stale contract.
    existing = {p.stem if p.is_file() else p.name for p in (ROOT / PACKAGE).iterdir()}
    assert set(FLOOR_OF) <= existing


@pytest.mark.parametrize(
    ("where", "code", "expected"),
    [
        (
            "model/extra.py",
            "def f():\n    from kimidoc.agents import Agent\n",
            "model (floor 2) imports kimidoc.agents (floor 8), upward",
        ),
        (
            "vision/extra.py",
            "from ..documents.base import DocumentError\n",
            "vision (floor 3) imports kimidoc.documents.base (floor 4), upward",
        ),
        ("vision/extra.py", "import kimidoc.placement.plan\n", "a sibling on floor 3"),
        ("tools/extra.py", "async def f():\n    import langchain_core.tools\n", "only kimidoc/integrations may"),
        ("backends/extra.py", "TABLE = {'x': 'kimidoc.agents.agent'}\n", "upward"),
        ("newfloor/__init__.py", "", "kimidoc/newfloor: on no floor"),
    ],
)
def test_a_broken_contract_is_named(tmp_path, where, code, expected):
    # A small tree shaped like kimidoc, with one offending import added: the checker names it.
    for unit in [*FLOOR_OF, "newfloor"]:
        (tmp_path / PACKAGE / unit).mkdir(parents=True)
        (tmp_path / PACKAGE / unit / "__init__.py").write_text("")
    (tmp_path / PACKAGE / "__init__.py").write_text("")
    for name in ("agents/agent.py", "documents/base.py", "placement/plan.py"):
        (tmp_path / PACKAGE / name).write_text("")
    if where != "newfloor/__init__.py":
        (tmp_path / PACKAGE / "newfloor" / "__init__.py").unlink()
        (tmp_path / PACKAGE / "newfloor").rmdir()
    (tmp_path / PACKAGE / where).write_text(code)
    found = violations(tmp_path)
    assert len(found) == 1 and expected in found[0], found
    assert where.split("/")[0] in found[0]
