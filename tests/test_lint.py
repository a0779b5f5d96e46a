"""The code stays formatted and lint-clean: ruff with the settings in pyproject.toml (pinned in the dev extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "args", [["check", "--output-format", "concise"], ["format", "--check"]], ids=["lint", "format"]
)
def test_ruff(args: list[str]) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "."], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, (
        f"ruff {' '.join(args)} found problems (run `ruff check --fix . && ruff format .`):\n{run.stdout}{run.stderr}"
    )
