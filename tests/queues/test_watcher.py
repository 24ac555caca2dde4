"""A watcher in this process, on the local machine: what it takes, when, and what it recovers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mhtest.queue.fsevents import DirEvents
from mhtest.queue.scheduler import MachineLocks
from mhtest.queue.spool import Claims, Owner, Spool
from mhtest.queue.watcher import WatchConfig, Watcher

pytestmark = pytest.mark.timeout(120)

NOOP = 'job.record("GOOD", None, "noop", "ran")\n'


class Running:
    """A Watcher in a thread, what it says kept; stopped (and waited for) at exit."""

    def __init__(self, tmp_path: Path) -> None:
        self.spool = tmp_path / "queue" / "q"
        self.spool.mkdir(parents=True, exist_ok=True)
        (self.spool / ".machines").write_text("local\n")
        self.results = tmp_path / "results"
        self.said: list[str] = []
        self.stop = threading.Event()
        config = WatchConfig(results=self.results)
        locks = MachineLocks(tmp_path / "queue" / ".busy")
        self.watcher = Watcher(self.spool, config, locks, self.stop, self.said.append)
        self.thread = threading.Thread(target=self.watcher.run, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        self.wait_said("watching")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()

    def wait_said(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.said if text in line]
            if found:
                return found[0]
            time.sleep(0.02)
        pytest.fail(f"{text!r} not said within {timeout} s: {self.said}")

    def record(self, name: str) -> dict | None:
        try:
            return json.loads((self.results / name / "queue.json").read_text())
        except (OSError, ValueError):
            return None


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    with Running(tmp_path) as watching:
        yield watching


def dead_owner(spool: Spool) -> Owner:
    pid = int(
        subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
        ).stdout
    )
    return Owner("gone-1-abc", os.uname().nodename, pid, "0", time.time(), str(spool.path))


def test_a_file_claimed_by_a_watcher_that_died_before_it_started_goes_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "queue" / "q")
    spool.path.mkdir(parents=True)
    (spool.path / "early").write_text(NOOP)
    gone = Claims(spool, dead_owner(spool))
    gone.open()
    gone.claim("early")
    made = tmp_path / "results" / "early"  # its results directory was made, nothing started
    made.mkdir(parents=True)
    (made / "queue.json").write_text("{}")
    gone.write_run({"file": "early", "results": str(made), "pids": []})
    with Running(tmp_path) as watching:
        line = watching.wait_said("early: back in the queue")
        watching.wait_said("early: ended")
    assert line == "q: early: back in the queue (its watcher gone-1-abc died before it started)"
    record = watching.record("early")
    assert record["status"] == "PASS" and record["file"] == "early"
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["early"]  # its name again
    assert sorted(p.name for p in spool.claimed.iterdir()) == []


def test_a_file_is_taken_once_its_writer_closed_it(running: Running) -> None:
    path = running.spool / "slowly"
    with open(path, "w") as out:
        out.write('job.record("GOOD", None, "first half")\n')
        out.flush()
        time.sleep(1.5)  # well past `settle`: only inotify's close tells it is complete
        assert path.exists() and running.record("slowly") is None
        out.write('job.record("GOOD", None, "second half")\n')
    closed = time.time()
    running.wait_said("slowly: ended")
    record = running.record("slowly")
    assert record["claimed"] - closed < 1.0
    assert (running.results / "slowly" / "slowly").read_text().count("half") == 2


def test_without_inotify_a_file_unchanged_for_settle_seconds_is_taken(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(DirEvents, "start", lambda self: "no inotify here (a test)")
    with Running(tmp_path) as watching:
        assert "polling every 0.5 s (no inotify here (a test))" in watching.said[0]
        path = watching.spool / "polled"
        with open(path, "w") as out:
            out.write(NOOP)
            out.flush()
            for _ in range(3):  # written to for a while: not complete
                time.sleep(0.3)
                out.write("# more\n")
                out.flush()
            assert watching.record("polled") is None
        written = time.time()
        watching.wait_said("polled: ended")
    assert 0.4 < watching.record("polled")["claimed"] - written < 2.5
