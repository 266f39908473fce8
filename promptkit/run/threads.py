"""How many CPU threads scoring uses: the user's --threads, or all the cores this process may run on, fewer when
other work keeps some of them busy. Measured 2026-12-06 on a 2-core AMD EPYC: the same scoring took 26.7 s with
torch's default threads and 8.2 s with one thread while another job used a core (threads waiting on a busy core
stall every parallel region)."""

from __future__ import annotations

import os
import sys


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def choose(requested, cores: int | None = None, load: float | None = None) -> tuple[int, str | None]:
    """(threads, a one-line note when fewer than the cores are used because of other work, else None)."""
    cores = cores or available_cores()
    if requested != "auto":
        return int(requested), None
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            return cores, None
    busy = min(cores - 1, int(load + 0.5))  # runnable threads of other work, over the last minute
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
