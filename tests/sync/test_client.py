"""Sync client and server working together: barriers, exchange, post/wait, locks, keys."""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from mhtest.sync import SyncAborted, SyncClient, SyncError, SyncServer, SyncUnavailable
from mhtest.sync.keys import create_keys
from mhtest.sync.testing import participant

pytestmark = pytest.mark.timeout(60)


def _together(address: str, names: list[str], fn: Callable[[SyncClient], Any], **kw: Any) -> dict:
    """Run fn(client) in one thread per participant; {name: result}."""

    def one(name: str) -> Any:
        with SyncClient(address, name, **kw) as client:
            return fn(client)

    with ThreadPoolExecutor(len(names)) as pool:
        futures = {name: pool.submit(one, name) for name in names}
        return {name: f.result(timeout=30) for name, f in futures.items()}


@contextlib.contextmanager
def _two_clients() -> Iterator[tuple[SyncClient, SyncClient]]:
    """A server with participants "a" and "b" connected (no expected list)."""
    with (
        SyncServer() as server,
        SyncClient(server.address, "a") as a,
        SyncClient(server.address, "b") as b,
    ):
        yield a, b


def test_barrier_generations_and_exchange_across_processes() -> None:
    """Three processes reuse one barrier name 20 times; every exchange sees that round."""
    body = """
rounds = []
for i in range(20):
    c.barrier("step", timeout=20)
    rounds.append(c.exchange("round", {"i": i, "who": NAME}, timeout=20))
report(rounds=rounds)
"""
    with SyncServer(expected=["a", "b", "c"]) as server:
        procs = [participant(server.address, name, body) for name in ("a", "b", "c")]
        with procs[0] as a, procs[1] as b, procs[2] as c:
            for p in (a, b, c):
                rounds = p.outcome()["rounds"]
                assert len(rounds) == 20
                for i, got in enumerate(rounds):
                    assert got == {n: {"i": i, "who": n} for n in ("a", "b", "c")}


def test_lock_is_mutually_exclusive_across_processes(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    body = f"""
for i in range(10):
    with c.lock("journal", timeout=20):
        with open({str(journal)!r}, "a") as f:
            f.write("enter " + NAME + "\\n"); f.flush()
            time.sleep(0.005)
            f.write("exit " + NAME + "\\n")
report(done=True)
"""
    with (
        SyncServer() as server,
        participant(server.address, "a", body) as a,
        participant(server.address, "b", body) as b,
        participant(server.address, "c", body) as c,
    ):
        for p in (a, b, c):
            assert p.outcome() == {"done": True}
    lines = journal.read_text().splitlines()
    assert len(lines) == 60
    for enter, leave in zip(lines[::2], lines[1::2]):
        assert enter.startswith("enter ") and leave == "exit " + enter.split()[1]


def test_exchange_carries_any_json_and_includes_own_data() -> None:
    data = {"a": {"ports": [1, 2], "ok": True, "x": None}, "b": "text", "c": 3.5}
    with SyncServer(expected=3) as server:
        got = _together(server.address, list(data), lambda c: c.exchange("d", data[c.participant]))
    assert got == {name: data for name in data}


def test_post_and_wait() -> None:
    with _two_clients() as (a, b):
        results: dict[str, Any] = {}
        waiter = threading.Thread(target=lambda: results.update(w=b.wait("port", timeout=10)))
        waiter.start()
        a.post("port", 8080)
        waiter.join(15)
        assert results["w"] == {"a": 8080}
        assert b.wait("port", timeout=1) == {"a": 8080}  # already there: no waiting
        b.post("port", 9090)
        assert a.wait("port", count=2, timeout=5) == {"a": 8080, "b": 9090}


def test_count_from_client_server_or_nowhere() -> None:
    with SyncServer() as server:  # no expected participants
        got = _together(server.address, ["a", "b"], lambda c: c.barrier("x"), count=2)
        assert got == {"a": None, "b": None}
        with (
            SyncClient(server.address, "lonely") as client,
            pytest.raises(SyncError, match="participant count unknown"),
        ):
            client.barrier("x", timeout=5)
    with SyncServer(expected=["a", "b"]) as server:
        assert _together(server.address, ["a", "b"], lambda c: c.barrier("y")) == {
            "a": None,
            "b": None,
        }


def test_count_mismatch_is_refused() -> None:
    with _two_clients() as (a, b):

        def first() -> None:
            a.post("ready")
            _swallow(lambda: a.barrier("m", count=2, timeout=1))

        t = threading.Thread(target=first)
        t.start()
        b.wait("ready", timeout=10)
        time.sleep(0.2)  # a's barrier request follows its post on the same socket
        with pytest.raises(SyncError, match="a waits for 2 participants, b for 3"):
            b.barrier("m", count=3, timeout=3)
        t.join(10)


def _swallow(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except SyncError:
        pass


def test_abort_is_remembered_until_everyone_left() -> None:
    with SyncServer(expected=2) as server:
        with SyncClient(server.address, "a") as a, SyncClient(server.address, "b") as b:
            a.abort("setup failed")
            with pytest.raises(SyncAborted, match="aborted by a: setup failed"):
                b.barrier("late", timeout=5)
        got = _together(server.address, ["a", "b"], lambda c: c.barrier("fresh", timeout=5))
        assert got == {"a": None, "b": None}


def test_bad_data_and_oversized_messages_fail_locally() -> None:
    with SyncServer() as server, SyncClient(server.address, "a", count=1) as a:
        with pytest.raises(SyncError, match="not JSON"):
            a.exchange("x", {1, 2})
        with pytest.raises(SyncError, match="exceeds"):
            a.post("big", "x" * (5 * 1024 * 1024))
        assert a.exchange("x", [1]) == {"a": [1]}  # the client still works


def test_from_environment() -> None:
    assert SyncClient.from_environment({}) is None
    with SyncServer() as server:
        env = {
            "MHTEST_SYNC_ADDRESS": server.address,
            "MHTEST_SYNC_PARTICIPANT": "h1",
            "MHTEST_SYNC_COUNT": "1",
        }
        client = SyncClient.from_environment(env)
        assert client is not None
        with client:
            assert client.participant == "h1" and client.count == 1
            assert client.exchange("solo", 1) == {"h1": 1}
        del env["MHTEST_SYNC_PARTICIPANT"]
        with SyncClient.from_environment(env, default_participant="t.py:T.test") as client:
            assert client.participant == "t.py:T.test"
    with pytest.raises(SyncError, match="MHTEST_SYNC_COUNT='two' is not a number"):
        SyncClient.from_environment(
            {"MHTEST_SYNC_ADDRESS": "tcp://127.0.0.1:1", "MHTEST_SYNC_COUNT": "two"}
        )


def test_bad_addresses_are_refused_in_one_line() -> None:
    with pytest.raises(SyncError, match="needs a port"):
        SyncClient("127.0.0.1", "a")
    with pytest.raises(SyncError, match="only tcp://"):
        SyncClient("ipc:///tmp/x", "a")
    with SyncServer() as server, pytest.raises(SyncError, match="cannot listen"):
        SyncServer(server.bound.replace("tcp://", "")).start()


def test_curve_keys_admit_listed_clients_only(tmp_path: Path) -> None:
    keys = create_keys(tmp_path / "keys", clients=["h1"])
    stranger = create_keys(tmp_path / "other", clients=["h1"])
    (stranger / "server.key").write_bytes((keys / "server.key").read_bytes())
    with SyncServer(keys_dir=keys, expected=1) as server:
        with SyncClient(server.address, "h1", keys_dir=keys) as client:
            assert client.exchange("hi", "secret") == {"h1": "secret"}
        with pytest.raises(SyncUnavailable):  # its key is not in keys/clients
            SyncClient(server.address, "h1", keys_dir=stranger, connect_timeout=1)
        with pytest.raises(SyncUnavailable):  # no CurveZMQ at all
            SyncClient(server.address, "h1", connect_timeout=1)
    with pytest.raises(SyncError, match="server.key_secret is missing"):
        SyncServer(keys_dir=tmp_path / "nothing").start()


def test_one_client_serves_several_threads_at_once() -> None:
    """A thread blocked in wait() must not hold up another thread's calls on the same client."""
    with _two_clients() as (a, b):
        got: dict[str, Any] = {}
        blocked = threading.Thread(target=lambda: got.update(x=a.wait("x", timeout=20)))
        blocked.start()
        time.sleep(0.2)  # the waiting thread now owns the socket
        started = time.monotonic()
        for i in range(8):  # each would wait up to a heartbeat (0.5 s) if nobody woke the leader
            a.post(f"p{i}", i)
        assert time.monotonic() - started < 1.0, "posts waited for the blocked wait()"
        with ThreadPoolExecutor(4) as pool:  # and several threads at once
            futures = {i: pool.submit(a.exchange, "many", i, count=1) for i in range(8)}
            assert {i: f.result(timeout=10) for i, f in futures.items()} == {
                i: {"a": i} for i in range(8)
            }
        assert blocked.is_alive()
        assert b.wait("p7", timeout=5) == {"a": 7}
        b.post("x", "done")
        blocked.join(10)
        assert got["x"] == {"b": "done"}


def test_many_threads_share_one_client_without_stalls() -> None:
    """Six threads on one client: every call gets its own answer, and none stalls (a call
    that missed its wake-up would wait for the heartbeat thread, 5 s here)."""
    with SyncServer() as server, SyncClient(server.address, "a", heartbeat=5.0) as a:
        slowest: list[float] = []

        def worker(t: int) -> list[Any]:
            got = []
            for j in range(60):
                started = time.monotonic()
                got.append(a.exchange(f"t{t}", j, count=1))
                slowest.append(time.monotonic() - started)
            return got

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(worker, range(6)))
        assert results == [[{"a": j} for j in range(60)]] * 6
        assert max(slowest) < 2.0, f"a call stalled {max(slowest):.1f} s"


def test_close_while_another_thread_waits_ends_that_wait() -> None:
    with SyncServer() as server:
        client = SyncClient(server.address, "a")
        errors: list[SyncError] = []

        def waiter() -> None:
            try:
                client.barrier("never", count=2, timeout=30)
            except SyncError as exc:
                errors.append(exc)

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.3)
        started = time.monotonic()
        client.close()
        t.join(10)
        assert not t.is_alive() and time.monotonic() - started < 5
        assert len(errors) == 1  # closed, or aborted because "a" left: either way it ends
