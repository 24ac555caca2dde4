"""Coming back to a host whose SSH connection dropped: waiting for it, following its run again.

A host's tests go on when the connection that started them drops (mhtest.runners.executor
runs them detached and journals what they report). The RemoteTestRunner then waits for
the host here, trying again and again with a short backoff, up to its reconnect timeout
(`--reconnect-timeout`); once the host answers, it starts `attach_command()` there, which
streams the run's journal on from the byte the controller got to (mhtest.runners.attach).

What the controller says to the follower on the host, one JSON line each: PING every
PING_EVERY seconds (the run knows its controller is there), STOP (stop the tests), DONE
(everything arrived: the run may go). A run that does not hear from its controller for
its controller's wait plus mhtest.runners.journal.KEEP_MARGIN seconds stops its tests
and removes itself: the controller gave up on it.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from typing import Any

from mhtest import fdwait

LOG = logging.getLogger(__name__)
#: The default of `mhtest run --reconnect-timeout` (seconds).
DEFAULT_TIMEOUT = 300.0
PING = b'{"op":"ping"}\n'
STOP = b'{"op":"stop"}\n'
DONE = b'{"op":"done"}\n'
PING_EVERY = 5.0
#: Between two tries to reach the host: the first wait, doubling up to the last.
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 1.0
#: How long one try waits for a TCP connection, opening a new one every DIAL_EVERY
#: seconds meanwhile (the first one to answer wins): a host that is back is found
#: within about DIAL_EVERY, not after the kernel's next SYN retry (1, 3, 7 s…).
DIAL_TIMEOUT = 3.0
DIAL_EVERY = 0.5
#: Runs the follower on a host: after the startup probe (mhtest.hosts.bootstrap).
ATTACH = (
    '[ "$ok" = 1 ] && {{ echo "MHTEST-EXEC"; export PYTHONPATH="$src"; '
    'exec "$env/bin/python" -m mhtest.runners.attach --cache "$cache" '
    "--run {run} --from {offset}; }}"
)


def attach_command(run_id: str, offset: int) -> str:
    """The `then` of the startup probe that follows run `run_id` from byte `offset`."""
    if not run_id.isalnum():
        raise ValueError(f"not a run id: {run_id!r}")
    return ATTACH.format(run=run_id, offset=int(offset))


def clock(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))


def lost_reason(name: str, lost_at: float, timeout: float) -> str:
    """Why a host's tests ended: it did not come back in time."""
    return f"lost {name} at {clock(lost_at)}, not back within {timeout:g} s"


def wait_back(host: Any, deadline: float, stop: threading.Event, stop_grace: float) -> bool:
    """Reconnect `host` (a new SSH transport), trying until `deadline` (monotonic).

    Once `stop` is set it tries at most `stop_grace` seconds more (to deliver the stop).
    False when the host did not answer in time.
    """
    delay = BACKOFF_FIRST
    stopped_at: float | None = None
    while True:
        now = time.monotonic()
        if stop.is_set():
            stopped_at = stopped_at or now
            deadline = min(deadline, stopped_at + stop_grace)
        if now >= deadline:
            return False
        address = getattr(host, "hostname", None)
        port = getattr(host, "port", None)
        if address is None or dial(address, port, min(DIAL_TIMEOUT, deadline - now)):
            try:
                host.transport()
                return True
            except Exception as exc:  # noqa: BLE001 - any failure: try again
                LOG.debug("%s: not back yet: %s", host.name, exc)
        pause = min(delay, max(0.0, deadline - time.monotonic()))
        if stop.wait(pause) and stopped_at is None:
            continue  # just stopped: the grace starts now
        delay = min(delay * 2, BACKOFF_MAX)


def dial(address: str, port: int, timeout: float) -> bool:
    """True once a TCP connection to `address`:`port` opens within `timeout` seconds.

    A new connection is started every DIAL_EVERY seconds while the earlier ones wait;
    False at once when the host refuses or cannot be routed to.
    """
    try:
        found = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, target = found[0]
    except (OSError, UnicodeError):
        return False
    waiting: list[socket.socket] = []
    deadline = time.monotonic() + timeout
    next_try = 0.0
    try:
        while True:
            now = time.monotonic()
            if now >= next_try:
                sock = socket.socket(family, kind, proto)
                sock.setblocking(False)
                code = sock.connect_ex(target)
                if code == 0:
                    sock.close()
                    return True
                if code not in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                    sock.close()
                    return False
                waiting.append(sock)
                next_try = now + DIAL_EVERY
            if now >= deadline:
                return False
            ready = fdwait.writable(waiting, max(0.0, min(next_try, deadline) - now))
            for sock in ready:
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code == 0:
                    return True
                waiting.remove(sock)
                sock.close()
                if code in (errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH):
                    return False
    finally:
        for sock in waiting:
            sock.close()
