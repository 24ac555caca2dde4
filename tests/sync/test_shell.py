"""The sync server's side of shell sync: transient connections, waits for named senders, the
record (sync.jsonl); and `mhtest sync` run as a real process against a real server."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from mhtest.runners.workerbin import bin_dir, child_env
from mhtest.sync import SyncAborted, SyncClient, SyncServer, SyncTimeout
from mhtest.sync.keys import make_run_keys
from mhtest.sync.record import SyncRecord, read
from mhtest.sync.shell import EXIT_ABORTED, EXIT_TIMEOUT

pytestmark = pytest.mark.timeout(60)


def test_a_transient_connection_ending_is_not_its_participant_leaving() -> None:
    """A shell command's connection comes and goes; the others' barrier still completes."""
    with SyncServer(expected=["a", "b"]) as server, SyncClient(server.address, "a") as a:
        done = threading.Event()

        def wait_for_b() -> None:
            a.barrier("start", timeout=20)
            done.set()

        thread = threading.Thread(target=wait_for_b)
        thread.start()
        # Two commands of b: a post (connects, leaves), then the barrier.
        with SyncClient(server.address, "b", transient=True) as b:
            b.post("ready", 1)
        assert not done.wait(0.3)  # b's first connection leaving aborted nothing
        with SyncClient(server.address, "b", transient=True) as b:
            b.barrier("start", timeout=20)
        thread.join(10)
        assert done.is_set()


def test_transient_connections_share_a_name_with_the_workers_client() -> None:
    with SyncServer(expected=["a"]) as server, SyncClient(server.address, "a") as a:
        with SyncClient(server.address, "a", transient=True) as shell:
            shell.post("from-shell", "x")
        assert a.wait("from-shell", timeout=5) == {"a": "x"}


def test_a_dead_transient_connection_releases_its_lock_and_withdraws_its_waits() -> None:
    with SyncServer(expected=["a", "b"]) as server, SyncClient(server.address, "a") as a:
        shell = SyncClient(server.address, "b", transient=True, heartbeat=0.1)
        with shell.lock("disk"):
            pass
        cm = shell.lock("disk")
        cm.__enter__()
        shell.close(say_bye=False)  # as a killed command: no goodbye, heartbeats stop
        t0 = time.monotonic()
        with a.lock("disk", timeout=10):
            assert time.monotonic() - t0 < 5
        # b is still a participant: a barrier waits for it, and times out naming it.
        with pytest.raises(SyncTimeout, match="missing: b"):
            a.barrier("x", timeout=0.5)


def test_wait_for_named_senders() -> None:
    with (
        SyncServer(expected=["a", "b", "c"]) as server,
        SyncClient(server.address, "a") as a,
        SyncClient(server.address, "b") as b,
        SyncClient(server.address, "c") as c,
    ):
        a.post("state", "mine")  # does not count for a wait on b and c
        with pytest.raises(SyncTimeout, match=r"missing: b, c"):
            a.wait("state", timeout=0.3, senders=["b", "c"])
        b.post("state", "b's")
        assert a.wait("state", count=1, timeout=5, senders=["b", "c"]) == {
            "a": "mine",
            "b": "b's",
        }
        # c leaves without posting: a wait that needs it fails at once.
        c.close()
        t0 = time.monotonic()
        with pytest.raises(SyncAborted, match="c left"):
            a.wait("state", timeout=30, senders=["b", "c"])
        assert time.monotonic() - t0 < 5


def test_the_record_of_a_run(tmp_path: Path) -> None:
    record = SyncRecord(["a", "b"])
    path = tmp_path / "sync.jsonl"
    before = time.time()
    with (
        SyncServer(expected=["a", "b"], record=record) as server,
        SyncClient(server.address, "a") as a,
        SyncClient(server.address, "b") as b,
    ):
        thread = threading.Thread(target=lambda: a.barrier("go", timeout=10))
        thread.start()
        time.sleep(0.2)
        b.barrier("go", timeout=10)  # b came last
        thread.join()
        with a.lock("disk"):
            b.post("msg", 1)
        with pytest.raises(SyncAborted):
            b.abort("b gave up")
            a.barrier("never", timeout=10)
    record.write(path)
    events = read(path)
    assert events[0] == {"event": "start", "t": events[0]["t"], "participants": ["a", "b"]}
    assert events[-1]["event"] == "end" and events[-1]["dropped"] == 0
    barrier = next(e for e in events if e["event"] == "barrier")
    assert barrier["name"] == "go" and barrier["outcome"] == "done"
    arrivals = barrier["arrivals"]
    assert before <= arrivals["a"] < arrivals["b"] <= barrier["t"] <= time.time()
    assert arrivals["b"] - arrivals["a"] >= 0.15
    lock = next(e for e in events if e["event"] == "lock")
    unlock = next(e for e in events if e["event"] == "unlock")
    assert lock["who"] == unlock["who"] == "a" and lock["t"] <= unlock["t"]
    assert any(e["event"] == "post" and e["who"] == "b" for e in events)
    abort = next(e for e in events if e["event"] == "abort")
    assert abort["by"] == "b" and abort["reason"] == "b gave up"
    joins = [e["who"] for e in events if e["event"] == "join"]
    assert joins == ["a", "b"]


def test_the_record_keeps_at_most_its_limit(tmp_path: Path) -> None:
    record = SyncRecord(["a"], limit=3)
    for i in range(5):
        record("post", "a", f"m{i}")
    record.write(tmp_path / "sync.jsonl")
    events = read(tmp_path / "sync.jsonl")
    assert [e.get("name") for e in events if e["event"] == "post"] == ["m0", "m1", "m2"]
    assert events[-1]["dropped"] == 2


def test_a_test_that_is_no_worker_gets_nothing_more() -> None:
    assert child_env({"PATH": "/bin", "HOME": "/root"}) == {}


def test_a_workers_path_and_roles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MHTEST_CACHE_DIR", str(tmp_path))
    env = {
        "PATH": "/usr/bin",
        "MHTEST_WORKER": "h1",
        "MHTEST_SYNC_ADDRESS": "tcp://127.0.0.1:1",
        "MHTEST_SYNC_ROLES": json.dumps({"h1": "SERVERS", "h2": "CLIENTS", "h3": "CLIENTS"}),
        "CLIENTS": "taken",
    }
    extra = child_env(env)
    first, rest = extra["PATH"].split(os.pathsep, 1)
    assert rest == "/usr/bin" and first == bin_dir()
    assert first.startswith(str(tmp_path))
    assert extra["SERVERS"] == "h1" and "CLIENTS" not in extra
    names = sorted(p.name for p in Path(first).iterdir() if not p.name.startswith("."))
    assert names == sorted(
        ["mhtest", "lava-send", "lava-wait", "lava-wait-all", "lava-sync", "lava-self"]
        + ["lava-role", "lava-group", "rstrnt-sync-set", "rstrnt-sync-block"]
        + ["mhtest-reboot", "tmt-reboot", "rstrnt-reboot"]
    )
    # A new agent for every worker, even when the environment names one (an outer run's).
    agent = extra["MHTEST_SYNC_AGENT"]
    assert agent.startswith("@mhtest-sync-") and len(agent) == len("@mhtest-sync-") + 32
    again = child_env({**env, "MHTEST_SYNC_AGENT": agent})
    assert again["MHTEST_SYNC_AGENT"] != agent
    # Not a worker: nothing on its PATH, unless it may reboot its host (a remote test).
    assert "PATH" not in child_env({"PATH": "/usr/bin"})
    remote = child_env({"PATH": "/usr/bin", "MHTEST_REBOOT_SOCKET": "/run/x/reboot.sock"})
    assert remote == {"PATH": f"{bin_dir()}{os.pathsep}/usr/bin"}


def _shell(address: str, keys, name: str, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        **keys.client_env(name),
        "MHTEST_SYNC_ADDRESS": address,
        "MHTEST_SYNC_PARTICIPANT": name,
        "MHTEST_SYNC_COUNT": "2",
        "PATH": bin_dir() + os.pathsep + os.environ.get("PATH", ""),
    }
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=30)


def test_mhtest_sync_exit_codes_against_a_real_server() -> None:
    keys = make_run_keys(["a", "b"])
    with SyncServer(expected=["a", "b"], run_keys=keys) as server:
        timed_out = _shell(
            server.address, keys, "a", "mhtest", "sync", "barrier", "x", "--timeout", "0.5"
        )
        assert timed_out.returncode == EXIT_TIMEOUT
        assert timed_out.stderr.startswith("mhtest sync barrier: timeout: barrier 'x' timed out")
        assert len(timed_out.stderr.splitlines()) == 1
        aborting = _shell(server.address, keys, "b", "mhtest", "sync", "abort", "b is broken")
        assert aborting.returncode == 0, aborting.stderr
        aborted = _shell(server.address, keys, "a", "mhtest", "sync", "barrier", "y")
        assert aborted.returncode == EXIT_ABORTED
        assert aborted.stderr.strip() == (
            "mhtest sync barrier: aborted: barrier 'y': aborted by b: b is broken"
        )
        # Someone else's key cannot speak for a.
        env_b = keys.client_env("b")
        forged = _shell(server.address, keys, "a", "sh", "-c", "mhtest sync post z 1")
        assert forged.returncode == 0  # its own keys: fine
        forged = subprocess.run(
            [sys.executable, "-m", "mhtest", "sync", "post", "z", "1"],
            env={
                **os.environ,
                **env_b,
                "MHTEST_SYNC_ADDRESS": server.address,
                "MHTEST_SYNC_PARTICIPANT": "a",
            },
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert forged.returncode == 1
        assert "is the key of participant 'b'" in forged.stderr


def _agent_alive(name: str) -> bool:
    """Whether an agent process serves `name` (read from /proc: connecting would keep it busy)."""
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"mhtest.sync.agent" in cmdline and f"MHTEST_SYNC_AGENT={name}\0".encode() in environ:
            return True
    return False


def _worker_env(address: str, keys, name: str, agent: str) -> dict[str, str]:
    return {
        **os.environ,
        **keys.client_env(name),
        "MHTEST_SYNC_ADDRESS": address,
        "MHTEST_SYNC_PARTICIPANT": name,
        "MHTEST_SYNC_COUNT": "2",
        "MHTEST_SYNC_AGENT": agent,
        "MHTEST_SYNC_AGENT_IDLE": "1",
        "PATH": bin_dir() + os.pathsep + os.environ.get("PATH", ""),
    }


@contextlib.contextmanager
def _worker_a_and_b() -> Iterator[tuple[dict[str, str], str, SyncClient]]:
    """A run of a and b: a's environment (with an agent), the agent's name, and b's client."""
    keys = make_run_keys(["a", "b"])
    agent = f"@mhtest-sync-test-{os.getpid()}-{time.monotonic_ns()}"
    with (
        SyncServer(expected=["a", "b"], run_keys=keys) as server,
        SyncClient(server.address, "b", curve=keys.client_keys("b")) as b,
    ):
        yield _worker_env(server.address, keys, "a", agent), agent, b


def test_the_agent_serves_a_workers_commands_then_leaves() -> None:
    with _worker_a_and_b() as (env, agent, b):
        # Two commands at once on one agent: a wait, and the post that answers it.
        waiting = subprocess.Popen(
            ["mhtest", "sync", "wait", "ready", "--from", "b"],
            env=env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        posted = subprocess.run(
            ["mhtest", "sync", "post", "mine", "x"], env=env, timeout=30, capture_output=True
        )
        assert posted.returncode == 0, posted.stderr
        assert _agent_alive(agent)
        assert b.wait("mine", timeout=10, senders=["a"]) == {"a": "x"}
        b.post("ready", "go")
        assert waiting.communicate(timeout=30)[0] == "go\n"
        # A timeout through the agent has the same exit code and line.
        late = subprocess.run(
            ["mhtest", "sync", "barrier", "x", "--timeout", "0.3"],
            env=env, timeout=30, capture_output=True, text=True,
        )  # fmt: skip
        assert late.returncode == EXIT_TIMEOUT
        assert late.stderr.startswith("mhtest sync barrier: timeout: barrier 'x' timed out")
        deadline = time.monotonic() + 10
        while _agent_alive(agent) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _agent_alive(agent)  # idle for its MHTEST_SYNC_AGENT_IDLE: gone


def test_a_lock_held_by_a_killed_command_is_given_back() -> None:
    with _worker_a_and_b() as (env, _, b):
        holder = subprocess.Popen(
            ["mhtest", "sync", "lock", "disk", "--", "sh", "-c", "echo held; sleep 60"],
            env=env, stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            assert holder.stdout.readline() == "held\n"
            with pytest.raises(SyncTimeout), b.lock("disk", timeout=0.3):
                pass
            os.killpg(holder.pid, 9)  # the command and its sleep, as a timeout would
            holder.wait(10)
            t0 = time.monotonic()
            with b.lock("disk", timeout=10):
                assert time.monotonic() - t0 < 5
        finally:
            if holder.poll() is None:
                os.killpg(holder.pid, 9)
                holder.wait(10)
