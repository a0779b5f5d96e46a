"""The sandboxed interpreter as a notebook: state, output, values, errors, figures, restarts, isolation report."""

from __future__ import annotations

import ctypes
import io
import os
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

from kimidoc.tools import python_tool
from kimidoc.tools.sandbox import DEFAULT_REQUIRE, LAYERS, Limits, PythonSandbox

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0, reason="full isolation needs root on Linux (CI runs as root)"
)


def test_state_persists_and_last_expression_is_shown(sandbox: PythonSandbox) -> None:
    assert sandbox.run("x = 40\ny = 2").ok
    r = sandbox.run("print('sum is', x + y)\nx + y")
    assert r.stdout == "sum is 42\n"
    assert r.value == "42"
    assert sandbox.run("z = x * 2").value is None  # an assignment shows nothing
    assert sandbox.run("None").value is None


def test_error_is_reported_with_the_cells_own_traceback(sandbox: PythonSandbox) -> None:
    assert sandbox.run("before_error = 40").ok
    r = sandbox.run("def f(a):\n    return 1 / a\nf(0)")
    assert not r.ok
    assert "ZeroDivisionError" in r.error and "<cell-" in r.error and "return 1 / a" in r.error
    assert "worker.py" not in r.error  # the kernel's own frames are hidden
    assert sandbox.run("before_error").value == "40"  # an error keeps the session


def test_syntax_error_and_system_exit_do_not_end_the_session(sandbox: PythonSandbox) -> None:
    assert "SyntaxError" in sandbox.run("def (").error
    assert sandbox.run("import sys; sys.exit(3)").error == "SystemExit: 3"
    assert sandbox.run("1 + 1").value == "2"


def test_stdout_and_stderr_are_captured_separately(sandbox: PythonSandbox) -> None:
    r = sandbox.run("import sys, os\nprint('out')\nprint('err', file=sys.stderr)\nos.system('echo from-a-child')")
    assert r.stdout == "out\nfrom-a-child\n"
    assert r.stderr == "err\n"
    text = r.to_tool_result().text
    assert "out" in text and "[stderr]\nerr" in text


def test_long_output_is_truncated_with_a_note_keeping_head_and_tail(sandbox: PythonSandbox) -> None:
    r = sandbox.run("print('HEAD' + 'x' * 50000 + 'TAIL')")
    assert r.stdout.startswith("HEAD") and r.stdout.rstrip().endswith("TAIL")
    assert "bytes of output truncated" in r.stdout
    assert len(r.stdout) < 4000 + 200


def test_long_value_repr_is_truncated(sandbox: PythonSandbox) -> None:
    r = sandbox.run("list(range(100000))")
    assert r.value.startswith("[0, 1, 2") and "more characters truncated" in r.value


def test_working_directory_is_private_persistent_and_off_the_host_disk(sandbox: PythonSandbox) -> None:
    r = sandbox.run("import os\nopen('result.txt', 'w').write('saved')\nos.getcwd()")
    assert r.value == repr(sandbox.workdir)
    assert (
        sandbox.run("open('result.txt').read(), os.stat('result.txt').st_uid == os.getuid()").value == "('saved', True)"
    )
    assert not os.path.exists(os.path.join(sandbox.workdir, "result.txt"))  # a tmpfs inside, nothing on the host


def test_disk_filling_stops_at_the_private_size(docs_dir: str) -> None:
    with PythonSandbox([docs_dir], limits=Limits(disk_size="12m", file_bytes=8 << 20)) as sb:
        r = sb.run(
            "n = 0\ntry:\n    while True:\n        open(f'f{n}', 'wb').write(b'x' * (4 << 20)); n += 1\nexcept OSError as e:\n    print(n, e.errno)"
        )
        assert r.stdout.split() == ["3", "28"]  # ENOSPC once the 12 MiB tmpfs is full
        assert os.listdir(sb.workdir) == []


def test_a_host_workdir_keeps_the_files(docs_dir: str, tmp_path) -> None:
    with PythonSandbox([docs_dir], workdir=tmp_path / "out") as sb:
        assert sb.run("open('report.txt', 'w').write('kept on the host')").ok
        assert (tmp_path / "out" / "report.txt").read_text() == "kept on the host"
        assert (tmp_path / "out" / "report.txt").stat().st_uid == sb.uid
    assert (tmp_path / "out" / "report.txt").exists()  # close() leaves a caller's folder alone


def test_documents_are_readable_but_read_only(sandbox: PythonSandbox, docs_dir: str) -> None:
    r = sandbox.run(f"open({docs_dir + '/table.csv'!r}).read().splitlines()[1]")
    assert r.value == "'Jan,10'"
    table = os.path.join(docs_dir, "table.csv")
    os.chmod(table, 0o666)  # writable by anyone on the host: the read-only mount still holds
    try:
        r = sandbox.run(f"open({table!r}, 'a').write('x')")
    finally:
        os.chmod(table, 0o644)
    assert "Read-only file system" in r.error
    with open(table) as f:
        assert f.read().endswith("Mar,20\n")


def test_figures_come_back_as_png_and_are_closed(sandbox: PythonSandbox) -> None:
    r = sandbox.run(
        "import matplotlib.pyplot as plt\nplt.figure(); plt.plot([1, 2, 3])\nplt.figure(); plt.bar([1, 2], [3, 4])\nplt.show()"
    )
    assert r.ok, r.error
    assert len(r.images) == 2
    assert all(Image.open(io.BytesIO(png)).format == "PNG" for png in r.images)
    assert "non-interactive" not in r.stderr
    assert sandbox.run("len(plt.get_fignums())").value == "0"
    assert sandbox.run("1").images == []


def test_a_pil_image_as_last_value_is_an_image(sandbox: PythonSandbox) -> None:
    r = sandbox.run("from PIL import Image\nImage.new('RGB', (30, 20), 'red')")
    assert r.value is None and len(r.images) == 1
    assert Image.open(io.BytesIO(r.images[0])).size == (30, 20)


def test_threads_processes_and_pickling_work_under_the_filters(sandbox: PythonSandbox) -> None:
    """seccomp refuses clone3 with ENOSYS so libc falls back to clone: threads, pools and subprocesses must still work."""
    code = (
        "import threading, subprocess, multiprocessing as mp, pickle\n"
        "def sq(x):\n    return x * x\n"
        "out = []\nts = [threading.Thread(target=out.append, args=(i,)) for i in range(3)]\n[t.start() for t in ts]; [t.join() for t in ts]\n"
        "with mp.get_context('fork').Pool(2) as pool:\n    squares = pool.map(sq, range(4))\n"
        "sorted(out), squares, subprocess.run(['echo', 'hi'], capture_output=True).stdout, pickle.loads(pickle.dumps(sq))(5)"
    )
    r = sandbox.run(code)
    assert r.value == "([0, 1, 2], [0, 1, 4, 9], b'hi\\n', 25)", r.error


def test_isolation_report_lists_every_layer_active(sandbox: PythonSandbox) -> None:
    layers = sandbox.isolation()
    assert set(layers) == set(LAYERS)
    assert all(layers.values()), sandbox.isolation_problems()


def test_timeout_kills_and_the_next_call_restarts_with_a_note(docs_dir: str, scaled) -> None:
    with PythonSandbox([docs_dir], limits=Limits(timeout=scaled(20))) as sb:
        assert sb.run("kept = 1").ok
        first_pid = sb.pid
        r = sb.run("while True: pass", timeout=1.5)
        assert "Timed out after 1.5 s" in r.error and "fresh interpreter" in r.error
        r = sb.run("'kept' in globals()")
        assert r.value == "False"
        assert r.notes and "new interpreter session" in r.notes[0]
        assert sb.pid != first_pid


def test_cpu_limit_kills_a_busy_cell(docs_dir: str) -> None:
    with PythonSandbox([docs_dir], limits=Limits(timeout=60, cell_cpu_seconds=1)) as sb:
        r = sb.run("while True: pass")
        assert "CPU-time limit" in r.error
        assert sb.run("2 + 2").value == "4"


def test_python_tool_returns_text_and_images_and_never_raises(sandbox: PythonSandbox) -> None:
    t = python_tool(sandbox)
    assert t.name == "python" and t.parameters["required"] == ["code"]
    ok = t(code="import matplotlib.pyplot as plt\nplt.plot([3, 1, 2])\n6 * 7")
    assert not ok.is_error and "Out: 42" in ok.text and len(ok.images) == 1
    content = ok.to_content()
    assert content[-1]["type"] == "image_url"
    bad = t(code="raise ValueError('boom')")
    assert bad.is_error and "ValueError: boom" in bad.text
    assert t(code=3).is_error  # schema check before anything runs


def test_unknown_layer_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown isolation layer"):
        PythonSandbox(require=("netns", "firewall"))


_WITHOUT_SYS_ADMIN = textwrap.dedent(
    """
    import json, sys
    from kimidoc.tools.sandbox import PythonSandbox, SandboxUnavailable
    try:
        PythonSandbox().start()
        print(json.dumps({"refused": False}))
    except SandboxUnavailable as exc:
        weak = PythonSandbox(allow_weaker=True)
        print(json.dumps({"refused": True, "message": str(exc), "layers": weak.isolation(), "run": weak.run("6 * 7").value}))
        weak.close()
    """
)


def test_refuses_to_start_when_isolation_is_missing_unless_allowed() -> None:
    """A host without CAP_SYS_ADMIN (no namespaces, no mounts): the default refuses; allow_weaker runs and says what is missing."""
    libc = ctypes.CDLL(None, use_errno=True)

    def drop_sys_admin() -> None:  # runs in the child before exec: the exec'd root loses CAP_SYS_ADMIN
        libc.prctl(24, 21, 0, 0, 0)  # PR_CAPBSET_DROP, CAP_SYS_ADMIN

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run(
        [sys.executable, "-c", _WITHOUT_SYS_ADMIN],
        preexec_fn=drop_sys_admin,
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
    )
    import json

    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["refused"] is True
    assert "netns" in result["message"] and "fs_jail" in result["message"] and "allow_weaker=True" in result["message"]
    layers = result["layers"]
    assert layers["netns"] is False and layers["fs_jail"] is False and layers["pidns"] is False
    assert layers["uid"] is True and layers["rlimits"] is True  # what does not need CAP_SYS_ADMIN still holds
    assert result["run"] == "42"
    assert set(DEFAULT_REQUIRE) <= set(LAYERS)
