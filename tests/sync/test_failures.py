"""Sync failure semantics, each with real participant processes and real sockets.

Participants run as separate Python processes (mhtest.sync.testing); the server is a real
SyncServer (a ROUTER socket on loopback) or, where it has to die, a `mhtest sync-server`
process. Participants use a 0.2 s heartbeat, so the server declares a silent one dead
after 1 s.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from mhtest.sync import SyncAborted, SyncClient, SyncError
from mhtest.sync.server import SyncServer
from mhtest.sync.testing import participant

pytestmark = pytest.mark.timeout(60)

FAST = {"heartbeat": 0.2}


def test_timeout_names_who_arrived_and_who_did_not() -> None:
    with SyncServer(expected=["a", "b", "c"]) as server:
        body = "attempt(lambda: c.barrier('start', timeout=1))"
        with (
            participant(server.address, "a", body) as a,
            participant(server.address, "b", body) as b,
        ):
            for p in (a, b):
                out = p.outcome()
                assert out["error"] == "SyncTimeout", out
                assert sorted(out["arrived"]) == ["a", "b"]
                assert out["missing"] == ["c"]
                assert "timed out" in out["message"] and "c" in out["message"]
                assert out["seconds"] < 5


@pytest.mark.parametrize("how", ["killed", "stopped"])
def test_dead_participant_aborts_barrier_exchange_and_wait(how: str) -> None:
    """A participant killed (or frozen by SIGSTOP) aborts every wait counting on it, fast.

    The killed one keeps the default heartbeat (0.5 s; dead after 3 s of silence).
    """
    victim_options = {} if how == "killed" else FAST
    with SyncServer(expected=["a", "b", "c"]) as server:
        addr = server.address
        a_body = "c.post('ready', 1); attempt(lambda: c.barrier('done', timeout=60))"
        b_body = "c.post('ready', 2); attempt(lambda: c.exchange('ports', 5, timeout=60))"
        c_body = "time.sleep(120)"
        with (
            participant(addr, "c", c_body, **victim_options) as victim,
            participant(addr, "a", a_body, **FAST) as a,
            participant(addr, "b", b_body, **FAST) as b,
            participant(addr, "w", "attempt(lambda: c.wait('from-c', timeout=60))", **FAST) as w,
        ):
            victim.read()  # connected
            for p in (a, b, w):
                p.read()
            time.sleep(0.3)  # let a and b arrive at their barriers
            killed_at = time.monotonic()
            victim.signal(signal.SIGKILL if how == "killed" else signal.SIGSTOP)
            for p in (a, b):
                out = p.outcome()
                assert out["error"] == "SyncAborted", out
                assert out["by"] == "c"
                assert "c" in out["missing"]
                assert "stopped answering" in out["message"]
            out = w.outcome()
            assert out["error"] == "SyncAborted" and out["by"] == "c", out
            assert time.monotonic() - killed_at < 6


def test_abort_reaches_every_waiter_with_its_reason() -> None:
    with SyncServer(expected=["a", "b", "c"]) as server:
        addr = server.address
        body = "c.post('ready', 1); attempt(lambda: c.barrier('done', timeout=60))"
        abort_body = "c.wait('ready', count=2, timeout=10); time.sleep(0.2); c.abort('disk full')"
        with participant(addr, "a", body) as a, participant(addr, "b", body) as b:
            with participant(addr, "c", abort_body + "\nreport(aborted=True)") as c:
                assert c.outcome() == {"aborted": True}
            for p in (a, b):
                out = p.outcome()
                assert out["error"] == "SyncAborted", out
                assert out["reason"] == "disk full" and out["by"] == "c"
                assert out["seconds"] < 10


@contextlib.contextmanager
def _server_process():
    proc = subprocess.Popen(
        [sys.executable, "-m", "mhtest", "sync-server", "--participants", "2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("SYNC SERVER: tcp://127.0.0.1:"), line
        yield proc, line.split()[-1]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdout.close()


def test_server_gone_gives_unavailable_not_a_hang() -> None:
    with _server_process() as (server, addr):
        body = "attempt(lambda: c.barrier('never', timeout=60))"
        with participant(addr, "a", body, **FAST) as a:
            a.read()
            time.sleep(0.3)
            server.kill()
            out = a.outcome()
            assert out["error"] == "SyncUnavailable", out
            assert "stopped answering" in out["message"]
            assert out["seconds"] < 5


def test_no_server_at_the_address_gives_unavailable() -> None:
    with SyncServer() as server:
        addr = server.address
    with participant(addr, "a", connect_timeout=1) as a:
        out = a.outcome()
        assert out["error"] == "SyncUnavailable" and out["stage"] == "connect", out
        assert addr in out["message"]


def test_second_participant_with_the_same_name_is_refused() -> None:
    with SyncServer() as server, participant(server.address, "h1", "time.sleep(60)") as first:
        first.read()
        with participant(server.address, "h1") as second:
            out = second.outcome()
            assert out["error"] == "SyncError" and out["stage"] == "connect", out
            assert "'h1' is already taken" in out["message"]
        assert first.proc.poll() is None


def test_lock_of_a_dead_holder_is_released() -> None:
    with SyncServer() as server:
        addr = server.address
        holder_body = "held = c.lock('disk'); held.__enter__(); report(held=True); time.sleep(120)"
        waiter_body = "with c.lock('disk', timeout=30):\n    report(acquired=time.time())"
        with participant(addr, "a", holder_body, **FAST) as holder:
            assert holder.outcome() == {"held": True}
            with participant(addr, "b", waiter_body, **FAST) as waiter:
                waiter.read()
                time.sleep(0.3)
                killed = time.time()
                holder.signal(signal.SIGKILL)
                out = waiter.outcome()
                assert "acquired" in out, out
                assert killed <= out["acquired"] < killed + 5  # it waited for the death


def test_lock_wait_times_out_naming_the_holder() -> None:
    with SyncServer() as server:
        addr = server.address
        holder_body = (
            "held = c.lock('disk'); held.__enter__(); c.post('held'); report(held=True)\n"
            "time.sleep(60)"
        )
        waiter_body = (
            "c.wait('held', timeout=10); attempt(lambda: c.lock('disk', timeout=0.5).__enter__())"
        )
        with (
            participant(addr, "a", holder_body) as holder,
            participant(addr, "b", waiter_body) as waiter,
        ):
            assert holder.outcome() == {"held": True}
            out = waiter.outcome()
            assert out["error"] == "SyncTimeout" and "held by a" in out["message"], out


def test_leaving_participant_aborts_barrier_that_needs_it() -> None:
    with SyncServer(expected=["a", "b"]) as server:
        addr = server.address
        with participant(addr, "a", "attempt(lambda: c.barrier('end', timeout=60))") as a:
            a.read()
            with participant(addr, "b", "c.close(); report(closed=True)") as b:
                assert b.outcome() == {"closed": True}
            out = a.outcome()
            assert out["error"] == "SyncAborted" and out["by"] == "b", out
            assert "left" in out["message"]


def test_participant_declared_dead_is_told_why_when_it_comes_back() -> None:
    with SyncServer() as server:
        body = "report(ready=1); time.sleep(2.2); attempt(lambda: c.barrier('x', count=1))"
        with participant(server.address, "z", body, **FAST) as zombie:
            zombie.outcome()  # ready
            zombie.signal(signal.SIGSTOP)
            time.sleep(1.8)  # past its 1.2 s of liveness
            zombie.signal(signal.SIGCONT)
            out = zombie.outcome()
            assert out["error"] == "SyncError", out
            assert "not a participant" in out["message"]
            assert "z stopped answering" in out["message"]


def _barrier_outcome(client: SyncClient, name: str, timeout: float = 20) -> tuple[Any, float]:
    started = time.monotonic()
    try:
        client.barrier(name, timeout=timeout)
    except SyncError as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


def _declared_while_waiting(server: SyncServer, a: SyncClient, gone: str, reason: Any) -> Any:
    """a waits at a barrier; `gone` is declared gone meanwhile: (error a got, seconds)."""
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(_barrier_outcome, a, "start")
        time.sleep(0.3)
        server.declare_gone(gone, reason)
        return waiting.result(15)


def test_server_declares_an_ended_worker_gone_for_its_owner() -> None:
    """SyncServer.declare_gone(): how a multi-host test speaks for a worker that ended."""
    # b never joined and ended badly: a's barrier is aborted at once, with b's reason.
    with SyncServer(expected=["a", "b"]) as server, SyncClient(server.address, "a") as a:
        error, seconds = _declared_while_waiting(server, a, "b", "worker b on h2 ended FAIL: x")
        assert isinstance(error, SyncAborted) and error.by == "b", error
        assert "ended FAIL: x" in str(error) and seconds < 5
    # b never joined and ended well: nobody waits for it any more.
    with SyncServer(expected=["a", "b"]) as server, SyncClient(server.address, "a") as a:
        error, seconds = _declared_while_waiting(server, a, "b", None)
        assert isinstance(error, SyncAborted) and "b left" in str(error) and seconds < 5
    # b still connected and ended well: left alone; its own goodbye will tell.
    with (
        SyncServer(expected=["a", "b"]) as server,
        SyncClient(server.address, "a") as a,
        SyncClient(server.address, "b") as b,
    ):
        server.declare_gone("b")
        time.sleep(0.3)
        with ThreadPoolExecutor(2) as pool:
            met = [pool.submit(client.barrier, "met", 2, 10) for client in (a, b)]
            assert [m.result(15) for m in met] == [None, None]
