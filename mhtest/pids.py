"""Whether a process is there: the one check the queue, the host cache and the runner share.

Standard library only: the executor on a host imports it as it starts.
"""

from __future__ import annotations

import os


def exists(pid: int) -> bool:
    """True if a process `pid` exists (a zombie too), whoever it belongs to."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running(pid: int) -> bool:
    """True while `pid` runs: a zombie has ended (Linux's /proc; False without it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")
