"""Git's ignore rules for a folder: a ``.gitignore`` in any directory (deeper files win, negation
with ``!``), the ``.gitignore`` files above the folder up to its repository's top, the repository's
``.git/info/exclude``, and extra patterns; matched by pathspec's ``GitIgnoreSpec`` (git's own
matching, including last-match-wins within a file)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pathspec import GitIgnoreSpec

# Never useful in a context: version-control internals, caches and installed dependencies.
ALWAYS = (
    ".git/",
    ".hg/",
    ".svn/",
    "__pycache__/",
    "*.pyc",
    "node_modules/",
    ".venv/",
    ".tox/",
    ".mypy_cache/",
    ".pytest_cache/",
    ".DS_Store",
)


class IgnoreRules:
    """Ignore decisions for paths under one root (paths relative to it, ``/``-separated)."""

    def __init__(self, root: Path, extra: Sequence[str] = ()) -> None:
        self._root = root
        self._specs: dict[str, tuple[GitIgnoreSpec, str]] = {}  # dir under root ("" = root) -> (spec, its file)
        # Rules from above the root: (spec, prefix that makes a root-relative path relative to the spec's folder, file).
        self._outer: list[tuple[GitIgnoreSpec, str, str]] = [
            (GitIgnoreSpec.from_lines(list(ALWAYS) + list(extra)), "", "built-in and extra patterns")
        ]
        self._outer += _enclosing_rules(root.resolve())

    def enter(self, rel_dir: str) -> None:
        """Read ``rel_dir/.gitignore`` (if any); call for each directory before testing its entries."""
        f = self._root / rel_dir / ".gitignore" if rel_dir else self._root / ".gitignore"
        if f.is_file():
            self._specs[rel_dir] = (_spec(f), f"{rel_dir}/.gitignore" if rel_dir else ".gitignore")

    def match(self, rel: str, is_dir: bool) -> str | None:
        """Which rule file ignores ``rel``, or None when it is kept. A deeper ``.gitignore`` overrides
        a shallower one, and a ``!pattern`` re-includes what an earlier pattern ignored."""
        decision: str | None = None
        target = rel + "/" if is_dir else rel
        for spec, prefix, where in self._outer:
            hit = spec.check_file(prefix + target).include
            if hit is not None:
                decision = where if hit else None
        parts = rel.split("/")
        for depth in range(len(parts)):
            base = "/".join(parts[:depth])
            entry = self._specs.get(base)
            if entry is None:
                continue
            hit = entry[0].check_file(target[len(base) + 1 :] if base else target).include
            if hit is not None:
                decision = entry[1] if hit else None
        return decision


def _enclosing_rules(here: Path) -> list[tuple[GitIgnoreSpec, str, str]]:
    """The rules of the git repository that holds ``here`` (from above it), unless they ignore
    ``here`` itself: a folder the user names explicitly is read even if its repository ignores it
    (an installed package inside a git-managed tool directory, say)."""
    top = next((p for p in [here, *here.parents] if (p / ".git").exists()), None)
    if top is None or top == here:
        return []
    rules: list[tuple[GitIgnoreSpec, Path, str]] = []
    exclude = top / ".git" / "info" / "exclude"
    if exclude.is_file():
        rules.append((_spec(exclude), top, ".git/info/exclude"))
    for folder in reversed(here.parents):
        if (folder == top or top in folder.parents) and (folder / ".gitignore").is_file():
            rules.append((_spec(folder / ".gitignore"), folder, str(folder / ".gitignore")))
    for d in [p for p in reversed(here.parents) if top in p.parents] + [here]:
        ignored = False
        for spec, folder, _ in rules:
            if folder == d or folder in d.parents:
                hit = spec.check_file(d.relative_to(folder).as_posix() + "/").include
                ignored = ignored if hit is None else hit
        if ignored:
            return []
    return [(spec, _prefix(here, folder), where) for spec, folder, where in rules]


def _spec(path: Path) -> GitIgnoreSpec:
    return GitIgnoreSpec.from_lines(path.read_text(encoding="utf-8", errors="replace").splitlines())


def _prefix(root: Path, folder: Path) -> str:
    rel = root.relative_to(folder).as_posix()
    return "" if rel == "." else rel + "/"
