"""The sandboxed Python worker: isolates itself, then runs cells like a notebook kernel.

Started by :class:`kimidoc.tools.sandbox.host.PythonSandbox` as
``python -I worker.py CHANNEL LIFELINE`` (the file descriptors of its end of the protocol socket
and of the lifeline pipe), already inside the session's cgroup; fd 1 and 2 are files the host
reads after every cell. Stdlib only (matplotlib and PIL are imported lazily, when used).

Three processes, so that every layer holds:
- A, the host's child: enters the network, mount, IPC and UTS namespaces and asks for a PID
  namespace for its children; then only waits, and kills B when the host's lifeline closes.
- B, PID 1 of the new PID namespace: builds the file system jail, drops to the sandbox uid, puts
  itself under the rlimits, no_new_privs and seccomp, forks C, ignores every signal the code can
  send it (the kernel delivers to a namespace's first process only the signals it handles) and
  reaps orphans until C exits. When B dies the kernel kills everything in the namespace.
- C: inherits all of that, reports the active layers, and serves cells. Its end of the channel
  sits at a high fd, close-on-exec and closed in every child it forks, so that the code's children
  cannot read requests; what they write there anyway is refused by the host (it checks the sender).
"""

from __future__ import annotations

import ast
import base64
import fcntl
import io
import linecache
import os
import resource
import select
import signal
import sys
import traceback
import types
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jail  # noqa: E402
from protocol import ProtocolError, clip, read_frame, write_frame  # noqa: E402

CHANNEL, LIFELINE = (int(fd) for fd in sys.argv[1:3])
PRIVATE_FD = 1000  # where C keeps the channel (or as high as the open-files limit allows)
LAYERS = ("netns", "fs_jail", "pidns", "uid", "rlimits", "no_new_privs", "seccomp")


def main() -> None:
    config = read_frame(CHANNEL)
    problems: dict[str, str] = {}
    namespaces = jail.CLONE_NEWNET | jail.CLONE_NEWNS | jail.CLONE_NEWPID | jail.CLONE_NEWIPC | jail.CLONE_NEWUTS
    if jail.enter_namespaces(namespaces) is not None:
        # try each namespace alone, to report exactly which ones the kernel refuses
        for layer, flag in (("netns", jail.CLONE_NEWNET), ("fs_jail", jail.CLONE_NEWNS), ("pidns", jail.CLONE_NEWPID)):
            why = jail.enter_namespaces(flag)
            if why:
                problems[layer] = why
        jail.enter_namespaces(jail.CLONE_NEWIPC | jail.CLONE_NEWUTS)
    if "netns" not in problems:
        try:
            jail.loopback_up()
            jail.set_hostname("sandbox")
        except OSError as exc:
            problems["netns"] = f"loopback in the new network namespace: {exc}"
    go_r, go_w = os.pipe()
    child = os.fork()
    if child:
        # the host waits for this process to end after a kill: its exit means the namespace is empty
        write_frame(CHANNEL, {"init_pid": child})
        os.write(go_w, b"x")
        os.close(go_r)
        os.close(go_w)
        _stage_a(child)
    else:
        os.close(go_w)
        os.read(go_r, 1)  # let A's frame go first on the shared channel
        os.close(go_r)
        _stage_b(config, problems)


def _stage_a(child: int) -> None:
    """Wait for B; kill it (and so the whole PID namespace) if the host goes away."""
    os.close(CHANNEL)
    pidfd = os.pidfd_open(child)
    watch = [pidfd, LIFELINE]
    while True:
        ready = select.select(watch, [], [])[0]
        if LIFELINE in ready and not os.read(LIFELINE, 1):
            os.kill(child, 9)
            watch = [pidfd]
        if pidfd in ready:
            _, status = os.waitpid(child, 0)
            os._exit(_exit_code(status))


def _exit_code(status: int) -> int:
    """Relay a child's end to the host the way a shell does: 128 + signal when it was killed."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code & 0xFF


def _stage_b(config: dict, problems: dict[str, str]) -> None:
    os.close(LIFELINE)
    in_pidns = os.getpid() == 1
    if not in_pidns:
        problems.setdefault("pidns", "not the first process of a new PID namespace")
    if "fs_jail" not in problems:
        try:
            jail.build_root(
                config["staging"],
                system=config["system_paths"],
                read_only=config["read_only"],
                writable=config["writable"],
                private=config["private"],
                private_size=config["disk_size"],
                owner=(config["uid"], config["gid"]) if config.get("uid") is not None else None,
                tmp_size=config["tmp_size"],
                files=config["files"],
                proc=in_pidns,
                notes=problems,
            )
            os.chdir(config["workdir"])
        except OSError as exc:
            problems["fs_jail"] = str(exc)
    else:
        os.chdir(config["workdir"])
    if config.get("uid") is not None:
        why = jail.drop_privileges(config["uid"], config["gid"])
        if why:
            problems["uid"] = why
    else:
        problems["uid"] = "no sandbox uid was given"
    # high, so that the code's own files never land next to it; before RLIMIT_NOFILE is lowered
    channel = fcntl.fcntl(
        CHANNEL, fcntl.F_DUPFD_CLOEXEC, min(PRIVATE_FD, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 16)
    )
    os.close(CHANNEL)
    _confine(config["limits"], problems)
    jail.die_with_parent()
    every = signal.valid_signals()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, every)  # nothing reaches B before it ignores it
    child = os.fork()
    if child == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        _stage_c(config, problems, channel)
    os.close(channel)
    for sig in every - {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}:
        try:
            signal.signal(sig, signal.SIG_IGN)
        except (OSError, ValueError):
            pass  # signals the C library keeps for itself
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    # PID 1 adopts every orphan of the sandbox; reap them so they do not count against RLIMIT_NPROC
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)
        if pid == child:
            os._exit(_exit_code(status))


def _confine(limits: dict, problems: dict[str, str]) -> None:
    """rlimits, no_new_privs and seccomp for B and, inherited, for everything it starts."""
    why = jail.apply_limits(
        address_space=limits["memory_bytes"],
        file_size=limits["file_bytes"],
        processes=limits["processes"],
        open_files=limits["open_files"],
        cpu_seconds=limits["session_cpu_seconds"],
    )
    if why:
        problems["rlimits"] = why
    why = jail.no_new_privs()
    if why:
        problems["no_new_privs"] = why
        problems["seccomp"] = "needs no_new_privs"
    else:
        why = jail.seccomp_filter()
        if why:
            problems["seccomp"] = why


def _stage_c(config: dict, problems: dict[str, str], channel: int) -> None:
    def forget_channel() -> None:
        try:
            os.close(channel)
        except OSError:
            pass

    os.register_at_fork(after_in_child=forget_channel)
    jail.die_with_parent()
    layers = {k: k not in problems for k in LAYERS}
    write_frame(
        channel, {"ready": True, "pid": os.getpid(), "uid": os.getuid(), "layers": layers, "problems": problems}
    )
    Kernel(config, channel).serve()


class Kernel:
    """Runs cells in one namespace; reports value, error and figures of each."""

    def __init__(self, config: dict, channel: int) -> None:
        self.channel = channel
        self.reader = open(channel, "rb", closefd=False)  # noqa: SIM115  lives as long as the kernel
        # the cells' namespace is a real __main__ module, so pickle (multiprocessing) finds their functions
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = __builtins__
        sys.modules["__main__"] = main
        self.namespace: dict = main.__dict__
        self.count = 0
        self.value_chars = int(config["value_chars"])
        self.figure_dpi = int(config["figure_dpi"])
        self.max_figures = int(config["max_figures"])
        for stream in (sys.stdout, sys.stderr):
            # line by line, so a cell's prints and its child processes' output keep their order
            stream.reconfigure(line_buffering=True, errors="backslashreplace")
        self.stdout, self.stderr = sys.stdout, sys.stderr

    def serve(self) -> None:
        while True:
            try:
                request = read_frame(self.channel, reader=self.reader)
            except ProtocolError:
                os._exit(0)
            cpu = request.get("cpu_seconds")
            if cpu:
                self._limit_cpu(float(cpu))
            reply = self.run(str(request.get("code", "")))
            reply["nonce"] = request.get("nonce")
            sys.stdout, sys.stderr = self.stdout, self.stderr
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            write_frame(self.channel, reply)

    @staticmethod
    def _limit_cpu(seconds: float) -> None:
        """Per-cell CPU budget: a soft limit above what was used so far, under the session's hard limit."""
        used = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(used.ru_utime + used.ru_stime + seconds) + 1
        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))

    def run(self, code: str) -> dict:
        self.count += 1
        filename = f"<cell-{self.count}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        reply: dict = {"value": None, "error": None, "images": []}
        try:
            tree = ast.parse(code, filename, "exec")
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            exec(compile(tree, filename, "exec"), self.namespace)
            if last is not None:
                value = eval(compile(ast.Expression(last.value), filename, "eval"), self.namespace)
                self._show(value, reply)
        except SystemExit as exc:
            reply["error"] = f"SystemExit: {exc.code}"
        except BaseException as exc:  # noqa: BLE001  the cell's failure is the answer, not ours
            reply["error"] = self._format(exc)
        try:
            reply["images"] += self._figures()
        except Exception as exc:  # noqa: BLE001
            reply["error"] = (reply["error"] or "") + f"\n(figures could not be rendered: {exc})"
        return reply

    def _show(self, value: object, reply: dict) -> None:
        if value is None:
            return
        self.namespace["_"] = value
        png = _png_of(value)
        if png is not None:
            if png:
                reply["images"].append(png)
            return
        reply["value"] = clip(repr(value), self.value_chars)

    @staticmethod
    def _format(exc: BaseException) -> str:
        """The traceback from the cell's own frames on (the kernel's frames are noise to the model)."""
        tb = exc.__traceback__
        while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell-"):
            tb = tb.tb_next
        return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()

    def _figures(self) -> list[str]:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None:
            return []
        out = []
        for num in pyplot.get_fignums()[: self.max_figures]:
            buf = io.BytesIO()
            pyplot.figure(num).savefig(buf, format="png", dpi=self.figure_dpi, bbox_inches="tight")
            out.append(base64.b64encode(buf.getvalue()).decode())
        pyplot.close("all")
        return out


def _png_of(value: object) -> str | None:
    """A PIL image or a matplotlib figure shown as the cell's value becomes an image part."""
    module = type(value).__module__ or ""
    if module.startswith("matplotlib.") and type(value).__name__ == "Figure":
        return ""  # open figures are all collected after the cell; do not show it twice
    if module.startswith("PIL.") and hasattr(value, "save"):
        buf = io.BytesIO()
        value.save(buf, format="PNG")  # type: ignore[attr-defined]
        return base64.b64encode(buf.getvalue()).decode()
    return None


if __name__ == "__main__":
    warnings.filterwarnings("ignore", message=".*non-interactive.*")  # plt.show() under Agg
    main()
