"""Hostile programs in the ``python`` tool: each is contained, reported, and leaves the host untouched.

Which isolation layer each test depends on (see kimidoc/tools/sandbox/jail.py):
- network (connect to the host's listener, list interfaces): netns
- writing outside the work dir, reading outside the roots: fs_jail (and uid for what is mounted)
- fork bomb: rlimits (RLIMIT_NPROC on the sandbox's own uid) + the wall-clock kill of the process group
- memory bomb: rlimits (RLIMIT_AS); huge print: RLIMIT_FSIZE + the host's output cap
- infinite loop: wall-clock timeout (and RLIMIT_CPU, tested in test_tools_sandbox.py)
- killing the parent: pidns (host pids are invisible) + uid (no permission to signal root)
- changing limits: uid (an unprivileged process cannot raise hard limits)
- ctypes tricks: seccomp (unshare/mount/ptrace refused), uid, and process separation (a segfault
  only ends the worker); a spoofed reply: the host's frame checks
- background processes: pidns (its first process dies -> the kernel kills the rest)
Network traffic goes only to a 127.0.0.1 listener these tests open themselves.
"""

from __future__ import annotations

import os
import socket
import sys

import pytest

import kimidoc.tools.sandbox.host as kimidoc_sandbox_host
from kimidoc.tools.sandbox import Limits, PythonSandbox

pytestmark = pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="full isolation needs root on Linux (CI runs as root)")


def test_cannot_reach_a_listener_on_the_hosts_loopback(sandbox: PythonSandbox) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        r = sandbox.run(
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
            "    print('CONNECTED')\n"
            "except OSError as e:\n"
            "    print('refused', type(e).__name__)\n"
        )
        assert "CONNECTED" not in r.stdout
        assert r.stdout.startswith("refused ConnectionRefusedError")  # its own loopback has no listener
        listener.settimeout(0.3)
        with pytest.raises(socket.timeout):
            listener.accept()  # nothing arrived on the host side


def test_sees_only_its_own_loopback_interface(sandbox: PythonSandbox) -> None:
    r = sandbox.run("import socket\nsocket.if_nameindex()")
    assert r.value == "[(1, 'lo')]"
    r = sandbox.run("[l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]]")
    assert r.value == "['lo']"
    assert sandbox.run("import socket; socket.gethostname()").value == "'sandbox'"


def test_cannot_write_outside_its_work_directory(sandbox: PythonSandbox, tmp_path, docs_dir: str) -> None:
    targets = [str(tmp_path / "outside.txt"), "../escape.txt", "/etc/kimidoc-evil", "/usr/kimidoc-evil", f"{docs_dir}/new.txt", "/kimidoc-evil"]
    code = "results = []\nfor t in %r:\n    try:\n        open(t, 'w').write('x'); results.append('WROTE ' + t)\n    except OSError as e:\n        results.append(type(e).__name__)\nresults" % targets
    r = sandbox.run(code)
    assert "WROTE" not in r.value, r.value
    for t in (tmp_path / "outside.txt", tmp_path / "escape.txt", "/etc/kimidoc-evil", "/usr/kimidoc-evil", f"{docs_dir}/new.txt", "/kimidoc-evil"):
        assert not os.path.exists(t)
    assert not os.path.exists(os.path.join(os.path.dirname(sandbox.workdir), "escape.txt"))
    # /tmp inside is a private tmpfs: writable, but not the host's /tmp
    r = sandbox.run("open('/tmp/private-scratch', 'w').write('x')")
    assert r.ok and not os.path.exists("/tmp/private-scratch")


def test_cannot_read_files_outside_the_allowed_roots(sandbox: PythonSandbox, tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    secret.chmod(0o644)  # world-readable on the host: only the jail keeps it out of reach
    host_file = os.path.abspath(__file__)
    code = "out = []\nfor p in %r:\n    try:\n        out.append(open(p).read()[:20])\n    except OSError as e:\n        out.append(type(e).__name__)\nout" % [str(secret), host_file, "/root/.bash_history", "/etc/shadow"]
    r = sandbox.run(code)
    assert "TOP SECRET" not in r.value
    assert r.value.count("FileNotFoundError") >= 2 and "PermissionError" in r.value  # invisible, or not ours
    listing = eval(sandbox.run("import os\nsorted(os.listdir('/'))").value)  # noqa: S307
    assert {"usr", "etc", "tmp", "proc", "dev"} <= set(listing)
    assert not {"work", "home", "opt", "var", "mnt", "srv"} & set(listing)  # the host's other trees do not exist inside


def test_fork_bomb_is_capped_and_killed(docs_dir: str, processes_of_uid) -> None:
    with PythonSandbox([docs_dir], limits=Limits(timeout=3, processes=16)) as sb:
        r = sb.run(
            "import os, time\nn = 0\ntry:\n    for _ in range(500):\n        if os.fork() == 0:\n            time.sleep(60); os._exit(0)\n        n += 1\n"
            "except OSError as e:\n    print('fork failed after', n, e.errno)\n"
        )
        assert r.stdout.startswith("fork failed after") and int(r.stdout.split()[3]) < 16
        assert len(processes_of_uid(sb.uid)) >= 10  # the children are alive, each under the sandbox uid
        r = sb.run("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
        assert "Timed out" in r.error
        assert processes_of_uid(sb.uid) == []  # every process of the bomb is gone
        assert sb.run("1 + 1").value == "2"


def test_memory_bomb_raises_memory_error_and_keeps_the_session(sandbox: PythonSandbox) -> None:
    assert sandbox.run("kept = 'still here'").ok
    r = sandbox.run("blob = bytearray(8 * 1024 ** 3)")
    assert "MemoryError" in r.error
    r = sandbox.run("chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 1024 ** 2))")
    assert "MemoryError" in r.error
    assert sandbox.run("del chunks\nkept").value == "'still here'"


def test_infinite_loop_is_killed_by_the_wall_clock(sandbox: PythonSandbox) -> None:
    r = sandbox.run("while True:\n    pass", timeout=1.5)
    assert "Timed out after 1.5 s" in r.error and not r.ok
    assert sandbox.run("'alive'").value == "'alive'"


def test_huge_print_is_capped(sandbox: PythonSandbox) -> None:
    r = sandbox.run("print('y' * (50 * 1024 ** 2))")  # more than the 8 MiB file-size limit
    assert "File too large" in r.error
    assert "bytes of output truncated" in r.stdout and len(r.stdout) < 5000
    r = sandbox.run("while True:\n    print('spam ' * 1000)")
    assert "File too large" in r.error
    assert sandbox.run("'ok'").value == "'ok'"


def test_cannot_kill_its_parent_or_the_host(sandbox: PythonSandbox) -> None:
    sandbox.start()
    worker_host_pid = sandbox.pid
    r = sandbox.run(
        "import os, signal\nout = [os.getppid()]\n"
        f"for pid in (os.getppid(), {os.getpid()}, {worker_host_pid}, 1):\n"
        "    try:\n        os.kill(pid, signal.SIGKILL); out.append('sent')\n"
        "    except OSError as e:\n        out.append(type(e).__name__)\nout"
    )
    # its parent is PID 1 of its namespace (SIGKILL from inside is ignored); host pids do not exist there
    assert r.value == "[1, 'sent', 'ProcessLookupError', 'ProcessLookupError', 'sent']"
    assert sandbox.run("'still running'").value == "'still running'"
    assert sandbox.pid == worker_host_pid and os.path.exists(f"/proc/{worker_host_pid}")


def test_cannot_raise_its_limits_or_become_root(sandbox: PythonSandbox) -> None:
    r = sandbox.run(
        "import os, resource\nout = []\n"
        "for which in (resource.RLIMIT_AS, resource.RLIMIT_NPROC, resource.RLIMIT_CPU, resource.RLIMIT_FSIZE):\n"
        "    try:\n        resource.setrlimit(which, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)); out.append('raised')\n"
        "    except (ValueError, OSError):\n        out.append('refused')\n"
        "for f in (lambda: os.setuid(0), lambda: os.setgid(0), lambda: os.chroot('/')):\n"
        "    try:\n        f(); out.append('became root')\n"
        "    except OSError:\n        out.append('refused')\nout"
    )
    assert r.value == str(["refused"] * 7)


def test_ctypes_tricks_are_refused_or_contained(sandbox: PythonSandbox) -> None:
    r = sandbox.run(
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nout = {}\n"
        "for name, call in [('unshare_user', lambda: libc.unshare(0x10000000)), ('unshare_net', lambda: libc.unshare(0x40000000)),\n"
        "                   ('mount', lambda: libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)), ('ptrace', lambda: libc.ptrace(16, 1, 0, 0)),\n"
        "                   ('setuid', lambda: libc.setuid(0))]:\n"
        "    out[name] = (call(), ctypes.get_errno())\nout"
    )
    result = eval(r.value)  # noqa: S307  a dict of ints printed by the sandbox
    assert all(rc == -1 for rc, _ in result.values()), result
    assert result["unshare_user"][1] == 1 and result["mount"][1] == 1  # EPERM from the seccomp filter
    sandbox.run("x_before_crash = 1")
    r = sandbox.run("import ctypes\nctypes.string_at(0)")
    assert "segmentation fault" in r.error and "fresh interpreter" in r.error
    assert "Segmentation fault" in r.stderr  # faulthandler's report comes back too
    r = sandbox.run("'x_before_crash' in globals()")
    assert r.value == "False" and "new interpreter session" in r.notes[0]


def test_a_spoofed_reply_on_the_protocol_pipe_is_a_crash_not_a_host_failure(sandbox: PythonSandbox) -> None:
    r = sandbox.run("import os\nfor fd in range(3, 1024):\n    try:\n        os.write(fd, b'\\xff\\xff\\xff\\xff')\n    except OSError:\n        pass\nimport time; time.sleep(5)")
    assert not r.ok and "malformed reply" in r.error and "fresh interpreter" in r.error
    assert sandbox.run("'recovered'").value == "'recovered'"


def test_background_processes_do_not_survive_the_session(docs_dir: str, processes_of_uid) -> None:
    sb = PythonSandbox([docs_dir], limits=Limits(timeout=10))
    r = sb.run(
        "import subprocess, os\n"
        "subprocess.Popen(['sleep', '1000'], start_new_session=True)\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        import time; time.sleep(1000)\n    os._exit(0)\n"
        "os.wait(); 'spawned'"
    )
    assert r.value == "'spawned'"
    uid = sb.uid
    before = set(processes_of_uid(uid))
    assert len(before) >= 4  # PID 1 of the namespace, the interpreter, the sleeper and the daemon
    sb.restart()  # a restart ends them, not only close()
    assert before.isdisjoint(processes_of_uid(uid))
    sb.close()
    assert processes_of_uid(uid) == []
    assert not os.path.exists(os.path.dirname(sb.workdir))  # the session's directories are gone


def test_a_killed_host_takes_its_sandbox_along(processes_of_uid) -> None:
    """The lifeline pipe closes when the host dies, however it dies; the worker then ends its namespace."""
    import subprocess
    import time

    script = (
        "from kimidoc.tools.sandbox import PythonSandbox\n"
        "sb = PythonSandbox(); sb.start(); print(sb.uid, sb.workdir, flush=True)\n"
        "sb.run('import time; time.sleep(1000)')\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    host = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=root)
    try:
        uid_text, workdir = host.stdout.readline().split()
        uid = int(uid_text)
        deadline = time.monotonic() + 30
        while len(processes_of_uid(uid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(processes_of_uid(uid)) >= 2  # the namespace's PID 1 and the busy interpreter
    finally:
        host.kill()  # SIGKILL: no finalizer, no atexit runs in the host
        host.wait()
    deadline = time.monotonic() + 15
    while processes_of_uid(uid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_of_uid(uid) == []
    session = os.path.dirname(workdir)
    assert os.path.isdir(session)  # a SIGKILLed host cannot clean up after itself...
    kimidoc_sandbox_host._swept = False
    with PythonSandbox() as sb:
        assert sb.run("1").ok
    assert not os.path.exists(session)  # ...so the next session sweeps its folder away
