"""Free memory, read before work that could outgrow it: a clear error instead of the kernel's OOM killer."""

from __future__ import annotations

from pathlib import Path


def available_bytes() -> int | None:
    """Memory this process can still take: MemAvailable from /proc/meminfo, or less where a cgroup (a container's
    memory limit) allows less. None where neither can be read (not Linux)."""
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    limit = _cgroup_room()
    if limit is not None:
        free = limit if free is None else min(free, limit)
    return free


def _cgroup_room(proc: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """What this process's cgroups (v2 or v1, as containers and pods set them) still allow: the smallest limit less
    its working set (usage less the page cache the kernel can drop, as ``docker stats`` counts it) over the
    process's folder and those above it; None without a limit."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None
    v2 = next((ln.split("::", 1)[1] for ln in lines if ln.startswith("0::")), None)
    v1 = next((ln.split(":", 2)[2] for ln in lines if ln.split(":")[1:2] == ["memory"]), None)
    rooms = []
    if v1 is not None:  # v1 states the limit of the folders above in memory.stat (hierarchical_memory_limit)
        for folder in (root / "memory" / v1.strip("/"), root / "memory"):
            room = _room(folder, "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file",
                         "hierarchical_memory_limit")  # fmt: skip
            if room is not False:
                rooms.append(room)
                break
    if v2 is not None:  # v2 keeps each folder's own limit: walk up from the process's own to the root
        leaf = root / v2.strip("/")
        for folder in (leaf, *leaf.parents):
            room = _room(folder, "memory.max", "memory.current", "inactive_file")
            if room is not False:
                rooms.append(room)
            if folder == root:
                break
    limited = [r for r in rooms if r is not None]
    return min(limited) if limited else None


def _room(folder: Path, limit_file: str, usage_file: str, cache_key: str, stat_limit: str = "") -> int | None | bool:
    """One cgroup folder's limit less its working set: None without a limit, False where the folder has no such
    files (not this hierarchy's, or not mounted here)."""
    try:
        limit_text = (folder / limit_file).read_text().strip()
        usage = int((folder / usage_file).read_text())
        stat = dict(ln.split() for ln in (folder / "memory.stat").read_text().splitlines() if ln.count(" ") == 1)
        limits = [int(limit_text)] if limit_text != "max" else []
        if stat_limit in stat:
            limits.append(int(stat[stat_limit]))
        usage -= int(stat.get(cache_key, 0))
    except (OSError, ValueError):
        return False
    limits = [n for n in limits if n < 2**60]  # v1 writes "no limit" as a page-rounded 2**63
    return max(0, min(limits) - usage) if limits else None


def gib(n: float) -> str:
    """Bytes as GiB with one decimal, for messages."""
    return f"{n / 2**30:.1f} GiB"
