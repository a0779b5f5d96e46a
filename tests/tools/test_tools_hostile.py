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
import time

import pytest

import kimidoc.tools.sandbox.host as kimidoc_sandbox_host
from kimidoc.tools.sandbox import Limits, PythonSandbox

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0, reason="full isolation needs root on Linux (CI runs as root)"
)


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
    targets = [
        str(tmp_path / "outside.txt"),
        "../escape.txt",
        "/etc/kimidoc-evil",
        "/usr/kimidoc-evil",
        f"{docs_dir}/new.txt",
        "/kimidoc-evil",
    ]
    code = f"results = []\nfor t in {targets!r}:\n    try:\n        open(t, 'w').write('x'); results.append('WROTE ' + t)\n    except OSError as e:\n        results.append(type(e).__name__)\nresults"
    r = sandbox.run(code)
    assert "WROTE" not in r.value, r.value
    for t in (
        tmp_path / "outside.txt",
        tmp_path / "escape.txt",
        "/etc/kimidoc-evil",
        "/usr/kimidoc-evil",
        f"{docs_dir}/new.txt",
        "/kimidoc-evil",
    ):
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
    code = (
        "out = []\nfor p in %r:\n    try:\n        out.append(open(p).read()[:20])\n    except OSError as e:\n        out.append(type(e).__name__)\nout"
        % [str(secret), host_file, "/root/.bash_history", "/etc/shadow"]
    )
    r = sandbox.run(code)
    assert "TOP SECRET" not in r.value
    assert r.value.count("FileNotFoundError") >= 2 and "PermissionError" in r.value  # invisible, or not ours
    listing = eval(sandbox.run("import os\nsorted(os.listdir('/'))").value)  # noqa: S307
    assert {"usr", "etc", "tmp", "proc", "dev"} <= set(listing)
    assert not {"work", "home", "opt", "var", "mnt", "srv"} & set(listing)  # the host's other trees do not exist inside


def test_fork_bomb_is_capped_and_killed(docs_dir: str, processes_of_uid, scaled) -> None:
    with PythonSandbox([docs_dir], limits=Limits(timeout=scaled(20), processes=16)) as sb:
        r = sb.run(
            "import os, time\nn = 0\ntry:\n    for _ in range(500):\n        if os.fork() == 0:\n            time.sleep(60); os._exit(0)\n        n += 1\n"
            "except OSError as e:\n    print('fork failed after', n, e.errno)\n"
        )
        assert r.stdout.startswith("fork failed after") and int(r.stdout.split()[3]) < 16
        assert len(processes_of_uid(sb.uid)) >= 10  # the children are alive, each under the sandbox uid
        r = sb.run("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", timeout=3)
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
    r = sandbox.run(
        "import os\nfor fd in range(3, 1024):\n    try:\n        os.write(fd, b'\\xff\\xff\\xff\\xff')\n    except OSError:\n        pass\nimport time; time.sleep(5)"
    )
    assert not r.ok and "malformed reply" in r.error and "fresh interpreter" in r.error
    assert sandbox.run("'recovered'").value == "'recovered'"


def test_background_processes_do_not_survive_the_session(docs_dir: str, processes_of_uid, scaled) -> None:
    sb = PythonSandbox([docs_dir], limits=Limits(timeout=scaled(10)))
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


def test_a_killed_host_takes_its_sandbox_along(processes_of_uid, scaled) -> None:
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
        deadline = time.monotonic() + scaled(30)
        while len(processes_of_uid(uid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(processes_of_uid(uid)) >= 2  # the namespace's PID 1 and the busy interpreter
    finally:
        host.kill()  # SIGKILL: no finalizer, no atexit runs in the host
        host.wait()
    deadline = time.monotonic() + scaled(15)
    while processes_of_uid(uid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_of_uid(uid) == []
    session = os.path.dirname(workdir)
    assert os.path.isdir(session)  # a SIGKILLed host cannot clean up after itself...
    kimidoc_sandbox_host._swept = False
    with PythonSandbox() as sb:
        assert sb.run("1").ok
    assert not os.path.exists(session)  # ...so the next session sweeps its folder away


# -- the seven gaps of the hostile-program run, and the lifecycle faults seen with them --------------
# Each is checked from the host: what reaches a host listener, what the host can open, which host
# processes stay alive, what the host's result says; never only what the sandbox prints.


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def _in_namespace(pids: list[int], ns_pid: int) -> int:
    """The host pid, among a sandbox's ``pids``, of the process that is ``ns_pid`` inside its PID namespace
    (1: its PID 1, 2: the interpreter)."""
    for pid in pids:
        try:
            if int(_status(pid)["NSpid"].split()[-1]) == ns_pid:
                return pid
        except (OSError, KeyError):
            continue
    raise AssertionError(f"no process {ns_pid} in the namespace among {pids}")


def _until(condition, seconds: float = 60.0) -> bool:
    """Poll ``condition`` until it holds or ``seconds`` pass (generous: the machine may be loaded)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize("folder", ["docs", "docs,bound"])  # an overlay; a plain bind (overlayfs cannot name a comma)
def test_sockets_fifos_and_devices_in_the_documents_are_unreachable(tmp_path, folder: str) -> None:
    docs = tmp_path / folder
    (docs / "sub").mkdir(parents=True)
    for d in (docs, docs / "sub"):
        d.chmod(0o755)
    listeners = []
    for name, mode in (("private.sock", 0o600), ("open.sock", 0o666)):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(docs / name))
        os.chmod(docs / name, mode)
        s.listen(4)
        s.setblocking(False)
        listeners.append(s)
    fifo = docs / "sub" / "pipe"
    os.mkfifo(fifo)
    os.chmod(fifo, 0o666)
    os.mknod(docs / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.chmod(docs / "null", 0o666)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a host process reading the FIFO
    try:
        with PythonSandbox([docs]) as sb:
            code = (
                "import os, socket\nout = {}\n"
                f"for p in {[str(docs / 'private.sock'), str(docs / 'open.sock')]!r}:\n"
                "    try:\n        s = socket.socket(socket.AF_UNIX); s.connect(p); s.sendall(b'LEAK'); out[p] = 'sent'\n"
                "    except OSError as e:\n        out[p] = e.strerror\n"
                f"for p in {[str(fifo), str(docs / 'null')]!r}:\n"
                "    try:\n        fd = os.open(p, os.O_WRONLY | os.O_NONBLOCK); os.write(fd, b'LEAK'); out[p] = 'written'\n"
                "    except OSError as e:\n        out[p] = e.strerror\nout"
            )
            r = sb.run(code)
            assert r.ok, r.error
            assert ("bound without an overlay" in str(sb.isolation_problems())) == ("," in folder)
        for s in listeners:
            with pytest.raises(BlockingIOError):
                s.accept()  # the cell has finished: a connection would be waiting already
        try:
            assert os.read(reader, 100) == b""
        except BlockingIOError:
            pass  # a writer is open but wrote nothing
    finally:
        os.close(reader)
        for s in listeners:
            s.close()
    assert "sent" not in r.value and "written" not in r.value, r.value


def test_locks_and_special_files_made_after_the_start_do_not_reach_the_host(tmp_path) -> None:
    import fcntl

    docs = tmp_path / "docs"
    docs.mkdir()
    docs.chmod(0o755)
    (docs / "doc.txt").write_text("shared")
    with PythonSandbox([docs]) as sb:
        sb.start()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # both made while the session runs
        listener.bind(str(docs / "late.sock"))
        os.chmod(docs / "late.sock", 0o666)
        listener.listen(4)
        listener.setblocking(False)
        os.mkfifo(docs / "late.fifo")
        os.chmod(docs / "late.fifo", 0o666)
        reader = os.open(docs / "late.fifo", os.O_RDONLY | os.O_NONBLOCK)
        try:
            r = sb.run(
                "import fcntl, os, socket\nout = {}\n"
                f"held = open({str(docs / 'doc.txt')!r})\n"
                "for name, lock in (('flock', lambda: fcntl.flock(held, fcntl.LOCK_EX)), ('lockf', lambda: fcntl.lockf(held, fcntl.LOCK_SH))):\n"
                "    try:\n        lock(); out[name] = 'held'\n    except OSError as e:\n        out[name] = e.strerror\n"
                f"try:\n    s = socket.socket(socket.AF_UNIX); s.connect({str(docs / 'late.sock')!r}); s.sendall(b'LEAK'); out['sock'] = 'sent'\n"
                "except OSError as e:\n    out['sock'] = e.strerror\n"
                f"try:\n    fd = os.open({str(docs / 'late.fifo')!r}, os.O_WRONLY | os.O_NONBLOCK); os.write(fd, b'LEAK'); out['fifo'] = 'written'\n"
                "except OSError as e:\n    out['fifo'] = e.strerror\nout"
            )
            assert r.ok, r.error
            with open(docs / "doc.txt", "r+") as mine:  # the host's own locks are not blocked by the sandbox's
                fcntl.flock(mine, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.lockf(mine, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with pytest.raises(BlockingIOError):
                listener.accept()
            try:
                assert os.read(reader, 100) == b""
            except BlockingIOError:
                pass
        finally:
            os.close(reader)
            listener.close()
    assert "sent" not in r.value and "written" not in r.value, r.value


def test_document_modes_keep_their_meaning_and_leases_are_refused(tmp_path) -> None:
    docs, out = tmp_path / "docs", tmp_path / "out"
    docs.mkdir()
    docs.chmod(0o755)
    (docs / "secret.txt").write_text("TOP SECRET")
    (docs / "secret.txt").chmod(0o600)  # root's own file: not the sandbox's to read
    (docs / "shared.txt").write_text("shared")
    (docs / "shared.txt").chmod(0o644)
    with PythonSandbox([docs], workdir=out) as sb:
        r = sb.run(
            "import fcntl, os\nout = {}\n"
            f"try:\n    out['secret'] = open({str(docs / 'secret.txt')!r}).read()\nexcept OSError as e:\n    out['secret'] = e.strerror\n"
            f"out['owner_is_me'] = os.stat({str(docs / 'shared.txt')!r}).st_uid == os.getuid()\n"
            "open('mine.txt', 'w').write('mine')\nheld = []\n"
            f"for p in ({str(docs / 'shared.txt')!r}, 'mine.txt'):\n"
            "    f = open(p)\n    held.append(f)\n"
            "    try:\n        fcntl.fcntl(f, fcntl.F_SETLEASE, fcntl.F_RDLCK); out[p] = 'leased'\n"
            "    except OSError as e:\n        out[p] = e.strerror\nout"
        )
        assert r.ok, r.error
        assert "TOP SECRET" not in r.value and "'owner_is_me': False" in r.value, r.value
        for path in (docs / "shared.txt", out / "mine.txt"):
            # a lease held by the sandbox would make this open fail with EWOULDBLOCK (or block for 45 s)
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def test_a_huge_cell_is_refused_before_it_is_sent(sandbox: PythonSandbox) -> None:
    assert sandbox.run("kept = 'here'").ok
    r = sandbox.run("'x'\n#" + "y" * (17 << 20))  # over the 16 MiB request limit
    assert not r.ok and "not run" in r.error and "request" in r.error
    assert sandbox.run("kept").value == "'here'"  # nothing was sent: the session is intact
    assert sandbox.run("'big'\n#" + "y" * (1 << 20)).value == "'big'"  # a cell far over a pipe's 64 KiB is fine


def test_a_stopped_interpreter_cannot_hang_the_host(docs_dir: str, processes_of_uid) -> None:
    import threading

    with PythonSandbox([docs_dir], limits=Limits(timeout=3)) as sb:
        # the child stops the interpreter once it sleeps, waiting for the next request (it blocks nowhere else)
        sb.run(
            "import os, signal, time\nif os.fork() == 0:\n    parent = os.getppid()\n"
            "    while open(f'/proc/{parent}/stat').read().rsplit(')', 1)[1].split()[0] != 'S':\n        time.sleep(0.01)\n"
            "    os.kill(parent, signal.SIGSTOP)\n    os._exit(0)"
        )
        interpreter = _in_namespace(processes_of_uid(sb.uid), 2)
        assert _until(lambda: _status(interpreter)["State"].startswith("T"))  # stopped, between two calls
        results = []
        cell = threading.Thread(target=lambda: results.append(sb.run("x = 1  # " + "y" * (4 << 20))), daemon=True)
        cell.start()
        cell.join(60)  # 20 times the cell's timeout: the host must have given up long before
        hung = cell.is_alive()
        if hung:  # unblock the host by killing the sandbox from outside, as one had to before
            for pid in processes_of_uid(sb.uid):
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass  # gone with its namespace's PID 1
            cell.join(30)
        assert not hung
        assert "Timed out after 3 s" in results[0].error


def test_an_inode_flood_stops_at_the_tmpfs_cap(docs_dir: str, processes_of_uid) -> None:
    cap = 16384  # Limits().files
    with PythonSandbox([docs_dir], limits=Limits(timeout=120)) as sb:
        r = sb.run(
            "import os\nout = {}\n"
            "for d in ('/tmp', '/dev/shm', os.getcwd()):\n"
            "    os.mkdir(f'{d}/flood')\n    n = 0\n"
            "    try:\n"
            f"        while n < {cap + 2000}:\n"
            "            open(f'{d}/flood/{n}', 'w').close(); n += 1\n"
            "    except OSError as e:\n        out[d] = e.errno\nout"
        )
        assert r.ok, r.error
        root = f"/proc/{_in_namespace(processes_of_uid(sb.uid), 2)}/root"
        for d in ("/tmp", "/dev/shm", sb.workdir):
            assert len(os.listdir(f"{root}{d}/flood")) <= cap, d  # counted by the host through the sandbox's root
        assert set(eval(r.value).values()) == {28}, r.value  # ENOSPC in each


def test_signals_to_pid_1_do_not_end_the_session(sandbox: PythonSandbox, processes_of_uid) -> None:
    assert sandbox.run("kept = 'here'").ok
    init = _in_namespace(processes_of_uid(sandbox.uid), 1)
    r = sandbox.run(
        "import os, signal, time\nsent = 0\n"
        "for s in sorted(signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}):\n"
        "    try:\n        os.kill(1, s); sent += 1\n    except OSError:\n        pass\n"
        "time.sleep(0.5)\nsent"
    )
    assert int(r.value) >= 60  # every signal there is, sent to PID 1 (it runs as the same uid)
    r = sandbox.run("kept")
    assert r.value == "'here'" and r.notes == []
    assert os.path.exists(f"/proc/{init}") and _in_namespace(processes_of_uid(sandbox.uid), 1) == init


def test_pid_1_runs_under_the_same_seccomp_no_new_privs_and_rlimits(sandbox: PythonSandbox, processes_of_uid) -> None:
    sandbox.start()
    init, interpreter = _in_namespace(processes_of_uid(sandbox.uid), 1), _in_namespace(processes_of_uid(sandbox.uid), 2)
    for pid in (init, interpreter):
        status = _status(pid)
        assert status["Seccomp"].strip() == "2" and status["NoNewPrivs"].strip() == "1", (pid, status["Seccomp"])
        assert status["CapEff"].strip() == "0" * 16 and status["CapBnd"].strip() == "0" * 16
    with open(f"/proc/{init}/limits") as a, open(f"/proc/{interpreter}/limits") as b:
        limits_init = [
            line for line in a if not line.startswith("Max cpu time")
        ]  # the interpreter's per-cell soft limit differs
        limits_interp = [line for line in b if not line.startswith("Max cpu time")]
    assert limits_init == limits_interp
    assert any(line.split()[3:5] == [str(1 << 30)] * 2 for line in limits_init if line.startswith("Max address space"))


def test_an_interpreter_that_died_between_calls_is_reported_with_the_cause(docs_dir: str, processes_of_uid) -> None:
    with PythonSandbox([docs_dir]) as sb:
        assert sb.run(
            "kept = 1\nimport threading, os, time\nthreading.Thread(target=lambda: (time.sleep(0.2), os._exit(7)), daemon=True).start()"
        ).ok
        assert _until(lambda: processes_of_uid(sb.uid) == [])
        r = sb.run("'kept' in globals()")
        assert r.value == "False"
        assert r.notes and "exited with status 7" in r.notes[0] and "new interpreter session" in r.notes[0]
        os.kill(_in_namespace(processes_of_uid(sb.uid), 2), 9)  # killed from outside between calls
        assert _until(lambda: processes_of_uid(sb.uid) == [])
        r = sb.run("1")
        assert r.value == "1" and r.notes and "SIGKILL" in r.notes[0]
        sb.restart()
        assert "restarted by the host" in sb.run("1").notes[0]


def test_memory_is_limited_for_the_session_not_per_process(docs_dir: str, processes_of_uid) -> None:
    blob, limit, children = 96 << 20, 320 << 20, 5
    with PythonSandbox([docs_dir], limits=Limits(memory_bytes=limit, timeout=120)) as sb:
        r = sb.run(
            "import os, time\npids = []\n"
            f"for i in range({children}):\n"
            "    pid = os.fork()\n"
            "    if pid == 0:\n"
            f"        data = b'x' * {blob}\n"
            "        open(f'held{i}', 'w').close()\n        time.sleep(600)\n        os._exit(0)\n"
            "    pids.append(pid)\n"
            "waiting = set(range(len(pids)))\nend = time.monotonic() + 90\n"
            "while waiting and time.monotonic() < end:\n"
            "    for i in list(waiting):\n"
            "        if os.path.exists(f'held{i}') or os.waitpid(pids[i], os.WNOHANG)[0]:\n"
            "            waiting.discard(i)\n"
            "    time.sleep(0.02)\nlen(waiting)"
        )
        assert r.value == "0", (r.value, r.error)
        held = 0
        for pid in processes_of_uid(sb.uid):
            try:
                held += int(_status(pid)["RssAnon"].split()[0]) * 1024 >= blob
            except (OSError, KeyError):
                pass
        assert held * blob <= limit, f"{held} processes hold {blob >> 20} MiB each under a {limit >> 20} MiB limit"


def test_an_interpreter_killed_for_the_sessions_memory_is_told_why(docs_dir: str) -> None:
    with PythonSandbox([docs_dir], limits=Limits(memory_bytes=300 << 20, timeout=120)) as sb:
        r = sb.run(
            "import os\nbig = b'y' * (200 << 20)\npid = os.fork()\n"
            "if pid == 0:\n    del big\n    more = b'x' * (150 << 20)\n    os._exit(0)\n"
            "os.waitpid(pid, 0)\n'both fit'"
        )
        # 350 MiB of two processes under a 300 MiB session: the kernel kills the larger, the interpreter
        assert r.value is None and "went over its 300 MiB memory limit" in r.error, (r.value, r.error)
        assert "300 MiB memory limit" in sb.run("1").notes[0]


_FORGE = (
    "import json, os, struct\n"
    "def forge(value, nonce=None):\n"
    "    body = json.dumps({'value': value, 'error': None, 'images': [], 'nonce': nonce}).encode()\n"
    "    for fd in range(3, 1100):\n"
    "        try:\n            os.write(fd, struct.pack('>I', len(body)) + body)\n"
    "        except OSError:\n            pass\n"
)


def test_a_background_process_cannot_forge_a_reply(sandbox: PythonSandbox) -> None:
    r = sandbox.run(
        _FORGE + "import ctypes\npid = ctypes.CDLL(None).fork()  # libc's fork: no Python at-fork hooks run\n"
        "if pid == 0:\n    forge(\"'FORGED'\")\n    os._exit(0)\nos.waitpid(pid, 0)\n'genuine'"
    )
    assert "FORGED" not in repr(r)
    assert r.value == "'genuine'" or "wrote on the protocol channel" in r.error
    assert sandbox.run("'recovered'").value == "'recovered'"


def test_a_background_process_cannot_read_the_next_request(docs_dir: str) -> None:
    with PythonSandbox([docs_dir], limits=Limits(timeout=10)) as sb:
        r = sb.run(
            "import os, time\n"
            "if os.fork() == 0:\n"
            "    fds = [int(f) for f in os.listdir('/proc/self/fd') if int(f) > 2]\n"
            "    end = time.monotonic() + 60\n"
            "    while fds and time.monotonic() < end:\n"
            "        for fd in list(fds):\n"
            "            try:\n                os.set_blocking(fd, False); os.read(fd, 1 << 16)\n"
            "            except BlockingIOError:\n                pass\n"
            "            except OSError:\n                fds.remove(fd)\n"
            "        time.sleep(0.005)\n"
            "    os._exit(0)\n'started'"
        )
        assert r.value == "'started'"
        for _ in range(3):
            r = sb.run("'answered'")
            assert r.value == "'answered'" and r.notes == [], (r.error, r.notes)


def test_the_host_caps_a_reply_the_code_forges_itself(docs_dir: str) -> None:
    lim = Limits(value_chars=1000, output_chars=2000)
    with PythonSandbox([docs_dir], limits=lim) as sb:
        r = sb.run(
            _FORGE + "import sys\nf = sys._getframe()\n"
            "while f is not None and 'request' not in f.f_locals:\n    f = f.f_back\n"
            "forge('V' * 3_000_000, f.f_locals['request'].get('nonce'))\nos._exit(0)"
        )
        assert r.value is not None and len(r.value) <= lim.value_chars + 100, len(r.value)
        assert "more characters truncated" in r.value


def test_a_failed_start_leaks_no_descriptors(docs_dir: str, monkeypatch) -> None:
    import subprocess

    def refuse(*args, **kwargs):
        raise OSError(24, "Too many open files")

    sb = PythonSandbox([docs_dir])
    before = sorted(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(subprocess, "Popen", refuse)
    with pytest.raises(Exception, match="Too many open files"):
        sb.start()
    monkeypatch.undo()
    assert sorted(os.listdir("/proc/self/fd")) == before
    assert sb.run("6 * 7").value == "42"  # and the next start works
    sb.close()


def test_a_host_that_forks_without_exec_does_not_keep_its_sandbox_alive(processes_of_uid) -> None:
    import signal
    import subprocess

    script = (
        "import os, time\nfrom kimidoc.tools.sandbox import PythonSandbox\n"
        "sb = PythonSandbox(); sb.start()\n"
        "child = os.fork()\n"
        "if child == 0:\n    time.sleep(1000)\n    os._exit(0)\n"
        "print(sb.uid, child, flush=True)\nsb.run('import time; time.sleep(1000)')\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    host = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=root)
    uid_text, child_text = host.stdout.readline().split()
    uid, child = int(uid_text), int(child_text)
    try:
        assert _until(lambda: len(processes_of_uid(uid)) >= 2)
        host.kill()
        host.wait()
        assert _until(lambda: processes_of_uid(uid) == [], 30)  # the forked child still runs, yet the sandbox ended
        assert os.path.exists(f"/proc/{child}")
    finally:
        host.kill()
        os.kill(child, signal.SIGKILL)
        for pid in processes_of_uid(uid):
            os.kill(pid, signal.SIGKILL)


def test_close_from_another_thread_ends_a_running_cell(docs_dir: str, processes_of_uid) -> None:
    import threading

    sb = PythonSandbox([docs_dir], limits=Limits(timeout=600))
    sb.start()
    results = []
    cell = threading.Thread(
        target=lambda: results.append(sb.run("import time\nopen('started', 'w').close()\ntime.sleep(600)")), daemon=True
    )
    cell.start()
    assert _until(
        lambda: os.path.exists(f"/proc/{_in_namespace(processes_of_uid(sb.uid), 2)}/root{sb.workdir}/started")
    )
    sb.close()
    cell.join(60)
    assert not cell.is_alive() and not results[0].ok
    assert processes_of_uid(sb.uid) == []
    assert not os.path.exists(os.path.dirname(sb.workdir))
