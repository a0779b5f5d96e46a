"""The README's two set-up commands, each run alone in a fresh clone and a fresh virtualenv.

The commands are read from README.md's "Set-up" block, so this check cannot drift from what a new
user copies. The fresh runs take many minutes (installing, then the whole suite), so they are marked
``slow`` and run only when ``KIMIDOC_FRESH_SETUP=1`` is set, before a release::

    python tests/test_fresh_setup.py          # both commands; prints wall time and the last line
    python tests/test_fresh_setup.py 2        # only the second (the test command)

The fast test keeps ``.ci/run`` running exactly the README's test command.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SETUP_BLOCK = re.compile(r"^## Set-up[^\n]*\n+```bash\n(.*?)\n```", re.MULTILINE | re.DOTALL)


def readme_commands(readme: Path = REPO / "README.md") -> list[str]:
    """The command lines of the README's set-up block, in order."""
    m = _SETUP_BLOCK.search(readme.read_text())
    if m is None:
        raise ValueError(f"{readme}: no '## Set-up' section followed by a ```bash block")
    return [line.strip() for line in m.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def ci_command(script: Path = REPO / ".ci" / "run") -> str:
    """The one command line of ``.ci/run`` besides its shell preamble (shebang, comments, set, cd)."""
    lines = [ln.strip() for ln in script.read_text().splitlines()]
    body = [
        ln for ln in lines if ln and not ln.startswith("#") and not ln.startswith("set ") and not ln.startswith("cd ")
    ]
    if len(body) != 1:
        raise ValueError(f"{script}: expected one command line besides 'set'/'cd', found {body}")
    return body[0]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    commands = readme_commands()
    assert len(commands) == 2, commands
    assert ci_command() == commands[1]


@dataclass
class FreshRun:
    command: str
    returncode: int
    seconds: float
    last_line: str
    log: Path


def run_fresh(command: str, workdir: Path, source: Path = REPO) -> FreshRun:
    """Clone ``source`` (its committed HEAD) into ``workdir``, make a virtualenv there and run
    ``command`` in the clone with only that virtualenv on the PATH. The wall time counts the
    command alone (as a user would time it), not the clone or the empty virtualenv."""
    clone, venv, log = workdir / "repo", workdir / "venv", workdir / "output.log"
    subprocess.run(["git", "clone", "-q", str(source), str(clone)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # A new user's shell: no path into this checkout, and no KIMIDOC_FRESH_SETUP (the suite inside
    # would otherwise start fresh runs of its own).
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "KIMIDOC_FRESH_SETUP")
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    start = time.monotonic()
    with open(log, "wb") as out:
        rc = subprocess.run(
            ["bash", "-c", command], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
        ).returncode
    seconds = time.monotonic() - start
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return FreshRun(command, rc, seconds, lines[-1] if lines else "", log)


def _report(i: int, run: FreshRun) -> str:
    return f"command {i}: rc={run.returncode} wall={run.seconds:.0f}s last line: {run.last_line}\n  {run.command}\n  log: {run.log}"


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("KIMIDOC_FRESH_SETUP") != "1",
    reason="fresh clone + virtualenv per README command (many minutes); set KIMIDOC_FRESH_SETUP=1",
)
@pytest.mark.parametrize("index", [1, 2])
def test_readme_command_passes_alone_in_a_fresh_clone_and_virtualenv(index: int, tmp_path: Path) -> None:
    run = run_fresh(readme_commands()[index - 1], tmp_path)
    print(_report(index, run))
    assert run.returncode == 0, _report(index, run) + "\n" + run.log.read_text(errors="replace")[-4000:]


def main(argv: list[str]) -> int:
    commands = readme_commands()
    picked = [int(a) for a in argv] or list(range(1, len(commands) + 1))
    failed = 0
    for i in picked:
        workdir = Path(tempfile.mkdtemp(prefix=f"kimidoc-fresh-{i}-"))
        print(f"command {i}: {shlex.quote(commands[i - 1])} in {workdir}", flush=True)
        run = run_fresh(commands[i - 1], workdir)
        print(_report(i, run), flush=True)
        failed += run.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
