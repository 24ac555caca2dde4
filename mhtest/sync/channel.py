"""A client's connection to the sync server: one DEALER socket, requests matched to replies.

ZeroMQ sockets are not thread-safe, so the socket is only ever touched by the thread that
holds `io_lock` (the lock's acquire/release are the full memory barriers ZeroMQ asks for
when a socket moves between threads). Whoever waits for a reply takes the lock and does
the I/O itself ("leader"): no thread hand-off on the fast path. Other threads with
requests in flight queue their frame, poke the leader through a pipe and wait; when the
leader is done it wakes them so one can lead. While nobody waits, a small heartbeat
thread takes the lock every `heartbeat` seconds to ping the server and read its pongs,
so an idle participant stays alive and a dead one is noticed within a few seconds.

Until the client has joined (`joined()`), a ZeroMQ monitor on the socket reports failed
handshakes: a server that turns our CurveZMQ key away, or wants keys we do not have, is
named at once rather than taken for a server that is not there.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import threading
import time
import uuid
from typing import Any

from mhtest.sync import protocol
from mhtest.sync.errors import SyncError, SyncUnavailable

LOG = logging.getLogger(__name__)

BYE_TIMEOUT = 1.0  # how long close() waits for the server to acknowledge the goodbye
SILENCE_CHECK_INTERVAL = 0.1  # seconds between scans for requests the server left unanswered
# zmq.NOBLOCK, zmq.EVENTS, zmq.POLLIN as plain ints: enum arithmetic is slow at barrier rates
_NOBLOCK, _EVENTS, _POLLIN = 1, 15, 1
# zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, _SUCCEEDED, _FAILED_PROTOCOL, _FAILED_AUTH (libzmq 4.3)
_FAILED_NO_DETAIL, _SUCCEEDED, _FAILED_PROTOCOL, _FAILED_AUTH = 0x800, 0x1000, 0x2000, 0x4000
HANDSHAKE_EVENTS = _FAILED_NO_DETAIL | _SUCCEEDED | _FAILED_PROTOCOL | _FAILED_AUTH
_MECHANISM_MISMATCH = 0x11000002  # zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH


class _Pending:
    """A request waiting for its reply."""

    __slots__ = ("op", "event", "reply", "error", "sent_at", "silence", "frame")

    def __init__(self, op: str, silence: float, frame: bytes = b"") -> None:
        self.op = op
        self.frame = frame  # sent again when the server is heard from after a silence
        self.event: threading.Event | None = None  # made when a follower has to wait
        self.reply: bytes | None = None  # the reply frame
        self.error: SyncError | None = None
        self.sent_at = time.monotonic()
        self.silence = silence  # fail if the server says nothing for this long

    @property
    def done(self) -> bool:
        return self.reply is not None or self.error is not None


class Channel:
    """Requests and replies over one DEALER socket (see module docstring)."""

    def __init__(
        self, address: str, name: str, heartbeat: float, curve: Any = None, context: Any = None
    ) -> None:
        import zmq

        self.address = address
        self.heartbeat = heartbeat
        #: Seconds without a word from the server after which, once it is heard from
        #: again, the requests still waiting are sent again (they or their replies may
        #: have been lost with the connection). Only for a server that answers a request
        #: sent twice once (its hello said it has a rejoin grace); None: never.
        self.resend_after: float | None = None
        self._alone_frame: bytes | None = None  # the request of `_alone()`, while it waits
        #: Called (from whichever thread reads it) with a notice frame the server pushed.
        self.on_notice: Any = None
        self._ids = itertools.count(1)
        self._outgoing: collections.deque[bytes] = collections.deque()
        self._pending: dict[int, _Pending] = {}
        self._pending_lock = threading.Lock()
        self.io_lock = threading.Lock()
        self._closing = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        ctx = context if context is not None else zmq.Context.instance()
        try:
            self._sock = ctx.socket(zmq.DEALER)
        except zmq.ZMQError as exc:
            os.close(self._wake_r)
            os.close(self._wake_w)
            raise SyncUnavailable(f"cannot open a socket to {address}: {exc}") from None
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.ROUTING_ID, uuid.uuid4().bytes)
        self._sock.setsockopt(zmq.MAXMSGSIZE, protocol.SOCKET_MAX_BYTES)
        self._curve = curve is not None
        if curve is not None:
            self._sock.curve_serverkey = curve.server_public
            self._sock.curve_publickey = curve.public
            self._sock.curve_secretkey = curve.secret
        self._handshake = ""  # why the last handshake failed, while joining
        self._monitor = self._sock.get_monitor_socket(HANDSHAKE_EVENTS)
        self._poll_items = [
            (self._sock, zmq.POLLIN),
            (self._wake_r, zmq.POLLIN),
            (self._monitor, zmq.POLLIN),
        ]
        # Held here, not imported per call: an import statement costs a microsecond too.
        self._zmq_poll, self._again = zmq.zmq_poll, zmq.Again
        self._zmq_send = zmq.backend.Socket.send  # pyzmq's wrapper costs as much as the send
        self._next_silence_check = 0.0
        self._sock.connect(address)
        self._last_heard = self._last_ping = time.monotonic()
        self._ping = protocol.encode({"id": 0, "op": "ping"})
        self._thread = threading.Thread(target=self._heartbeats, name=f"mhtest-sync-{name}")
        self._thread.daemon = True
        self._thread.start()

    # -- requests ------------------------------------------------------------------------

    def request(self, op: str, wait: float, silence: float, **fields: Any) -> bytes:
        """Send one request; return the server's reply frame (SyncUnavailable if none comes)."""
        try:
            body = protocol.request_body(op, fields)
        except (TypeError, ValueError) as exc:
            raise SyncError(f"{op} {fields.get('name', '')!r}: data is not JSON: {exc}") from None
        return self.call(op, body, wait, silence, fields.get("name", ""))

    def call(self, op: str, body: bytes, wait: float, silence: float, name: str = "") -> bytes:
        """Send a request from its `protocol.request_body()`; return the reply frame.

        Nothing is decoded on the way: a caller that only needs to know the request
        succeeded checks the frame with `protocol.is_success()`.
        """
        if self._closing.is_set():
            raise SyncError(f"{op}: the sync client is closed")
        request_id = next(self._ids)
        frame = protocol.encode_request(request_id, body)
        if len(frame) > protocol.MAX_MESSAGE_BYTES:
            raise SyncError(
                f"{op} {name!r}: message of {len(frame)} bytes exceeds {protocol.MAX_MESSAGE_BYTES}"
            )
        deadline = time.monotonic() + wait
        if not self._pending and self.io_lock.acquire(blocking=False):
            try:
                if not self._pending:  # no other request in flight: the short path
                    return self._alone(op, request_id, frame, deadline, silence)
            finally:
                self.io_lock.release()
                self._wake_followers()
        pending = _Pending(op, silence, frame)
        with self._pending_lock:
            self._pending[request_id] = pending
        self._outgoing.append(frame)
        while not pending.done:
            left = deadline - time.monotonic()
            if left <= 0 or self._closing.is_set():
                break
            if self.io_lock.acquire(blocking=False):
                try:
                    self._pump(pending, deadline)
                finally:
                    self.io_lock.release()
                    self._wake_followers(own=1)
                continue
            with self._pending_lock:  # replies are set under this lock too: no lost wake-up
                if pending.done:
                    break
                if pending.event is None:
                    pending.event = threading.Event()
                event = pending.event
            if self.io_lock.acquire(blocking=False):
                # The leader left between our two tries, maybe before our event existed
                # for it to set: lead instead of waiting for a wake-up that won't come.
                self.io_lock.release()
                continue
            self._wake()  # the leader sends our frame
            event.wait(left)
            event.clear()
        with self._pending_lock:
            self._pending.pop(request_id, None)
        if pending.error is not None:
            raise pending.error
        if pending.reply is None:
            if self._closing.is_set():
                raise SyncError(f"{op}: the sync client was closed while waiting")
            raise SyncUnavailable(self._no_answer(op))
        return pending.reply

    def close(self, say_bye: bool) -> None:
        """Stop heartbeats, say goodbye (so others waiting on us know at once), close.

        io_lock stays taken: nobody may touch the closed socket again.
        """
        if say_bye:
            try:  # answered, so we know it left before the process may exit
                self.request("bye", BYE_TIMEOUT, BYE_TIMEOUT)
            except SyncError as exc:
                LOG.debug("sync client: no answer to bye: %s", exc)
        self._closing.set()
        self._wake()
        self._thread.join(5.0)
        if not self.io_lock.acquire(timeout=5.0):
            LOG.warning("sync client: a call still holds the socket; closing anyway")
        try:
            self._stop_monitor()
            self._sock.close(0)
        finally:
            self._fail_all(SyncError("the sync client is closed"))
            os.close(self._wake_r)
            os.close(self._wake_w)

    # -- the I/O, done by whoever holds io_lock -------------------------------------------

    def _alone(
        self, op: str, request_id: int, frame: bytes, deadline: float, silence: float
    ) -> bytes:
        """One request while no other is in flight: `request()` minus its bookkeeping.

        Each call of a barrier loop wakes up on a cold CPU cache, so every line run per
        call shows in the latency; this path runs few. It still does all a leader does:
        pings, the silence check, and sending and matching other threads' requests that
        arrive meanwhile (they poke the wake-up pipe).
        """
        sock, poll, heartbeat = self._sock, self._zmq_poll, self.heartbeat
        mine = protocol.reply_prefix(request_id)
        self._alone_frame = frame  # (for _resend)
        try:
            self._send(frame)
            # A request tells the server we are alive as well as a ping does.
            sent_at = now = self._last_ping = time.monotonic()
            while True:
                timeout = min(deadline, self._last_ping + heartbeat) - now
                for item, _ in poll(self._poll_items, max(1, int(timeout * 1000) + 1)):
                    if item is not sock:
                        if item is self._monitor:
                            refused = self._handshake_refusal()
                            if refused is not None:
                                raise refused
                            continue
                        os.read(self._wake_r, 4096)
                        while self._outgoing:  # another thread's request
                            self._send(self._outgoing.popleft())
                        continue
                    reply = self._read_frame()
                    if reply is None:
                        continue
                    if reply.startswith(mine):
                        return reply
                    reply_id = protocol.reply_id(reply)
                    if reply_id == request_id:
                        return reply  # ours, in a form other than our server's
                    self._deliver(reply, reply_id)
                now = time.monotonic()
                if now - self._last_ping >= heartbeat:
                    self._send(self._ping)
                    self._last_ping = now
                if now - max(self._last_heard, sent_at) > silence:
                    raise SyncUnavailable(self._silence_message(_Pending(op, silence)))
                if now >= deadline:
                    raise SyncUnavailable(self._no_answer(op))
                if self._closing.is_set():
                    raise SyncError(f"{op}: the sync client was closed while waiting")
                if self._pending and now >= self._next_silence_check:
                    self._next_silence_check = now + SILENCE_CHECK_INTERVAL
                    self._check_silence(now)
        finally:
            self._alone_frame = None

    def _pump(self, mine: _Pending | None, deadline: float) -> None:
        """Send queued frames, read replies, ping, until `mine` is done or `deadline`."""
        while True:
            while self._outgoing:
                self._send(self._outgoing.popleft())
            now = time.monotonic()
            if now - self._last_ping >= self.heartbeat:
                self._send(self._ping)
                self._last_ping = now
            if now >= self._next_silence_check:
                self._next_silence_check = now + SILENCE_CHECK_INTERVAL
                self._check_silence(now)
            if mine is None or mine.done or now >= deadline or self._closing.is_set():
                return
            timeout = min(deadline - now, self._last_ping + self.heartbeat - now)
            for item, _ in self._zmq_poll(self._poll_items, max(1, int(timeout * 1000) + 1)):
                if item is self._sock:
                    self._receive(drain=False)  # the poll reports the next one at once
                elif item is self._monitor:
                    refused = self._handshake_refusal()
                    if refused is not None:
                        self._fail_all(refused)
                else:
                    os.read(self._wake_r, 4096)
            if mine.done and not self._outgoing:
                return  # the common case: our reply came, nothing else to send

    def _heartbeats(self) -> None:
        """Ping while no call is under way; sleep while calls ping on their own.

        It wakes as seldom as it can: each wake-up takes the GIL from a busy caller.
        """
        delay = self.heartbeat
        while not self._closing.wait(delay):
            due = self._last_ping + self.heartbeat - time.monotonic()  # a float read: atomic
            if due > 0.01:
                delay = due
                continue
            delay = self.heartbeat
            if self.io_lock.acquire(blocking=False):  # else a caller is pinging anyway
                try:
                    if self._sock.poll(0):
                        self._receive()
                    self._send(self._ping)
                    self._last_ping = time.monotonic()
                    self._pump(None, 0.0)  # anything queued, and the silence check
                finally:
                    self.io_lock.release()
                    self._wake_followers()

    def _send(self, frame: bytes) -> None:
        try:
            self._zmq_send(self._sock, frame, _NOBLOCK)
        except self._again:
            LOG.debug("sync client send queue full; request dropped, it will time out")

    def _receive(self, drain: bool = True) -> None:
        """Read the replies waiting on the socket (only the first, unless `drain`)."""
        while True:
            reply = self._read_frame()
            if reply is None:
                return
            self._deliver(reply)
            if not drain or not self._sock.getsockopt(_EVENTS) & _POLLIN:
                return  # drained, without paying for a zmq.Again

    def _read_frame(self) -> bytes | None:
        """One reply frame off the socket, None if none waits (it counts as a sign of life)."""
        try:
            frame = self._sock.recv(_NOBLOCK)
        except self._again:
            return None
        now = time.monotonic()
        if self.resend_after is not None and now - self._last_heard > self.resend_after:
            self._resend()
        self._last_heard = now
        return frame

    def _resend(self) -> None:
        """The server is heard from after a silence: send the waiting requests again."""
        frames = [p.frame for p in list(self._pending.values()) if not p.done and p.frame]
        if self._alone_frame is not None:
            frames.append(self._alone_frame)
        if frames:
            LOG.info("sync server back after a silence: sending %d request(s) again", len(frames))
        for frame in frames:
            self._send(frame)

    def _deliver(self, frame: bytes, request_id: int | None = None) -> None:
        """Hand a reply frame to the request with its id (pongs and strays are dropped)."""
        if request_id is None:
            request_id = protocol.reply_id(frame)
        if request_id is None:
            LOG.warning("dropped a malformed reply from the sync server: %r", frame[:100])
            return
        if request_id == 0:  # a pong, or a notice nobody asked for (the run was aborted)
            if self.on_notice is not None and not protocol.is_success(frame):
                self.on_notice(frame)
            return
        with self._pending_lock:
            pending = self._pending.get(request_id)
            if pending is not None:
                pending.reply = frame
                if pending.event is not None:
                    pending.event.set()

    def _check_silence(self, now: float) -> None:
        with self._pending_lock:
            for p in self._pending.values():
                if not p.done and now - max(self._last_heard, p.sent_at) > p.silence:
                    self._settle(p, SyncUnavailable(self._silence_message(p)))

    def _silence_message(self, pending: _Pending) -> str:
        if pending.op == "hello":
            return (
                f"no sync server answering at {self.address} within {pending.silence:g} s"
                + self._handshake
            )
        return (
            f"{pending.op}: the sync server at {self.address} stopped answering "
            f"(nothing heard for {pending.silence:g} s)"
        )

    def _no_answer(self, op: str) -> str:
        return f"{op}: no answer from the sync server at {self.address}" + self._handshake

    # -- the handshake, while joining ------------------------------------------------------

    def joined(self) -> None:
        """The server answered: stop watching the handshake (it costs a socket per client)."""
        with self.io_lock:
            self._stop_monitor()

    def _stop_monitor(self) -> None:
        """Close the monitor (the caller holds io_lock, or the socket is closed)."""
        if self._monitor is None:
            return
        self._poll_items = self._poll_items[:2]
        if not self._sock.closed:
            self._sock.disable_monitor()
        self._monitor.close(0)
        self._monitor = None

    def _handshake_refusal(self) -> SyncUnavailable | None:
        """Read the monitor's events: the error to raise if the server turned us away."""
        from zmq.utils.monitor import parse_monitor_message

        while self._monitor is not None and self._monitor.poll(0):
            event = parse_monitor_message(self._monitor.recv_multipart())
            kind, value = event["event"], event["value"]
            if kind == _SUCCEEDED:
                self._handshake = ""
            elif kind == _FAILED_AUTH:
                return SyncUnavailable(
                    f"the sync server at {self.address} did not accept this client's key "
                    "(CurveZMQ): give the keys directory the server was started with "
                    "(--sync-keys, MHTEST_SYNC_KEYS)"
                )
            elif kind == _FAILED_PROTOCOL and value == _MECHANISM_MISMATCH:
                if self._curve:
                    return SyncUnavailable(
                        f"the sync server at {self.address} does not use CurveZMQ keys and "
                        "this client does: join it without --sync-keys, or start it with them"
                    )
                return SyncUnavailable(
                    f"the sync server at {self.address} requires CurveZMQ keys and this "
                    "client has none: give its keys directory with --sync-keys "
                    "(MHTEST_SYNC_KEYS)"
                )
            elif kind in (_FAILED_PROTOCOL, _FAILED_NO_DETAIL):
                self._handshake = (
                    " (the CurveZMQ handshake failed: is the server key given, server.key "
                    "or MHTEST_SYNC_SERVER_KEY, this server's public key?)"
                    if self._curve
                    else f" (the handshake failed: is {self.address} a sync server?)"
                )
        return None

    # -- waking threads ------------------------------------------------------------------

    @staticmethod
    def _settle(pending: _Pending, error: SyncError) -> None:
        """Fail a request (caller holds _pending_lock, so no follower misses the wake-up)."""
        pending.error = error
        if pending.event is not None:
            pending.event.set()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # a full pipe wakes the leader just as well

    def _wake_followers(self, own: int = 0) -> None:
        """After leading: let a thread still waiting for its reply take the lead.

        `own` is 1 when the leader's own request is still listed (it is not a follower).
        """
        if len(self._pending) <= own:
            return  # nobody else waits: skip the lock
        with self._pending_lock:
            for p in self._pending.values():
                if not p.done and p.event is not None:
                    p.event.set()

    def _fail_all(self, error: SyncError) -> None:
        with self._pending_lock:
            for p in self._pending.values():
                if not p.done:
                    self._settle(p, error)
