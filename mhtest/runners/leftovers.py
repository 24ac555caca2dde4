"""What a test leaves behind: the processes still in its process group once it exited.

Each test runs in a session (and process group) of its own whose ID is its PID. Once the
test's process has exited, anything still in that group was started by the test and left
running: the runner ends it with SIGTERM, then SIGKILL after GRACE, and says so in the
test's debug.log. The group's ID cannot be taken by another process meanwhile: Linux keeps
a PID allocated while any process still uses it as its process group.

Finding them costs one kill(2) when there are none (the common case); /proc is read only
when the group is not empty. A process that left the group (setsid, a daemon) is not seen.
"""

from __future__ import annotations

import logging
import os
import signal
import time

from mhtest import pids

LOG = logging.getLogger(__name__)
#: How long leftovers get between SIGTERM and SIGKILL.
GRACE = 2.0


def group_members(pgid: int) -> list[tuple[int, str]]:
    """The live processes of process group `pgid`, as (pid, command name), from /proc."""
    found = []
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return found
    for name in entries:
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                text = stat.read()
        except OSError:  # gone meanwhile
            continue
        head, _, tail = text.rpartition(b")")
        fields = tail.split()  # state, ppid, pgrp, ...
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] not in (b"Z", b"X"):
            found.append((int(name), head.partition(b"(")[2].decode(errors="replace")))
    return found


class Leftovers:
    """The processes a test left in its process group, being ended.

    `find()` returns None when there are none; else they have been sent SIGTERM, and
    `poll()` says when they are gone (SIGKILL once GRACE has passed).
    """

    def __init__(self, pgid: int, members: list[tuple[int, str]]) -> None:
        self.pgid = pgid
        self.members = members
        self.deadline = time.monotonic() + GRACE
        self.forced = False  # SIGKILL was needed
        self._signal(signal.SIGTERM)

    @classmethod
    def find(cls, pgid: int) -> Leftovers | None:
        """The leftovers of the test whose process (the group's leader) has exited."""
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:  # nothing left: the common case
            return None
        except PermissionError:  # there are some, not ours to signal (see signal_group)
            pass
        members = group_members(pgid)
        return cls(pgid, members) if members else None

    def poll(self) -> bool:
        """True once they are all gone (or were sent SIGKILL)."""
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        if any(pids.running(pid) for pid, _ in self.members) and time.monotonic() < self.deadline:
            return False
        # Past the grace, or what is left is what they started while dying.
        self.kill()
        return True

    def kill(self) -> None:
        """SIGKILL the whole group now."""
        self.forced = self.forced or any(pids.running(pid) for pid, _ in self.members)
        self._signal(signal.SIGKILL)

    def report(self) -> str:
        """One line for the test's debug.log."""
        listed = ", ".join(f"pid {pid} ({name})" for pid, name in self.members)
        how = "SIGTERM, then SIGKILL" if self.forced else "SIGTERM"
        return f"killed {len(self.members)} leftover process(es) of the test ({how}): {listed}"

    def _signal(self, sig: int) -> None:
        signal_group(self.pgid, sig)


def signal_group(pgid: int, sig: int) -> None:
    """Send `sig` to process group `pgid`: one already gone is fine, one not ours is logged."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        LOG.warning("cannot signal test process group %d: %s", pgid, exc)
