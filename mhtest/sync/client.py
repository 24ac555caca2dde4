"""The sync client a test uses: barriers, data exchange, post/wait and locks.

    with SyncClient("tcp://127.0.0.1:5555", "h1", count=2) as sync:
        sync.barrier("server-started")
        ports = sync.exchange("ports", {"port": 8080})   # {"h1": {...}, "h2": {...}}

One I/O thread owns the DEALER socket (ZeroMQ sockets are not thread-safe): calls hand
their request over through a queue and a wake-up pipe, and wait for their reply. The I/O
thread also sends the heartbeats, so an idle participant stays alive and a dead one is
noticed by the server within a few seconds.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Iterator, Mapping

from mhtest.sync import protocol
from mhtest.sync.errors import SyncError, SyncUnavailable, error_from_reply

LOG = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0
DEFAULT_HEARTBEAT = 0.5
CONNECT_TIMEOUT = 30.0  # how long a new client waits for the server to answer its hello
REPLY_GRACE = 5.0  # extra time past a call's timeout before the server counts as gone
ENV_ADDRESS = "MHTEST_SYNC_ADDRESS"
ENV_PARTICIPANT = "MHTEST_SYNC_PARTICIPANT"
ENV_COUNT = "MHTEST_SYNC_COUNT"
ENV_KEYS = "MHTEST_SYNC_KEYS"


class _Pending:
    """A request waiting for its reply."""

    __slots__ = ("op", "event", "reply", "error", "sent_at", "silence")

    def __init__(self, op: str, silence: float) -> None:
        self.op = op
        self.event = threading.Event()
        self.reply: dict[str, Any] | None = None
        self.error: SyncError | None = None
        self.sent_at = time.monotonic()
        self.silence = silence  # fail if the server says nothing for this long


class SyncClient:
    """A participant of a sync server (see module docstring)."""

    def __init__(
        self,
        address: str,
        participant: str,
        *,
        keys_dir: str | os.PathLike | None = None,
        count: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        heartbeat: float = DEFAULT_HEARTBEAT,
        connect_timeout: float | None = None,
        context: Any = None,
    ) -> None:
        try:
            host, port = protocol.parse_endpoint(address, default_port=-1)
        except ValueError as exc:
            raise SyncError(f"sync client: bad server address {exc}") from None
        if port <= 0:
            raise SyncError(f"sync client: {address!r} needs a port (HOST:PORT)")
        if not participant or len(participant) > protocol.MAX_NAME_CHARS:
            raise SyncError(f"sync client: bad participant name {participant!r}")
        if count is not None and not 1 <= count <= protocol.MAX_COUNT:
            raise SyncError(f"sync client: count must be 1 to {protocol.MAX_COUNT}")
        self.address = f"tcp://{host}:{port}"
        self.participant = participant
        self.count = count
        self.timeout = float(timeout)
        self.heartbeat = float(heartbeat)
        self._curve = None
        if keys_dir is not None:
            from mhtest.sync.keys import load_client_keys

            self._curve = load_client_keys(keys_dir, participant)
        self._context = context
        self._ids = itertools.count(1)
        self._outgoing: collections.deque[bytes] = collections.deque()
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._closed = False
        self._say_bye = True
        self._wake_r, self._wake_w = os.pipe()
        self._io_error: SyncError | None = None
        self._thread = threading.Thread(
            target=self._io_main, name=f"mhtest-sync-{participant}", daemon=True
        )
        self._thread.start()
        wait = CONNECT_TIMEOUT if connect_timeout is None else connect_timeout
        try:
            self._call(
                "hello",
                wait,
                silence=wait,
                participant=participant,
                heartbeat=self.heartbeat,
                count=count,
            )
        except BaseException:
            self.close(say_bye=False)
            raise

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, *, default_participant: str | None = None
    ) -> SyncClient | None:
        """A client configured by MHTEST_SYNC_* variables, or None when no address is set.

        The participant is MHTEST_SYNC_PARTICIPANT, else `default_participant`, else
        "HOSTNAME-PID" (unique, but not stable from run to run).
        """
        env = os.environ if environ is None else environ
        address = env.get(ENV_ADDRESS, "").strip()
        if not address:
            return None
        participant = env.get(ENV_PARTICIPANT, "").strip() or default_participant
        if not participant:
            participant = f"{socket.gethostname()}-{os.getpid()}"
            LOG.info("%s not set: this participant is %s", ENV_PARTICIPANT, participant)
        count_text = env.get(ENV_COUNT, "").strip()
        if count_text and not count_text.isdigit():
            raise SyncError(f"{ENV_COUNT}={count_text!r} is not a number")
        keys = env.get(ENV_KEYS, "").strip() or None
        return cls(
            address, participant, keys_dir=keys, count=int(count_text) if count_text else None
        )

    # -- the API -------------------------------------------------------------------------

    def barrier(self, name: str, count: int | None = None, timeout: float | None = None) -> None:
        """Return when `count` participants (default: all of the job) reached `name`."""
        t = self._timeout(timeout)
        self._call("barrier", t, name=name, count=count, timeout=t)

    def exchange(
        self, name: str, data: Any, count: int | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Barrier that also swaps data: returns {participant: data} of everyone, self included."""
        t = self._timeout(timeout)
        return self._call("exchange", t, name=name, data=data, count=count, timeout=t)

    def post(self, name: str, data: Any = None) -> None:
        """Publish `data` under `name` (does not wait for anybody)."""
        self._call("post", self.timeout, name=name, data=data)

    def wait(self, name: str, count: int = 1, timeout: float | None = None) -> dict[str, Any]:
        """Wait until `count` participants posted `name`: returns {participant: data}."""
        t = self._timeout(timeout)
        return self._call("wait", t, name=name, count=count, timeout=t)

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the job-wide lock `name` for the `with` block (released if the holder dies)."""
        t = self._timeout(timeout)
        self._call("lock", t, name=name, timeout=t)
        try:
            yield
        finally:
            self._call("unlock", self.timeout, name=name)

    def abort(self, reason: str) -> None:
        """Abort every other participant's waits with `reason`."""
        self._call("abort", self.timeout, reason=str(reason))

    def close(self, say_bye: bool = True) -> None:
        """Leave the server (others waiting on us are told at once) and stop the I/O thread."""
        if self._closed:
            return
        self._closed = True
        self._say_bye = say_bye
        self._closing.set()
        self._wake()
        self._thread.join(5.0)
        if self._thread.is_alive():
            LOG.warning("sync client I/O thread did not stop")
            return
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------

    def _timeout(self, timeout: float | None) -> float:
        t = self.timeout if timeout is None else float(timeout)
        if not 0 < t <= protocol.MAX_TIMEOUT:
            raise SyncError(f"timeout must be above 0 and at most {protocol.MAX_TIMEOUT:g} s")
        return t

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _call(self, op: str, wait: float, silence: float | None = None, **fields: Any) -> Any:
        if self._closed:
            raise SyncError(f"sync client {self.participant} is closed")
        if self._io_error is not None:
            raise self._io_error
        request_id = next(self._ids)
        try:
            frame = protocol.encode({"id": request_id, "op": op, **fields})
        except (TypeError, ValueError) as exc:
            raise SyncError(f"{op} {fields.get('name', '')!r}: data is not JSON: {exc}") from None
        if len(frame) > protocol.MAX_MESSAGE_BYTES:
            raise SyncError(
                f"{op} {fields.get('name', '')!r}: message of {len(frame)} bytes exceeds "
                f"{protocol.MAX_MESSAGE_BYTES}"
            )
        pending = _Pending(op, max(4.0 * self.heartbeat, 2.0) if silence is None else silence)
        with self._lock:
            self._pending[request_id] = pending
        self._outgoing.append(frame)
        self._wake()
        if not pending.event.wait(wait + REPLY_GRACE):
            with self._lock:
                self._pending.pop(request_id, None)
            raise SyncUnavailable(
                f"{op}: no answer from the sync server at {self.address} "
                f"within {wait + REPLY_GRACE:g} s"
            )
        if pending.error is not None:
            raise pending.error
        reply = pending.reply or {}
        if reply.get("ok"):
            return reply.get("result")
        raise error_from_reply(reply.get("error") or {})

    # -- the I/O thread ------------------------------------------------------------------

    def _open_socket(self) -> tuple[Any, Any]:
        import zmq

        ctx = self._context if self._context is not None else zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 500)
        sock.setsockopt(zmq.ROUTING_ID, uuid.uuid4().bytes)
        sock.setsockopt(zmq.MAXMSGSIZE, protocol.SOCKET_MAX_BYTES)
        if self._curve is not None:
            sock.curve_serverkey = self._curve.server_public
            sock.curve_publickey = self._curve.public
            sock.curve_secretkey = self._curve.secret
        sock.connect(self.address)
        return ctx, sock

    def _io_main(self) -> None:
        import zmq

        try:
            _, sock = self._open_socket()
        except zmq.ZMQError as exc:
            self._fail_all(SyncUnavailable(f"cannot connect to {self.address}: {exc}"))
            return
        try:
            self._io_loop(sock)
        except Exception as exc:  # noqa: BLE001 - every waiter must hear about it
            LOG.exception("sync client I/O thread crashed")
            self._fail_all(SyncError(f"sync client I/O failed: {exc}"))
        finally:
            if self._closing.is_set() and self._say_bye:
                try:
                    sock.send(protocol.encode({"id": 0, "op": "bye"}), zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
            sock.close()
            self._fail_all(SyncError(f"sync client {self.participant} is closed"))

    def _io_loop(self, sock: Any) -> None:
        import zmq

        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        interval_ms = max(1, int(self.heartbeat * 1000))
        last_heard = next_ping = time.monotonic()
        ping = protocol.encode({"id": 0, "op": "ping"})
        while True:
            events = dict(poller.poll(interval_ms))
            if self._wake_r in events:
                os.read(self._wake_r, 4096)
            if self._closing.is_set():
                return
            while self._outgoing:
                self._send(sock, self._outgoing.popleft())
            if sock in events:
                last_heard = time.monotonic()
                self._receive(sock)
            now = time.monotonic()
            if now >= next_ping:
                self._send(sock, ping)
                next_ping = now + self.heartbeat
            self._check_silence(now, last_heard)

    def _send(self, sock: Any, frame: bytes) -> None:
        import zmq

        try:
            sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            LOG.debug("sync client send queue full; request dropped, it will time out")

    def _receive(self, sock: Any) -> None:
        import zmq

        while True:
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                reply = protocol.decode(frame)
            except protocol.ProtocolError as exc:
                LOG.warning("dropped a malformed reply from the sync server: %s", exc)
                continue
            request_id = reply.get("id")
            if not request_id:
                continue
            with self._lock:
                pending = self._pending.pop(request_id, None)
            if pending is not None:
                pending.reply = reply
                pending.event.set()

    def _check_silence(self, now: float, last_heard: float) -> None:
        with self._lock:
            late = [
                rid
                for rid, p in self._pending.items()
                if now - max(last_heard, p.sent_at) > p.silence
            ]
            expired = [(rid, self._pending.pop(rid)) for rid in late]
        for _, pending in expired:
            if pending.op == "hello":
                message = f"no sync server answering at {self.address} within {pending.silence:g} s"
            else:
                message = (
                    f"{pending.op}: the sync server at {self.address} stopped answering "
                    f"(nothing heard for {pending.silence:g} s)"
                )
            pending.error = SyncUnavailable(message)
            pending.event.set()

    def _fail_all(self, error: SyncError) -> None:
        self._io_error = error
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        for p in pending:
            p.error = error
            p.event.set()
