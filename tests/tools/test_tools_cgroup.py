"""Finding the session's cgroup: v2 where the host's cgroup delegates memory and pids, else v1; on a fake tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from kimidoc.tools.sandbox import cgroup


def _tree(tmp_path: Path, v2_controllers: str, *, v1: bool = True) -> tuple[str, str]:
    """A fake /proc/self/mountinfo and /proc/self/cgroup over directories under ``tmp_path``."""
    lines = [f"30 25 0:26 / {tmp_path}/unified rw,relatime - cgroup2 cgroup2 rw"]
    if v1:
        lines += [
            f"31 25 0:27 / {tmp_path}/memory rw,relatime - cgroup cgroup rw,memory",
            f"32 25 0:28 / {tmp_path}/pids rw,relatime - cgroup cgroup rw,pids",
        ]
    (tmp_path / "mountinfo").write_text("\n".join(lines) + "\n")
    (tmp_path / "cgroup").write_text("8:pids:/\n4:memory:/svc\n0::/svc\n")
    for d in ("unified/svc", "memory/svc", "pids"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "unified/svc/cgroup.controllers").write_text(v2_controllers + "\n")
    (tmp_path / "unified/svc/cgroup.subtree_control").write_text(v2_controllers + "\n")
    return str(tmp_path / "mountinfo"), str(tmp_path / "cgroup")


def test_v2_is_used_where_memory_and_pids_are_delegated(tmp_path: Path) -> None:
    mountinfo, own = _tree(tmp_path, "cpu memory pids")
    group = cgroup.create(256 << 20, 17, mountinfo=mountinfo, proc_cgroup=own)
    assert group.kind == "v2" and group.dirs[0].parent == tmp_path / "unified/svc"
    assert (group.dirs[0] / "memory.max").read_text() == str(256 << 20)
    assert (group.dirs[0] / "pids.max").read_text() == "17"
    group.join(1234)
    assert (group.dirs[0] / "cgroup.procs").read_text() == "1234"
    (group.dirs[0] / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    assert group.oom_kills() == 1


def test_v1_memory_and_pids_where_v2_lacks_the_controllers(tmp_path: Path) -> None:
    mountinfo, own = _tree(tmp_path, "hugetlb")
    group = cgroup.create(64 << 20, 9, mountinfo=mountinfo, proc_cgroup=own)
    memory, pids = group.dirs
    assert group.kind == "v1" and memory.parent == tmp_path / "memory/svc" and pids.parent == tmp_path / "pids"
    assert (memory / "memory.limit_in_bytes").read_text() == str(64 << 20)
    assert (pids / "pids.max").read_text() == "9"
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert group.oom_kills() == 2


def test_the_refusal_names_what_is_missing_in_each_version(tmp_path: Path) -> None:
    mountinfo, own = _tree(tmp_path, "hugetlb", v1=False)
    with pytest.raises(cgroup.CgroupUnavailable) as info:
        cgroup.create(1 << 30, 64, mountinfo=mountinfo, proc_cgroup=own)
    message = str(info.value)
    assert "memory and pids controllers are not delegated" in message and "hugetlb" in message
    assert "no cgroup v1 memory hierarchy is mounted" in message


def test_stale_session_cgroups_of_dead_hosts_are_swept(tmp_path: Path) -> None:
    mountinfo, own = _tree(tmp_path, "memory pids")
    stale = tmp_path / "unified/svc" / f"{cgroup.PREFIX}999999999-00000000"
    stale.mkdir()
    cgroup.create(1 << 30, 64, mountinfo=mountinfo, proc_cgroup=own)
    assert not stale.exists()
