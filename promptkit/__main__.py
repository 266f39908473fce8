import os
import signal
import sys


def _early(signum, frame):
    """A signal before the command has started (nothing opened yet): one line, 130 or 143, no traceback."""
    cli = sys.modules.get("promptkit.cli")
    if cli is not None and getattr(cli, "_received", None):  # the command is already ending on an earlier one
        return
    os.write(2, b"promptkit: " + (b"stopped (SIGTERM)\n" if signum == signal.SIGTERM else b"interrupted\n"))
    os._exit(143 if signum == signal.SIGTERM else 130)


signal.signal(signal.SIGINT, _early)
signal.signal(signal.SIGTERM, _early)

from .cli import console  # noqa: E402

console()
