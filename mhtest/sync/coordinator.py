"""The sync server's bookkeeping: who is connected, in which namespace. No sockets here.

The server feeds every frame it receives to `Coordinator.handle()` and calls `tick()` when
a deadline passes; both append the frames to send to `outbox` as (identity, payload).
Keeping the rules apart from the socket loop lets the loop stay small and lets the rules
be read in one place: here, who may join and who has stopped answering; in
mhtest.sync.namespace, what barriers, exchanges, posts and locks do.

Every participant says hello with a group ("" unless its run gave --sync-group) and meets
only the participants of that group: a server shared by several runs keeps one Namespace
per group. A namespace that nobody has been connected to for `idle_expiry` seconds is
dropped with all it held. The data all namespaces hold together is capped (`Budget`).
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from mhtest.sync import protocol
from mhtest.sync.namespace import OPERATIONS, Budget, Expected, Namespace, Participant
from mhtest.sync.protocol import ProtocolError, Request, RequestParser, reply_error, reply_ok

LOG = logging.getLogger(__name__)

__all__ = ["Coordinator", "Expected"]

LIVENESS_BEATS = 6  # missed heartbeats (0.5 s each by default) before a participant is dead
LIVENESS_CHECK_INTERVAL = 0.2  # seconds between scans for silent participants
MAX_FORGOTTEN = 10_000  # identities of removed participants remembered for error messages
MAX_NAMESPACES = 1_000
DEFAULT_MAX_STORED_BYTES = 128 * 1024 * 1024
SHARED_IDLE_EXPIRY = 60.0  # idle_expiry of a server several runs share (sync-server)


class Coordinator:
    """All sync state of one server; single-threaded by design (the server loop's thread).

    `expected` (names or a count) applies to every namespace; `idle_expiry` (seconds, None
    for never) is how long a namespace nobody is connected to keeps its state.
    """

    def __init__(
        self,
        expected: Expected = None,
        *,
        max_stored_bytes: int = DEFAULT_MAX_STORED_BYTES,
        idle_expiry: float | None = None,
        record: Callable[..., None] | None = None,
    ) -> None:
        self.expected = expected
        self.record = record  # a mhtest.sync.record.SyncRecord, told what happens
        self.expected_names = list(expected) if isinstance(expected, (list, tuple)) else None
        self.idle_expiry = idle_expiry
        self.budget = Budget(max_stored_bytes)
        self.outbox: list[tuple[bytes, bytes]] = []
        self.namespaces: dict[str, Namespace] = {}
        self.by_identity: dict[bytes, Participant] = {}
        self.forgotten: dict[bytes, str] = {}  # identity -> why (to explain a late request)
        self.next_liveness_check = 0.0
        self._parser = RequestParser()
        self._ops = OPERATIONS

    # -- entry points --------------------------------------------------------------------

    def handle(self, identity: bytes, frame: bytes, now: float, user: str | None = None) -> None:
        """Process one frame from `identity`; malformed ones are logged and dropped.

        `user` is the participant name the connection's CurveZMQ key is bound to, when
        the server binds keys to names: then nobody may speak under another name.
        """
        try:
            req = self._parser.parse(frame)
        except ProtocolError as exc:
            LOG.warning("dropped a malformed message from %s: %s", identity.hex()[:16], exc)
            if exc.request_id is not None:
                self._send(identity, reply_error(exc.request_id, "invalid", str(exc)))
            return
        if req.op == "hello":
            self._hello(identity, req, now, user)
            return
        p = self.by_identity.get(identity)
        if p is None:
            if req.op not in ("bye", "ping"):
                why = self.forgotten.get(identity, "it never said hello")
                msg = f"this client is not a participant of the sync server: {why}"
                self._send(identity, reply_error(req.id, "refused", msg))
            return
        if user is not None and user != p.name:
            self._refuse_key(identity, req, user, f"speak for {p.name!r}")
            return
        p.last_seen = now
        self._ops[req.op](p.ns, p, req, now)

    def refuse_frames(self, identity: bytes, first: bytes, frames: int) -> None:
        """A message of `frames` frames came (a request is one): tell its sender if we can."""
        LOG.warning("dropped a message of %d frames from %s", frames, identity.hex()[:16])
        request_id = protocol.reply_id(first)  # read the same way from a request
        if request_id is not None:
            msg = f"a sync request is one frame; this message had {frames - 1}"
            self._send(identity, reply_error(request_id, "invalid", msg))

    def tick(self, now: float) -> None:
        """Fail waits whose timeout passed, declare silent participants dead, drop idle
        namespaces."""
        if now >= self.next_liveness_check:
            self.next_liveness_check = now + LIVENESS_CHECK_INTERVAL
            for p in list(self.by_identity.values()):
                if now - p.last_seen > p.liveness:
                    LOG.warning("participant %s stopped answering: declared dead", p.name)
                    why = f"{p.name} stopped answering (no heartbeat for {p.liveness:g} s)"
                    self._remove(p, why, now)
        for group, ns in list(self.namespaces.items()):
            if ns.idle_since is not None and self._expired(ns, now):
                self._drop(group, ns)
            else:
                ns.tick(now)

    def next_deadline(self) -> float | None:
        """The earliest time tick() has something to do (None when nothing waits)."""
        times = [self.next_liveness_check] if self.by_identity else []
        for ns in self.namespaces.values():
            deadline = ns.next_deadline()
            if deadline is not None:
                times.append(deadline)
            if ns.idle_since is not None and self.idle_expiry is not None:
                times.append(ns.idle_since + self.idle_expiry)
        return min(times) if times else None

    def declare_gone(self, name: str, reason: str | None = None, group: str = "") -> bool:
        """Speak for a participant that has ended (a worker whose test is over).

        With a `reason` (it ended badly) everyone's waits are aborted with it, connected
        or not. Without one, nobody waits for `name` any more, unless it is still
        connected: then its own goodbye, or its heartbeats stopping, will tell the others.
        Returns False when there was nothing to do.
        """
        ns = self.namespaces.get(group) or self._namespace(group, time.monotonic())
        connected = name in ns.participants
        if reason is not None:
            ns.abort(name, reason)
        if connected:
            return reason is not None
        ns.forget(name, reason or f"{name} left (its test ended)")
        return True

    # -- membership ----------------------------------------------------------------------

    def _hello(self, identity: bytes, req: Request, now: float, user: str | None) -> None:
        name, group = req.participant, req.group
        if user is not None and user != name:
            self._refuse_key(identity, req, user, f"join as {name!r}")
            return
        ns = self.namespaces.get(group)
        current = ns.participants.get(name) if ns is not None else None
        # Transient connections (shell commands) speak for a name alongside its client.
        if current is not None and current.identity != identity and not req.transient:
            LOG.warning("refused a second participant named %s", name)
            msg = (
                f"participant name {name!r} is already taken by a connected client; "
                "give each participant its own name (--sync-participant, MHTEST_SYNC_PARTICIPANT)"
            )
            self._send(identity, reply_error(req.id, "refused", msg))
            return
        old = self.by_identity.get(identity)
        if old is not None and (old.name != name or old.ns.group != group):
            self._send(identity, reply_error(req.id, "refused", f"already joined as {old.name!r}"))
            return
        if ns is None:
            if group and len(self.namespaces) >= MAX_NAMESPACES:  # the common one always fits
                msg = f"the sync server serves {MAX_NAMESPACES} groups already; try again later"
                self._send(identity, reply_error(req.id, "refused", msg))
                return
            ns = self._namespace(group, now)
        liveness = max(LIVENESS_BEATS * req.heartbeat, 1.0)
        p = Participant(name, identity, liveness, now, ns, req.count, req.transient)
        ns.join(p)
        self.by_identity[identity] = p
        if not req.transient:
            LOG.info("participant %s joined%s", name, f" (group {group})" if group else "")
        self._send(identity, reply_ok(req.id, {"expected": self.expected_names}))

    def _refuse_key(self, identity: bytes, req: Request, user: str, what: str) -> None:
        LOG.warning("refused the key of participant %s: it tried to %s", user, what)
        msg = f"this client's CurveZMQ key is the key of participant {user!r}: it cannot {what}"
        self._send(identity, reply_error(req.id, "refused", msg))

    def _namespace(self, group: str, now: float) -> Namespace:
        ns = Namespace(
            group, self.expected, self.outbox, self.budget, self._remove, now, self.record
        )
        self.namespaces[group] = ns
        return ns

    def _expired(self, ns: Namespace, now: float) -> bool:
        return self.idle_expiry is not None and now - ns.idle_since >= self.idle_expiry

    def _drop(self, group: str, ns: Namespace) -> None:
        """Forget an idle namespace and give its data back to the budget."""
        del self.namespaces[group]
        self.budget.used -= ns.stored
        LOG.info("dropped the state of sync group %r: nobody connected to it", group or "")

    def _remove(self, p: Participant, why: str, now: float) -> None:
        """Forget a participant that died or left; fail what counted on it."""
        self.by_identity.pop(p.identity, None)
        if len(self.forgotten) >= MAX_FORGOTTEN:
            self.forgotten.pop(next(iter(self.forgotten)))
        self.forgotten[p.identity] = why
        p.ns.remove(p, why, now)

    def _send(self, identity: bytes, payload: bytes) -> None:
        self.outbox.append((identity, payload))
