"""Confine file access to a set of roots: no ``..`` escapes, no absolute paths outside, no symlinks out.

A path is resolved (symlinks included) and must land inside one of the roots; the file is then
opened one component at a time with ``O_NOFOLLOW`` below the root's real path, so a directory
swapped for a symlink between the check and the open cannot redirect the read either.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


class PathRefused(PermissionError):
    """A path that leaves the allowed roots."""


@dataclass(frozen=True)
class Resolved:
    real: str  # the resolved, symlink-free path
    root: str  # the real path of the root it lies in
    display: str  # how tools show it: relative to the root when there is one root, else absolute

    @property
    def rel(self) -> str:
        return os.path.relpath(self.real, self.root).replace(os.sep, "/") if self.real != self.root else "."


def _inside(path: str, root: str) -> bool:
    return path == root or os.path.commonpath([root, path]) == root


class Roots:
    """The directories (or single files) a set of file tools may read."""

    def __init__(self, roots: Iterable[str | os.PathLike[str]]) -> None:
        self.roots: list[str] = []
        for r in roots:
            real = os.path.realpath(r)
            if not os.path.exists(real):
                raise FileNotFoundError(f"root {os.fspath(r)!r} does not exist")
            if real not in self.roots:
                self.roots.append(real)
        if not self.roots:
            raise ValueError("file tools need at least one root")

    def _display(self, real: str, root: str) -> str:
        if len(self.roots) > 1:
            return real
        return os.path.relpath(real, root).replace(os.sep, "/") if real != root else "."

    def resolve(self, path: str) -> Resolved:
        """Where ``path`` (relative to a root, or absolute inside one) really is; refuses escapes."""
        if "\x00" in path:
            raise PathRefused(f"{path!r}: a path cannot contain NUL")
        path = path.strip() or "."
        candidates = [path] if os.path.isabs(path) else [os.path.join(root, path) for root in self.roots]
        outside: str | None = None
        for candidate in candidates:
            real = os.path.realpath(candidate)
            root = next((r for r in self.roots if _inside(real, r)), None)
            if root is None:
                outside = outside or path
                continue
            if os.path.lexists(real) or len(candidates) == 1:
                return Resolved(real, root, self._display(real, root))
        if outside is not None:
            raise PathRefused(f"{path!r} is outside the allowed roots ({', '.join(self.roots)})")
        raise FileNotFoundError(f"{path!r}: no such file or folder under {', '.join(self.roots)}")

    def _open(self, path: str, *, directory: bool) -> tuple[Resolved, int]:
        where = self.resolve(path)
        parts = [] if where.real == where.root else Path(os.path.relpath(where.real, where.root)).parts
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_DIRECTORY if directory else os.O_NONBLOCK)
        if not parts:
            return where, os.open(where.root, flags)
        fd = os.open(where.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in parts[:-1]:
                try:
                    nxt = os.open(part, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_DIRECTORY, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise PathRefused(f"{path!r}: a folder on the way became a symlink") from exc
                    raise
                os.close(fd)
                fd = nxt
            try:
                # O_NONBLOCK: opening a FIFO must not hang the tool; it is refused by the caller
                return where, os.open(parts[-1], flags, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise PathRefused(f"{path!r}: the file became a symlink") from exc
                raise
        finally:
            os.close(fd)

    def open(self, path: str) -> tuple[Resolved, BinaryIO]:
        """Open a regular file for reading, confined to its root (see the module docstring)."""
        try:
            where, fd = self._open(path, directory=False)
        except IsADirectoryError:
            raise IsADirectoryError(f"{path!r} is a folder") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(f"{path!r} is a folder")
            raise PathRefused(f"{path!r} is not a regular file")
        return where, os.fdopen(fd, "rb")

    def open_dir(self, path: str) -> tuple[Resolved, int]:
        """A file descriptor of a folder inside the roots (the caller closes it)."""
        try:
            return self._open(path, directory=True)
        except NotADirectoryError:
            raise NotADirectoryError(f"{path!r} is not a folder") from None
