"""Files arriving in a directory: woken at once (inotify through watchdog), taken complete.

A watcher rescans its directory when `DirEvents` wakes it, and every few seconds besides
(files another controller writes over NFS make no inotify event here; without watchdog it
polls alone). `Completion` says which files are complete: closed by their writer (or
renamed in) as they are now, else unchanged for `settle` seconds of watching (files written
over NFS, hard links); a file a writer here has written to and not closed yet waits for its
close (or for WRITING_QUIET seconds without a change, should its close be missed). Names
starting with a dot are never files to take (write `.name.tmp`, then rename it in).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)
#: A file a writer here has open is complete once unchanged this long (its close missed).
WRITING_QUIET = 60.0
#: What identifies a file's content as seen: (path, mtime_ns, size).
Seen = tuple[str, int, int]


class DirEvents:
    """Sets `wake` when a directory changes; notes the files closed after writing."""

    def __init__(self, path: Path, wake: threading.Event, recursive: bool = False) -> None:
        self.path = path
        self.wake = wake
        self.recursive = recursive
        self._closed: dict[str, tuple[int, int]] = {}
        self._writing: set[str] = set()  # written to here since their last close
        self._observer: Any = None

    def start(self) -> str | None:
        """Start watching; None, or why there are no events (polling alone then)."""
        try:
            from watchdog.observers import Observer
        except ImportError:
            return "watchdog is not installed"
        observer = Observer()
        try:
            observer.schedule(self, str(self.path), recursive=self.recursive)
            observer.start()
        except Exception as exc:  # noqa: BLE001 - inotify limits, a directory just gone, …
            return f"no inotify on {self.path}: {exc}"
        self._observer = observer
        return None

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(5.0)

    def dispatch(self, event: Any) -> None:
        """watchdog's handler call (from its thread)."""
        kind = event.event_type
        path = os.fsdecode(getattr(event, "dest_path", "") or event.src_path)
        if kind == "modified" and not event.is_directory:
            self._writing.add(path)
        elif kind in ("closed", "moved", "deleted"):
            self._writing.discard(path)
            self._writing.discard(os.fsdecode(event.src_path))
        elif kind == "events_lost":  # inotify overflowed: the settle rule decides
            self._writing.clear()
        if kind in ("closed", "moved"):
            try:
                info = os.stat(path)
            except OSError:
                pass
            else:
                self._closed[path] = (info.st_mtime_ns, info.st_size)
        if os.path.basename(path).startswith(".") and os.path.dirname(path) == str(self.path):
            return  # .log, .machines, a file being written: never a file to take
        self.wake.set()

    def closed(self, seen: Seen) -> bool:
        """Whether its writer closed the file (or renamed it in) as `seen` now."""
        return self._closed.get(seen[0]) == seen[1:]

    def writing(self, path: str) -> bool:
        """Whether a writer here wrote to the file and has not closed it yet."""
        return path in self._writing

    def keep_only(self, paths: set[str]) -> None:
        for path in list(self._closed):
            if path not in paths:
                self._closed.pop(path, None)
        self._writing &= paths


class Completion:
    """Which of the files seen are complete (see the module docstring)."""

    def __init__(self, settle: float, events: DirEvents | None = None) -> None:
        self.settle = settle
        self.events = events
        self._since: dict[str, tuple[int, int, float]] = {}

    def check(self, files: list[Seen], now: float) -> tuple[list[str], float | None]:
        """The complete ones among `files` (in their order), and when to look again for the
        others (a monotonic time, or None)."""
        complete, wake_at, since_now = [], math.inf, {}
        for path, mtime_ns, size in files:
            earlier = self._since.get(path)
            same = earlier is not None and earlier[:2] == (mtime_ns, size)
            since = earlier[2] if same and earlier is not None else now
            since_now[path] = (mtime_ns, size, since)
            closed = self.events is not None and self.events.closed((path, mtime_ns, size))
            writing = self.events is not None and self.events.writing(path)
            quiet = WRITING_QUIET if writing and not closed else self.settle
            if closed or now - since >= quiet:
                complete.append(path)
            else:
                wake_at = min(wake_at, since + quiet)
        self._since = since_now
        if self.events is not None:
            self.events.keep_only(set(since_now))
        return complete, None if wake_at == math.inf else wake_at

    def clear(self) -> None:
        self._since.clear()
