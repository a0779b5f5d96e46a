"""A folder or repository as one document: a tree overview part, then one part per text file.

The walk honours git's ignore rules (:mod:`kimidoc.documents.ignore`), visits entries in sorted
order (so the same tree always packs the same way), never follows symlinks (as git, so it cannot
loop), and reads no file larger than ``max_file_bytes``. Every file it does not read
(ignored, binary, too large, a PDF or image to load on its own, unreadable, a symlink) is
recorded as an :class:`~kimidoc.documents.base.Omission` in ``meta["skipped"]`` with its reason.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kimidoc.documents.base import Document, DocumentError, Omission, Part, Source
from kimidoc.documents.detect import SNIFF, decode, is_binary, kind_of
from kimidoc.documents.ignore import IgnoreRules
from kimidoc.documents.languages import language_of
from kimidoc.documents.text import text_part
from kimidoc.progress import progress

MAX_FILE_BYTES = 1_000_000
MAX_FILES = 20_000


@dataclass
class _Entry:
    rel: str
    path: Path
    size: int
    note: str = ""  # shown in the tree: line count, or why the file was skipped


def load_repository(
    root: Path,
    *,
    display: str | None = None,
    ignore: Sequence[str] = (),
    max_file_bytes: int = MAX_FILE_BYTES,
    max_files: int = MAX_FILES,
) -> Document:
    """Every text file under ``root`` (gitignore-aware) as parts cited by relative path and lines.

    ``ignore``: extra gitignore-style patterns. ``meta`` gets ``tree`` (the overview text),
    ``languages`` (files per language), ``files`` (count read) and ``skipped``.
    """
    if not root.is_dir():
        raise DocumentError(f"{display or root}: not a folder")
    name = display or str(root)
    doc = Document(name, "repository")
    entries: list[_Entry] = []
    languages: Counter[str] = Counter()
    files: list[Part] = []
    for entry in progress(
        _walk(root, IgnoreRules(root, ignore), doc.skipped, entries),
        desc=f"reading {Path(name).name or name}",
        unit="file",
    ):
        if len(files) >= max_files:
            doc.skipped.append(Omission(entry.rel, f"over the {max_files}-file limit"))
            entry.note = "skipped: file limit"
            continue
        part = _read(entry, max_file_bytes, doc.skipped)
        if part is not None:
            files.append(part)
            languages[part.meta["language"]] += 1
    tree = _tree(Path(name).name or name, entries)
    doc.meta.update(tree=tree, languages=dict(languages.most_common()), files=len(files))
    summary = ", ".join(f"{lang} {n}" for lang, n in languages.most_common(12))
    header = (
        f"{len(files)} text files read"
        + (f" ({summary})" if summary else "")
        + (f"; {_plural(len(doc.skipped), 'path')} skipped" if doc.skipped else "")
    )
    dirs_only = _tree(Path(name).name or name, entries, dirs_only=True)
    doc.parts = [
        Part(
            "text",
            Source(name),
            text=f"{header}\n{tree}",
            meta={"role": "tree", "compressed": f"{header}\n{dirs_only}"},
        )
    ] + files
    return doc


def _walk(root: Path, rules: IgnoreRules, skipped: list[Omission], entries: list[_Entry]) -> Iterator[_Entry]:
    """Files to read, depth first in sorted order; everything passed over goes to ``skipped``.

    Symlinks are not followed, as git does not: one that points inside the folder is listed with
    its target (read there), so no file is read twice and no cycle of links can loop the walk."""
    real_root = os.path.realpath(root)

    def visit(directory: Path, rel_dir: str) -> Iterator[_Entry]:
        rules.enter(rel_dir)
        try:
            names = sorted(os.listdir(directory))
        except OSError as exc:
            skipped.append(Omission(rel_dir or ".", f"folder cannot be listed ({exc.strerror})"))
            return
        for child in names:
            rel = f"{rel_dir}/{child}" if rel_dir else child
            path = directory / child
            try:
                st = os.lstat(path)
            except OSError as exc:
                skipped.append(Omission(rel, f"cannot be read ({exc.strerror})"))
                continue
            if stat_mod.S_ISLNK(st.st_mode):
                if rules.match(rel, False) is None:
                    reason = _link_reason(path, real_root)
                    skipped.append(Omission(rel, reason))
                    entries.append(_Entry(rel, path, 0, reason))
                continue
            is_dir = stat_mod.S_ISDIR(st.st_mode)
            where = rules.match(rel, is_dir)
            if where is not None:
                skipped.append(Omission(rel + ("/" if is_dir else ""), f"ignored by {where}", action="ignored"))
            elif is_dir:
                entries.append(_Entry(rel + "/", path, 0))
                yield from visit(path, rel)
            elif stat_mod.S_ISREG(st.st_mode):
                entry = _Entry(rel, path, st.st_size)
                entries.append(entry)
                yield entry
            else:
                skipped.append(Omission(rel, "not a regular file (device, socket or pipe)"))

    yield from visit(root, "")


def _link_reason(path: Path, real_root: str) -> str:
    try:
        os.stat(path)
    except OSError as exc:
        return "symlink loop" if exc.errno == errno.ELOOP else f"broken symlink ({exc.strerror})"
    target = os.path.realpath(path)
    if os.path.commonpath([real_root, target]) != real_root:
        return f"symlink to {target}, outside the folder (not followed)"
    rel = os.path.relpath(target, real_root).replace(os.sep, "/")
    here = os.path.realpath(path.parent)
    if os.path.isdir(target) and os.path.commonpath([target, here]) == target:
        return f"symlink loop (points back to {'the root' if rel == '.' else rel + '/'})"
    return f"symlink to {rel}{'/' if os.path.isdir(target) else ''} (read there)"


def _read(entry: _Entry, max_bytes: int, skipped: list[Omission]) -> Part | None:
    def skip(reason: str) -> None:
        skipped.append(Omission(entry.rel, reason))
        entry.note = f"skipped: {reason}"

    if entry.size > max_bytes:
        skip(f"larger than the {_size(max_bytes)} cap ({_size(entry.size)})")
        return None
    try:
        with open(entry.path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        skip(f"cannot be read ({exc.strerror})")
        return None
    if len(data) > max_bytes:  # grew since it was listed
        skip(f"larger than the {_size(max_bytes)} cap")
        return None
    kind = kind_of(entry.path, data[:SNIFF])
    if kind != "text":
        skip(f"{kind} file: load it on its own to read it")
        return None
    if is_binary(data[:SNIFF]):
        skip("binary file")
        return None
    text, encoding = decode(data)
    part = text_part(text, entry.rel, language_of(entry.rel, text[:200].split("\n", 1)[0]), encoding)
    n = part.source.lines[1] if part.source.lines else 0
    entry.note = _plural(n, "line") + ("" if encoding in ("utf-8", "ascii") else f", {encoding}")
    return part


def _tree(root_name: str, entries: list[_Entry], *, dirs_only: bool = False) -> str:
    """An indented overview like ``tree``: folders end in ``/``, files show lines or why they were skipped."""
    lines = [root_name.rstrip("/") + "/"]
    counts: Counter[str] = Counter()
    if dirs_only:
        for e in entries:
            if not e.rel.endswith("/"):
                counts[e.rel.rsplit("/", 1)[0] if "/" in e.rel else ""] += 1
    for e in entries:
        is_dir = e.rel.endswith("/")
        if dirs_only and not is_dir:
            continue
        depth = e.rel.rstrip("/").count("/") + 1
        name = e.rel.rstrip("/").rsplit("/", 1)[-1] + ("/" if is_dir else "")
        note = e.note
        if dirs_only and is_dir and not note:
            note = f"{counts[e.rel.rstrip('/')]} files"
        lines.append("  " * depth + name + (f"  ({note})" if note else ""))
    return "\n".join(lines)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
