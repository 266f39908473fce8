"""How long each stage of a run took: a stopwatch the run's phases share, written to config.json under `timings`
(seconds per stage, and the total) and shown as one line at the end of `promptkit run`."""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager

# in the order a run meets them; `collect` is the scores turned into rows plus the run's tables written
STAGES = ("startup", "model_load", "task_load", "render", "scoring", "collect", "statistics", "report")
LABELS = {"startup": "start-up", "model_load": "model load", "task_load": "task load"}


def process_age() -> float | None:
    """Seconds since this process started, from the kernel's record of it: Linux's /proc (to 10 ms; psutil's
    create_time can be off by up to a second there, as it adds a boot time truncated to whole seconds), else
    psutil; None when neither can tell."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks after boot
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil

        return max(0.0, time.time() - psutil.Process().create_time())
    except Exception:  # psutil missing, or the platform will not say
        return None


class Stopwatch:
    """Seconds spent in each stage, and the total since the stopwatch's origin: the moment it was made, or, with
    `startup`, that many seconds earlier (the process start, for the command line). A stage inside another counts
    for itself only, so the stages never add up to more than the total."""

    def __init__(self, startup: float = 0.0):
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.seconds["startup"] = max(0.0, startup)
        self._origin = time.perf_counter() - self.seconds["startup"]
        self._open: list[float] = []  # per stage in progress: seconds spent in the stages nested in it

    @classmethod
    def since_process_start(cls) -> "Stopwatch":
        """A stopwatch whose start-up stage is this process's life so far (interpreter, imports, argument parsing);
        0 when the platform cannot say when the process started."""
        return cls(process_age() or 0.0)

    @contextmanager
    def stage(self, name: str):
        if name not in self.seconds:
            raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
        start = time.perf_counter()
        self._open.append(0.0)
        try:
            yield
        finally:
            spent = time.perf_counter() - start
            self.seconds[name] += spent - self._open.pop()
            if self._open:
                self._open[-1] += spent

    def as_dict(self) -> dict[str, float]:
        """Seconds per stage and `total` (to the millisecond: stages rounded down, the total up, so their sum never
        passes it; the rest is time between stages, e.g. closing a model)."""
        out = {name: math.floor(value * 1000) / 1000 for name, value in self.seconds.items()}
        out["total"] = math.ceil((time.perf_counter() - self._origin) * 1000) / 1000
        return out


def format_timings(timings: dict) -> str:
    """One line: 'time: start-up 1.20 s · model load 3.41 s · … · total 9.93 s'."""
    parts = [f"{LABELS.get(name, name)} {_seconds(timings.get(name, 0.0))}" for name in STAGES]
    return "time: " + " · ".join(parts + [f"total {_seconds(timings.get('total', 0.0))}"])


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s" if value < 100 else f"{value:.0f} s"
