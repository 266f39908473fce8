"""The launcher's environment: this process's rank, the job's world size and the processes on this machine,
as `accelerate launch` or torchrun set them (read by backends and the engine alike)."""

from __future__ import annotations

import os


def launch_env() -> tuple[int, int, int]:
    """(rank, world size, processes on this machine) as the launcher set them; (0, 1, 1) when not launched."""
    read = lambda name, default: int(os.environ.get(name, default) or default)
    return read("RANK", 0), read("WORLD_SIZE", 1), read("LOCAL_WORLD_SIZE", 1)
