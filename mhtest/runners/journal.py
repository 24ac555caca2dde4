"""A detached run on its host: its directory, its journal, and waking up when they change.

The executor (mhtest.runners.executor) runs a host's tests in a process of its own
session, the runner, detached from the SSH channel that started it, so that a dropped
connection does not end them. What the controller must receive goes into the run's
directory, ``runs/<id>/`` in the host's mhtest cache, and a follower
(mhtest.runners.attach) streams it to whichever SSH channel is attached:

  journal       the event lines (test.files pieces too), byte for byte as the controller
                reads them: a controller that reconnects resumes at the byte it got to
  runner.pid    the runner, a session leader (so its process group too)
  follower.pid  the follower streaming now (a new one ends the one before)
  runner.log    the runner's own stdout and stderr
  root          where the tests' own directories are (a private temporary directory)
  wait          how long (s) the controller waits for the host after a drop (its
                --reconnect-timeout; 0: it does not, and the tests stop with the follower)
  alive         touched by the follower whenever the controller speaks: once it is older
                than keep(wait) seconds, the runner stops its tests and removes the directory
  started       the runner got its tests (the run exists for the controller)
  finished      the journal is complete (its last line is run.end)
  collected     the controller has it all: the runner removes the directory and exits
  left          the controller left and does not come back (its wait is 0): the same

The runner rings the follower's Bell after each line it adds to the journal, the follower
the runner's when the controller is done (see Bell). Nothing here imports more than the
standard library's basics: the executor's start-up time counts.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import time
from typing import Sequence

RUNS = "runs"
JOURNAL = "journal"
RUNNER = "runner.pid"
FOLLOWER = "follower.pid"
RUNNER_LOG = "runner.log"
ROOT = "root"
WAIT = "wait"
ALIVE = "alive"
STARTED = "started"
FINISHED = "finished"
COLLECTED = "collected"
LEFT = "left"
#: Who a Bell wakes.
RUNNER_BELL = "runner"
FOLLOWER_BELL = "follower"
#: How much longer than its controller a run waits (the controller needs some time to
#: find out that its connection is gone: SSH keepalives).
KEEP_MARGIN = 60.0
#: How long the directory of a run whose runner died is kept when it said nothing.
DEFAULT_KEEP = 3600.0
#: Where a Bell cannot be bound, how often its wait looks again (seconds).
POLL = 0.05


def run_dir(cache: str, run_id: str) -> str:
    """The directory of run `run_id` (letters and digits only) in host cache `cache`."""
    if not run_id or not run_id.isalnum() or len(run_id) > 64:
        raise ValueError(f"not a run id: {run_id[:70]!r}")
    return os.path.join(cache, RUNS, run_id)


def keep(wait: float) -> float:
    """How long a run whose controller waits `wait` s after a drop waits for it."""
    return max(0.0, wait) + KEEP_MARGIN


def create(cache: str, run_id: str, wait: float) -> str:
    """Make run `run_id`'s directory (0700) with an empty journal; its path.

    FileExistsError if it exists: a run id is used once.
    """
    directory = run_dir(cache, run_id)
    os.makedirs(os.path.dirname(directory), mode=0o700, exist_ok=True)
    os.mkdir(directory, 0o700)
    write(directory, WAIT, f"{wait:g}")
    write(directory, JOURNAL, "")
    write(directory, ALIVE, "")
    return directory


def path(directory: str, name: str) -> str:
    return os.path.join(directory, name)


def write(directory: str, name: str, text: str) -> None:
    """Write a small file of the run (whole, or not at all)."""
    target = path(directory, name)
    tmp = f"{target}.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, target)


def has(directory: str, name: str) -> bool:
    return os.path.exists(path(directory, name))


def read_number(directory: str, name: str) -> float | None:
    try:
        with open(path(directory, name), encoding="ascii") as source:
            return float(source.read().strip())
    except (OSError, ValueError):
        return None


def read_pid(directory: str, name: str) -> int | None:
    value = read_number(directory, name)
    return int(value) if value else None


def touch(directory: str, name: str = ALIVE) -> None:
    """Mark `name` as of now (the controller was heard from)."""
    with contextlib.suppress(OSError):
        os.utime(path(directory, name))


def quiet_for(directory: str, name: str = ALIVE) -> float:
    """Seconds since `name` was last touched (0 when it cannot be read)."""
    try:
        return max(0.0, time.time() - os.stat(path(directory, name)).st_mtime)
    except OSError:
        return 0.0


def process_of(pid: int | None, run_id: str) -> bool:
    """True if `pid` is a live process of run `run_id` (its command line names the run)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as source:
            words = source.read().split(b"\0")
        with open(f"/proc/{pid}/stat", "rb") as source:
            state = source.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X") and run_id.encode() in words


def sweep(cache: str) -> None:
    """Remove the runs whose runner is gone and whose controller was not heard of for
    keep time (a host that rebooted, a runner that was killed)."""
    runs = os.path.join(cache, RUNS)
    try:
        entries = list(os.scandir(runs))
    except OSError:
        return
    for entry in entries:
        directory = entry.path
        if process_of(read_pid(directory, RUNNER), entry.name):
            continue
        wait = read_number(directory, WAIT)
        quiet = quiet_for(directory) if has(directory, ALIVE) else _age(directory)
        if quiet > (DEFAULT_KEEP if wait is None else keep(wait)):
            remove(directory)


def remove(directory: str) -> None:
    """A run's directory, and the tests' directories it names."""
    try:
        with open(path(directory, ROOT), encoding="utf-8") as source:
            root = source.read().strip()
        if os.path.basename(root).startswith("mhtest."):
            shutil.rmtree(root, ignore_errors=True)
    except OSError:
        pass  # none, or gone
    shutil.rmtree(directory, ignore_errors=True)


def _age(directory: str) -> float:
    try:
        return time.time() - os.stat(directory).st_mtime
    except OSError:
        return 0.0


class Bell:
    """Wakes a process of run `run_id` when another one rings for its `role`.

    An abstract unix datagram socket named after the run and the role (Linux): ringing is
    one sendto() of a byte, which wakes a select() at once, with no polling delay and no
    file of its own. Where the name cannot be bound (another system, the name taken),
    `wait` polls every POLL seconds instead. Open it before reading what it rings for,
    and `drain()` it before each read: then a ring between the read and the wait still
    wakes the wait.
    """

    def __init__(self, run_id: str, role: str) -> None:
        self.sock: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.bind(_bell_name(run_id, role))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            self.sock = None

    def drain(self) -> None:
        """Forget the rings so far."""
        if self.sock is None:
            return
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self.sock.recv(4096):
                pass

    def wait(self, timeout: float, others: Sequence[int] = ()) -> list[int]:
        """Wait for a ring or for one of the descriptors `others`: those ready."""
        fds = [*others, self.sock.fileno()] if self.sock is not None else list(others)
        wait = timeout if self.sock is not None else min(timeout, POLL)
        try:
            ready, _, _ = select.select(fds, [], [], wait)
        except InterruptedError:
            return []
        return ready

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class Ringer:
    """Rings the Bell of run `run_id` for `role` (nothing happens when nobody listens)."""

    def __init__(self, run_id: str, role: str) -> None:
        self.name = _bell_name(run_id, role)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def ring(self) -> None:
        try:
            self.sock.sendto(b"x", self.name)
        except OSError:
            pass  # nobody there, or its queue is full: it wakes up anyway

    def close(self) -> None:
        self.sock.close()


def _bell_name(run_id: str, role: str) -> str:
    return f"\0mhtest-run-{run_id}-{role}"
