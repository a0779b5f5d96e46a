"""File tools over folders and repositories: list, read a line range, grep; confined to the roots.

Every path goes through :class:`kimidoc.tools.paths.Roots` (no ``..``, absolute paths or symlinks
out of the roots). Walks never follow symlinks and honour ``.gitignore`` as the repository loader
does; each hit is cited ``path:line`` so the model can quote it and read around it.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from kimidoc.documents.base import Source
from kimidoc.documents.detect import SNIFF, decode, is_binary
from kimidoc.documents.ignore import IgnoreRules
from kimidoc.tools.base import Tool, ToolResult, tool
from kimidoc.tools.paths import Resolved, Roots

READ_LINES = 400  # lines per read_file call when no end is given
MAX_CHARS = 40_000  # characters of one tool result
MAX_FILE_BYTES = 16 << 20  # largest file read or grepped
LINE_CHARS = 300  # a grep hit shows at most this much of its line


def read_text(roots: Roots, path: str) -> tuple[Resolved, str]:
    """The decoded text of a file inside ``roots``; binary and oversized files are refused."""
    where, f = roots.open(path)
    with f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(
            f"{where.display}: larger than {MAX_FILE_BYTES >> 20} MB; use the python tool to read parts of it"
        )
    if is_binary(data[:SNIFF]):
        raise ValueError(f"{where.display}: binary file; use the python tool to inspect it")
    return where, decode(data)[0]


def numbered(display: str, text: str, start_line: int = 1, end_line: int | None = None) -> ToolResult:
    """Lines ``start_line``..``end_line`` (1-based, inclusive) with numbers, under a citation header;
    the result's source is the line range shown."""
    lines = text.splitlines()
    total = len(lines)
    if start_line < 1:
        raise ValueError(f"start_line must be 1 or more, got {start_line}")
    if total == 0:
        return ToolResult(f"{display}: (empty file)")
    if start_line > total:
        raise ValueError(f"{display} has {total} lines; start_line {start_line} is past the end")
    end = min(total, end_line if end_line is not None else start_line + READ_LINES - 1)
    if end < start_line:
        raise ValueError(f"end_line {end_line} is before start_line {start_line}")
    width = len(str(end))
    out: list[str] = []
    size = 0
    for n in range(start_line, end + 1):
        row = f"{n:>{width}} | {lines[n - 1]}"
        if size + len(row) > MAX_CHARS and out:
            end = n - 1
            break
        out.append(row)
        size += len(row) + 1
    header = f"{display}:{start_line}-{end} ({total} lines)"
    more = f"\n[... continue with start_line={end + 1}]" if end < total else ""
    return ToolResult(header + "\n" + "\n".join(out) + more, sources=[Source(display, lines=(start_line, end))])


def _walk(roots: Roots, path: str) -> Iterator[tuple[Resolved, str, int, str]]:
    """(root entry, path relative to it, dir fd, file name) of every file under ``path``, gitignore-aware."""
    where, top = roots.open_dir(path)
    try:
        rules = IgnoreRules(Path(where.root))
        base = "" if where.rel == "." else where.rel
        parts = base.split("/") if base else []
        for depth in range(len(parts)):  # .gitignore files above the starting folder apply too
            rules.enter("/".join(parts[:depth]))
        for dirpath, dirnames, filenames, dirfd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            rel_dir = os.path.normpath(os.path.join(base, dirpath)).replace(os.sep, "/")
            rel_dir = "" if rel_dir == "." else rel_dir
            rules.enter(rel_dir)
            dirnames[:] = sorted(d for d in dirnames if rules.match(f"{rel_dir}/{d}" if rel_dir else d, True) is None)
            for name in sorted(filenames):
                rel = f"{rel_dir}/{name}" if rel_dir else name
                if rules.match(rel, False) is None:
                    yield where, rel, dirfd, name
    finally:
        os.close(top)


def _glob_ok(rel: str, glob: str | None) -> bool:
    return glob is None or fnmatch.fnmatch(os.path.basename(rel), glob) or fnmatch.fnmatch(rel, glob)


def _grep_sources(roots: Roots, start: str, glob: str | None) -> Iterator[tuple[str, str]]:
    """(shown path, text) of every searchable file under ``start`` whose name matches ``glob``."""
    where = roots.resolve(start)
    if not os.path.isdir(where.real):
        if _glob_ok(where.rel, glob):
            try:
                yield where.display, read_text(roots, start)[1]
            except ValueError:  # binary or too large: nothing to grep
                pass
        return
    for entry, rel, dirfd, name in _walk(roots, start):
        text = _read_for_grep(name, dirfd) if _glob_ok(rel, glob) else None
        if text is not None:
            yield _shown(entry, rel, roots), text


def _shown(where: Resolved, rel: str, roots: Roots) -> str:
    return os.path.join(where.root, rel) if len(roots.roots) > 1 else rel


def _starting_points(roots: Roots, path: str) -> list[str]:
    """``.`` with several roots means all of them."""
    return list(roots.roots) if path.strip() in ("", ".") and len(roots.roots) > 1 else [path]


def file_tools(roots: Roots | list[str]) -> list[Tool]:
    """``list_files``, ``read_file`` and ``grep`` over ``roots``."""
    roots = roots if isinstance(roots, Roots) else Roots(roots)
    where_text = ", ".join(roots.roots)

    @tool
    def list_files(path: str = ".", recursive: bool = False, pattern: str | None = None, max_entries: int = 300) -> str:
        """List a folder of the repository (folders end in /). Symlinks are shown, never followed.

        Args:
            path: folder relative to the repository root (or absolute inside it)
            recursive: list the whole subtree (skipping files ignored by .gitignore)
            pattern: only names matching this glob, e.g. "*.py"
            max_entries: stop after this many entries
        """
        rows: list[str] = []
        for start in _starting_points(roots, path):
            if recursive:
                for where, rel, dirfd, name in _walk(roots, start):
                    if pattern is None or fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(rel, pattern):
                        size = os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_size
                        rows.append(f"{_shown(where, rel, roots)}  ({size} bytes)")
                        if len(rows) >= max_entries:
                            break
            else:
                where, fd = roots.open_dir(start)
                try:
                    prefix = "" if where.display == "." else where.display.rstrip("/") + "/"
                    with os.scandir(fd) as it:
                        entries = sorted(it, key=lambda e: e.name)
                    for e in entries:
                        if pattern is not None and not fnmatch.fnmatch(e.name, pattern):
                            continue
                        st = e.stat(follow_symlinks=False)
                        if stat.S_ISLNK(st.st_mode):
                            rows.append(f"{prefix}{e.name} -> symlink (not followed)")
                        elif stat.S_ISDIR(st.st_mode):
                            rows.append(f"{prefix}{e.name}/")
                        else:
                            rows.append(f"{prefix}{e.name}  ({st.st_size} bytes)")
                finally:
                    os.close(fd)
            if len(rows) >= max_entries:
                rows = rows[:max_entries] + [f"[... stopped at {max_entries} entries; narrow the path or pattern]"]
                break
        return "\n".join(rows) or "(no entries)"

    @tool
    def read_file(path: str, start_line: int = 1, end_line: int | None = None) -> ToolResult:
        """Read a text file of the repository with line numbers (up to 400 lines per call).

        Args:
            path: file relative to the repository root (or absolute inside it)
            start_line: first line to show (1-based)
            end_line: last line to show (inclusive); default start_line + 399
        """
        where, text = read_text(roots, path)
        return numbered(where.display, text, start_line, end_line)

    @tool
    def grep(
        pattern: str,
        path: str = ".",
        regex: bool = False,
        case_sensitive: bool = False,
        glob: str | None = None,
        max_results: int = 100,
    ) -> ToolResult:
        """Search the repository's text files line by line; each hit is cited as path:line.

        Args:
            pattern: text to find (or a Python regular expression when regex is true)
            path: folder or file to search, relative to the repository root
            regex: treat pattern as a regular expression
            case_sensitive: match case exactly
            glob: only files whose name matches this glob, e.g. "*.py"
            max_results: stop after this many hits
        """
        matcher = compile_pattern(pattern, regex=regex, case_sensitive=case_sensitive)
        hits: list[str] = []
        sources: list[Source] = []
        searched = 0
        for start in _starting_points(roots, path):
            for shown_path, text in _grep_sources(roots, start, glob):
                searched += 1
                for n, line in enumerate(text.splitlines(), 1):
                    if matcher.search(line):
                        shown = line.strip()
                        shown = shown[:LINE_CHARS] + (" ..." if len(shown) > LINE_CHARS else "")
                        hits.append(f"{shown_path}:{n}: {shown}")
                        sources.append(Source(shown_path, lines=(n, n)))
                        if len(hits) >= max_results:
                            return ToolResult(
                                "\n".join(hits) + f"\n[... stopped at {max_results} hits; narrow the search]",
                                sources=sources,
                            )
        return (
            ToolResult("\n".join(hits), sources=sources)
            if hits
            else ToolResult(f"no match for {pattern!r} in {searched} file(s)")
        )

    for t in (list_files, read_file, grep):
        t.description += f" Roots: {where_text}."
    return [list_files, read_file, grep]


def compile_pattern(pattern: str, *, regex: bool, case_sensitive: bool) -> re.Pattern[str]:
    try:
        return re.compile(pattern if regex else re.escape(pattern), 0 if case_sensitive else re.IGNORECASE)
    except re.error as exc:
        raise ValueError(
            f"invalid regular expression {pattern!r}: {exc}; pass regex=false to search plain text"
        ) from exc


def _read_for_grep(name: str, dirfd: int) -> str | None:
    """Text of one file opened without following symlinks; None for binary, huge or unreadable files."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dirfd)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
            return None
        data = f.read(MAX_FILE_BYTES)
    if is_binary(data[:SNIFF]):
        return None
    return decode(data)[0]
