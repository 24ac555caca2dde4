"""Sync participants as real processes, for mhtest's own tests and benchmarks.

    with participant(server.address, "h1", "attempt(lambda: c.barrier('b', timeout=5))") as p:
        outcome = p.outcome()   # {"ok": False, "error": "SyncTimeout", "missing": [...], ...}

The body runs in a fresh Python process with `c`, a connected SyncClient, and two helpers:
`report(**fields)` prints one JSON line, `attempt(fn)` runs fn and reports its result or
the sync error it raised (type, message, arrived, missing, by, reason, seconds).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any, Iterator

PRELUDE = """\
import json, os, sys, time
from mhtest.sync import SyncClient, SyncError

def report(**fields):
    print(json.dumps(fields), flush=True)

def attempt(fn):
    t0 = time.monotonic()
    try:
        result = fn()
    except SyncError as exc:
        report(ok=False, error=type(exc).__name__, message=str(exc),
               arrived=getattr(exc, "arrived", None), missing=getattr(exc, "missing", None),
               by=getattr(exc, "by", None), reason=getattr(exc, "reason", None),
               seconds=time.monotonic() - t0)
    else:
        report(ok=True, result=result, seconds=time.monotonic() - t0)

ADDRESS, NAME, OPTIONS = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if OPTIONS.pop("connect", True):
    try:
        c = SyncClient(ADDRESS, NAME, **OPTIONS)
    except SyncError as exc:
        report(ok=False, error=type(exc).__name__, message=str(exc), stage="connect")
        sys.exit(3)
    report(connected=NAME)
"""


class ParticipantProcess:
    """A running participant; read its JSON lines, signal or kill it."""

    def __init__(self, address: str, name: str, body: str, options: dict[str, Any]) -> None:
        code = PRELUDE + textwrap.dedent(body)
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, address, name, json.dumps(options)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._buffer = b""
        self.lines: list[dict[str, Any]] = []

    def read(self, timeout: float = 20.0) -> dict[str, Any]:
        """The next JSON line it prints; AssertionError if none within `timeout`."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise AssertionError(f"participant {self.name}: no output within {timeout} s")
                chunk = os.read(fd, 65536)
                if not chunk:
                    err = self.proc.stderr.read().decode(errors="replace")  # type: ignore[union-attr]
                    raise AssertionError(f"participant {self.name} exited without output: {err}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        self.lines.append(json.loads(line))
        return self.lines[-1]

    def outcome(self, timeout: float = 20.0) -> dict[str, Any]:
        """The next reported line that is not the "connected" notice."""
        while True:
            line = self.read(timeout)
            if "connected" not in line:
                return line

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def participant(
    address: str, name: str, body: str = "", **options: Any
) -> Iterator[ParticipantProcess]:
    """Run one participant process for the `with` block; killed (by PID) at the end."""
    proc = ParticipantProcess(address, name, body, options)
    try:
        yield proc
    finally:
        if proc.proc.poll() is None:
            proc.signal(signal.SIGCONT)  # a stopped process must wake up to die
        proc.stop()
