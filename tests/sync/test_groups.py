"""One shared sync server, several runs: each group of runs has its own namespace.

Runs that join a standalone server (`mhtest sync-server`, `mhtest run --sync-server`) with
`--sync HOST:PORT` meet only the runs of the same `--sync-group`. Leaving, aborting and
posting stay inside the group; the data a server stores is capped, and a group nobody has
been connected to for a while is forgotten. Clients here are raw DEALER sockets saying
hello with a "group" (what SyncClient sends for MHTEST_SYNC_GROUP), and real SyncClients.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import pytest

from mhtest.sync import SyncClient, SyncServer, SyncTimeout
from mhtest.sync.testing import RawClient, raw_client

pytestmark = pytest.mark.timeout(60)

MIB = 1024 * 1024


@contextlib.contextmanager
def _joined(address: str, group: str, *names: str) -> Iterator[list[RawClient]]:
    """Raw clients that said hello as `names` in `group`."""
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(raw_client(address)) for _ in names]
        for client, name in zip(clients, names):
            hello = client.request("hello", participant=name, heartbeat=60, group=group)
            assert hello["ok"], hello
        yield clients


def test_a_client_leaving_aborts_only_its_own_groups_barriers() -> None:
    with (
        SyncServer() as server,
        _joined(server.address, "run-a", "a1", "a2") as (a1, a2),
        _joined(server.address, "run-b", "b1", "b2") as (b1, b2),
    ):
        waiting = a1.start("barrier", name="start", count=2, timeout=10)
        b_waiting = b2.start("barrier", name="start", count=2, timeout=10)
        time.sleep(0.2)
        assert b1.request("bye")["ok"]
        assert a2.request("barrier", name="start", count=2, timeout=10)["ok"]
        assert a1.reply(waiting)["ok"]  # was: "b1 left (closed its sync client)"
        assert "b1 left" in b2.reply(b_waiting)["error"]["message"]  # its own group: aborted


def test_the_same_participant_name_may_be_in_two_groups() -> None:
    """Two runs of the same test (default participant names are the test's reference)."""
    name = "sync_tcp_server.py:SyncTCPServer.test"
    with (
        SyncServer() as server,
        _joined(server.address, "run-a", name) as (a,),
        _joined(server.address, "run-b", name) as (b,),
    ):
        assert a.request("exchange", name="x", data="a", count=1, timeout=5)["result"] == {
            name: "a"
        }
        assert b.request("exchange", name="x", data="b", count=1, timeout=5)["result"] == {
            name: "b"
        }


def test_posts_of_one_group_never_answer_another_groups_wait() -> None:
    with SyncServer() as server, _joined(server.address, "run-a", "a1") as (a1,):
        assert a1.request("post", name="ready", data="from a")["ok"]
        with _joined(server.address, "run-b", "b1") as (b1,):
            reply = b1.request("wait", name="ready", timeout=0.5)
            assert reply["error"]["type"] == "timeout", reply  # was: a's post, at once


def test_an_abort_blocks_only_its_own_group() -> None:
    with (
        SyncServer() as server,
        _joined(server.address, "run-a", "a1", "a2") as (a1, a2),
        _joined(server.address, "run-b", "b1", "b2") as (b1, b2),
    ):
        assert a1.request("abort", reason="setup failed")["ok"]  # a1 stays registered
        waiting = b1.start("barrier", name="go", count=2, timeout=10)
        assert b2.request("barrier", name="go", count=2, timeout=10)["ok"]  # was: aborted
        assert b1.reply(waiting)["ok"]
        reply = a2.request("barrier", name="go", count=2, timeout=10)
        assert reply["error"]["type"] == "aborted" and "setup failed" in reply["error"]["message"]


def test_the_default_group_still_lets_separate_runs_meet() -> None:
    with (
        SyncServer() as server,
        SyncClient(server.address, "run1-test") as one,
        _joined(server.address, "", "run2-test") as (two,),
    ):
        assert two.request("post", name="x", data=2)["ok"]
        assert one.wait("x", timeout=5) == {"run2-test": 2}


def test_sync_client_joins_the_group_of_its_environment() -> None:
    with (
        SyncServer() as server,
        _joined(server.address, "nightly-42", "other") as (other,),
    ):
        other.request("post", name="ready", data="mine")
        env = {
            "MHTEST_SYNC_ADDRESS": server.address,
            "MHTEST_SYNC_PARTICIPANT": "me",
            "MHTEST_SYNC_GROUP": "nightly-42",
        }
        with SyncClient.from_environment(env) as client:
            assert client.group == "nightly-42"
            assert client.wait("ready", timeout=5) == {"other": "mine"}
        with SyncClient(server.address, "me") as client, pytest.raises(SyncTimeout):
            client.wait("ready", timeout=0.3)  # the default group sees none of it


def test_a_group_nobody_joined_for_a_while_is_forgotten() -> None:
    with SyncServer(idle_expiry=0.5) as server:
        with _joined(server.address, "run-a", "a1") as (a1,):
            assert a1.request("post", name="ready", data="old")["ok"]
            assert a1.request("bye")["ok"]
        time.sleep(1.2)
        with _joined(server.address, "run-a", "a1") as (a1,):
            reply = a1.request("wait", name="ready", timeout=0.5)
            assert reply["error"]["type"] == "timeout", reply  # the old post is gone


def test_a_group_comes_back_within_the_idle_time_with_its_state() -> None:
    with SyncServer(idle_expiry=30) as server:
        with _joined(server.address, "run-a", "a1") as (a1,):
            assert a1.request("post", name="ready", data="kept")["ok"]
            assert a1.request("bye")["ok"]
        with _joined(server.address, "run-a", "a2") as (a2,):
            assert a2.request("wait", name="ready", timeout=5)["result"] == {"a1": "kept"}


SERVER = """
import sys
from mhtest.sync.server import SyncServer
with SyncServer(**{kwargs}) as server:
    print(server.address, flush=True)
    sys.stdin.read()
"""


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@contextlib.contextmanager
def _server_process(**kwargs: object) -> Iterator[tuple[subprocess.Popen, str]]:
    code = textwrap.dedent(SERVER).replace("{kwargs}", repr(kwargs))
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        yield proc, proc.stdout.readline().strip()
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()


def _fill(address: str, group: str) -> list[str]:
    """Post 60 blobs of 3.9 MB in `group`, then leave; the refusals."""
    refused = []
    with _joined(address, group, "poster") as (poster,):
        for i in range(60):
            reply = poster.request("post", name=f"blob{i}", data="x" * 3_900_000)
            if not reply["ok"]:
                refused.append(reply["error"]["message"])
        assert poster.request("bye")["ok"]
    return refused


def test_stored_posts_are_capped_and_freed_with_their_group() -> None:
    """60 posts of 3.9 MB used to stay in the server forever (235 MB). Past the cap a post
    is refused, saying why; once its group expires, the memory serves the next group."""
    with _server_process(max_stored_bytes=64 * MIB, idle_expiry=0.5) as (proc, address):
        idle = _rss_mb(proc.pid)
        refused = _fill(address, "first")
        first = _rss_mb(proc.pid)
        assert len(refused) == 60 - 17, refused[:1]  # 17 posts of 3.9 MB fit in 64 MiB
        assert "64 MiB" in refused[0] and "post 'blob17'" in refused[0], refused[0]
        assert first - idle < 64 + 40, (idle, first)
        time.sleep(1.5)  # the group expires, and gives its bytes back
        assert len(_fill(address, "second")) == 60 - 17
        time.sleep(1.5)
        assert len(_fill(address, "first")) == 60 - 17  # the same group, started afresh
        assert _rss_mb(proc.pid) - first < 30, (idle, first, _rss_mb(proc.pid))
