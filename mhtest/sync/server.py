"""The sync server: one ZeroMQ ROUTER socket, owned by one thread, fed to a Coordinator.

    with SyncServer("127.0.0.1:0", expected=["h1", "h2"]) as server:
        ...  # hand server.address to the participants

It binds loopback unless told otherwise. With `keys_dir` it speaks CurveZMQ and accepts
only the client public keys listed in the keys directory; with `run_keys` (a multi-host
run's, mhtest.sync.keys.make_run_keys) only those keys, each for its own participant name,
read off every frame. A request is one frame: a message of more frames is dropped whole.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
import time
from typing import Any

from mhtest.sync import protocol
from mhtest.sync.coordinator import DEFAULT_MAX_STORED_BYTES, Coordinator, Expected
from mhtest.sync.errors import SyncError
from mhtest.sync.keys import RunKeys, ServerKeys
from mhtest.sync.record import SyncRecord

LOG = logging.getLogger(__name__)

MAX_POLL_MS = 250  # the loop wakes at least this often to check deadlines
_NOBLOCK = 1  # zmq.NOBLOCK (ZMQ_DONTWAIT), as a plain int
_SNDMORE = 2  # zmq.SNDMORE
_EVENTS, _POLLIN, _RCVMORE = 15, 1, 13  # zmq.EVENTS, zmq.POLLIN, zmq.RCVMORE
START_TIMEOUT = 10.0


class SyncServer:
    """A sync server running in a background thread; `.address` is where clients connect.

    `max_stored_bytes` caps the posted and exchanged data it holds; `idle_expiry` (seconds)
    drops the state of a group nobody has been connected to for that long: for a server
    that several runs share (a run's own server, None, keeps everything until it stops).
    `record` (a mhtest.sync.record.SyncRecord) is told what happens, for the results.
    """

    def __init__(
        self,
        bind: str = "127.0.0.1:0",
        keys_dir: str | os.PathLike | None = None,
        expected: Expected = None,
        *,
        run_keys: RunKeys | None = None,
        max_stored_bytes: int = DEFAULT_MAX_STORED_BYTES,
        idle_expiry: float | None = None,
        record: SyncRecord | None = None,
    ) -> None:
        if keys_dir is not None and run_keys is not None:
            raise SyncError("sync server: give a keys directory or a run's keys, not both")
        try:
            host, port = protocol.parse_endpoint(bind)
        except ValueError as exc:
            raise SyncError(f"sync server: bad bind address {exc}") from None
        try:
            self._host = socket.gethostbyname(host)
        except OSError as exc:
            raise SyncError(f"sync server: cannot resolve {host!r}: {exc}") from None
        self._port = port
        self._keys_dir = keys_dir
        self._run_keys = run_keys
        self._expected = expected
        self._limits = {"max_stored_bytes": max_stored_bytes, "idle_expiry": idle_expiry}
        #: What happened, for the results (written by whoever started the server, once
        #: stopped: mhtest.sync.record.SyncRecord.write).
        self.record = record
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._wake_r, self._wake_w = -1, -1
        self._gone: collections.deque[tuple[str, str | None]] = collections.deque()
        self.port = 0

    @property
    def address(self) -> str:
        """The address clients connect to, "tcp://HOST:PORT" (loopback when bound to any)."""
        host = "127.0.0.1" if self._host == "0.0.0.0" else self._host
        return f"tcp://{host}:{self.port}"

    @property
    def bound(self) -> str:
        """The address the socket is bound to."""
        return f"tcp://{self._host}:{self.port}"

    def start(self) -> SyncServer:
        """Bind and serve in a background thread; returns once bound (or raises SyncError)."""
        if self._thread is not None:
            raise SyncError("sync server already started")
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="mhtest-sync-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            self.stop()
            raise SyncError(f"sync server did not start within {START_TIMEOUT:g} s")
        if self._error is not None:
            self.stop()
            raise SyncError(f"sync server: {self._error}")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and close the socket; safe to call twice."""
        self._stopping.set()
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                LOG.warning("sync server thread did not stop within %g s", timeout)
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def declare_gone(self, name: str, reason: str | None = None) -> None:
        """Tell the participants that `name` has ended (see Coordinator.declare_gone).

        For the one who started the server, from any thread: no client connection needed.
        It takes effect in the server's thread moments later.
        """
        self._gone.append((name, reason))
        self._poke()

    def _poke(self) -> None:
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    def __enter__(self) -> SyncServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- the server thread ---------------------------------------------------------------

    def _open(self, ctx: Any) -> tuple[Any, Any]:
        import zmq

        sock = ctx.socket(zmq.ROUTER)
        try:
            return self._setup(sock, ctx)
        except BaseException:
            sock.close(0)
            raise

    def _server_keys(self) -> ServerKeys | None:
        if self._run_keys is not None:
            return self._run_keys.server_keys()
        if self._keys_dir is not None:
            from mhtest.sync.keys import load_server_keys

            return load_server_keys(self._keys_dir)
        return None

    def _setup(self, sock: Any, ctx: Any) -> tuple[Any, Any]:
        import zmq

        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting client keeps its identity
        sock.setsockopt(zmq.MAXMSGSIZE, protocol.SOCKET_MAX_BYTES)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        zap = None
        keys = self._server_keys()
        if keys is not None:
            from mhtest.sync.zap import ZapHandler

            zap = ZapHandler(ctx, keys.accepted)  # before the first client can connect
        try:
            self._listen(sock, keys)
        except BaseException:
            if zap is not None:
                zap.close()  # else the context never terminates
            raise
        return sock, zap

    def _listen(self, sock: Any, keys: ServerKeys | None) -> None:
        import zmq

        try:
            if keys is not None:
                sock.curve_server = True
                sock.curve_publickey = keys.public
                sock.curve_secretkey = keys.secret
            if self._port:
                sock.bind(f"tcp://{self._host}:{self._port}")
                self.port = self._port
            else:
                sock.bind(f"tcp://{self._host}:*")
                self.port = int(sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])
        except zmq.ZMQError as exc:
            raise SyncError(f"cannot listen on {self._host}:{self._port}: {exc}") from None

    def _run(self) -> None:
        import zmq

        ctx = zmq.Context()
        sock = zap = None
        try:
            sock, zap = self._open(ctx)
        except Exception as exc:  # noqa: BLE001 - reported by start()
            self._error = exc
            ctx.term()
            self._ready.set()
            return
        LOG.info("sync server listening on %s", self.bound)
        self._ready.set()
        try:
            self._serve(sock, zap)
        except Exception:
            LOG.exception("sync server loop crashed")
        finally:
            sock.close(0)
            if zap is not None:
                zap.close()
            ctx.term()
            LOG.info("sync server on %s stopped", self.bound)

    def _serve(self, sock: Any, zap: Any) -> None:
        import zmq

        coord = Coordinator(self._expected, record=self.record, **self._limits)
        items = [(sock, zmq.POLLIN), (self._wake_r, zmq.POLLIN)]
        if zap is not None:
            items.append((zap.socket, zmq.POLLIN))
        while not self._stopping.is_set():
            deadline = coord.next_deadline()
            wait_ms = MAX_POLL_MS
            if deadline is not None:
                wait_ms = max(0, min(MAX_POLL_MS, int((deadline - time.monotonic()) * 1000) + 1))
            for item, _ in zmq.zmq_poll(items, wait_ms):
                if item is sock:
                    self._drain(sock, coord)
                elif zap is not None and item is zap.socket:
                    zap.answer()
                else:
                    os.read(self._wake_r, 4096)
                    self._declare(sock, coord)
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                coord.tick(now)
                self._flush(sock, coord)

    def _drain(self, sock: Any, coord: Coordinator) -> None:
        """Handle every frame waiting on the socket (bounded, so timers still run)."""
        import zmq

        recv, getsockopt, handle = sock.recv, sock.getsockopt, coord.handle
        # With per-run keys every frame says whose key sent it: its User-Id, from the ZAP
        # handler. It costs a frame object per message, so only then.
        bound = self._run_keys is not None
        user = None
        for _ in range(10_000):
            try:
                identity = recv(_NOBLOCK)  # a ROUTER message: the sender's identity, then
                if bound:  # what it sent, which must be one frame
                    message = recv(_NOBLOCK, copy=False)
                    # "" is a key bound to no name (a control file's run: see
                    # mhtest.autoserv.barrier): it may join under any name.
                    frame, user = message.bytes, message.get("User-Id") or None
                else:
                    frame = recv(_NOBLOCK)
            except zmq.Again:
                return
            if getsockopt(_RCVMORE):
                coord.refuse_frames(identity, frame, self._skip_rest(sock))
            else:
                try:
                    handle(identity, frame, time.monotonic(), user)
                except Exception:  # noqa: BLE001 - one bad message must never stop the server
                    LOG.exception("error handling a message; dropped it")
            if coord.outbox:
                self._flush(sock, coord)
            if not getsockopt(_EVENTS) & _POLLIN:
                return  # drained, without paying for a zmq.Again

    @staticmethod
    def _skip_rest(sock: Any) -> int:
        """Read the rest of a message of several frames, however many; how many it had.

        All of it, never part: ZeroMQ delivers a message whole, and whatever of it were
        left would be read as a message of its own, with a sender identity of the
        sender's choosing.
        """
        frames = 2
        while sock.getsockopt(_RCVMORE):
            sock.recv(_NOBLOCK, copy=False)  # no copy: the frames may be large
            frames += 1
        return frames

    def _declare(self, sock: Any, coord: Coordinator) -> None:
        """Carry out the declare_gone() calls made since the last time."""
        while self._gone:
            name, reason = self._gone.popleft()
            if coord.declare_gone(name, reason):
                LOG.info("participant %s declared gone%s", name, f": {reason}" if reason else "")
            else:
                LOG.debug("participant %s is still connected: not declared gone", name)
        self._flush(sock, coord)

    @staticmethod
    def _flush(sock: Any, coord: Coordinator) -> None:
        import zmq

        # The Cython send: the pyzmq wrapper's keyword handling costs as much as the send
        # itself at barrier rates, and the flags are plain ints for the same reason.
        send = zmq.backend.Socket.send
        for identity, payload in coord.outbox:
            try:
                send(sock, identity, _NOBLOCK | _SNDMORE)
                send(sock, payload, _NOBLOCK)
            except zmq.ZMQError as exc:
                LOG.warning("could not send a reply: %s", exc)
        coord.outbox.clear()
