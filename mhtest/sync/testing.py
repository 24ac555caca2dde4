"""Sync participants as real processes, and raw protocol clients, for mhtest's own tests.

    with participant(server.address, "h1", "attempt(lambda: c.barrier('b', timeout=5))") as p:
        outcome = p.outcome()   # {"ok": False, "error": "SyncTimeout", "missing": [...], ...}

The body runs in a fresh Python process with `c`, a connected SyncClient, and two helpers:
`report(**fields)` prints one JSON line, `attempt(fn)` runs fn and reports its result or
the sync error it raised (type, message, arrived, missing, by, reason, seconds).

    with raw_client(server.address) as raw:          # a bare DEALER, as an attacker uses
        raw.request("hello", participant="h1")       # {"v": 1, "id": 1, "ok": True, ...}
        raw.send(b"frame", b"another frame")         # anything, as one message
"""

from __future__ import annotations

import contextlib
import itertools
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


class RawClient:
    """A bare ZeroMQ DEALER speaking the sync protocol by hand (no heartbeats, no checks).

    `curve` is (server_public, public, secret) in z85; `identity` its ZeroMQ routing id.
    """

    def __init__(
        self, address: str, identity: bytes | None = None, curve: tuple | None = None
    ) -> None:
        import zmq

        self._ctx = zmq.Context()
        self.sock = self._ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if identity is not None:
            self.sock.setsockopt(zmq.ROUTING_ID, identity)
        if curve is not None:
            self.sock.curve_serverkey, self.sock.curve_publickey, self.sock.curve_secretkey = curve
        self.sock.connect(address)
        self._ids = itertools.count(1)
        self.stray: list[dict[str, Any]] = []  # replies that answered no request of ours

    def send(self, *frames: bytes) -> None:
        """Send `frames` as one ZeroMQ message."""
        self.sock.send_multipart(list(frames))

    def start(self, op: str, **fields: Any) -> int:
        """Send a request without waiting for its reply; its id."""
        request_id = next(self._ids)
        self.send(json.dumps({"v": 1, "id": request_id, "op": op, **fields}).encode())
        return request_id

    def reply(self, request_id: int, wait: float = 10.0) -> dict[str, Any] | None:
        """The reply to `request_id`, or None if none comes within `wait` seconds."""
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000) + 1):
                return None
            reply = json.loads(self.sock.recv())
            if reply.get("id") == request_id:
                return reply
            if reply.get("id"):
                self.stray.append(reply)

    def request(self, op: str, wait: float = 10.0, **fields: Any) -> dict[str, Any]:
        """Send a request and return its reply; AssertionError if none comes within `wait`."""
        request_id = self.start(op, **fields)
        reply = self.reply(request_id, wait)
        if reply is None:
            raise AssertionError(f"no reply to {op} within {wait} s")
        return reply

    def close(self) -> None:
        self.sock.close(0)
        self._ctx.term()


@contextlib.contextmanager
def raw_client(
    address: str, identity: bytes | None = None, curve: tuple | None = None
) -> Iterator[RawClient]:
    """A RawClient for the `with` block, closed at the end."""
    client = RawClient(address, identity, curve)
    try:
        yield client
    finally:
        client.close()
