"""Fixtures for the tool tests: sandboxes, and a way to see the sandbox's processes from the host."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from kimidoc.tools.sandbox import Limits, PythonSandbox


def _processes_of_uid(uid: int) -> list[int]:
    """Host pids of every live process whose real uid is ``uid`` (each sandbox has a uid of its own)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            out.append(int(entry))
                        break
        except OSError:
            continue
    return out


@pytest.fixture
def processes_of_uid() -> Callable[[int], list[int]]:
    return _processes_of_uid


@pytest.fixture(scope="module")
def docs_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("docs")
    d.chmod(0o755)  # the sandbox reads documents as any other user would (pytest makes its folders 0700)
    (d / "table.csv").write_text("month,sales\nJan,10\nFeb,30\nMar,20\n")
    (d / "notes.txt").write_text("the documents are read-only\n")
    return str(d)


@pytest.fixture(scope="module")
def sandbox(docs_dir: str, scaled: Callable[[float], float]) -> Iterator[PythonSandbox]:
    """A fully isolated sandbox with small limits, shared by a module's tests (a cell that should
    finish gets a deadline that scales with the machine's load; timeout tests pass their own)."""
    sb = PythonSandbox(
        [docs_dir],
        limits=Limits(timeout=scaled(20), memory_bytes=1 << 30, file_bytes=8 << 20, processes=32, output_chars=4000),
    )
    yield sb
    sb.close()
