"""The launcher's environment: this process's rank, the job's world size and the processes on this machine,
as `accelerate launch` or torchrun set them (read by backends and the engine alike); and how the command ends."""

from __future__ import annotations

import os
import sys


def launch_env() -> tuple[int, int, int]:
    """(rank, world size, processes on this machine) as the launcher set them; (0, 1, 1) when not launched."""
    read = lambda name, default: int(os.environ.get(name, default) or default)
    return read("RANK", 0), read("WORLD_SIZE", 1), read("LOCAL_WORLD_SIZE", 1)


def exit_now(code: int) -> None:
    """End the process with `code` once the command is done: whatever it wrote is closed by then (files, the result
    cache), and tearing down the ~2,500 modules a run imports (pandas, matplotlib, torch) would add most of a second
    to every command, a fifth of a fully cached run. An accelerate job's process group ends the normal way."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (promptkit ... | head): nothing more can reach it
            pass
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        sys.exit(code)
    os._exit(code)
