"""Machines busy or free across queues: never two jobs on one machine at once.

A watcher takes every machine of its queue before it takes a file, and gives them back when
the file's jobs are over; a queue that names a busy machine waits for it.

- In one process (`mhtest queue start-all`: a watcher per queue), the waiters of a machine
  are served first come, first served.
- Across processes (watchers started apart, or on several controllers sharing the lock
  directory over NFS), a machine is an flock on `<locks>/<key>.lock`, held while it is busy
  and let go by the kernel when its process dies (a SIGKILLed watcher holds nothing).
  The file says who holds it (queue, file, host, pid) for `mhtest queue status`.

Machines are taken in the order of their keys, so two queues that share machines never
hold one each while waiting for the other's.
"""

from __future__ import annotations

import collections
import fcntl
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from mhtest.queue.machines import Machine

LOG = logging.getLogger(__name__)
#: The lock directory beside the queues when none is given: <top>/queue/.busy.
LOCKS_DIR = ".busy"
#: How often a machine held by another process is tried again.
RETRY = 0.05
#: Told when a machine is busy: (machine key, who holds it or None).
OnWait = Callable[[str, "dict[str, Any] | None"], None]


def lock_path(lock_dir: Path, key: str) -> Path:
    safe = key.replace(os.sep, "_").lstrip(".") or "_"
    return lock_dir / f"{safe}.lock"


class Held:
    """Machines taken for one file's jobs; `release()` gives them back (idempotent)."""

    def __init__(self, locks: MachineLocks) -> None:
        self._locks = locks
        self.keys: list[str] = []
        self._files: list[int] = []

    def release(self) -> None:
        files, self._files = self._files, []
        for fd in files:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        keys, self.keys = self.keys, []
        self._locks._let_go(keys)

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class MachineLocks:
    """Takes and gives back machines (see the module docstring); one per process is enough,
    shared by its watchers."""

    def __init__(self, lock_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(lock_dir)
        self._cond = threading.Condition()
        self._holders: dict[str, dict[str, Any]] = {}
        self._waiting: dict[str, collections.deque[object]] = collections.defaultdict(
            collections.deque
        )

    def acquire(
        self,
        machines: list[Machine],
        holder: dict[str, Any],
        stop: threading.Event,
        on_wait: OnWait | None = None,
    ) -> Held | None:
        """Take every machine, waiting for busy ones; None if `stop` was set meanwhile.

        `holder` says who takes them (queue, file…); `on_wait` is told once per busy machine.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        held = Held(self)
        try:
            for key in sorted({m.key for m in machines}):
                if not self._here(key, holder, stop, on_wait):
                    held.release()
                    return None
                held.keys.append(key)
                fd = self._across(key, holder, stop, on_wait)
                if fd is None:
                    held.release()
                    return None
                held._files.append(fd)
        except BaseException:
            held.release()
            raise
        return held

    def holders(self) -> dict[str, dict[str, Any]]:
        """Who holds which machine in this process: {key: holder}."""
        with self._cond:
            return dict(self._holders)

    # -- in this process: first come, first served ---------------------------------------------
    def _here(
        self, key: str, holder: dict[str, Any], stop: threading.Event, on_wait: OnWait | None
    ) -> bool:
        token = object()
        told = False
        with self._cond:
            queue = self._waiting[key]
            queue.append(token)
            try:
                while key in self._holders or queue[0] is not token:
                    if stop.is_set():
                        return False
                    if not told and on_wait is not None:
                        told = True
                        on_wait(key, self._holders.get(key))
                    self._cond.wait(0.2)
                self._holders[key] = holder
                return True
            finally:
                queue.remove(token)
                self._cond.notify_all()

    def _let_go(self, keys: list[str]) -> None:
        with self._cond:
            for key in keys:
                self._holders.pop(key, None)
            self._cond.notify_all()

    # -- across processes: an flock per machine ------------------------------------------------
    def _across(
        self, key: str, holder: dict[str, Any], stop: threading.Event, on_wait: OnWait | None
    ) -> int | None:
        path = lock_path(self.dir, key)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        told = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    pass
                if stop.wait(RETRY):
                    os.close(fd)
                    return None
                if not told and on_wait is not None:
                    told = True
                    on_wait(key, _read_holder(path))
            data = json.dumps({**holder, "since": time.time()}).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data + b"\n", 0)
        except BaseException:
            os.close(fd)
            raise
        return fd


def busy(lock_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The machines some process holds now: {key: who holds it (queue, file, host, pid…)}.

    A machine is busy when its lock cannot be had (a moment's shared lock tells).
    """
    found: dict[str, dict[str, Any]] = {}
    try:
        entries = sorted(Path(lock_dir).glob("*.lock"))
    except OSError:
        return found
    for path in entries:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                found[path.name[: -len(".lock")]] = _read_holder(path) or {}
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    return found


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
