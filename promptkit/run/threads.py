"""How many CPU threads scoring uses: the user's --threads, or all the cores this process may run on, fewer when
other work keeps some of them busy. Measured 2026-12-06 on a 2-core AMD EPYC: the same scoring took 26.7 s with
torch's default threads and 8.2 s with one thread while another job used a core (threads waiting on a busy core
stall every parallel region)."""

from __future__ import annotations

import os
import sys
import time


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def running_now(samples: int = 5, interval: float = 0.01) -> int | None:
    """Other runnable threads right now (the median of a few readings of /proc/stat's procs_running, less this
    process's own), or None where there is no /proc/stat."""
    readings = []
    for _ in range(samples):
        try:
            with open("/proc/stat") as f:
                line = next(line for line in f if line.startswith("procs_running"))
        except (OSError, StopIteration):
            return None
        readings.append(int(line.split()[1]) - 1)
        time.sleep(interval)
    return max(0, sorted(readings)[len(readings) // 2])


def choose(requested, cores: int | None = None, load: float | None = None,
           running: int | None = -1) -> tuple[int, str | None]:
    """(threads, a one-line note when fewer than the cores are used because of other work, else None). Other work
    counts when both the 1-minute load average and the runnable threads right now show it: the load average
    alone still counts work that just ended (the install before a first run), a single reading alone is noise."""
    cores = cores or available_cores()
    if requested != "auto":
        return int(requested), None
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            return cores, None
    if running == -1:
        running = running_now()
    busy = min(cores - 1, int(load + 0.5), cores if running is None else running)  # other work's threads
    if busy <= 0:
        return cores, None
    free = cores - busy
    return free, (f"{busy} of {cores} cores are busy with other work (load average {load:.1f}); scoring on {free} "
                  f"thread{'s' if free > 1 else ''} (--threads N to choose)")


def apply(threads: int) -> None:
    """Set torch's intra-op threads when torch is loaded (a local model); a server-backed run has nothing to set."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
