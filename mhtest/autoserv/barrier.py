"""Barriers in control files: Autotest's `barrier(hostid, tag, timeout)`, over mhtest's sync.

    b = job.barrier("h1", "netserver-up", 120)      # or barrier(...) in a server control file
    b.rendezvous("h1", "h2")                        # returns once both reached "netserver-up"
    b.rendezvous_servers("server", "h1", "h2")      # the same meeting, "server" leading it

A server control file's run has one sync server (ControlSync, started when it first runs a
client control file, or first meets at a barrier itself). Client control files reach it
the way multi-host workers do: through a remote port forward on their host's own SSH
connection (mhtest.runners.tunnel), so no port on the hosts is opened; the server control
file connects to it directly. The run's CurveZMQ key is handed to each client control file
in its environment only, like a multi-host run's keys; it is bound to no name, since the
names are the control files' host ids.

Each rendezvous joins as the host id given, in a sync group of its own named after the tag
and how many times this member met there before (each member counts alike): a member that
leaves or dies fails only the meetings it belongs to, and one meeting's goodbyes never
disturb the next one under the same tag. Every wait has its timeout; a timeout or a member
gone fails the rendezvous for everyone with one line naming the tag, who arrived and who
did not (BarrierError).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from mhtest.autoserv.errors import ControlError
from mhtest.sync.client import ENV_ADDRESS, ENV_GROUP, ENV_KEYS

LOG = logging.getLogger(__name__)
#: A barrier's timeout when the control file gives none (Autotest's sync timeout).
DEFAULT_TIMEOUT = 120.0
#: The run key's participant name: "" is bound to no name (see mhtest.sync.keys).
ANY_NAME = ""


class BarrierError(ControlError):
    """A rendezvous did not complete: timeout, a member gone, or no sync server."""


@dataclass
class Endpoint:
    """How to reach a sync server: its address, keys and the group its runs meet in."""

    address: str
    curve: Any = None  # mhtest.sync.keys.ClientKeys
    keys_dir: str | None = None
    group: str = ""

    @classmethod
    def from_environment(cls) -> Endpoint | None:
        """The sync server this process was given (MHTEST_SYNC_*), or None."""
        from mhtest.sync.keys import client_keys_from_env

        address = os.environ.get(ENV_ADDRESS, "").strip()
        if not address:
            return None
        curve = client_keys_from_env(os.environ)
        keys_dir = None if curve is not None else (os.environ.get(ENV_KEYS) or None)
        return cls(address, curve, keys_dir, os.environ.get(ENV_GROUP, "").strip())


class ControlSync:
    """The sync server of a server control file's run (see the module docstring)."""

    def __init__(self, server: Any, keys: Any) -> None:
        self.server = server
        self.keys = keys

    @classmethod
    def start(cls) -> ControlSync:
        from mhtest.sync.keys import make_run_keys
        from mhtest.sync.server import SyncServer

        keys = make_run_keys([ANY_NAME])
        server = SyncServer("127.0.0.1:0", run_keys=keys).start()
        LOG.info("control file sync server on %s", server.address)
        return cls(server, keys)

    def endpoint(self) -> Endpoint:
        """How the server control file itself reaches the server."""
        return Endpoint(self.server.address, self.keys.client_keys(ANY_NAME))

    def env(self, address: str) -> dict[str, str]:
        """A client control file's environment: the address it reaches the server at, the key."""
        return {ENV_ADDRESS: address, **self.keys.client_env(ANY_NAME)}

    @contextlib.contextmanager
    def place_hook(self, config: Any, host: Any, specs: list[Any]) -> Iterator[None]:
        """Around one place's run (a Dispatcher hook): a remote host's client control files
        reach the server through a port forward on its SSH connection; local ones directly."""
        from mhtest.runners.tunnel import RemoteForward

        forward = None
        if host is None:
            address = self.server.address
        else:
            forward = RemoteForward(host, ("127.0.0.1", self.server.port))
            address = f"tcp://127.0.0.1:{forward.remote_port}"
        try:
            for spec in specs:
                spec.env.update(self.env(address))
            yield
        finally:
            if forward is not None:
                forward.close()

    def close(self) -> None:
        self.server.stop()


class barrier:  # noqa: N801 - Autotest's name
    """Autotest's barrier: `barrier(hostid, tag, timeout)` (see the module docstring).

    `port` and `listen_server` are accepted for Autotest's sake and ignored: the meeting
    happens on the run's sync server.
    """

    #: Where a barrier meets; set per control file (see barrier_class).
    _endpoint: Callable[[], Endpoint | None] = staticmethod(Endpoint.from_environment)
    _where: Callable[[], str] = staticmethod(lambda: "control file")
    _counts: dict[tuple[str, str], int] = {}  # noqa: RUF012 - one per control file
    _lock = threading.Lock()

    def __init__(
        self,
        hostid: str,
        tag: str,
        timeout: float | None = None,
        port: int | None = None,
        listen_server: Any = None,
    ) -> None:
        if not isinstance(hostid, str) or not hostid:
            raise BarrierError(f"{self._where()}: a barrier's host id must be a non-empty string")
        if not isinstance(tag, str) or not tag:
            raise BarrierError(f"{self._where()}: a barrier's tag must be a non-empty string")
        self.hostid = hostid
        self.tag = tag
        self.timeout = float(timeout) if timeout else DEFAULT_TIMEOUT

    def rendezvous(self, *hostids: str, abort: bool = False) -> None:
        """Return once every host id given (and this one) reached this barrier's tag."""
        self._meet(list(hostids))

    def rendezvous_servers(self, masterid: str, *hostids: str, abort: bool = False) -> None:
        """The same meeting, led by `masterid` (mhtest needs no leader: all meet at once)."""
        self._meet([masterid, *hostids])

    def _meet(self, hostids: list[str]) -> None:
        from mhtest.sync.client import SyncClient
        from mhtest.sync.errors import SyncError

        where = self._where()
        members = sorted({str(h) for h in hostids} | {self.hostid})
        endpoint = self._endpoint()
        if endpoint is None:
            raise BarrierError(
                f"{where}: barrier {self.tag!r}: no sync server to meet at; run this client "
                "control file from a server control file (Autotest.run), or give --sync-server"
            )
        with self._lock:  # each member counts its own meetings under this tag
            seen = self._counts.get((self.tag, self.hostid), 0)
            self._counts[(self.tag, self.hostid)] = seen + 1
        group = f"{endpoint.group}/barrier:{self.tag}#{seen}"[-256:]
        LOG.info("barrier %r: %s waits for %s", self.tag, self.hostid, ", ".join(members))
        try:
            with SyncClient(
                endpoint.address,
                self.hostid,
                curve=endpoint.curve,
                keys_dir=endpoint.keys_dir,
                group=group,
                count=len(members),
                connect_timeout=self.timeout,
            ) as client:
                client.barrier(self.tag, len(members), self.timeout)
        except SyncError as exc:
            raise BarrierError(f"{where}: {self._why(exc, members)}") from None
        LOG.info("barrier %r: all of %s met", self.tag, ", ".join(members))

    def _why(self, exc: Exception, members: list[str]) -> str:
        """What went wrong at the meeting, in words of host ids."""
        from mhtest.sync.errors import SyncAborted, SyncTimeout

        head = f"barrier {self.tag!r} of {self.hostid}"
        arrived = sorted(set(getattr(exc, "arrived", None) or ()) & set(members))
        missing = [m for m in members if m not in arrived]
        if isinstance(exc, SyncTimeout):
            return (
                f"{head}: timed out after {self.timeout:g} s waiting for "
                f"{', '.join(missing) or 'nobody'} (arrived: {', '.join(arrived) or 'none'})"
            )
        if isinstance(exc, SyncAborted):
            return f"{head}: aborted: {exc.reason or exc}"
        return f"{head}: {exc}"


def barrier_class(endpoint: Callable[[], Endpoint | None], where: Callable[[], str]) -> type:
    """A `barrier` class for one control file: where it meets, how it names its line."""
    cls = type(
        "barrier",
        (barrier,),
        {
            "_endpoint": staticmethod(endpoint),
            "_where": staticmethod(where),
            "_counts": {},
            "_lock": threading.Lock(),
            "__doc__": barrier.__doc__,
        },
    )
    cls.barrier = cls  # `barrier.barrier(...)`, as Autotest's module was used
    return cls
