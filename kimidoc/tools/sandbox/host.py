"""The host side of the Python sandbox: start the worker, send it cells, enforce wall-clock limits.

The interpreter runs in a separate process (see :mod:`kimidoc.tools.sandbox.worker` and
:mod:`kimidoc.tools.sandbox.jail` for the isolation layers) inside a cgroup of its own
(:mod:`kimidoc.tools.sandbox.cgroup`). Everything the worker sends back is treated as untrusted:
every cap is applied again here, a reply must come from the interpreter's own process and carry
the request's nonce, and anything else ends the session like a crash. Writes to the worker have
the cell's deadline, so a stopped worker cannot hang the host.
"""

from __future__ import annotations

import base64
import os
import random
import select
import shutil
import signal
import site
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kimidoc.tools.base import ToolResult
from kimidoc.tools.sandbox import cgroup
from kimidoc.tools.sandbox.protocol import Channel, ProtocolError, clip

LAYERS = ("netns", "fs_jail", "pidns", "uid", "rlimits", "no_new_privs", "seccomp", "cgroup")
DEFAULT_REQUIRE = ("netns", "fs_jail", "pidns", "uid", "rlimits", "no_new_privs", "cgroup")
_WORKER = Path(__file__).with_name("worker.py")
_PNG = b"\x89PNG\r\n\x1a\n"
_SIGNALS = {
    signal.SIGKILL: "was killed (SIGKILL): it hit its CPU-time hard limit or was killed from outside",
    signal.SIGXCPU: "went over its CPU-time limit (SIGXCPU)",
    signal.SIGSEGV: "crashed with a segmentation fault (SIGSEGV)",
    signal.SIGBUS: "crashed with a bus error (SIGBUS)",
    signal.SIGABRT: "aborted (SIGABRT)",
    signal.SIGILL: "executed an illegal instruction (SIGILL)",
    signal.SIGSYS: "made a forbidden system call (SIGSYS)",
}


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot start with the isolation that was asked for."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one interpreter session."""

    timeout: float = 60.0  # wall-clock seconds per cell; the whole process tree is killed after it
    cell_cpu_seconds: float = 60.0  # CPU seconds per cell (soft: raised back only up to the session cap)
    session_cpu_seconds: int = 3600  # CPU seconds over the session's life (hard)
    memory_bytes: int = 4 << 30  # all processes of the session together (cgroup), and each one's address space
    file_bytes: int = 64 << 20  # largest file the code may write (also caps stdout/stderr)
    processes: int = 64  # processes and threads of the session (its cgroup also holds one supervisor)
    open_files: int = 256
    tmp_size: str = "64m"  # the private /tmp and /dev/shm
    disk_size: str = "512m"  # the private working directory and home (tmpfs), unless a host workdir is given
    files: int = 16384  # files and directories in each private tmpfs (each inode is kernel memory)
    output_chars: int = 20_000  # stdout and stderr each, head and tail kept
    value_chars: int = 20_000  # repr of the last expression
    max_figures: int = 8
    figure_dpi: int = 100
    reply_bytes: int = 64 << 20  # largest reply accepted from the worker
    request_bytes: int = 16 << 20  # largest cell sent to the worker (a larger one is refused, not sent)
    start_timeout: float = 60.0


@dataclass
class CellResult:
    stdout: str = ""
    stderr: str = ""
    value: str | None = None
    error: str | None = None
    images: list[bytes] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # restarts, kills: what the model must know

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_tool_result(self) -> ToolResult:
        sections = list(self.notes)
        if self.stdout:
            sections.append(self.stdout.rstrip("\n"))
        if self.stderr:
            sections.append("[stderr]\n" + self.stderr.rstrip("\n"))
        if self.value is not None:
            sections.append(f"Out: {self.value}")
        if self.error:
            sections.append(self.error)
        if self.images:
            sections.append(f"[{len(self.images)} figure(s) attached]")
        return ToolResult("\n".join(sections) or "(no output)", images=list(self.images), is_error=not self.ok)


def _system_paths() -> list[str]:
    """What the interpreter needs to run: system directories and every Python prefix, read-only."""
    paths = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"]
    python = [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))]
    python += site.getsitepackages() + [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    return paths + [os.path.realpath(p) for p in python if p and os.path.isdir(p)]


def _read_capped(path: Path, limit: int) -> str:
    """The file's text; over ``limit`` bytes keeps the head and the tail with a note between.

    Plain fd calls: this runs twice per cell, mostly on empty files."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:  # the session was closed from another thread meanwhile
        return ""
    try:
        size = os.fstat(fd).st_size
        if size <= limit:
            return os.read(fd, size).decode("utf-8", "replace") if size else ""
        head = os.pread(fd, limit * 3 // 4, 0).decode("utf-8", "replace")
        tail = os.pread(fd, limit // 4, size - limit // 4).decode("utf-8", "replace")
    finally:
        os.close(fd)
    return f"{head}\n[... {size - limit} bytes of output truncated ...]\n{tail}"


class _Process:
    """One running worker, the host ends of its channel and lifeline, and its cgroup; ``kill`` ends the whole tree."""

    def __init__(
        self, popen: subprocess.Popen, channel: Channel, lifeline: int, group: cgroup.SessionCgroup | None
    ) -> None:
        self.popen, self.channel, self.lifeline, self.cgroup = popen, channel, lifeline, group
        self.init_fd: int | None = None  # pidfd of the sandbox's PID 1
        self.init_pid: int | None = None
        _live.add(self)

    def watch_init(self, pid: int) -> None:
        self.init_pid = pid
        try:
            self.init_fd = os.pidfd_open(pid)
        except OSError:  # already gone, or a kernel without pidfds: nothing to wait for
            self.init_fd = None

    def alive(self) -> bool:
        return self.popen.poll() is None

    def interrupt(self) -> None:
        """SIGKILL the sandbox's PID 1 (so the whole namespace) without touching fds or reaping, so it is
        safe while another thread uses them; that thread's wait for a reply then ends."""
        try:
            if self.init_pid is not None:
                os.kill(self.init_pid, signal.SIGKILL)  # its parent, the worker's outer process, reaps it
            else:
                self.popen.send_signal(signal.SIGKILL)
        except OSError:
            pass

    def kill(self, wait: float = 10.0) -> None:
        """End every process of the session and reap them, so not even a zombie is left.

        Every wait is bounded by ``wait`` seconds: a process stuck in the kernel is left to the
        kernel rather than hanging the host."""
        if self.init_fd is not None:
            # SIGKILL to PID 1 of the namespace: the kernel kills everything inside before it exits,
            # then the worker's outer process reaps it and exits itself
            try:
                signal.pidfd_send_signal(self.init_fd, signal.SIGKILL)
            except OSError:
                pass
            if self.popen.poll() is None:
                try:
                    outer = os.pidfd_open(self.popen.pid)
                    select.select([outer], [], [], wait)  # exits, but stays unreaped: its group id stays reserved
                    os.close(outer)
                except OSError:
                    pass
            os.close(self.init_fd)
            self.init_fd = None
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)  # whatever is left in the process group (no PID namespace)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
        self.release()
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None

    def release(self) -> None:
        """Close the host's ends (idempotent)."""
        _live.discard(self)
        if self.lifeline >= 0:
            self.channel.close()
            os.close(self.lifeline)
            self.lifeline = -1

    def ending(self, wait: float = 5.0) -> str | None:
        """How the worker ended, in words; None when it is still running after ``wait`` seconds."""
        try:
            rc = self.popen.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return None
        sig = -rc if rc < 0 else rc - 128 if rc > 128 else 0
        if sig == signal.SIGKILL and self.cgroup is not None and self.cgroup.oom_kills():
            return f"was killed by the kernel: the session's processes together went over its {self.cgroup.memory >> 20} MiB memory limit"
        if sig:
            try:
                return _SIGNALS.get(signal.Signals(sig), f"was killed by {signal.Signals(sig).name}")
            except ValueError:
                return f"was killed by signal {sig}"
        return f"exited with status {rc}"


_live: weakref.WeakSet[_Process] = weakref.WeakSet()


def _forget_in_forked_child() -> None:
    """A host that forks without exec: the child must not keep the parent's sandboxes alive (the
    lifeline would stay open) nor kill or delete them when it exits; it starts its own if it runs code."""
    for proc in list(_live):
        proc.release()
    for sandbox in list(_sandboxes):
        sandbox._lock = threading.Lock()
        sandbox._state["proc"] = None
        sandbox._state["session_dir"] = None
        sandbox.uid = None  # a sandbox of its own gets a uid of its own: one uid may signal its own processes


_sandboxes: weakref.WeakSet[PythonSandbox] = weakref.WeakSet()
os.register_at_fork(after_in_child=_forget_in_forked_child)


_SESSION_PREFIX = "kimidoc-sandbox-"
_swept = False


def _sweep_stale_sessions() -> None:
    """Delete session folders whose host process died without cleaning up (a SIGKILL, a crash)."""
    global _swept
    if _swept:
        return
    _swept = True
    base = Path(tempfile.gettempdir())
    for session in base.glob(_SESSION_PREFIX + "*"):
        try:
            owner = int((session / "host").read_text())
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(session, ignore_errors=True)
        except (OSError, ValueError):
            continue  # not ours to judge: no owner file, or an owner we may not signal


def _cleanup(state: dict[str, Any]) -> None:
    proc: _Process | None = state.get("proc")
    if proc is not None:
        proc.kill()
        state["proc"] = None
    if state.get("session_dir"):
        shutil.rmtree(state["session_dir"], ignore_errors=True)
        state["session_dir"] = None


class PythonSandbox:
    """A persistent Python session in a separate, isolated process.

    ``read_only`` paths (documents, repositories) are visible inside at the same absolute path,
    read-only, with their owners and modes unchanged (the sandbox's uid reads what any other user
    may read), through overlays that keep the code's locks, leases and special-file traffic off the
    host's inodes (see :func:`kimidoc.tools.sandbox.jail.build_root`). The working directory is private and writable: a size-capped tmpfs at
    :attr:`workdir` (``Limits.disk_size``), or the host folder ``workdir`` when one is given
    (files then persist on the host, bounded only by ``Limits.file_bytes`` each).

    ``require`` names the isolation layers (see :data:`LAYERS`) without which :meth:`start`
    raises :class:`SandboxUnavailable`; ``allow_weaker=True`` runs anyway, and :meth:`isolation`
    tells what is active. Needs Linux; full isolation needs root (CI runs as root).
    """

    def __init__(
        self,
        read_only: Iterable[str | os.PathLike[str]] = (),
        *,
        limits: Limits | None = None,
        require: Iterable[str] = DEFAULT_REQUIRE,
        allow_weaker: bool = False,
        workdir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.require = tuple(require)
        unknown = set(self.require) - set(LAYERS)
        if unknown:
            raise ValueError(f"unknown isolation layer(s) {sorted(unknown)}; known: {', '.join(LAYERS)}")
        self.allow_weaker = allow_weaker
        self.read_only: list[str] = []
        for p in read_only:
            real = os.path.realpath(p)
            if not os.path.exists(real):
                raise FileNotFoundError(f"python sandbox: read-only path {os.fspath(p)!r} does not exist")
            self.read_only.append(real)
        self._workdir_arg = os.path.realpath(workdir) if workdir is not None else None
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {"proc": None, "session_dir": None}
        self._finalizer = weakref.finalize(self, _cleanup, self._state)
        self._layers: dict[str, bool] = {}
        self._problems: dict[str, str] = {}
        self._pending_notes: list[str] = []
        _sandboxes.add(self)
        self.uid: int | None = None
        self.pid: int | None = None  # the host pid of the worker's outermost process
        self.workdir: str | None = None

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the interpreter now (otherwise the first :meth:`run` does)."""
        with self._lock:
            self._ensure_started()

    def _ensure_started(self) -> None:
        proc = self._state["proc"]
        if proc is not None and proc.alive():
            return
        if proc is not None:
            self._died_between_calls(proc, wait=0)
        self._spawn()

    def _died_between_calls(self, proc: _Process, wait: float) -> None:
        """A daemon of its own killed it, or the OOM killer, or a kill from outside: the next result says so."""
        ending = proc.ending(wait=wait) or "stopped"
        proc.kill()
        self._state["proc"] = None
        self._note_restart(f"ended between calls: it {ending}")

    def _session_dirs(self) -> tuple[Path, Path, Path]:
        if self._state["session_dir"] is None:
            _sweep_stale_sessions()
            session = Path(tempfile.mkdtemp(prefix=_SESSION_PREFIX))
            session.chmod(0o711)  # the sandbox uid may pass through to its directories, not list them
            (session / "host").write_text(str(os.getpid()))
            self._state["session_dir"] = str(session)
        session = Path(self._state["session_dir"])
        work = Path(self._workdir_arg) if self._workdir_arg else session / "work"
        home = session / "home"
        for d in (work, home, session / "root"):
            d.mkdir(parents=True, exist_ok=True)
        return session, work, home

    def _spawn(self) -> None:
        if sys.platform != "linux":
            raise SandboxUnavailable(
                f"the python sandbox needs Linux (namespaces, rlimits, seccomp); this is {sys.platform}"
            )
        session, work, home = self._session_dirs()
        if self.uid is None and os.geteuid() == 0:
            # a uid of its own: RLIMIT_NPROC counts per uid, and no other process shares it
            self.uid = random.SystemRandom().randrange(1_000_000, 2_000_000_000)
        if self.uid is not None:
            for d in (work, home):
                os.chown(d, self.uid, self.uid)
                d.chmod(0o700)
        out_path, err_path = session / "stdout", session / "stderr"
        lim = self.limits
        group, problems = None, {}
        try:
            # the worker's outer process is root and outside the PID namespace: one task beyond the code's
            group = cgroup.create(lim.memory_bytes, lim.processes + 1)
        except cgroup.CgroupUnavailable as exc:
            problems["cgroup"] = str(exc)
        host_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        channel = Channel(host_end)  # SO_PASSCRED before the worker can send anything
        life_r, life_w = os.pipe2(os.O_CLOEXEC)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "TMPDIR": "/tmp",
            "LANG": "C.UTF-8",
            "MPLBACKEND": "Agg",
            "MPLCONFIGDIR": str(home / ".matplotlib"),
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        try:
            with open(out_path, "ab+") as out, open(err_path, "ab+") as err:
                popen = subprocess.Popen(
                    [sys.executable, "-I", "-X", "faulthandler", str(_WORKER), str(worker_end.fileno()), str(life_r)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    pass_fds=(worker_end.fileno(), life_r),
                    env=env,
                    cwd=str(work),
                    start_new_session=True,  # its own process group, killed as one
                )
        except BaseException as exc:
            channel.close()
            os.close(life_w)
            if group is not None:
                group.remove(wait=0)
            if isinstance(exc, OSError):
                raise SandboxUnavailable(
                    f"python sandbox: could not start the worker ({sys.executable}): {exc}"
                ) from exc
            raise
        finally:
            worker_end.close()
            os.close(life_r)
        proc = _Process(popen, channel, life_w, group)
        self._state["proc"] = proc
        self.pid, self.workdir = popen.pid, str(work)
        self._paths = (out_path, err_path)
        config = {
            "uid": self.uid,
            "gid": self.uid,
            "workdir": str(work),
            "staging": str(session / "root"),
            "system_paths": _system_paths(),
            "read_only": self.read_only,
            # a host workdir is bound as it is; the default one is a private size-capped tmpfs
            "writable": [str(work)] if self._workdir_arg else [],
            "private": [str(home)] + ([] if self._workdir_arg else [str(work)]),
            "disk_size": lim.disk_size,
            "tmp_size": lim.tmp_size,
            "files": lim.files,
            "value_chars": lim.value_chars,
            "figure_dpi": lim.figure_dpi,
            "max_figures": lim.max_figures,
            "limits": {
                "memory_bytes": lim.memory_bytes,
                "file_bytes": lim.file_bytes,
                "processes": lim.processes,
                "open_files": lim.open_files,
                "session_cpu_seconds": lim.session_cpu_seconds,
            },
        }
        try:
            if group is not None:
                try:
                    # before the config is sent: the worker forks nothing until it has read it
                    group.join(popen.pid)
                except OSError as exc:
                    problems["cgroup"] = f"cannot move the worker into {group}: {exc}"
                    group.remove(wait=0)
                    proc.cgroup = group = None
            deadline = time.monotonic() + lim.start_timeout
            channel.send(config, deadline=deadline)
            init = channel.receive(1 << 10, deadline)
            if isinstance(init.get("init_pid"), int):
                proc.watch_init(init["init_pid"])
            ready = channel.receive(1 << 20, deadline)
            channel.sender = channel.last_sender  # the interpreter, before any code ran: only it may reply
        except (OSError, ProtocolError, TimeoutError) as exc:
            ending = "did not start in time" if isinstance(exc, TimeoutError) else proc.ending() or "stopped answering"
            proc.kill()
            self._state["proc"] = None
            raise SandboxUnavailable(
                f"python sandbox: the worker {ending}: {_read_capped(err_path, 2000).strip()}"
            ) from exc
        layers = dict(ready.get("layers") or {}, cgroup=proc.cgroup is not None)
        problems.update({str(k): str(v) for k, v in (ready.get("problems") or {}).items()})
        self._layers = {k: bool(layers.get(k)) and k not in problems for k in LAYERS}
        self._problems = problems
        missing = [k for k in self.require if not self._layers[k]]
        if missing and not self.allow_weaker:
            self._close_locked()
            why = "; ".join(f"{k}: {self._problems.get(k, 'unavailable')}" for k in missing)
            raise SandboxUnavailable(
                f"python sandbox refused to start: isolation layer(s) {', '.join(missing)} missing ({why}). "
                "Run as root on Linux for full isolation, or pass allow_weaker=True to accept weaker isolation."
            )

    def restart(self) -> None:
        """A fresh interpreter: variables, imports and background processes are gone (the next result says so)."""
        with self._lock:
            proc = self._state["proc"]
            if proc is not None:
                proc.kill()
                self._state["proc"] = None
                self._note_restart("was restarted by the host")
            self._spawn()

    def close(self) -> None:
        """Kill every process of the session and delete its private directories.

        A cell running in another thread is killed first (it returns its result), then the session
        is cleaned up under the lock."""
        if not self._lock.acquire(blocking=False):
            proc = self._state["proc"]
            if proc is not None:
                proc.interrupt()
            self._lock.acquire()
        try:
            self._close_locked()
        finally:
            self._lock.release()

    def _close_locked(self) -> None:
        _cleanup(self._state)

    def __enter__(self) -> PythonSandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- isolation report ---------------------------------------------------------------------

    def isolation(self) -> dict[str, bool]:
        """Which isolation layers the running interpreter is under (starts it if needed).

        ``cgroup`` is the session-wide memory and task limit (v2 where delegated, else v1)."""
        self.start()
        return dict(self._layers)

    def isolation_problems(self) -> dict[str, str]:
        """Why each missing layer is missing."""
        self.start()
        return dict(self._problems)

    # -- running code --------------------------------------------------------------------------

    def run(self, code: str, *, timeout: float | None = None) -> CellResult:
        """Run one cell; never raises for anything the code does (crashes become a result)."""
        timeout = self.limits.timeout if timeout is None else timeout
        with self._lock:
            nonce = os.urandom(16).hex()
            request = {"code": code, "cpu_seconds": self.limits.cell_cpu_seconds, "nonce": nonce}
            try:
                proc, deadline, failure = self._deliver(request, timeout)
            except ProtocolError as exc:  # refused before anything was written: the session is intact
                notes, self._pending_notes = self._pending_notes, []
                return CellResult(
                    error=f"The cell was not run: {exc} of one request (Limits.request_bytes); send less code, or put data in a file.",
                    notes=notes,
                )
            notes, self._pending_notes = self._pending_notes, []
            if failure is not None:
                result = self._failed(proc, failure, timeout)
            else:
                try:
                    reply = proc.channel.receive(self.limits.reply_bytes, deadline)
                    if reply.get("nonce") != nonce:
                        raise ProtocolError("a reply that does not answer this request")
                    result = self._parse(reply)
                except (OSError, ProtocolError, ValueError, TimeoutError) as exc:
                    result = self._failed(proc, exc, timeout)
            result.notes[:0] = notes
            result.stdout = _read_capped(self._paths[0], self.limits.output_chars)
            result.stderr = _read_capped(self._paths[1], self.limits.output_chars)
            return result

    def _deliver(self, request: dict[str, Any], timeout: float) -> tuple[_Process, float, BaseException | None]:
        """Send the cell: the process, the cell's deadline, and what went wrong sending, if anything.

        An interpreter found dead on the way (the channel is closed at its end) died between calls:
        it is replaced once, noted, and the cell runs in the new one."""
        replaced = False
        while True:
            self._ensure_started()
            proc: _Process = self._state["proc"]
            for path in self._paths:
                os.truncate(path, 0)  # O_APPEND on the worker's side: it keeps writing from the start
            deadline = time.monotonic() + timeout
            try:
                proc.channel.send(request, deadline=deadline, max_bytes=self.limits.request_bytes)
            except (BrokenPipeError, ConnectionResetError) as exc:
                if replaced:
                    return proc, deadline, exc
                self._died_between_calls(proc, wait=5.0)
                replaced = True
                continue
            except (OSError, TimeoutError) as exc:
                return proc, deadline, exc
            return proc, deadline, None

    def _failed(self, proc: _Process, exc: BaseException, timeout: float) -> CellResult:
        """Kill the session after a timeout, a crash or a bad reply; the result says which, and so will the next."""
        if isinstance(exc, TimeoutError):
            proc.kill()
            result = CellResult(
                error=f"Timed out after {timeout:g} s of wall-clock time: the interpreter and every process it started were killed."
            )
            cause = f"was killed after the {timeout:g} s timeout"
        else:
            # a closed channel means the process is ending: say how; anything else is a bad reply
            closed = isinstance(exc, OSError) or str(exc) == "pipe closed"
            ending = proc.ending(wait=5.0 if closed else 0.0) or f"sent a malformed reply ({exc})"
            proc.kill()
            result = CellResult(error=f"The Python interpreter {ending}.")
            cause = ending
        self._state["proc"] = None
        result.error = (
            result.error or ""
        ) + " The next call starts a fresh interpreter: variables and imports from earlier calls are gone."
        self._note_restart(cause)
        return result

    def _note_restart(self, cause: str) -> None:
        lost = "variables and imports" if self._workdir_arg else "variables, imports and working-directory files"
        self._pending_notes.append(
            f"[note: this runs in a new interpreter session: the previous one {cause}, so its {lost} are gone]"
        )

    def _parse(self, reply: dict[str, Any]) -> CellResult:
        """The reply as a result, every cap applied here again: the worker's own caps are the code's to bypass."""
        value, error, images = reply.get("value"), reply.get("error"), reply.get("images", [])
        if value is not None and not isinstance(value, str) or error is not None and not isinstance(error, str):
            raise ValueError("value and error must be strings")
        if not isinstance(images, list) or len(images) > self.limits.max_figures + 1:
            raise ValueError("images must be a short list")  # its figures, plus an image shown as the value
        pngs = []
        for item in images:
            png = base64.b64decode(item, validate=True) if isinstance(item, str) else b""
            if not png.startswith(_PNG):
                raise ValueError("an image is not a PNG")
            pngs.append(png)
        return CellResult(
            value=None if value is None else clip(value, self.limits.value_chars),
            error=None if error is None else clip(error, self.limits.output_chars),
            images=pngs,
        )
