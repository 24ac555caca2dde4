"""A participant whose connection drops and comes back within the server's rejoin grace.

Real SyncServer and SyncClients, with a TCP relay between one client and the server that
the test cuts (every connection through it closed, new ones closed at once: what a dropped
SSH connection does to a worker's forwarded sync connection) and restores. Replies sent
meanwhile are lost on the way; the client asks again and gets them, once.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import pytest

from mhtest.sync import SyncAborted, SyncClient, SyncTimeout, protocol
from mhtest.sync.coordinator import Coordinator
from mhtest.sync.server import SyncServer

pytestmark = pytest.mark.timeout(60)

FAST = {"heartbeat": 0.2}  # declared away after 1.2 s of silence


class Relay:
    """127.0.0.1:`port` relayed to the server's port, until `cut()` (see module docstring)."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.cutting = threading.Event()
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cutting.is_set():
                client.close()
                continue
            server = socket.create_connection(self.target)
            with self.lock:
                self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.cutting.set()
        with self.lock:
            for sock in self.open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.open.clear()

    def restore(self) -> None:
        self.cutting.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()


@contextlib.contextmanager
def relay(server: SyncServer) -> Iterator[Relay]:
    r = Relay(server.port)
    try:
        yield r
    finally:
        r.close()


def in_thread(fn) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def call() -> None:
        try:
            out["result"] = fn()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            out["error"] = exc

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread, out


def test_barrier_posts_exchange_and_lock_survive_a_dropped_connection() -> None:
    with SyncServer(expected=["a", "b"], rejoin_grace=20) as server, relay(server) as cut:
        a = SyncClient(cut.address, "a", **FAST)
        b = SyncClient(server.address, "b", **FAST)
        try:
            assert a.rejoin_grace == 20
            a.post("before", 1)
            held = a.lock("disk")
            held.__enter__()
            waiting, outcome = in_thread(lambda: a.barrier("x", timeout=30))
            time.sleep(0.3)  # a reached the barrier
            cut.cut()
            time.sleep(2.0)  # past its liveness: away, waited for
            started = time.monotonic()
            b.barrier("x", timeout=30)  # a's arrival stays: it completes without it
            assert time.monotonic() - started < 2
            assert b.wait("before", timeout=5) == {"a": 1}
            with pytest.raises(SyncTimeout, match="held by a"):
                b.lock("disk", timeout=0.5).__enter__()
            cut.restore()
            waiting.join(15)
            assert outcome == {"result": None}, outcome  # its reply, lost on the way, came
            with ThreadPoolExecutor(2) as pool:
                mine = pool.submit(a.exchange, "after", "A", timeout=20)
                theirs = pool.submit(b.exchange, "after", "B", timeout=20)
                assert mine.result(20) == theirs.result(20) == {"a": "A", "b": "B"}
            held.__exit__(None, None, None)
            with b.lock("disk", timeout=5):
                pass
        finally:
            a.close()
            b.close()


def test_the_others_are_aborted_only_when_the_grace_ends_naming_who() -> None:
    with SyncServer(expected=["a", "b"], rejoin_grace=2) as server, relay(server) as cut:
        a = SyncClient(cut.address, "a", **FAST)
        b = SyncClient(server.address, "b", **FAST)
        try:
            cut.cut()
            started = time.monotonic()
            with pytest.raises(SyncAborted) as caught:
                b.barrier("y", timeout=30)
            waited = time.monotonic() - started
        finally:
            a.close(say_bye=False)
            b.close()
    # Away after 1.2 s of silence, dead 2 s later: not before.
    assert 3.0 <= waited < 8, waited
    assert caught.value.by == "a"
    assert "a stopped answering" in str(caught.value)
    assert "did not come back within 2 s" in str(caught.value)


def test_a_new_client_rejoins_under_the_name_of_one_that_is_away() -> None:
    with SyncServer(expected=["a", "b"], rejoin_grace=20) as server, relay(server) as cut:
        a = SyncClient(cut.address, "a", **FAST)
        b = SyncClient(server.address, "b", **FAST)
        again = None
        try:
            a.post("mine", "old")
            held = a.lock("disk")
            held.__enter__()
            cut.cut()  # and it never comes back: another client takes its place
            time.sleep(2.0)
            again = SyncClient(server.address, "a", **FAST)
            assert b.wait("mine", timeout=5) == {"a": "old"}
            with pytest.raises(SyncTimeout, match="held by a"):
                b.lock("disk", timeout=0.5).__enter__()
            again._call("unlock", 5, name="disk")  # the lock is the name's
            with ThreadPoolExecutor(2) as pool:
                mine = pool.submit(again.barrier, "z", timeout=20)
                theirs = pool.submit(b.barrier, "z", timeout=20)
                mine.result(20), theirs.result(20)
        finally:
            a.close(say_bye=False)
            b.close()
            if again is not None:
                again.close()


def test_without_a_grace_a_silent_participant_is_dead_at_once() -> None:
    with SyncServer(expected=["a", "b"]) as server, relay(server) as cut:
        a = SyncClient(cut.address, "a", **FAST)
        b = SyncClient(server.address, "b", **FAST)
        try:
            assert a.rejoin_grace == 0
            cut.cut()
            started = time.monotonic()
            with pytest.raises(SyncAborted, match="a stopped answering"):
                b.barrier("y", timeout=30)
            assert time.monotonic() - started < 3
        finally:
            a.close(say_bye=False)
            b.close()


def _frame(request_id: int, op: str, **fields) -> bytes:
    return protocol.encode({"id": request_id, "op": op, **fields})


def test_a_request_sent_twice_is_answered_once() -> None:
    """The coordinator alone: a barrier asked again gets the reply it had, not a second
    arrival; asked again while it waits, nothing."""
    coord = Coordinator(["a", "b"], rejoin_grace=10)
    for name in ("a", "b"):
        coord.handle(name.encode(), _frame(1, "hello", participant=name, heartbeat=1), 0.0)
    coord.outbox.clear()
    barrier = _frame(2, "barrier", name="x", count=2, timeout=30)
    coord.handle(b"a", barrier, 0.1)
    coord.handle(b"a", barrier, 0.2)  # sent again while it waits: not "already waiting"
    assert coord.outbox == []
    coord.handle(b"b", barrier, 0.3)
    replies = dict(coord.outbox)
    assert protocol.is_success(replies[b"a"]) and protocol.is_success(replies[b"b"])
    coord.outbox.clear()
    coord.handle(b"a", barrier, 0.4)  # its reply was lost: the same one again
    assert coord.outbox == [(b"a", replies[b"a"])]
    coord.outbox.clear()
    coord.handle(b"a", _frame(3, "barrier", name="x", count=2, timeout=30), 0.5)
    assert coord.outbox == []  # a new request: the next generation, waiting for b
