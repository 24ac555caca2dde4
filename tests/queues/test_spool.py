"""A spool's files and claims: oldest first, each claimed once, a dead watcher's taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mhtest.queue.spool import Claims, Owner, Spool, is_server_file, pid_start

pytestmark = pytest.mark.timeout(60)

CLAIM_ALL = """
import sys, time
from mhtest.queue.spool import Claims, Spool
claims = Claims(Spool(sys.argv[1]))
claims.open()
taken = []
while True:
    waiting = claims.spool.waiting()
    if not waiting:
        break
    for item in waiting:
        path = claims.claim(item.name)
        if path is not None:
            taken.append(item.name)
            claims.done(path)  # its "job" is over at once
print("\\n".join(taken))
claims.close()
"""


def spool_with(tmp_path: Path, names: list[str]) -> Spool:
    spool = Spool(tmp_path / "q")
    spool.path.mkdir()
    for number, name in enumerate(names):
        path = spool.path / name
        path.write_text(f"job.record('GOOD', None, {name!r})\n")
        os.utime(path, ns=(0, 1_000_000_000 * (1000 + number)))
    return spool


def dead_owner(spool: Spool, ident: str = "elsewhere-1-dead") -> Owner:
    """An owner on this host whose process is gone (a pid that cannot be ours)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Owner(ident, socket.gethostname(), int(proc.stdout), "0", time.time(), str(spool.path))


def test_waiting_files_oldest_first_without_dot_files_or_directories(tmp_path: Path) -> None:
    spool = spool_with(tmp_path, ["b", "a.srv", "c"])
    (spool.path / ".machines").write_text("local\n")
    (spool.path / ".d.tmp").write_text("half")
    (spool.path / "failed").mkdir()
    os.utime(spool.path / "c", ns=(0, 500 * 1_000_000_000))
    assert [w.name for w in spool.waiting()] == ["c", "b", "a.srv"]
    assert is_server_file("a.srv") and not is_server_file(".srv") and not is_server_file("b")


def test_two_processes_claim_each_of_200_files_once(tmp_path: Path) -> None:
    names = [f"f{n:03d}" for n in range(200)]
    spool = spool_with(tmp_path, names)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIM_ALL, str(spool.path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    taken = [proc.communicate(timeout=50)[0].split() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert sorted(taken[0] + taken[1]) == names  # each once: none twice, none lost
    assert not set(taken[0]) & set(taken[1])
    assert spool.waiting() == []


def test_failed_files_keep_their_reason_and_never_replace_another(tmp_path: Path) -> None:
    spool = spool_with(tmp_path, ["bad.srv"])
    claims = Claims(spool)
    claims.open()
    first = spool.fail(claims.claim("bad.srv"), "bad.srv:1: syntax error\nsecond line")
    (spool.path / "bad.srv").write_text("again")
    second = spool.fail(claims.claim("bad.srv"), "again")
    assert (first.name, second.name) == ("bad.srv", "bad.srv.2")
    assert (spool.failed / "bad.srv.reason").read_text() == "bad.srv:1: syntax error second line\n"
    assert (spool.failed / "bad.srv.2").read_text() == "again"


def test_a_watcher_is_alive_by_its_pid_here_and_its_heartbeat_elsewhere(tmp_path: Path) -> None:
    spool = spool_with(tmp_path, [])
    me = Claims(spool)
    me.open()
    assert me.owner.pid_start == pid_start(os.getpid()) and me.stale() == []
    gone = Claims(spool, dead_owner(spool))
    gone.open()
    far = Claims(spool, Owner("far-1-x", "another-host", 1, None, time.time(), str(spool.path)))
    far.open()
    assert me.stale() == ["elsewhere-1-dead"]  # the other host beats: alive
    old = time.time() - 60
    os.utime(far.owner_path, (old, old))
    assert me.stale() == ["elsewhere-1-dead", "far-1-x"]
    orphan = spool.claimed / "orphan-2-y"  # a claim area whose owner file never came
    orphan.mkdir()
    assert "orphan-2-y" not in me.stale()
    os.utime(orphan, (old, old))
    assert "orphan-2-y" in me.stale()


def test_a_dead_watchers_files_are_taken_over_once_with_their_run_record(tmp_path: Path) -> None:
    spool = spool_with(tmp_path, ["ran", "waited"])
    gone = Claims(spool, dead_owner(spool))
    gone.open()
    ran = gone.claim("ran")
    gone.claim("waited")  # a leftover: claimed, never started (no run record for it)
    gone.write_run({"file": "ran", "results": "/r/ran", "pids": [[12345, "1"]]})
    first, second = Claims(spool), Claims(spool)
    first.open()
    second.open()
    # Two watchers recover at once: each file goes to one of them.
    one = list(first.take_stale(gone.owner.id))
    two = list(second.take_stale(gone.owner.id))
    taken = {path.name: (run, owner) for path, run, owner in one + two}
    assert sorted(taken) == ["ran", "waited"] and len(one) + len(two) == 2
    assert taken["ran"][0] == {"file": "ran", "results": "/r/ran", "pids": [[12345, "1"]]}
    assert taken["waited"][0] is None and taken["ran"][1] == gone.owner
    assert not ran.exists()
    first.forget(gone.owner.id)
    assert not gone.dir.exists() and not gone.owner_path.exists() and not gone.run_path.exists()


def test_a_file_put_back_never_replaces_one_dropped_meanwhile(tmp_path: Path) -> None:
    spool = spool_with(tmp_path, ["x"])
    claims = Claims(spool)
    claims.open()
    path = claims.claim("x")
    (spool.path / "x").write_text("a new one")
    back = claims.put_back(path)
    assert back.name == "x.2" and (spool.path / "x").read_text() == "a new one"
    assert claims.claim("x") is not None
    (spool.path / "x").write_text("a third one")
    assert claims.claim("x") is None  # a claimed file is never replaced by another


def test_claims_close_leaves_nothing(tmp_path: Path) -> None:
    spool = spool_with(tmp_path, [])
    claims = Claims(spool)
    claims.open()
    claims.write_run({"file": "f"})
    owner = json.loads(claims.owner_path.read_text())
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    claims.close()
    assert list(spool.claimed.iterdir()) == []
