"""Reaching SSH hosts and waiting for them: the connection to the SSH port, the greeting
probe, polling until a host answers, goes away or comes back from a reset.

SSHHost takes its waits from SSHWaiting: wait_up() polls the SSH greeting (cheap: no
handshake) and logs in once it comes, keeping that very connection for the login; wait_down()
and hardreset() bound each connection attempt, since a host going down may accept one and
never answer.

A connection tried while a host is down can stay silent long after its sshd is up: its SYN
waits for the next retransmission (1 s, 3 s, 7 s... after the first), in the kernel or in
QEMU's user-mode network, which accepts our side at once. So until a connection is refused
(the network is up, sshd not yet), one is opened every PROBE_STAGGER seconds and closed after
STALE_AFTER seconds without a greeting: at most PROBES at once, so that a slow sshd (one that
re-execs itself per connection in an emulated guest takes a second or more to greet) is not
flooded when they all reach it. Once one is refused, those made before it are closed (held:
the network was down then) and one connection at a time is enough: it is refused at once or
reaches sshd, and waits for its greeting, until it too has been silent for STALE_AFTER (the
network went down again, as a rebooting host's does after refusing): staggered again.
bench/reboot.py: with one connection at a time throughout, a rebooted guest's sshd was noticed
up to 3.4 s after it first greeted.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from mhtest.hosts.base import UP_POLL
from mhtest.hosts.errors import HostUnreachable

log = logging.getLogger(__name__)

#: Seconds each connection attempt of wait_down() may take.
DOWN_CONNECT_TIMEOUT = 5.0
#: Seconds a connection that greeted wait_up() is kept for the login that follows.
READY_SOCKET_AGE = 5.0
#: Seconds wait_up() waits for a connection's greeting: an sshd that forks and re-execs per
#: connection in a slow (emulated) guest needs more than a moment, and giving up sooner only
#: asks it again.
BANNER_WAIT = 5.0
#: Before a host refuses a connection: a new greeting probe every PROBE_STAGGER seconds, each
#: closed after STALE_AFTER seconds without a greeting (BANNER_WAIT: what a slow sshd may need),
#: PROBES at once (see the module docstring).
STALE_AFTER = BANNER_WAIT
PROBES = 3
PROBE_STAGGER = STALE_AFTER / PROBES

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class _Socket(socket.socket):
    """A TCP socket that notes when it last received data and acknowledges it at once.

    `last_recv` (time.monotonic()) is what the keepalive watch reads. Quick-ack (Linux's
    TCP_QUICKACK): sshd keeps Nagle's algorithm on for sessions without a terminal, so a
    small packet of its that follows another one waits until we acknowledge the first,
    and we delay acknowledgements by up to 40 ms. That wait hit the first command on each
    new connection (175 -> 128 ms here) and the first remote port forward (44 -> 2 ms).
    Quick-ack mode does not stick, so it is set again after every read.
    """

    last_recv = 0.0

    def peek(self, size: int) -> bytes:
        """The first `size` bytes to come, left to be read (fewer if the peer closes)."""
        data = b""
        while len(data) < size:
            data = super().recv(size, socket.MSG_PEEK)
            if not data:
                break
            if len(data) < size:
                time.sleep(0.01)
        return data

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        if data:
            self.last_recv = time.monotonic()
        if _QUICKACK is not None:
            try:
                self.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            except OSError:
                pass  # closed meanwhile: the next read says so
        return data


def open_tcp(name: str, hostname: str, port: int, timeout: float) -> _Socket:
    """A TCP connection to `hostname:port` (Nagle off); HostUnreachable naming host `name`."""
    try:
        sock = socket.create_connection((hostname, port), timeout=timeout)
    except (socket.gaierror, UnicodeError) as exc:
        # UnicodeError: not even a valid DNS name (an empty or over-long label).
        why = exc.strerror if isinstance(exc, socket.gaierror) else "not a valid DNS name"
        raise HostUnreachable(
            f"{name}: unknown host name {hostname!r} ({why}); "
            "check the spelling, /etc/hosts or the inventory",
            name,
        ) from None
    except ConnectionRefusedError:
        raise HostUnreachable(
            f"{name}: connection refused on port {port}; is sshd running there?",
            name,
        ) from None
    except OSError as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else str(exc)
        raise HostUnreachable(
            f"{name}: cannot connect to {hostname}:{port}: {reason}", name
        ) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return _Socket(sock.family, sock.type, sock.proto, fileno=sock.detach())


def _wake(sock: Any) -> None:
    """End a connection another thread waits on (its read returns at once)."""
    try:
        if hasattr(sock, "shutdown"):
            sock.shutdown(socket.SHUT_RDWR)
        else:
            sock.close()  # an SSH channel: closing it wakes its reader
    except OSError:
        pass  # already closed


class _Greeting:
    """Connections to one host, staggered, until its SSH server greets one (see the module
    docstring). run() returns that connection, or None at the deadline; every other
    connection is closed."""

    def __init__(self, open_socket: Callable[..., Any], name: str, timeout: float) -> None:
        self.open_socket = open_socket
        self.name = name
        self.deadline = time.monotonic() + timeout
        self.answers: queue.SimpleQueue[tuple[float, Any]] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.done = False  # once set, a late greeting is closed, not handed out
        self.open: dict[float, Any] = {}  # start time -> connection, while it waits
        self.stopped: set[float] = set()  # connections closed by us: no answer of the host's

    def _attempt(self, started: float) -> None:
        """One connection; answers (started, the connection) if it greets, else (started,
        None), or (started, HostUnreachable) if it could not be opened."""
        sock, greeted = None, False
        try:
            # Bounded: a connection still opening cannot be closed by _stop().
            left = self.deadline - time.monotonic()
            sock = self.open_socket(timeout=max(0.1, min(STALE_AFTER, left)))
        except HostUnreachable as exc:
            self.answers.put((started, exc))
            return
        try:
            with self.lock:
                self.open[started] = sock
                if self.done or started in self.stopped:
                    _wake(sock)
            sock.settimeout(max(0.1, self.deadline - time.monotonic()))
            greeted = sock.peek(4).startswith(b"SSH-")
        except OSError:
            pass
        with self.lock:
            self.open.pop(started, None)
            if greeted and not self.done:
                self.done = True
                self.answers.put((started, sock))
                return
        if sock is not None:
            sock.close()
        self.answers.put((started, None))

    def _stop(self, started: list[float]) -> None:
        """Close the connections started at these times (or as they open)."""
        with self.lock:
            self.stopped.update(started)
            socks = [self.open[t] for t in started if t in self.open]
        for sock in socks:
            _wake(sock)

    def run(self) -> Any:
        live: list[float] = []  # start times of our connections still open
        limit, next_try, begun = PROBES, time.monotonic(), time.monotonic()
        tries = refused = 0
        try:
            while True:
                now = time.monotonic()
                if now >= self.deadline:
                    return None
                if live and now - live[0] >= STALE_AFTER:
                    # Silent that long: held, perhaps (the network may have gone down again
                    # since a refusal): staggered probes again.
                    self._stop([t for t in live if now - t >= STALE_AFTER])
                    live, limit = [t for t in live if now - t < STALE_AFTER], PROBES
                if len(live) < limit and now >= next_try:
                    name = f"greeting-{self.name}"
                    threading.Thread(
                        target=self._attempt, args=(now,), name=name, daemon=True
                    ).start()
                    live.append(now)
                    next_try, tries = now + PROBE_STAGGER, tries + 1
                wake = min(next_try, self.deadline)
                if len(live) >= limit:
                    wake = live[0] + STALE_AFTER
                try:
                    started, sock = self.answers.get(
                        timeout=max(0.0, min(wake, self.deadline) - now)
                    )
                except queue.Empty:
                    continue
                if started in self.stopped:  # closed by us, perhaps just as it greeted
                    if sock is not None and not isinstance(sock, HostUnreachable):
                        sock.close()
                    continue
                if isinstance(sock, HostUnreachable):
                    # Refused, or no such host: the caller polls again (and may find that
                    # the host can never answer).
                    return None
                if sock is not None:
                    log.debug("%s: greeted %.2f s after the first of %d tries (%d refused)",
                              self.name, time.monotonic() - begun, tries, refused)  # fmt: skip
                    return sock
                # Closed by the host (refused behind a proxy): those made before are held.
                refused += 1
                self._stop([t for t in live if t < started])
                live, limit = [t for t in live if t > started], 1
                next_try = min(next_try, time.monotonic() + UP_POLL)
        finally:
            with self.lock:
                self.done = True
                waiting = list(self.open)
            self._stop(waiting)
            while not self.answers.empty():  # a greeting that came as the time ran out
                late = self.answers.get()[1]
                if late is not None and not isinstance(late, HostUnreachable):
                    late.close()


class SSHWaiting:
    """What SSHHost does to wait for a host (see the module docstring)."""

    name: str
    connect_timeout: float
    _transport: Any
    _ready: tuple[Any, float] | None
    hostname: str
    port: int

    def ssh_banner(self, timeout: float = 1.0) -> bool:
        """True if the host's SSH server greets a new connection within `timeout` seconds.

        No handshake: what wait_up polls before logging in. The greeting is only peeked at
        and the connection kept for the next login, so that the host's sshd (which may fork
        and re-exec itself for every connection: a second or more in an emulated guest) is
        asked once, not twice. Connections are staggered (see the module docstring).
        """
        sock = self._first_greeting(timeout)
        if sock is None:
            return False
        self._drop_ready_socket()
        self._ready = (sock, time.monotonic())
        return True

    def _first_greeting(self, timeout: float) -> Any:
        """The first connection whose server greets within `timeout`, or None (see the
        module docstring: connections are staggered)."""
        return _Greeting(self._open_socket, self.name, timeout).run()

    def _take_ready_socket(self) -> Any:
        """The connection ssh_banner() kept, if recent enough to still be wanted."""
        ready, self._ready = self._ready, None
        if ready is None:
            return None
        sock, since = ready
        if time.monotonic() - since < READY_SOCKET_AGE:
            return sock
        sock.close()
        return None

    def _drop_ready_socket(self) -> None:
        ready, self._ready = self._ready, None
        if ready is not None:
            ready[0].close()

    def _wait_for(self, timeout: float, check: Callable[[], Any]) -> Any:
        """Host._wait_for, polling the SSH greeting (cheap: no handshake) every UP_POLL s and
        calling `check` (which logs in) once it comes: a host is noticed a fraction of a
        second after its sshd starts. Gives up at once on a host that can never answer."""
        deadline = time.monotonic() + timeout
        saved = self.connect_timeout
        self.connect_timeout = max(1.0, min(saved, timeout))
        try:
            if self._transport is not None:
                answer = check()  # an existing connection that still works
                if answer:
                    return answer
            while True:
                gone = self._gone()
                if gone:
                    log.info("%s: will not answer: %s", self.name, gone)
                    return None
                # All the time left: the probes keep what they learnt (a refusal) throughout;
                # a host that cannot be reached ends them at once, to be checked above.
                left = deadline - time.monotonic()
                if self.ssh_banner(timeout=max(0.1, left)):
                    answer = check()
                    if answer:
                        return answer
                if time.monotonic() >= deadline:
                    return None
                time.sleep(min(UP_POLL, max(0.0, deadline - time.monotonic())))
        finally:
            self.connect_timeout = saved

    def wait_down(self, timeout: float = 60, old_boot_id: str | None = None) -> bool:
        # A host going down may accept a connection and then never answer: bound each try.
        saved = self.connect_timeout
        self.connect_timeout = max(1.0, min(saved, DOWN_CONNECT_TIMEOUT, timeout))
        try:
            return super().wait_down(timeout, old_boot_id)
        finally:
            self.connect_timeout = saved

    def hardreset(self, timeout: float = 600, wait: bool = True) -> None:
        # The host may be hung: do not wait long for it before the reset.
        saved = self.connect_timeout
        self.connect_timeout = max(1.0, min(saved, DOWN_CONNECT_TIMEOUT))
        try:
            super().hardreset(timeout, wait)
        finally:
            self.connect_timeout = saved

    def _gone(self) -> str | None:
        """Why this host can never answer (a VM whose QEMU exited), or None."""
        return None

    def wait_for_port(self, timeout: float = 60) -> bool:
        """True once the host's SSH port accepts TCP connections."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.hostname, self.port), timeout=1):
                    return True
            except OSError:
                time.sleep(0.2)
        return False


class StreamSocket:
    """A stream standing in for a socket under a paramiko Transport: an SSH channel (a
    tunnel through another host) or a ProxyCommand's pipes. It notes `last_recv`, which the
    keepalive watch reads, and can peek() at the SSH greeting."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.last_recv = time.monotonic()
        self._peeked = b""

    def peek(self, size: int) -> bytes:
        """The first `size` bytes to come, kept for recv() (fewer if the peer closes)."""
        while len(self._peeked) < size:
            data = self.channel.recv(size - len(self._peeked))
            if not data:
                break
            self._peeked += data
        return self._peeked[:size]

    def recv(self, size: int) -> bytes:
        if self._peeked:
            data, self._peeked = self._peeked[:size], self._peeked[size:]
            return data
        data = self.channel.recv(size)
        if data:
            self.last_recv = time.monotonic()
        return data

    def send(self, data: bytes) -> int:
        return self.channel.send(data)

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            sent = self.channel.send(view)
            if not sent:
                raise EOFError("the stream is closed")
            view = view[sent:]

    def settimeout(self, timeout: float | None) -> None:
        self.channel.settimeout(timeout)

    def close(self) -> None:
        self.channel.close()

    @property
    def _closed(self) -> bool:  # read by paramiko's Transport.stop_thread()
        return bool(self.channel.closed)


def open_through(via: Any, name: str, hostname: str, port: int, timeout: float) -> StreamSocket:
    """A stream to `hostname`:`port` as seen from SSH host `via` (its direct-tcpip channel:
    what OpenSSH's ProxyJump and `ssh -W` open). HostUnreachable, naming host `name` and
    the way, when it cannot be opened."""
    from mhtest.hosts import _paramiko

    paramiko = _paramiko.load()
    where = f"{hostname}:{port} through {via.name}"
    try:
        channel = via.transport().open_channel(
            "direct-tcpip",
            dest_addr=(hostname, port),
            src_addr=("127.0.0.1", 0),
            timeout=timeout,
        )
    except paramiko.ChannelException as exc:
        hint = ""
        if exc.code == 1:  # administratively prohibited
            hint = f" (the sshd of {via.name} must allow TCP forwarding)"
        raise HostUnreachable(f"{name}: cannot reach {where}: {exc.text}{hint}", name) from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise HostUnreachable(f"{name}: cannot reach {where}: {exc}", name) from None
    except HostUnreachable as exc:  # the way itself
        raise HostUnreachable(f"{name}: cannot reach {where}: {exc}", name) from None
    return StreamSocket(channel)
