"""The JSON-line event protocol every place a test runs speaks, and the test statuses.

One event per line, a JSON object with `v` (protocol version), `type` and the fields
of that type. Children write them; the collector reads them from a local pipe or an
SSH channel alike.

Types:
  test.start   uid, name, time, pid, timeout
  test.end     uid, status, fail_reason, fail_class, time, whiteboard, [children]
  test.files   uid, data, last                (a remote test's results directory: base64
                                               pieces of an uncompressed tar, before test.end)
  test.skipped uid, reason                     (never started: the job was interrupted)
  test.nested  uid, name, status, fail_reason, fail_class, start, end, whiteboard, logdir,
               [host], [children]              (a result of its own made while test `uid` ran:
                                               a control file's run_test or job.record;
                                               `name` extends the test's reference, `logdir`
                                               is relative to its results directory)
  host.info    facts, [host]                   (a host's executor: mhtest.sysinfo.collect())
  host.phase   host, phase                     (the controller: connecting, installing, …)
  host.phase   … hold                          (seconds: the host is away, reconnecting;
                                               0: back; its tests' deadlines wait meanwhile)
  run.end                                      (a host's executor: every test has reported)
  log          uid, level, message            (optional, for live consoles)
  runner.error message                         (the runner itself failed)
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

VERSION = 1
MAX_LINE = 16 * 1024 * 1024

#: Event types.
TEST_START = "test.start"
TEST_END = "test.end"
TEST_FILES = "test.files"
TEST_SKIPPED = "test.skipped"
TEST_NESTED = "test.nested"
#: A test asked for its host's reboot (uid, count, command): mhtest.runners.reboot.
TEST_REBOOT = "test.reboot"
HOST_INFO = "host.info"
HOST_PHASE = "host.phase"
RUN_END = "run.end"
LOG = "log"
RUNNER_ERROR = "runner.error"

#: Test statuses, in the console's order.
PASS = "PASS"
FAIL = "FAIL"
ERROR = "ERROR"
SKIP = "SKIP"
WARN = "WARN"
CANCEL = "CANCEL"
INTERRUPT = "INTERRUPT"
STATUSES = (PASS, FAIL, ERROR, SKIP, WARN, CANCEL, INTERRUPT)
#: Statuses that make the job's exit code say "tests did not pass".
FAILED_STATUSES = frozenset({FAIL, ERROR, INTERRUPT})

#: The other direction, runner to test: the signal that tells an instrumented test its
#: timeout is reached (SIGTERM tells it the job is interrupted); it ends INTERRUPT, with
#: this reason (Avocado's), after its tearDown.
TIMEOUT_SIGNAL = signal.SIGALRM
TIMEOUT_REASON = "Test interrupted: Timeout reached"


class EventError(ValueError):
    """A line on an event stream is not a valid event."""


def encode(type_: str, **fields: Any) -> bytes:
    """One event as a JSON line (bytes, newline-terminated)."""
    fields.setdefault("time", time.time())
    event = {"v": VERSION, "type": type_, **fields}
    return (json.dumps(event, default=str, separators=(",", ":")) + "\n").encode()


def decode(line: bytes | str) -> dict[str, Any]:
    """Parse one event line; raises EventError on anything that is not an event."""
    if len(line) > MAX_LINE:
        raise EventError(f"event line of {len(line)} bytes is over the {MAX_LINE} limit")
    try:
        event = json.loads(line)
    except ValueError as exc:
        raise EventError(f"not JSON: {exc}") from None
    if not isinstance(event, dict) or "type" not in event:
        raise EventError("an event is a JSON object with a 'type'")
    if event.get("v") != VERSION:
        raise EventError(f"event protocol version {event.get('v')!r}, expected {VERSION}")
    return event


def host_phase(host: str, phase: str, hold: float | None = None) -> dict[str, Any]:
    """How far the preparation of `host` got (for live consoles): a host.phase event.

    `hold` (seconds) says the host is away for at most that long (0: it is back).
    """
    event: dict[str, Any] = {"type": HOST_PHASE, "host": host, "phase": phase}
    if hold is not None:
        event["hold"] = hold
    return event


def synthetic_end(
    uid: int, status: str, reason: str, host: str | None = None, start: float | None = None
) -> dict[str, Any]:
    """A test.end a runner reports for a test that could not run or report its own end."""
    now = time.time()
    event: dict[str, Any] = {
        "type": TEST_END,
        "uid": uid,
        "status": status,
        "fail_reason": reason,
        "fail_class": None,
        "start": start if start is not None else now,
        "end": now,
    }
    if host is not None:
        event["host"] = host
    return event


def one_line(exc: BaseException, place: str) -> str:
    """An exception as one line that names the place (host) it happened at."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if place in text else f"{place}: {text}"


class LineBuffer:
    """Splits a byte stream into complete lines as chunks arrive.

    A line longer than `limit` is dropped whole (counted in `dropped`), so a peer that
    never sends a newline cannot make the buffer grow without bound.
    """

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self.dropped = 0
        self._parts: list[bytes] = []
        self._size = 0
        self._skipping = False  # inside a line that was over the limit

    def feed(self, chunk: bytes) -> list[bytes]:
        if b"\n" not in chunk:
            self._keep(chunk)
            return []
        first, *middle, last = chunk.split(b"\n")
        lines = []
        self._keep(first)
        if not self._skipping:
            lines.append(b"".join(self._parts))
        self._parts, self._size, self._skipping = [], 0, False
        for line in middle:
            if len(line) > self.limit:
                self.dropped += 1
            else:
                lines.append(line)
        self._keep(last)
        return [ln for ln in lines if ln.strip()]

    def _keep(self, piece: bytes) -> None:
        if self._skipping or not piece:
            return
        self._size += len(piece)
        if self._size > self.limit:
            self.dropped += 1
            self._parts, self._size, self._skipping = [], 0, True
        else:
            self._parts.append(piece)

    def rest(self) -> bytes:
        rest = b"" if self._skipping else b"".join(self._parts)
        self._parts, self._size, self._skipping = [], 0, False
        return rest


#: The most of a simple test's stdout (and of its stderr) copied into its debug.log.
MAX_OUTPUT_IN_LOG = 16 * 1024 * 1024


def append_debug_log(logdir: str, *messages: str) -> OSError | None:
    """Add INFO lines to a test's debug.log, as its logging handler writes them.

    For what a runner records about a test whose process runs no Python (a simple test):
    its START line, its exit status and its end. Returns the error if it cannot write.
    """
    stamp = time.time()
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
    when += f",{int(stamp % 1 * 1000):03d}"
    try:
        with open(f"{logdir}/debug.log", "a", encoding="utf-8") as log:
            log.writelines(f"{when} INFO | {message}\n" for message in messages)
    except OSError as exc:
        return exc
    return None


def output_lines(logdir: str, limit: int = MAX_OUTPUT_IN_LOG) -> list[str]:
    """A test's stdout then stderr files as debug.log lines, `[stdout] …` and `[stderr] …`
    as Avocado writes them (at most `limit` bytes of each, then a line saying what is left)."""
    lines = []
    for name in ("stdout", "stderr"):
        try:
            with open(f"{logdir}/{name}", "rb") as fh:
                data = fh.read(limit + 1)
                rest = len(data) > limit and os.fstat(fh.fileno()).st_size - limit
        except OSError:
            continue
        text = data[:limit].decode("utf-8", "replace")
        lines += [f"[{name}] {line}" for line in text.splitlines()]
        if rest:
            lines.append(f"[{name}] … {rest} more bytes in {name}")
    return lines
