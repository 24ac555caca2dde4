"""The executor's SSH channel as the remote runner reads it: event lines, stderr's tail, marks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mhtest import events, fdwait

#: How much of the executor's stderr is kept (for the reason of an early end).
STDERR_TAIL = 4096
#: What the follower on the host prints on stderr (mhtest.runners.attach).
RUNNER_MARK = b"MHTEST-RUNNER:"
NO_RUN_MARK = b"MHTEST-NO-RUN"


@dataclass
class ExecStream:
    """The executor's channel: complete stdout lines, stderr kept (its tail) for reasons."""

    channel: Any
    lines: events.LineBuffer = field(default_factory=events.LineBuffer)
    stderr: bytes = b""
    eof: bool = False
    pending: list[bytes] = field(default_factory=list)
    pgid: int | None = None  # the executor's process group, which it prints first on stderr
    runner: int | None = None  # the run's runner (its process group), from its follower
    #: Past the startup probe: the run's journal, whose cut-off last line is not a line.
    journal: bool = False

    def read(self, timeout: float) -> list[bytes]:
        """Lines that arrived within `timeout` seconds (sets `eof` at the end of output)."""
        if self.pending:
            lines, self.pending = self.pending, []
            return lines
        try:
            return self._read(timeout)
        except (EOFError, OSError):
            # paramiko acknowledges what it reads: on a connection that just died that
            # fails, even when there is data left. The connection's end is the stream's.
            self.eof = True
            return []

    def _read(self, timeout: float) -> list[bytes]:
        chan = self.channel
        if not (chan.recv_ready() or chan.recv_stderr_ready()):
            fdwait.readable([chan], timeout)
        while chan.recv_stderr_ready():
            self.stderr = (self.stderr + chan.recv_stderr(1 << 16))[-STDERR_TAIL:]
            if self.pgid is None:
                self.pgid = pgid_from(self.stderr)
            if self.runner is None:
                self.runner = _marked(self.stderr, RUNNER_MARK)
        if chan.recv_ready():
            data = chan.recv(1 << 18)
        elif chan.closed or chan.eof_received:
            data = b""
        else:
            return []
        if not data:
            self.eof = True
            rest = self.lines.rest()
            return [rest] if rest.strip() and not self.journal else []
        return self.lines.feed(data)

    def stderr_line(self) -> str:
        """The last meaningful line the executor wrote on stderr, if any."""
        lines = [
            ln
            for ln in self.stderr.decode("utf-8", "replace").splitlines()
            if ln.strip() and not ln.startswith("MHTEST-")
        ]
        return lines[-1].strip()[:300] if lines else ""

    @property
    def no_run(self) -> bool:
        """The follower found no run to follow (mhtest.runners.attach.NO_RUN_MARK)."""
        return NO_RUN_MARK in self.stderr


def _marked(stderr: bytes, mark: bytes) -> int | None:
    """The number after `mark` at the start of a line of `stderr`, once it is there."""
    text = b"\n" + stderr
    at = text.find(b"\n" + mark)
    if at < 0:
        return None
    line = text[at + 1 + len(mark) :].partition(b"\n")
    if not line[1]:
        return None
    try:
        return int(line[0])
    except ValueError:
        return None


def pgid_from(stderr: bytes) -> int | None:
    """The process group RemoteProcess's wrapper printed first on stderr, once it is there."""
    from mhtest.hosts.process import PGID_MARK

    line, sep, _ = stderr.partition(b"\n")
    if not sep or not line.startswith(PGID_MARK):
        return None
    try:
        return int(line[len(PGID_MARK) :])
    except ValueError:
        return None
