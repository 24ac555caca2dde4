"""Remote port forwards: a port on a host that leads back to a service on this machine.

Multi-host workers reach the sync server through their own SSH connection by default,
so no firewall needs opening between the hosts and the controller. When that connection
drops and comes back, `reopen()` asks the new one for the same port, so that the workers'
sync clients, which reconnect to the same address, find the server again.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from mhtest import fdwait

LOG = logging.getLogger(__name__)
CONNECT_TIMEOUT = 10.0
#: How long `reopen()` keeps asking for the port (the dead session may still hold it).
REOPEN_TIMEOUT = 120.0
REOPEN_EVERY = 0.25


class ForwardError(Exception):
    """A host would not open the port that leads back to this machine."""


def _pump(channel: Any, sock: socket.socket, stop: threading.Event) -> None:
    """Copy bytes both ways between an SSH channel and a socket until either closes."""
    try:
        while not stop.is_set():
            ready = fdwait.readable([channel, sock], 0.5)
            if channel in ready:
                data = channel.recv(1 << 16)
                if not data:
                    break
                sock.sendall(data)
            if sock in ready:
                data = sock.recv(1 << 16)
                if not data:
                    break
                channel.sendall(data)
    except (OSError, EOFError) as exc:
        LOG.debug("forwarded connection ended: %s", exc)
    finally:
        try:
            channel.close()  # paramiko raises EOFError when the transport is already gone
        except (OSError, EOFError) as exc:
            LOG.debug("closing a forwarded channel: %s", exc)
        sock.close()


class RemoteForward:
    """`host`'s 127.0.0.1:`remote_port` leads to `target` (host, port) on this machine."""

    def __init__(self, host: Any, target: tuple[str, int]) -> None:
        self.host = host
        self.target = target
        self._stop = threading.Event()
        self._transport = host.transport()

        from mhtest.hosts._paramiko import load as load_paramiko

        paramiko = load_paramiko()

        try:
            self.remote_port = self._transport.request_port_forward("127.0.0.1", 0, self._handler)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ForwardError(
                f"{host.name}: the SSH server refused a remote port forward for the sync "
                f"server ({exc or type(exc).__name__}); allow it (sshd AllowTcpForwarding "
                "remote) or use --sync-direct"
            ) from None

    def _handler(self, channel: Any, origin: Any, server: Any) -> None:
        try:
            sock = socket.create_connection(self.target, timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            LOG.warning("%s: forward to %s:%d failed: %s", self.host.name, *self.target, exc)
            channel.close()
            return
        sock.settimeout(None)
        # Sync messages are small and answered at once: Nagle's algorithm would hold
        # each one back until the previous was acknowledged (~40 ms each).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(
            target=_pump,
            args=(channel, sock, self._stop),
            daemon=True,
            name=f"forward-{self.host.name}",
        ).start()

    def reopen(self, timeout: float = REOPEN_TIMEOUT) -> None:
        """The host's connection is back: the same port on the new one (in a thread).

        The port may still be held for a moment by the host's end of the dropped
        connection, so it is asked for until it is free, for up to `timeout` seconds.
        """
        threading.Thread(
            target=self._reopen, args=(time.monotonic() + timeout,), daemon=True
        ).start()

    def _reopen(self, deadline: float) -> None:
        why = ""
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                transport = self.host.transport()
                if transport is self._transport:
                    return  # the same connection: the forward is still there
                transport.request_port_forward("127.0.0.1", self.remote_port, self._handler)
            except Exception as exc:  # noqa: BLE001 - the port is still held, …: again
                if not why:
                    LOG.info(
                        "%s: port %d not open again yet: %s", self.host.name, self.remote_port, exc
                    )
                why = str(exc) or type(exc).__name__
                self._stop.wait(REOPEN_EVERY)
                continue
            self._transport = transport
            LOG.info("%s: sync forward open again on port %d", self.host.name, self.remote_port)
            return
        if not self._stop.is_set():
            LOG.warning(
                "%s: could not open port %d for the sync server again: %s",
                self.host.name,
                self.remote_port,
                why,
            )

    def close(self) -> None:
        self._stop.set()
        try:
            self._transport.cancel_port_forward("127.0.0.1", self.remote_port)
        except Exception as exc:  # noqa: BLE001 - the connection may be gone already
            LOG.debug("%s: cancel forward: %s", self.host.name, exc)

    def __enter__(self) -> RemoteForward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
