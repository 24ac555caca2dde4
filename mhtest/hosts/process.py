"""RemoteProcess: one command running on an SSH host, in its own channel.

The command runs through the login shell, which sshd makes a session (and process group)
leader; the wrapper first prints that shell's PID on stderr, so a timeout or `kill()` can
signal the command's whole process group through a second channel.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

from mhtest import fdwait
from mhtest.hosts.base import build_command
from mhtest.hosts.connection import Connection
from mhtest.hosts.errors import CmdTimeout, HostError, HostUnreachable
from mhtest.hosts.result import CmdResult

log = logging.getLogger(__name__)

PGID_MARK = b"MHTEST-PGID:"
CHUNK = 1 << 18
KILL_GRACE = 1.0  # seconds between SIGTERM and SIGKILL


class RemoteProcess:
    """A command started with SSHHost.start(); use communicate() or read `channel` yourself.

    Reading `stdout` directly (a binary file over the channel) suits a live event stream;
    call `read_pgid()` first if you may need `kill()` later.
    """

    def __init__(self, host: Connection, channel: Any, command: str) -> None:
        self.host = host
        self.channel = channel
        self.command = command
        self.started = time.monotonic()
        self.pgid: int | None = None
        self.killed_with = 0
        self._stderr_pending = b""

    @classmethod
    def start(
        cls,
        host: Connection,
        command: str,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> RemoteProcess:
        full, shown = build_command(command, env=env, args=args)
        channel = host.open_channel()
        wrapped = f"echo {PGID_MARK.decode()}$$ >&2; {full}"
        try:
            channel.exec_command(wrapped)
        except Exception as exc:
            channel.close()
            raise HostError(f"{host.name}: could not start {shown!r}: {exc}", host.name) from None
        return cls(host, channel, shown)

    @property
    def stdout(self) -> Any:
        """The command's stdout as a binary file object."""
        return self.channel.makefile("rb")

    def read_pgid(self, timeout: float = 10) -> int | None:
        """Read the process group id the wrapper printed first on stderr (bounded wait)."""
        deadline = time.monotonic() + timeout
        while self.pgid is None and b"\n" not in self._stderr_pending:
            if self.channel.recv_stderr_ready():
                self._stderr_pending += self.channel.recv_stderr(4096)
                continue
            if self.channel.exit_status_ready() or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        self._take_pgid()
        return self.pgid

    def _take_pgid(self) -> None:
        if self.pgid is not None or not self._stderr_pending.startswith(PGID_MARK):
            return
        line, sep, rest = self._stderr_pending.partition(b"\n")
        if not sep:
            return
        try:
            self.pgid = int(line[len(PGID_MARK) :])
        except ValueError:
            log.warning("%s: unexpected wrapper line %r", self.host.name, line)
        self._stderr_pending = rest

    def kill(self, grace: float = KILL_GRACE) -> None:
        """SIGTERM the command's process group, then SIGKILL it after `grace` seconds."""
        if self.pgid is None:
            self.read_pgid(timeout=2)
        if self.pgid is None:
            self.channel.close()
            return
        pg = self.pgid
        steps = max(1, int(grace / 0.1))
        # Orphans that died become zombies of an init that may never reap them: count only
        # live members of the group (without `ps`, go straight to SIGKILL).
        script = (
            f"kill -TERM -{pg} 2>/dev/null || {{ echo GONE; exit 0; }}; i=0; "
            f"while [ $i -lt {steps} ]; do "
            f"ps -o stat= -g {pg} 2>/dev/null | grep -qv '^Z' || {{ echo TERM; exit 0; }}; "
            "sleep 0.1; i=$((i+1)); done; "
            f"kill -KILL -{pg} 2>/dev/null; echo KILL"
        )
        try:
            channel = self.host.open_channel()
            try:
                channel.exec_command(script)
                channel.settimeout(grace + 10)
                out = b""
                while True:
                    data = channel.recv(1024)
                    if not data:
                        break
                    out += data
            finally:
                channel.close()
            if b"KILL" in out:
                self.killed_with = signal.SIGKILL
            elif b"TERM" in out:
                self.killed_with = signal.SIGTERM
        except (HostError, OSError) as exc:
            log.warning("%s: could not kill process group %s: %s", self.host.name, pg, exc)
            self.killed_with = signal.SIGKILL
        self.channel.close()

    def communicate(
        self, stdin: str | bytes | None = None, timeout: float | None = None
    ) -> CmdResult:
        """Send `stdin`, collect all output until exit; on timeout kill and raise CmdTimeout."""
        chan = self.channel
        feeder = None
        if stdin is None:
            chan.shutdown_write()
        else:
            data = stdin.encode() if isinstance(stdin, str) else stdin
            feeder = threading.Thread(target=self._feed, args=(data,), daemon=True)
            feeder.start()
        out: list[bytes] = []
        err: list[bytes] = []
        deadline = None if timeout is None else self.started + timeout
        try:
            timed_out = self._pump(out, deadline)
        except BaseException:
            # Interrupted (Ctrl-C, a parallel() task stopped): do not leave the command behind.
            self.kill()
            raise
        if timed_out:
            self.kill()
        else:
            # Drain what arrived along with the exit status.
            while chan.recv_stderr_ready():
                self._stderr_pending += chan.recv_stderr(CHUNK)
            self._take_pgid()
        err.append(self._stderr_pending)
        self._stderr_pending = b""
        if feeder is not None:
            feeder.join(timeout=5)
        exit_status = -1 if timed_out else chan.recv_exit_status()
        aborted = int(self.killed_with)
        name = getattr(chan, "exit_signal", None)
        if not aborted and name:
            aborted = int(getattr(signal, "SIG" + name, 0)) or -1
        chan.close()
        result = CmdResult(
            command=self.command,
            exit_status=exit_status,
            stdout=b"".join(out).decode("utf-8", "replace"),
            stderr=b"".join(err).decode("utf-8", "replace"),
            duration=time.monotonic() - self.started,
            aborted=aborted,
        )
        if timed_out:
            raise CmdTimeout(result, self.host.name, timeout or 0.0)
        if exit_status == -1 and not aborted and not chan.get_transport().is_active():
            raise HostUnreachable(
                f"{self.host.name}: connection lost while running {self.command!r} "
                f"(after {result.duration:.1f} s)",
                self.host.name,
            )
        return result

    def _pump(self, out: list[bytes], deadline: float | None) -> bool:
        """Read stdout/stderr until the command ends; True if `deadline` passed first."""
        chan = self.channel
        while True:
            got = False
            if chan.recv_ready():
                out.append(chan.recv(CHUNK))
                got = True
            if chan.recv_stderr_ready():
                self._stderr_pending += chan.recv_stderr(CHUNK)
                self._take_pgid()
                got = True
            if got:
                continue
            if chan.eof_received and chan.exit_status_ready():
                return False
            if chan.closed:
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return True
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            fdwait.readable([chan], wait)

    def _feed(self, data: bytes) -> None:
        try:
            view = memoryview(data)
            for pos in range(0, len(view), CHUNK):
                self.channel.sendall(view[pos : pos + CHUNK])
            self.channel.shutdown_write()
        except OSError as exc:
            log.debug("%s: stdin not fully sent: %s", self.host.name, exc)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit status (-1 if killed by a signal); CmdTimeout after `timeout`."""
        if not self.channel.status_event.wait(timeout):
            self.kill()
            result = CmdResult(self.command, -1, aborted=int(self.killed_with))
            raise CmdTimeout(result, self.host.name, timeout or 0.0)
        return self.channel.recv_exit_status()

    def close(self) -> None:
        """Close the channel (the remote command gets SIGHUP-like EOF, not a kill).

        A channel whose connection is gone closes without an error (paramiko raises
        EOFError when it cannot send the close).
        """
        try:
            self.channel.close()
        except (EOFError, OSError) as exc:
            log.debug("%s: closing a channel of a lost connection: %s", self.host.name, exc)
