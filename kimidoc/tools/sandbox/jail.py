"""Isolation layers the sandboxed worker puts itself in before it runs any code (stdlib only).

Each ``enter_*``/``apply_*`` function tries one layer and returns ``None`` when it is active or a
short reason when it is not, so the host can report exactly what protects it and refuse to run
when a layer it asked for is missing. Nothing here raises for a missing kernel feature.

Layers and what they stop:
- ``netns``: a fresh network namespace whose only interface is its own loopback: no route to the
  host's 127.0.0.1 or anywhere else.
- ``fs_jail``: a private mount namespace and a new root (pivot_root onto a tmpfs) that holds only
  the system and Python directories (read-only), the documents (read-only overlays, with their
  owners and modes as they are: the sandbox uid reads what "others" may read, and its locks,
  leases and special-file traffic stay on the overlay's inodes), size- and inode-capped tmpfs
  work and home directories, a
  private /tmp, /dev/shm and a minimal /dev. Nothing else of the host filesystem is reachable,
  whatever its permissions, and nothing the code writes lands on the host's disk.
- ``pidns``: a PID namespace: host processes are invisible, and killing its first process ends
  every process inside, including daemons that left the process group.
- ``uid``: the code runs as an unprivileged uid of its own with no capabilities, so it cannot
  signal or ptrace host processes, write files it does not own, or raise its hard limits.
- ``rlimits``: CPU seconds, address space, file size, process count and open files.
- ``no_new_privs``: setuid binaries and file capabilities grant nothing.
- ``seccomp``: a syscall filter that refuses new namespaces, mounts, ptrace, kernel keyrings,
  BPF, perf, module loading and similar kernel attack surface, and file leases (a lease on a
  file the host shares would stall the host's next open of it).
- ``cgroup`` (set up by the host, see :mod:`kimidoc.tools.sandbox.cgroup`): memory and tasks of the
  whole session together.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import signal
import socket
import stat
import struct
from collections.abc import Iterable

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]

# Syscall numbers that differ per architecture: pivot_root, and the seccomp deny list.
_ARCH = {
    "x86_64": {
        "audit": 0xC000003E,
        "pivot_root": 155,
        "deny": {
            "unshare": 272,
            "setns": 308,
            "mount": 165,
            "umount2": 166,
            "pivot_root": 155,
            "chroot": 161,
            "ptrace": 101,
            "process_vm_readv": 310,
            "process_vm_writev": 311,
            "kexec_load": 246,
            "kexec_file_load": 320,
            "init_module": 175,
            "finit_module": 313,
            "delete_module": 176,
            "add_key": 248,
            "request_key": 249,
            "keyctl": 250,
            "bpf": 321,
            "perf_event_open": 298,
            "userfaultfd": 323,
            "open_by_handle_at": 304,
            "name_to_handle_at": 303,
            "swapon": 167,
            "swapoff": 168,
            "reboot": 169,
            "acct": 163,
            "fsopen": 430,
            "fsmount": 432,
            "move_mount": 429,
            "open_tree": 428,
            "mount_setattr": 442,
            "io_uring_setup": 425,
            "clone3": 435,
        },
        "clone": 56,
        "fcntl": 72,
    },
    "aarch64": {
        "audit": 0xC00000B7,
        "pivot_root": 41,
        "deny": {
            "unshare": 97,
            "setns": 268,
            "mount": 40,
            "umount2": 39,
            "pivot_root": 41,
            "chroot": 51,
            "ptrace": 117,
            "process_vm_readv": 270,
            "process_vm_writev": 271,
            "kexec_load": 104,
            "kexec_file_load": 294,
            "init_module": 105,
            "finit_module": 273,
            "delete_module": 106,
            "add_key": 217,
            "request_key": 218,
            "keyctl": 219,
            "bpf": 280,
            "perf_event_open": 241,
            "userfaultfd": 282,
            "open_by_handle_at": 265,
            "name_to_handle_at": 264,
            "swapon": 224,
            "swapoff": 225,
            "reboot": 142,
            "acct": 89,
            "fsopen": 430,
            "fsmount": 432,
            "move_mount": 429,
            "open_tree": 428,
            "mount_setattr": 442,
            "io_uring_setup": 425,
            "clone3": 435,
        },
        "clone": 220,
        "fcntl": 25,
    },
}.get(platform.machine())


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_b(src), _b(target), _b(fstype), flags, _b(data)), f"mount {src or fstype} on {target}")


def enter_namespaces(flags: int) -> str | None:
    """unshare(2) the calling process into new namespaces; a reason when the kernel refuses."""
    if _libc.unshare(flags) != 0:
        return f"unshare refused: {os.strerror(ctypes.get_errno())}"
    return None


def loopback_up() -> None:
    """Bring up ``lo`` in a fresh network namespace, so code can still talk to itself."""
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def set_hostname(name: str) -> None:
    data = name.encode()
    _check(_libc.sethostname(data, len(data)), "sethostname")


def _mkdirs_in(root: str, path: str, *, file: bool = False) -> str:
    """Create ``path`` (absolute, symlink-free) under ``root`` as a directory or an empty file."""
    target = root + path
    os.makedirs(os.path.dirname(target) if file else target, mode=0o755, exist_ok=True)
    if file and not os.path.exists(target):
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o644))
    return target


def _bind(root: str, path: str, *, writable: bool) -> None:
    source = os.path.realpath(path)
    target = _mkdirs_in(root, path, file=not os.path.isdir(source))
    _mount(source, target, None, MS_BIND)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | (0 if writable else MS_RDONLY)
    _mount(None, target, None, flags)


_DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9)}


def _device_nodes(dev: str) -> None:
    """/dev/null and friends as nodes of the private /dev (a bind from the host's devtmpfs would show
    the host's memory size in mountinfo); a bind where mknod is refused."""
    for name, (major, minor) in _DEVICES.items():
        target = f"{dev}/{name}"
        try:
            os.mknod(target, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
            os.chmod(target, 0o666)  # mknod applies the umask
        except OSError:
            _mount(f"/dev/{name}", _mkdirs_in(dev, f"/{name}", file=True), None, MS_BIND)


def _cover(target: str, cover: str) -> None:
    _mount(cover, target, None, MS_BIND)
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _cover_special_files(top: str, cover: str) -> int:
    """Bind ``cover`` (an empty file of mode 0 that the sandbox uid cannot open) over every socket,
    FIFO and device at or under ``top``; returns how many.

    The documents are bound read-only, but a read-only mount does not stop connecting to a unix
    socket or writing into a FIFO: a host process listening there would receive what the sandbox
    sends. Reads the directory entries' types only (no stat per file).
    """
    mode = os.lstat(top).st_mode
    if not stat.S_ISDIR(mode):
        if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
            return 0
        _cover(top, cover)
        return 1
    covered = 0
    stack = [top]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.is_symlink():
                continue  # resolved inside the jail: it leads only to what the jail holds
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif not entry.is_file(follow_symlinks=False):
                _cover(entry.path, cover)
                covered += 1
    return covered


def _overlay_view(root: str, path: str, empty: str) -> None:
    """``path`` shown at the same place through a read-only overlay (its only layers: ``path`` and an
    empty directory), so that what the sandbox does to a document's inode stays on the overlay's own
    inode: locks, leases, a FIFO's pipe and a socket's listener are not the host's. Permissions
    are still checked against the document's own owner and mode.

    A single file is taken from an overlay of its folder mounted aside, then unmounted. OSError
    when the overlay cannot be made (a path overlayfs cannot name, a file system it cannot stack on).
    """
    source = os.path.realpath(path)
    folder = source if os.path.isdir(source) else os.path.dirname(source)
    if any(c in folder for c in ",:\\"):
        raise OSError(errno.EINVAL, f"overlayfs cannot name {folder!r}")
    flags = MS_RDONLY | MS_NOSUID | MS_NODEV
    if folder == source:
        _mount("overlay", _mkdirs_in(root, path), "overlay", flags, f"lowerdir={folder}:{empty}")
        return
    aside = f"{empty}-view"
    os.makedirs(aside, exist_ok=True)
    _mount("overlay", aside, "overlay", flags, f"lowerdir={folder}:{empty}")
    try:
        target = _mkdirs_in(root, path, file=True)
        _mount(f"{aside}/{os.path.basename(source)}", target, None, MS_BIND)
        _mount(None, target, None, MS_REMOUNT | MS_BIND | flags)
    finally:
        _check(_libc.umount2(os.fsencode(aside), MNT_DETACH), f"unmount {aside}")
        os.rmdir(aside)


def build_root(
    staging: str,
    *,
    system: Iterable[str],
    read_only: Iterable[str],
    writable: Iterable[str],
    private: Iterable[str] = (),
    private_size: str = "512m",
    owner: tuple[int, int] | None = None,
    tmp_size: str = "64m",
    files: int = 16384,
    proc: bool = True,
    notes: dict[str, str] | None = None,
) -> None:
    """Assemble the new root on a tmpfs at ``staging`` and pivot into it.

    ``writable`` paths are bound from the host; ``private`` paths get a fresh tmpfs of
    ``private_size`` owned by ``owner`` (uid, gid). Every tmpfs the code can write (``private``,
    /tmp, /dev/shm) holds at most ``files`` files and directories: an inode costs kernel memory
    that tmpfs's size does not count.

    ``read_only`` paths are shown through read-only overlays (see :func:`_overlay_view`); where one
    cannot be made, a plain read-only bind whose sockets, FIFOs and devices are covered, said in ``notes``.

    Must run in a private mount namespace (so nothing propagates to the host) and, for /proc to
    show only the sandbox's processes, as a process inside the new PID namespace.
    """
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", staging, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,nr_inodes=65536,mode=0755")
    root = staging
    # The private /tmp comes first, so that a Python living under the host's /tmp (a virtualenv made
    # there) is bound on top of it rather than hidden beneath it.
    tmp = _mkdirs_in(root, "/tmp")
    _mount("tmpfs", tmp, "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmp_size},nr_inodes={files},mode=1777")
    for path in sorted(set(system), key=len):
        if os.path.islink(path) and os.path.dirname(path) == "/":
            # merged-/usr layouts: /bin -> usr/bin; replicate the link, the target is bound anyway
            link = os.readlink(path)
            if not os.path.isabs(link) and not os.path.lexists(root + path):
                os.symlink(link, root + path)
        elif os.path.exists(path):
            _bind(root, os.path.realpath(path), writable=False)
    dev = _mkdirs_in(root, "/dev")
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,nr_inodes=64,mode=0755")
    _device_nodes(dev)
    for name, link in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(link, f"{dev}/{name}")
    cover, empty = f"{dev}/.cover", f"{dev}/.empty"
    os.close(os.open(cover, os.O_CREAT | os.O_WRONLY, 0))
    os.mkdir(empty, 0o555)
    shm = _mkdirs_in(root, "/dev/shm")
    _mount("tmpfs", shm, "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmp_size},nr_inodes={files},mode=1777")
    if proc:
        _mount("proc", _mkdirs_in(root, "/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for path in sorted(set(read_only), key=len):
        try:
            _overlay_view(root, path, empty)
        except OSError as exc:
            # a plain read-only bind: locks and leases reach the host's inodes (leases are refused by
            # seccomp), and special files are covered as found now
            if notes is not None:
                notes[f"read_only {path}"] = (
                    f"bound without an overlay ({exc}): special files created later are reachable"
                )
            _bind(root, path, writable=False)
            _cover_special_files(root + path, cover)
    for path in sorted(set(writable), key=len):
        _bind(root, path, writable=True)
    ids = f",uid={owner[0]},gid={owner[1]}" if owner else ""
    for path in sorted(set(private), key=len):
        # a size- and inode-capped tmpfs, so that no amount of writing can fill the host's disk or memory
        _mount(
            "tmpfs",
            _mkdirs_in(root, path),
            "tmpfs",
            MS_NOSUID | MS_NODEV,
            f"size={private_size},nr_inodes={files},mode=0700{ids}",
        )
    if _ARCH is None:
        raise OSError(errno.ENOSYS, f"pivot_root: unknown syscall number on {platform.machine()}")
    os.chdir(root)
    _check(_libc.syscall(_ARCH["pivot_root"], b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "detach the old root")
    os.chdir("/")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def drop_capability_bounding_set() -> None:
    """So that no later exec can regain a capability (needs CAP_SETPCAP; called while still root)."""
    cap = 0
    while _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1


def drop_privileges(uid: int, gid: int) -> str | None:
    if os.geteuid() != 0:
        return "not started as root, so the uid cannot be changed"
    try:
        drop_capability_bounding_set()
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        return f"could not switch to uid {uid}: {exc}"
    if os.getuid() != uid or os.geteuid() != uid:
        return f"still running as uid {os.geteuid()}"
    return None


def no_new_privs() -> str | None:
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return f"prctl(NO_NEW_PRIVS) refused: {os.strerror(ctypes.get_errno())}"
    return None


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (set after any uid change, which clears it)."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def apply_limits(
    *, address_space: int, file_size: int, processes: int, open_files: int, cpu_seconds: int
) -> str | None:
    """Hard limits for the session (an unprivileged process can lower them, never raise them)."""
    try:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an over-long write fails with EFBIG instead of killing
        for which, value in (
            (resource.RLIMIT_AS, address_space),
            (resource.RLIMIT_FSIZE, file_size),
            (resource.RLIMIT_NPROC, processes),
            (resource.RLIMIT_NOFILE, open_files),
            (resource.RLIMIT_CPU, cpu_seconds),
            (resource.RLIMIT_CORE, 0),
        ):
            resource.setrlimit(which, (value, value))
    except (OSError, ValueError) as exc:
        return f"setrlimit failed: {exc}"
    return None


def seccomp_filter() -> str | None:
    """Install a BPF filter that fails the deny-listed syscalls with EPERM (needs no_new_privs)."""
    if _ARCH is None:
        return f"no syscall table for {platform.machine()}"
    BPF_LD_W_ABS, BPF_JEQ_K, BPF_JSET_K, BPF_RET_K = 0x20, 0x15, 0x45, 0x06
    RET_ALLOW, RET_KILL = 0x7FFF0000, 0x80000000
    ret_errno = lambda e: 0x00050000 | e  # noqa: E731  SECCOMP_RET_ERRNO
    arch_off, nr_off, arg0_off = 4, 0, 16
    prog: list[tuple[int, int, int, int]] = [
        (BPF_LD_W_ABS, 0, 0, arch_off),
        (BPF_JEQ_K, 1, 0, _ARCH["audit"]),
        (BPF_RET_K, 0, 0, RET_KILL),
        (BPF_LD_W_ABS, 0, 0, nr_off),
    ]
    if platform.machine() == "x86_64":
        # x32 syscalls have bit 30 set and would bypass a table written for x86_64
        prog += [(BPF_JSET_K, 0, 1, 0x40000000), (BPF_RET_K, 0, 0, ret_errno(errno.EPERM))]
    for name, nr in _ARCH["deny"].items():
        # clone3 gets ENOSYS so that libc falls back to clone(2), whose flags the filter can inspect
        result = ret_errno(errno.ENOSYS if name == "clone3" else errno.EPERM)
        prog += [(BPF_JEQ_K, 0, 1, nr), (BPF_RET_K, 0, 0, result)]
    namespaces = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | 0x02000000
    F_SETLEASE = 1024
    prog += [
        (BPF_JEQ_K, 0, 4, _ARCH["clone"]),
        (BPF_LD_W_ABS, 0, 0, arg0_off),  # low 32 bits of the clone flags
        (BPF_JSET_K, 0, 1, namespaces),
        (BPF_RET_K, 0, 0, ret_errno(errno.EPERM)),
        (BPF_RET_K, 0, 0, RET_ALLOW),
        (BPF_JEQ_K, 0, 3, _ARCH["fcntl"]),
        (BPF_LD_W_ABS, 0, 0, arg0_off + 8),  # the command (low 32 bits of the second argument)
        (BPF_JEQ_K, 0, 1, F_SETLEASE),
        (BPF_RET_K, 0, 0, ret_errno(errno.EPERM)),
        (BPF_RET_K, 0, 0, RET_ALLOW),
    ]
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.addressof(buf))
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        return f"prctl(SECCOMP) refused: {os.strerror(ctypes.get_errno())}"
    return None
