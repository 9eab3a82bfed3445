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
    """What this process's cgroup (v2 or v1, as containers set it) still allows: its limit less its working set
    (usage less the page cache the kernel can drop, as ``docker stats`` counts it); None without a limit."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None
    v2 = next((ln.split("::", 1)[1] for ln in lines if ln.startswith("0::")), None)
    v1 = next((ln.split(":", 2)[2] for ln in lines if ln.split(":")[1:2] == ["memory"]), None)
    places = []  # (folder, limit file, usage file, page-cache key in memory.stat)
    if v1 is not None:
        for folder in (root / "memory" / v1.lstrip("/"), root / "memory"):
            places.append((folder, "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"))
    if v2 is not None:
        for folder in (root / v2.lstrip("/"), root):
            places.append((folder, "memory.max", "memory.current", "inactive_file"))
    for folder, limit_file, usage_file, cache_key in places:
        try:
            limit_text = (folder / limit_file).read_text().strip()
            usage = int((folder / usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or int(limit_text) >= 2**60:  # v1 writes "no limit" as a page-rounded 2**63
            return None
        try:
            stat = dict(ln.split() for ln in (folder / "memory.stat").read_text().splitlines() if ln.count(" ") == 1)
            usage -= int(stat.get(cache_key, 0))
        except (OSError, ValueError):
            pass
        return max(0, int(limit_text) - usage)
    return None


def gib(n: float) -> str:
    """Bytes as GiB with one decimal, for messages."""
    return f"{n / 2**30:.1f} GiB"
