"""A cgroup around every process of one sandbox session, so memory and process limits are the session's.

Rlimits count per process (RLIMIT_AS) or per uid (RLIMIT_NPROC): four processes of 384 MiB each
hold 1.5 GiB under a 384 MiB RLIMIT_AS. A cgroup charges everything the session's processes use,
together: their memory, the files they write to its tmpfs mounts and the kernel memory they cause
(inodes, page tables), and counts their tasks. cgroup v2 is used where the host's cgroup offers the
``memory`` and ``pids`` controllers to its children (delegated, or the root); otherwise the v1
``memory`` and ``pids`` hierarchies. The session's cgroup is a child of the host's own, so any limit
already on the host applies too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PREFIX = "kimidoc-sandbox-"


class CgroupUnavailable(RuntimeError):
    """No writable cgroup with the memory and pids controllers; the message says what is missing."""


def _unescape(field: str) -> str:
    return field.replace("\\040", " ")  # mountinfo writes a space in a path as \040


def _mounts(mountinfo: str) -> list[tuple[str, str, str, set[str]]]:
    """(mount root, mount point, fs type, super options) of every cgroup mount."""
    out = []
    with open(mountinfo) as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
                out.append((_unescape(fields[3]), _unescape(fields[4]), tail[0], set(tail[2].split(","))))
    return out


def _own_groups(proc_cgroup: str) -> dict[str, str]:
    """The calling process's cgroup path per controller ('' is the v2 hierarchy)."""
    out = {}
    with open(proc_cgroup) as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                out[c] = path
    return out


def _inside(mount_root: str, mount_point: str, path: str) -> Path:
    """Where the cgroup ``path`` (as /proc/self/cgroup names it) is under this mount."""
    if mount_root != "/" and (path == mount_root or path.startswith(mount_root + "/")):
        path = path[len(mount_root) :]
    return Path(mount_point) / path.lstrip("/")


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _sweep(parent: Path) -> None:
    """Remove empty session cgroups whose host process is gone (a SIGKILLed host cannot clean up)."""
    for d in parent.glob(PREFIX + "*"):
        try:
            os.kill(int(d.name[len(PREFIX) :].split("-")[0]), 0)
        except ProcessLookupError:
            try:
                d.rmdir()
            except OSError:
                pass
        except (OSError, ValueError):
            continue


class SessionCgroup:
    """One session's cgroup directory (v2) or directories (v1 memory and pids)."""

    def __init__(self, kind: str, dirs: list[Path], memory: int) -> None:
        self.kind, self.dirs, self.memory = kind, dirs, memory

    def __repr__(self) -> str:
        return f"SessionCgroup({self.kind}: {', '.join(map(str, self.dirs))})"

    def join(self, pid: int) -> None:
        for d in self.dirs:
            _write(d / "cgroup.procs", str(pid))

    def oom_kills(self) -> int:
        """Processes the kernel killed for going over the session's memory limit."""
        name = "memory.events" if self.kind == "v2" else "memory.oom_control"
        try:
            with open(self.dirs[0] / name) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except OSError:
            pass
        return 0

    def remove(self, wait: float = 5.0) -> None:
        """Delete the directories once the last task has left (exiting tasks linger a moment)."""
        deadline = time.monotonic() + wait
        for d in self.dirs:
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break  # left for the next session's sweep
                    time.sleep(0.01)


def _v2(mounts: list, groups: dict[str, str], name: str, memory: int, processes: int) -> SessionCgroup:
    mount = next((m for m in mounts if m[2] == "cgroup2"), None)
    if mount is None or "" not in groups:
        raise CgroupUnavailable("no cgroup2 hierarchy is mounted")
    parent = _inside(mount[0], mount[1], groups[""])
    try:
        offered = set((parent / "cgroup.controllers").read_text().split())
        if not {"memory", "pids"} <= offered:
            raise CgroupUnavailable(
                f"the memory and pids controllers are not delegated to {parent} (it offers: {' '.join(sorted(offered)) or 'none'})"
            )
        if not {"memory", "pids"} <= set((parent / "cgroup.subtree_control").read_text().split()):
            _write(
                parent / "cgroup.subtree_control", "+memory +pids"
            )  # EBUSY unless the host's cgroup is a root or empty
        _sweep(parent)
        d = parent / name
        d.mkdir()
    except OSError as exc:
        raise CgroupUnavailable(f"cannot create a cgroup under {parent}: {exc.strerror or exc}") from exc
    try:
        _write(d / "memory.max", str(memory))
        if (d / "memory.swap.max").exists():
            _write(d / "memory.swap.max", "0")
        _write(d / "pids.max", str(processes))
    except OSError as exc:
        d.rmdir()
        raise CgroupUnavailable(f"cannot set the limits of {d}: {exc.strerror or exc}") from exc
    return SessionCgroup("v2", [d], memory)


def _v1(mounts: list, groups: dict[str, str], name: str, memory: int, processes: int) -> SessionCgroup:
    dirs: list[Path] = []
    try:
        for controller in ("memory", "pids"):
            mount = next((m for m in mounts if m[2] == "cgroup" and controller in m[3]), None)
            if mount is None or controller not in groups:
                raise CgroupUnavailable(f"no cgroup v1 {controller} hierarchy is mounted")
            parent = _inside(mount[0], mount[1], groups[controller])
            _sweep(parent)
            d = parent / name
            try:
                d.mkdir()
            except OSError as exc:
                raise CgroupUnavailable(f"cannot create a cgroup under {parent}: {exc.strerror or exc}") from exc
            dirs.append(d)
        try:
            _write(dirs[0] / "memory.limit_in_bytes", str(memory))
            try:  # swap accounting may be off; without swap there is nothing to limit anyway
                _write(dirs[0] / "memory.memsw.limit_in_bytes", str(memory))
            except OSError:
                pass
            _write(dirs[1] / "pids.max", str(processes))
        except OSError as exc:
            raise CgroupUnavailable(f"cannot set the limits of {dirs}: {exc.strerror or exc}") from exc
    except CgroupUnavailable:
        SessionCgroup("v1", dirs, memory).remove(wait=0)
        raise
    return SessionCgroup("v1", dirs, memory)


def create(
    memory: int, processes: int, *, mountinfo: str = "/proc/self/mountinfo", proc_cgroup: str = "/proc/self/cgroup"
) -> SessionCgroup:
    """A new cgroup limiting its tasks to ``memory`` bytes and ``processes`` tasks together."""
    name = f"{PREFIX}{os.getpid()}-{os.urandom(4).hex()}"
    try:
        mounts, groups = _mounts(mountinfo), _own_groups(proc_cgroup)
    except OSError as exc:
        raise CgroupUnavailable(f"cannot read the cgroup mounts: {exc}") from exc
    try:
        return _v2(mounts, groups, name, memory, processes)
    except CgroupUnavailable as v2_missing:
        try:
            return _v1(mounts, groups, name, memory, processes)
        except CgroupUnavailable as v1_missing:
            raise CgroupUnavailable(f"cgroup v2: {v2_missing}; cgroup v1: {v1_missing}") from None
