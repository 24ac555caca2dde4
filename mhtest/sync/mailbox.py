"""Posts, waits and locks of a sync namespace (the part of Namespace that is no rendezvous).

PostsAndLocks is a base of mhtest.sync.namespace.Namespace, kept apart to keep each
module readable; it uses the namespace's posts, waits, locks, gone, record and its
_send, _fail_one, _store and _refuse_if_aborted.
"""

from __future__ import annotations

from typing import Any

from mhtest.sync import protocol
from mhtest.sync.protocol import Request, reply_error, reply_ok, reply_ok_encoded
from mhtest.sync.state import LockState, Participant, Waiter, enough


class PostsAndLocks:
    """post/wait (with senders) and lock/unlock; see mhtest.sync.namespace."""

    posts: dict[str, dict[str, bytes]]
    post_sizes: dict[str, int]
    waits: dict[str, list[Waiter]]
    locks: dict[str, LockState]
    gone: dict[str, str]
    record: Any

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
        if self.record is not None:
            self.record("post", p.name, req.name)
        waiters = self.waits.get(req.name, [])
        ready = [w for w in waiters if enough(w, posted)]
        if ready:
            encoded = protocol.encode_members(posted)
            for w in ready:
                self._wait_ended(w, req.name, "done")
                self._send(w.identity, reply_ok_encoded(w.request_id, encoded))
                waiters.remove(w)

    def _op_wait(self, p: Participant, req: Request, now: float) -> None:
        senders = req.senders
        count = req.count or (len(senders) if senders else 1)
        w = Waiter(p.name, p.identity, req.id, now + req.timeout, req.timeout, None, count, senders)
        posted = self.posts.get(req.name, {})
        if enough(w, posted):
            self._wait_ended(w, req.name, "done")
            self._send(p.identity, reply_ok_encoded(req.id, protocol.encode_members(posted)))
            return
        if self._refuse_if_aborted(p, req, f"wait {req.name!r}"):
            return
        if senders is not None and not self._possible(w, posted):
            gone = [n for n in senders if n in self.gone and n not in posted]
            why = "; ".join(self.gone[n] for n in gone)
            self._fail_one(
                w,
                "aborted",
                f"wait {req.name!r} cannot complete: {why}",
                name=req.name,
                by=gone[0],
                reason=why,
                arrived=list(posted),
                missing=[n for n in senders if n not in posted],
            )
            return
        self.waits.setdefault(req.name, []).append(w)

    def _possible(self, w: Waiter, posted: dict[str, bytes]) -> bool:
        """Whether the senders a wait names can still post enough (some may be gone)."""
        if w.senders is None:
            return True
        could = sum(1 for n in w.senders if n in posted or n not in self.gone)
        return could >= w.count

    def _wait_ended(self, w: Waiter, name: str, outcome: str) -> None:
        if self.record is not None:
            self.record("wait", w.since, w.participant, name, outcome)

    def _op_lock(self, p: Participant, req: Request, now: float) -> None:
        lock = self.locks.setdefault(req.name, LockState())
        if lock.holder is None:
            lock.holder, lock.holder_identity = p.name, p.identity
            self._send(p.identity, reply_ok(req.id))
            if self.record is not None:
                self.record("lock", now, p.name, req.name)
        elif lock.holder == p.name:
            msg = f"lock {req.name!r} is already held by {p.name}"
            self._send(p.identity, reply_error(req.id, "invalid", msg))
        else:
            lock.queue.append(Waiter(p.name, p.identity, req.id, now + req.timeout, req.timeout))

    def _op_unlock(self, p: Participant, req: Request, now: float) -> None:
        lock = self.locks.get(req.name)
        if (
            lock is None
            or lock.holder != p.name
            or (p.transient and lock.holder_identity != p.identity)
        ):
            msg = f"lock {req.name!r} is not held by {p.name}"
            self._send(p.identity, reply_error(req.id, "invalid", msg))
            return
        self._release(req.name, lock)
        self._send(p.identity, reply_ok(req.id))

    # -- failure handling ----------------------------------------------------------------

    def _release(self, name: str, lock: LockState) -> None:
        if self.record is not None:
            self.record("unlock", lock.holder, name)
        lock.holder, lock.holder_identity = None, b""
        if lock.queue:
            nxt = lock.queue.pop(0)
            lock.holder, lock.holder_identity = nxt.participant, nxt.identity
            self._send(nxt.identity, reply_ok(nxt.request_id))
            if self.record is not None:
                self.record("lock", nxt.since, nxt.participant, name)
        else:
            del self.locks[name]
