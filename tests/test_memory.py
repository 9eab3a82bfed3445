"""Free memory as a container sees it: MemAvailable, or less where the cgroup's limit allows less."""

from __future__ import annotations

from pathlib import Path

from bgfs_core.memory import _cgroup_room, available_bytes


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_a_cgroup_limit_is_read_less_its_working_set(tmp_path: Path) -> None:
    gib = 2**30
    # v2 (unified): the process's own folder; the page cache it can drop does not count as used
    _tree(tmp_path / "v2", {"proc": "0::/docker/abc\n", "sys/docker/abc/memory.max": f"{8 * gib}\n",
                            "sys/docker/abc/memory.current": f"{3 * gib}\n",
                            "sys/docker/abc/memory.stat": f"anon {2 * gib}\ninactive_file {gib}\n"})  # fmt: skip
    assert _cgroup_room(tmp_path / "v2/proc", tmp_path / "v2/sys") == 6 * gib
    # v1, mounted at the container's own root (its path in /proc/self/cgroup is the host's)
    _tree(tmp_path / "v1", {"proc": "4:memory:/process_api/xyz\n0::/\n",
                            "sys/memory/memory.limit_in_bytes": f"{4 * gib}\n",
                            "sys/memory/memory.usage_in_bytes": f"{3 * gib}\n",
                            "sys/memory/memory.stat": f"cache {gib}\ntotal_inactive_file {2 * gib}\n"})  # fmt: skip
    assert _cgroup_room(tmp_path / "v1/proc", tmp_path / "v1/sys") == 3 * gib
    # no limit: v1 writes it as a page-rounded 2**63, v2 as "max"
    _tree(tmp_path / "none", {"proc": "4:memory:/\n0::/\n", "sys/memory/memory.limit_in_bytes": "9223372036854771712",
                              "sys/memory/memory.usage_in_bytes": "100", "sys/memory.max": "max",
                              "sys/memory.current": "100"})  # fmt: skip
    assert _cgroup_room(tmp_path / "none/proc", tmp_path / "none/sys") is None
    assert _cgroup_room(tmp_path / "missing", tmp_path) is None
    # a limit set on a folder above the process's own (a pod around its container): the smallest room counts
    _tree(tmp_path / "pod", {"proc": "0::/pod/ctr\n", "sys/pod/ctr/memory.max": "max\n",
                             "sys/pod/ctr/memory.current": "100\n", "sys/pod/ctr/memory.stat": "inactive_file 0\n",
                             "sys/pod/memory.max": f"{4 * gib}\n", "sys/pod/memory.current": f"{gib}\n",
                             "sys/pod/memory.stat": "inactive_file 0\n"})  # fmt: skip
    assert _cgroup_room(tmp_path / "pod/proc", tmp_path / "pod/sys") == 3 * gib
    # v1 states the limit of the folders above as hierarchical_memory_limit
    _tree(tmp_path / "v1h", {"proc": "4:memory:/\n", "sys/memory/memory.limit_in_bytes": "9223372036854771712",
                             "sys/memory/memory.usage_in_bytes": f"{gib}", "sys/memory/memory.stat":
                             f"hierarchical_memory_limit {2 * gib}\ntotal_inactive_file 0\n"})  # fmt: skip
    assert _cgroup_room(tmp_path / "v1h/proc", tmp_path / "v1h/sys") == gib
    # a file that cannot be parsed is no limit, not a traceback
    _tree(tmp_path / "odd", {"proc": "0::/\n", "sys/memory.max": "", "sys/memory.current": "1",
                             "sys/memory.stat": ""})  # fmt: skip
    assert _cgroup_room(tmp_path / "odd/proc", tmp_path / "odd/sys") is None


def test_available_bytes_on_this_machine() -> None:
    free = available_bytes()
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total = next(int(ln.split()[1]) * 1024 for ln in meminfo.read_text().splitlines() if ln.startswith("MemTotal"))
        assert free is not None and 0 < free <= total
    else:
        assert free is None or free > 0
