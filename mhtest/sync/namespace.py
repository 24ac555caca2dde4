"""The sync state of one group of participants: barriers, exchanges, posts, locks. No sockets.

A server keeps one Namespace per group (mhtest.sync.coordinator routes each participant to
its own); nothing done in one (leaving, aborting, posting) reaches another. The rules:

- a barrier/exchange completes when `count` participants reached it; the same name then
  starts a new generation;
- the first waiter whose timeout passes fails the rendezvous for everyone (SyncTimeout);
- a participant that dies (no heartbeat), leaves, or calls abort() fails every wait that
  counts on it (SyncAborted naming it), and releases its locks;
- what an exchange, or the posts of one name, return must fit in one message, and the data
  the server holds must fit its Budget: past either, the request is refused to its sender,
  who is told why, and nobody else notices.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from mhtest.sync import protocol
from mhtest.sync.protocol import Request, reply_error, reply_ok, reply_ok_encoded

LOG = logging.getLogger(__name__)

Expected = Union[list, int, None]
MAX_REPLY_DATA = protocol.MAX_MESSAGE_BYTES - protocol.REPLY_OVERHEAD


@dataclass
class Participant:
    """A connected client, known by the name it said hello with, in its namespace."""

    name: str
    identity: bytes
    liveness: float  # seconds of silence after which it is declared dead
    last_seen: float
    ns: Namespace
    count: int | None = None  # its default count for count=None
    away_since: float | None = None  # silent past its liveness: waited for (rejoin grace)
    #: With a rejoin grace: its requests by id -> the reply (None until it has one), so
    #: that a request sent again after a dropped connection is answered, not run twice.
    recent: dict[int, bytes | None] | None = None


@dataclass
class Waiter:
    """One pending request that gets its reply later."""

    participant: str
    identity: bytes
    request_id: int
    deadline: float
    timeout: float
    data: bytes | None = None  # an exchange's data, encoded
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
    size: int = 2  # bytes of its reply's {name: data, ...}: braces, then each waiter's data

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name!r}"


@dataclass
class LockState:
    """Who holds a lock and who queues for it."""

    holder: str | None = None
    queue: list[Waiter] = field(default_factory=list)


@dataclass
class Budget:
    """The bytes of posted and exchanged data a whole server holds, and the most it may."""

    limit: int
    used: int = 0


def _names(names: Any) -> str:
    return ", ".join(names) if names else "none"


class Namespace:
    """The sync state of one group; single-threaded (the server loop's thread).

    `outbox` collects (identity, payload) to send, `budget` is shared by the server's
    namespaces, `leave(participant, why, now)` is the coordinator's way to remove one.
    """

    def __init__(
        self,
        group: str,
        expected: Expected,
        outbox: list[tuple[bytes, bytes]],
        budget: Budget,
        leave: Callable[[Participant, str, float], None],
        now: float,
    ) -> None:
        self.group = group
        if isinstance(expected, (list, tuple)):
            self.expected_names: list[str] | None = [str(n) for n in expected]
            self.expected_count: int | None = len(self.expected_names)
        else:
            self.expected_names = None
            self.expected_count = expected
        self.outbox = outbox
        self.budget = budget
        self._leave = leave
        self.participants: dict[str, Participant] = {}
        self.gone: dict[str, str] = {}  # name -> why it is gone (died, left)
        self.rendezvous: dict[tuple[str, str], Rendezvous] = {}
        self.generations: dict[tuple[str, str], int] = {}
        self.posts: dict[str, dict[str, bytes]] = {}  # name -> {participant: encoded data}
        self.post_sizes: dict[str, int] = {}  # name -> bytes its posts take in a reply
        self.waits: dict[str, list[Waiter]] = {}
        self.locks: dict[str, LockState] = {}
        self.aborted: tuple[str, str] | None = None  # (by, reason) until everyone left
        self.idle_since: float | None = now  # since when nobody is connected
        self.stored = 0  # bytes of this namespace in the budget

    # -- membership ----------------------------------------------------------------------

    def join(self, p: Participant) -> None:
        self.participants[p.name] = p
        self.gone.pop(p.name, None)
        self.idle_since = None

    def remove(self, p: Participant, why: str, now: float) -> None:
        """`p` died or left: fail what counted on it."""
        del self.participants[p.name]
        self.forget(p.name, why)
        if not self.participants:
            self.idle_since = now

    def forget(self, gone: str, why: str) -> None:
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
                    self._close(rv)
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

    def abort(self, by: str, reason: str) -> None:
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
        # Those not waiting hear of it too, at once (a notice with id 0, like a pong):
        # their tests end with the reason instead of running on to their next call.
        notice = reply_error(0, "aborted", message, by=by, reason=reason)
        for participant in self.participants.values():
            if participant.name != by:
                self._send(participant.identity, notice)

    # -- timers --------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Fail the waits whose timeout passed."""
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
        times = [rv.deadline for rv in self.rendezvous.values()]
        if self.waits:
            times += [w.deadline for ws in self.waits.values() for w in ws]
        if self.locks:
            times += [w.deadline for lk in self.locks.values() for w in lk.queue]
        return min(times) if times else None

    # -- operations ----------------------------------------------------------------------

    def _op_ping(self, p: Participant, req: Request, now: float) -> None:
        self._send(p.identity, reply_ok(req.id, "pong"))

    def _op_bye(self, p: Participant, req: Request, now: float) -> None:
        self._leave(p, f"{p.name} left (closed its sync client)", now)
        self._send(p.identity, reply_ok(req.id))

    def _op_abort(self, p: Participant, req: Request, now: float) -> None:
        self.abort(p.name, req.reason or "no reason given")
        self._send(p.identity, reply_ok(req.id))

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
        data = protocol.encode_value(req.data)
        self._arrive("exchange", p, req, now, data, protocol.member_size(p.name, data))

    def _arrive(
        self,
        kind: str,
        p: Participant,
        req: Request,
        now: float,
        data: bytes | None = None,
        size: int = 0,
    ) -> None:
        count = req.count or p.count or self.expected_count
        if count is None or self.aborted is not None:
            what = f"{kind} {req.name!r}"
            self._resolve_count(p, req, what)  # both send the error reply
            if count is not None:
                self._refuse_if_aborted(p, req, what)
            return
        key = (kind, req.name)
        rv = self.rendezvous.get(key)
        if rv is not None:
            if rv.count != count:
                first = next(iter(rv.waiters))
                msg = f"{rv.label}: {first} waits for {rv.count} participants, {p.name} for {count}"
                self._send(p.identity, reply_error(req.id, "invalid", msg))
                return
            if p.name in rv.waiters:
                msg = f"{rv.label}: {p.name} is already waiting there"
                self._send(p.identity, reply_error(req.id, "invalid", msg))
                return
        if size:
            held = rv.size if rv is not None else 2  # the braces of {name: data, ...}
            if not self._store(p, req, f"{kind} {req.name!r}", held + size, size):
                return
        if rv is None:
            generation = self.generations.get(key, 0) + 1
            self.generations[key] = generation
            rv = self.rendezvous[key] = Rendezvous(kind, req.name, count, generation)
        deadline = now + req.timeout
        rv.waiters[p.name] = Waiter(p.name, p.identity, req.id, deadline, req.timeout, data)
        rv.size += size
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

    def _store(self, p: Participant, req: Request, what: str, reply: int, more: int) -> bool:
        """Take `more` bytes (or give back, if negative) from the budget for data whose
        reply will be `reply` bytes; False, with the refusal sent, if either is too large."""
        size, budget = protocol.format_size, self.budget
        if reply > MAX_REPLY_DATA:
            why = (
                f"{what}: {p.name}'s data would make the reply {size(reply)}, more than the "
                f"{size(protocol.MAX_MESSAGE_BYTES)} a sync message may carry"
            )
        elif more > 0 and budget.used + more > budget.limit:
            why = (
                f"{what}: the sync server already holds {size(budget.used)} of posted and "
                f"exchanged data, and {size(more)} more would pass its {size(budget.limit)} limit"
            )
        else:
            budget.used += more
            self.stored += more
            return True
        why += "; send less (a path or URL to the data)"
        LOG.info("refused %s from %s: %s", what, p.name, why)
        self._send(p.identity, reply_error(req.id, "refused", why, name=req.name))
        return False

    def _complete(self, rv: Rendezvous) -> None:
        self._close(rv)
        if rv.kind == "exchange":
            encoded = protocol.encode_members({n: w.data for n, w in rv.waiters.items()})
        else:
            encoded = protocol.encode_value({"generation": rv.generation})  # small: all parse it
        for w in rv.waiters.values():
            self._send(w.identity, reply_ok_encoded(w.request_id, encoded))

    def _op_post(self, p: Participant, req: Request, now: float) -> None:
        data = protocol.encode_value(req.data)
        posted = self.posts.get(req.name, {})
        old = posted.get(p.name)
        size = protocol.member_size(p.name, data)
        more = size - (protocol.member_size(p.name, old) if old is not None else 0)
        reply = self.post_sizes.get(req.name, 2) + more
        if not self._store(p, req, f"post {req.name!r}", reply, more):
            return
        posted = self.posts.setdefault(req.name, posted)
        posted[p.name] = data
        self.post_sizes[req.name] = reply
        self._send(p.identity, reply_ok(req.id))
        waiters = self.waits.get(req.name, [])
        ready = [w for w in waiters if len(posted) >= w.count]
        if ready:
            encoded = protocol.encode_members(posted)
            for w in ready:
                self._send(w.identity, reply_ok_encoded(w.request_id, encoded))
                waiters.remove(w)

    def _op_wait(self, p: Participant, req: Request, now: float) -> None:
        count = req.count or 1
        posted = self.posts.get(req.name, {})
        if len(posted) >= count:
            self._send(p.identity, reply_ok_encoded(req.id, protocol.encode_members(posted)))
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

    def _give_back(self, size: int) -> None:
        self.budget.used -= size
        self.stored -= size

    def _close(self, rv: Rendezvous) -> None:
        """The rendezvous is over (completed or failed): forget it and its data."""
        del self.rendezvous[(rv.kind, rv.name)]
        if rv.size > 2:
            self._give_back(rv.size - 2)
            rv.size = 2

    def _missing(self, arrived: Any) -> list[str]:
        names = self.expected_names if self.expected_names is not None else self.participants
        return [n for n in names if n not in arrived]

    def _abort_rendezvous(self, rv: Rendezvous, message: str, by: str, reason: str = "") -> None:
        self._close(rv)
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
        self._close(rv)
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


# What each request does: Namespace functions, called with the participant's namespace.
# Not bound methods kept on each namespace, which would make it a reference cycle that only
# the garbage collector frees, with all its data, whenever it next runs.
OPERATIONS: dict[str, Callable[[Namespace, Participant, Request, float], None]] = {
    op: getattr(Namespace, "_op_" + op) for op in protocol.OPS if op != "hello"
}
