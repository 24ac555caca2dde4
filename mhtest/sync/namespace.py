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
  who is told why, and nobody else notices;
- a transient connection (one `mhtest sync` command of a shell worker) speaks for its
  participant while it lasts: when it ends or dies, its own waits are withdrawn and its
  locks released, but the participant is not gone (its worker's end says that).

With a `record` (mhtest.sync.record.SyncRecord) it is told what happened, for the results.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from mhtest.sync import protocol
from mhtest.sync.mailbox import PostsAndLocks
from mhtest.sync.protocol import Request, reply_error, reply_ok, reply_ok_encoded
from mhtest.sync.state import Budget, Expected, LockState, Participant, Rendezvous, Waiter, names

LOG = logging.getLogger(__name__)

MAX_REPLY_DATA = protocol.MAX_MESSAGE_BYTES - protocol.REPLY_OVERHEAD


__all__ = ["OPERATIONS", "Budget", "Expected", "LockState", "Namespace", "Participant", "Waiter"]


class Namespace(PostsAndLocks):
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
        record: Callable[..., None] | None = None,
    ) -> None:
        self.group = group
        self.record = record
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
        self.transients = 0  # transient connections now connected
        self.stored = 0  # bytes of this namespace in the budget

    # -- membership ----------------------------------------------------------------------

    def join(self, p: Participant) -> None:
        self.idle_since = None
        if p.transient:
            self.transients += 1
            return
        self.participants[p.name] = p
        self.gone.pop(p.name, None)
        if self.record is not None:
            self.record("join", p.name)

    def remove(self, p: Participant, why: str, now: float) -> None:
        """`p` died or left: fail what counted on it (a transient one: withdraw its own)."""
        if p.transient:
            self.transients -= 1
            self._withdraw(p)
        else:
            del self.participants[p.name]
            if self.record is not None:
                self.record("leave", p.name, why)
            self.forget(p.name, why)
        if not self.participants and not self.transients:
            self.idle_since = now

    def _withdraw(self, p: Participant) -> None:
        """A transient connection ended: its waits go, its locks are released."""
        mine = p.identity
        for rv in list(self.rendezvous.values()):
            w = rv.waiters.get(p.name)
            if w is not None and w.identity == mine:
                del rv.waiters[p.name]
                if not rv.waiters:
                    self._close(rv)
        for waiters in self.waits.values():
            waiters[:] = [w for w in waiters if w.identity != mine]
        for name, lock in list(self.locks.items()):
            lock.queue = [w for w in lock.queue if w.identity != mine]
            if lock.holder_identity == mine:
                LOG.info("released lock %r held by %s (its connection ended)", name, p.name)
                self._release(name, lock)

    def forget(self, gone: str, why: str) -> None:
        """`gone` will not come (back): fail what counted on it, release its locks."""
        self.gone[gone] = why
        if self.record is not None:
            self.record("gone", gone, why)
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
            posted = self.posts.get(name, {})
            if gone in posted:
                continue
            if self.expected_names is not None and gone not in self.expected_names:
                continue
            doomed = [w for w in waiters if w.senders is None or not self._possible(w, posted)]
            for w in doomed:
                self._wait_ended(w, name, "aborted")
                self._fail_one(
                    w,
                    "aborted",
                    f"wait {name!r} aborted: {why}",
                    name=name,
                    by=gone,
                    reason=why,
                    arrived=list(posted),
                )
            waiters[:] = [w for w in waiters if w not in doomed]
        for name, lock in list(self.locks.items()):
            lock.queue = [w for w in lock.queue if w.participant != gone]
            if lock.holder == gone:
                LOG.info("released lock %r held by %s", name, gone)
                self._release(name, lock)
        if not self.participants and not self.transients:
            self.aborted = None  # everyone left: the next job starts clean

    def abort(self, by: str, reason: str) -> None:
        """Fail every wait with `reason`, and refuse new ones until everyone has left."""
        LOG.warning("participant %s aborted the job: %s", by, reason)
        self.aborted = (by, reason)
        if self.record is not None:
            self.record("abort", by, reason)
        message = f"aborted by {by}: {reason}"
        for rv in list(self.rendezvous.values()):
            self._abort_rendezvous(rv, message, by=by, reason=reason)
        for name, waiters in list(self.waits.items()):
            for w in waiters:
                self._wait_ended(w, name, "aborted")
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
                self._wait_ended(w, name, "timeout")
                message = f"wait {name!r} timed out after {w.timeout:g} s: "
                if w.senders is None:
                    missing = [n for n in self._missing(posted) if n not in posted]
                    message += f"{len(posted)} of {w.count} posts (posted: {names(posted)})"
                else:
                    missing = [n for n in w.senders if n not in posted]
                    got = len(w.senders) - len(missing)
                    message += f"{got} of {w.count} posts (missing: {names(missing)})"
                self._fail_one(w, "timeout", message, name=name, arrived=posted, missing=missing)
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
        if self.record is not None:
            self._record_rendezvous(rv, "done")
        if rv.kind == "exchange":
            encoded = protocol.encode_members({n: w.data for n, w in rv.waiters.items()})
        else:
            encoded = protocol.encode_value({"generation": rv.generation})  # small: all parse it
        for w in rv.waiters.values():
            self._send(w.identity, reply_ok_encoded(w.request_id, encoded))

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

    def _record_rendezvous(self, rv: Rendezvous, outcome: str, by: str = "", why: str = "") -> None:
        arrivals = [(n, w.since) for n, w in rv.waiters.items()]
        self.record(
            rv.kind, rv.name, rv.generation, rv.count, outcome, arrivals, by or None, why or None
        )

    def _abort_rendezvous(self, rv: Rendezvous, message: str, by: str, reason: str = "") -> None:
        self._close(rv)
        if self.record is not None:
            self._record_rendezvous(rv, "aborted", by, reason or message)
        arrived = list(rv.waiters)
        missing = self._missing(rv.waiters)
        full = f"{message} (arrived: {names(arrived)}; missing: {names(missing)})"
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
            f"{len(arrived)} of {rv.count} arrived (arrived: {names(arrived)}; "
            f"missing: {names(missing)}{more})"
        )
        if self.record is not None:
            self._record_rendezvous(rv, "timeout", late.participant, msg)
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
