"""The sync server's bookkeeping: participants, barriers, posts, locks. No sockets here.

The server feeds every frame it receives to `Coordinator.handle()` and calls `tick()` when
a deadline passes; both append the frames to send to `outbox` as (identity, payload).
Keeping the rules apart from the socket loop lets the loop stay small and lets the rules
be read in one place:

- a barrier/exchange completes when `count` participants reached it; the same name then
  starts a new generation;
- the first waiter whose timeout passes fails the rendezvous for everyone (SyncTimeout);
- a participant that dies (no heartbeat), leaves, or calls abort() fails every wait that
  counts on it (SyncAborted naming it), and releases its locks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Union

from mhtest.sync import protocol
from mhtest.sync.protocol import ProtocolError, Request, RequestParser, reply_error, reply_ok

LOG = logging.getLogger(__name__)

Expected = Union[list, int, None]
LIVENESS_BEATS = 6  # missed heartbeats (0.5 s each by default) before a participant is dead
LIVENESS_CHECK_INTERVAL = 0.2  # seconds between scans for silent participants
MAX_FORGOTTEN = 10_000  # identities of removed participants remembered for error messages


@dataclass
class Participant:
    """A connected client, known by the name it said hello with."""

    name: str
    identity: bytes
    liveness: float  # seconds of silence after which it is declared dead
    last_seen: float
    count: int | None = None  # its default count for count=None


@dataclass
class Waiter:
    """One pending request that gets its reply later."""

    participant: str
    identity: bytes
    request_id: int
    deadline: float
    timeout: float
    data: Any = None
    count: int = 1


@dataclass
class Rendezvous:
    """A barrier or exchange in progress (one generation of its name)."""

    kind: str
    name: str
    count: int
    generation: int
    waiters: dict[str, Waiter] = field(default_factory=dict)
    deadline: float = float("inf")  # the earliest waiter deadline

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name!r}"


@dataclass
class LockState:
    """Who holds a lock and who queues for it."""

    holder: str | None = None
    queue: list[Waiter] = field(default_factory=list)


def _names(names: Any) -> str:
    return ", ".join(names) if names else "none"


class Coordinator:
    """All sync state of one server; single-threaded by design (the server loop's thread)."""

    def __init__(self, expected: Expected = None) -> None:
        if isinstance(expected, (list, tuple)):
            self.expected_names: list[str] | None = [str(n) for n in expected]
            self.expected_count: int | None = len(self.expected_names)
        else:
            self.expected_names = None
            self.expected_count = expected
        self.outbox: list[tuple[bytes, bytes]] = []
        self.participants: dict[str, Participant] = {}
        self.by_identity: dict[bytes, str] = {}
        self.gone: dict[str, str] = {}  # name -> why it is gone (died, left)
        self.forgotten: dict[bytes, str] = {}  # identity -> why (to explain a late request)
        self.rendezvous: dict[tuple[str, str], Rendezvous] = {}
        self.generations: dict[tuple[str, str], int] = {}
        self.posts: dict[str, dict[str, Any]] = {}
        self.waits: dict[str, list[Waiter]] = {}
        self.locks: dict[str, LockState] = {}
        self.aborted: tuple[str, str] | None = None  # (by, reason) until everyone left
        self.next_liveness_check = 0.0
        self._parser = RequestParser()
        self._ops = {op: getattr(self, "_op_" + op) for op in protocol.OPS if op != "hello"}

    # -- entry points --------------------------------------------------------------------

    def handle(self, identity: bytes, frame: bytes, now: float) -> None:
        """Process one frame from `identity`; malformed ones are logged and dropped."""
        try:
            req = self._parser.parse(frame)
        except ProtocolError as exc:
            LOG.warning("dropped a malformed message from %s: %s", identity.hex()[:16], exc)
            if exc.request_id is not None:
                self._send(identity, reply_error(exc.request_id, "invalid", str(exc)))
            return
        if req.op == "hello":
            self._hello(identity, req, now)
            return
        name = self.by_identity.get(identity)
        if name is None:
            if req.op not in ("bye", "ping"):
                why = self.forgotten.get(identity, "it never said hello")
                msg = f"this client is not a participant of the sync server: {why}"
                self._send(identity, reply_error(req.id, "refused", msg))
            return
        participant = self.participants[name]
        participant.last_seen = now
        self._ops[req.op](participant, req, now)

    def tick(self, now: float) -> None:
        """Fail waits whose timeout passed and declare silent participants dead."""
        if now >= self.next_liveness_check:
            self.next_liveness_check = now + LIVENESS_CHECK_INTERVAL
            for p in list(self.participants.values()):
                if now - p.last_seen > p.liveness:
                    LOG.warning("participant %s stopped answering: declared dead", p.name)
                    why = f"{p.name} stopped answering (no heartbeat for {p.liveness:g} s)"
                    self._remove(p, why)
        for rv in list(self.rendezvous.values()):
            if rv.deadline <= now:
                late = min(rv.waiters.values(), key=lambda w: w.deadline)
                self._timeout_rendezvous(rv, late)
        for name, waiters in list(self.waits.items()):
            for w in [w for w in waiters if w.deadline <= now]:
                posted = list(self.posts.get(name, {}))
                self._fail_one(
                    w,
                    "timeout",
                    f"wait {name!r} timed out after {w.timeout:g} s: {len(posted)} of "
                    f"{w.count} posts (posted: {_names(posted)})",
                    name=name,
                    arrived=posted,
                    missing=self._missing(posted),
                )
                waiters.remove(w)
        for name, lock in self.locks.items():
            for w in [w for w in lock.queue if w.deadline <= now]:
                self._fail_one(
                    w,
                    "timeout",
                    f"lock {name!r} not acquired within {w.timeout:g} s (held by {lock.holder})",
                    name=name,
                    arrived=[lock.holder] if lock.holder else [],
                )
                lock.queue.remove(w)

    def next_deadline(self) -> float | None:
        """The earliest time tick() has something to do (None when nothing waits)."""
        times = [self.next_liveness_check] if self.participants else []
        times += [rv.deadline for rv in self.rendezvous.values()]
        times += [w.deadline for ws in self.waits.values() for w in ws]
        times += [w.deadline for lk in self.locks.values() for w in lk.queue]
        return min(times) if times else None

    # -- operations ----------------------------------------------------------------------

    def _hello(self, identity: bytes, req: Request, now: float) -> None:
        name = req.participant
        current = self.participants.get(name)
        if current is not None and current.identity != identity:
            LOG.warning("refused a second participant named %s", name)
            msg = (
                f"participant name {name!r} is already taken by a connected client; "
                "give each participant its own name (--sync-participant, MHTEST_SYNC_PARTICIPANT)"
            )
            self._send(identity, reply_error(req.id, "refused", msg))
            return
        old = self.by_identity.get(identity)
        if old is not None and old != name:
            self._send(identity, reply_error(req.id, "refused", f"already joined as {old!r}"))
            return
        liveness = max(LIVENESS_BEATS * req.heartbeat, 1.0)
        self.participants[name] = Participant(name, identity, liveness, now, req.count)
        self.by_identity[identity] = name
        self.gone.pop(name, None)
        LOG.info("participant %s joined", name)
        self._send(identity, reply_ok(req.id, {"expected": self.expected_names}))

    def _op_ping(self, p: Participant, req: Request, now: float) -> None:
        self._send(p.identity, reply_ok(req.id, "pong"))

    def _op_bye(self, p: Participant, req: Request, now: float) -> None:
        self._remove(p, f"{p.name} left (closed its sync client)")
        self._send(p.identity, reply_ok(req.id))

    def _op_abort(self, p: Participant, req: Request, now: float) -> None:
        self._abort(p.name, req.reason or "no reason given")
        self._send(p.identity, reply_ok(req.id))

    def _abort(self, by: str, reason: str) -> None:
        """Fail every wait with `reason`, and refuse new ones until everyone has left."""
        LOG.warning("participant %s aborted the job: %s", by, reason)
        self.aborted = (by, reason)
        message = f"aborted by {by}: {reason}"
        for rv in list(self.rendezvous.values()):
            self._abort_rendezvous(rv, message, by=by, reason=reason)
        for name, waiters in list(self.waits.items()):
            for w in waiters:
                self._fail_one(w, "aborted", message, name=name, by=by, reason=reason)
            del self.waits[name]
        for name, lock in self.locks.items():
            for w in lock.queue:
                self._fail_one(w, "aborted", message, name=name, by=by, reason=reason)
            lock.queue.clear()

    def declare_gone(self, name: str, reason: str | None = None) -> bool:
        """Speak for a participant that has ended (a worker whose test is over).

        With a `reason` (it ended badly) everyone's waits are aborted with it, connected
        or not. Without one, nobody waits for `name` any more, unless it is still
        connected: then its own goodbye, or its heartbeats stopping, will tell the others.
        Returns False when there was nothing to do.
        """
        connected = name in self.participants
        if reason is not None:
            self._abort(name, reason)
        if connected:
            return reason is not None
        self._forget(name, reason or f"{name} left (its test ended)")
        return True

    def _resolve_count(self, p: Participant, req: Request, what: str) -> int | None:
        count = req.count or p.count or self.expected_count
        if count is None:
            self._send(
                p.identity,
                reply_error(
                    req.id,
                    "invalid",
                    f"{what}: participant count unknown; pass count=, set MHTEST_SYNC_COUNT "
                    "(--sync-count), or start the server with the expected participants",
                ),
            )
        return count

    def _refuse_if_aborted(self, p: Participant, req: Request, what: str) -> bool:
        if self.aborted is None:
            return False
        by, reason = self.aborted
        self._send(
            p.identity,
            reply_error(
                req.id,
                "aborted",
                f"{what}: aborted by {by}: {reason}",
                name=req.name,
                by=by,
                reason=reason,
            ),
        )
        return True

    def _op_barrier(self, p: Participant, req: Request, now: float) -> None:
        self._arrive("barrier", p, req, now)

    def _op_exchange(self, p: Participant, req: Request, now: float) -> None:
        self._arrive("exchange", p, req, now)

    def _arrive(self, kind: str, p: Participant, req: Request, now: float) -> None:
        count = req.count or p.count or self.expected_count
        if count is None or self.aborted is not None:
            what = f"{kind} {req.name!r}"
            self._resolve_count(p, req, what)  # both send the error reply
            if count is not None:
                self._refuse_if_aborted(p, req, what)
            return
        key = (kind, req.name)
        rv = self.rendezvous.get(key)
        if rv is None:
            generation = self.generations.get(key, 0) + 1
            self.generations[key] = generation
            rv = self.rendezvous[key] = Rendezvous(kind, req.name, count, generation)
        if rv.count != count:
            first = next(iter(rv.waiters))
            msg = f"{rv.label}: {first} waits for {rv.count} participants, {p.name} for {count}"
            self._send(p.identity, reply_error(req.id, "invalid", msg))
            return
        if p.name in rv.waiters:
            msg = f"{rv.label}: {p.name} is already waiting there"
            self._send(p.identity, reply_error(req.id, "invalid", msg))
            return
        deadline = now + req.timeout
        rv.waiters[p.name] = Waiter(p.name, p.identity, req.id, deadline, req.timeout, req.data)
        if deadline < rv.deadline:
            rv.deadline = deadline
        if len(rv.waiters) >= rv.count:
            self._complete(rv)
            return
        if not self.gone or self.expected_names is None:
            return
        doomed = [n for n in self._missing(rv.waiters) if n in self.gone]
        if doomed:
            why = "; ".join(self.gone[n] for n in doomed)
            self._abort_rendezvous(rv, f"{rv.label} cannot complete: {why}", by=doomed[0])

    def _complete(self, rv: Rendezvous) -> None:
        del self.rendezvous[(rv.kind, rv.name)]
        if rv.kind == "exchange":
            result: Any = {name: w.data for name, w in rv.waiters.items()}
        else:
            result = {"generation": rv.generation}  # small: every waiter parses it
        encoded = protocol.encode_value(result)
        for w in rv.waiters.values():
            self._send(w.identity, protocol.reply_ok_encoded(w.request_id, encoded))

    def _op_post(self, p: Participant, req: Request, now: float) -> None:
        posted = self.posts.setdefault(req.name, {})
        posted[p.name] = req.data
        self._send(p.identity, reply_ok(req.id))
        waiters = self.waits.get(req.name, [])
        for w in [w for w in waiters if len(posted) >= w.count]:
            self._send(w.identity, reply_ok(w.request_id, posted))
            waiters.remove(w)

    def _op_wait(self, p: Participant, req: Request, now: float) -> None:
        count = req.count or 1
        posted = self.posts.get(req.name, {})
        if len(posted) >= count:
            self._send(p.identity, reply_ok(req.id, posted))
            return
        if self._refuse_if_aborted(p, req, f"wait {req.name!r}"):
            return
        self.waits.setdefault(req.name, []).append(
            Waiter(p.name, p.identity, req.id, now + req.timeout, req.timeout, count=count)
        )

    def _op_lock(self, p: Participant, req: Request, now: float) -> None:
        lock = self.locks.setdefault(req.name, LockState())
        if lock.holder is None:
            lock.holder = p.name
            self._send(p.identity, reply_ok(req.id))
        elif lock.holder == p.name:
            msg = f"lock {req.name!r} is already held by {p.name}"
            self._send(p.identity, reply_error(req.id, "invalid", msg))
        else:
            lock.queue.append(Waiter(p.name, p.identity, req.id, now + req.timeout, req.timeout))

    def _op_unlock(self, p: Participant, req: Request, now: float) -> None:
        lock = self.locks.get(req.name)
        if lock is None or lock.holder != p.name:
            msg = f"lock {req.name!r} is not held by {p.name}"
            self._send(p.identity, reply_error(req.id, "invalid", msg))
            return
        self._release(req.name, lock)
        self._send(p.identity, reply_ok(req.id))

    # -- failure handling ----------------------------------------------------------------

    def _release(self, name: str, lock: LockState) -> None:
        lock.holder = None
        if lock.queue:
            nxt = lock.queue.pop(0)
            lock.holder = nxt.participant
            self._send(nxt.identity, reply_ok(nxt.request_id))
        else:
            del self.locks[name]

    def _remove(self, p: Participant, why: str) -> None:
        """Forget a participant that died or left; fail what counted on it."""
        del self.participants[p.name]
        self.by_identity.pop(p.identity, None)
        if len(self.forgotten) >= MAX_FORGOTTEN:
            self.forgotten.pop(next(iter(self.forgotten)))
        self.forgotten[p.identity] = why
        self._forget(p.name, why)

    def _forget(self, gone: str, why: str) -> None:
        """`gone` will not come (back): fail what counted on it, release its locks."""
        self.gone[gone] = why
        for rv in list(self.rendezvous.values()):
            arrived = gone in rv.waiters
            counts_on_it = self.expected_names is None or gone in self.expected_names
            if arrived or counts_on_it:
                rv.waiters.pop(gone, None)
                if rv.waiters:
                    self._abort_rendezvous(rv, f"{rv.label} aborted: {why}", by=gone)
                else:
                    del self.rendezvous[(rv.kind, rv.name)]
        for name, waiters in list(self.waits.items()):
            waiters[:] = [w for w in waiters if w.participant != gone]
            if gone in self.posts.get(name, {}):
                continue
            if self.expected_names is not None and gone not in self.expected_names:
                continue
            for w in waiters:
                self._fail_one(
                    w,
                    "aborted",
                    f"wait {name!r} aborted: {why}",
                    name=name,
                    by=gone,
                    reason=why,
                    arrived=list(self.posts.get(name, {})),
                )
            waiters.clear()
        for name, lock in list(self.locks.items()):
            lock.queue = [w for w in lock.queue if w.participant != gone]
            if lock.holder == gone:
                LOG.info("released lock %r held by %s", name, gone)
                self._release(name, lock)
        if not self.participants:
            self.aborted = None  # everyone left: the next job starts clean

    def _missing(self, arrived: Any) -> list[str]:
        names = self.expected_names if self.expected_names is not None else self.participants
        return [n for n in names if n not in arrived]

    def _abort_rendezvous(self, rv: Rendezvous, message: str, by: str, reason: str = "") -> None:
        self.rendezvous.pop((rv.kind, rv.name), None)
        arrived = list(rv.waiters)
        missing = self._missing(rv.waiters)
        full = f"{message} (arrived: {_names(arrived)}; missing: {_names(missing)})"
        for w in rv.waiters.values():
            self._fail_one(
                w,
                "aborted",
                full,
                name=rv.name,
                by=by,
                reason=reason or message,
                arrived=arrived,
                missing=missing,
            )

    def _timeout_rendezvous(self, rv: Rendezvous, late: Waiter) -> None:
        self.rendezvous.pop((rv.kind, rv.name), None)
        arrived = list(rv.waiters)
        missing = self._missing(rv.waiters)
        unnamed = rv.count - len(arrived) - len(missing)
        more = f" and {unnamed} not connected" if unnamed > 0 else ""
        msg = (
            f"{rv.label} timed out after {late.timeout:g} s ({late.participant}'s timeout): "
            f"{len(arrived)} of {rv.count} arrived (arrived: {_names(arrived)}; "
            f"missing: {_names(missing)}{more})"
        )
        for w in rv.waiters.values():
            self._fail_one(w, "timeout", msg, name=rv.name, arrived=arrived, missing=missing)

    def _fail_one(self, w: Waiter, error_type: str, message: str, **details: Any) -> None:
        self._send(w.identity, reply_error(w.request_id, error_type, message, **details))

    def _send(self, identity: bytes, payload: bytes) -> None:
        self.outbox.append((identity, payload))
