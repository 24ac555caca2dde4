"""A detached run on this machine: the executor and its followers, without SSH.

The executor runs as it does on a host (`python -m mhtest.runners.executor`), its stdin and
stdout pipes standing for the SSH channel; killing it is what a dropped connection does
to it. Its runner goes on in a session of its own, and `python -m mhtest.runners.attach`
follows the run again from the byte the "controller" got to.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mhtest.resolver import resolve
from mhtest.runners import journal

pytestmark = pytest.mark.timeout(60)
ROOT = str(Path(__file__).resolve().parents[1])
ENV = {**os.environ, "PYTHONPATH": ROOT}

WAITS_FOR_GO = """#!/bin/sh
# Says it runs, then waits (up to 50 s) for the go.
touch "$MARKS/started"
i=0
while [ ! -e "$MARKS/go" ] && [ $i -lt 500 ]; do sleep 0.1; i=$((i+1)); done
echo "went on"
"""


class Controller:
    """The controller's end of one channel to an executor or a follower."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=ENV,
        )
        self.received = b""

    def say(self, message: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(message)
        self.proc.stdin.flush()

    def events_until(self, kind: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Read event lines until one of type `kind`; all of them."""
        assert self.proc.stdout is not None
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.received += line
            found.append(json.loads(line))
            if found[-1]["type"] == kind:
                return found
        raise AssertionError(f"no {kind} event; got {[e['type'] for e in found]}")

    def drop(self) -> None:
        """What a dropped connection does to it: it is gone."""
        self.proc.kill()
        self.proc.wait(10)
        self.close()

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def start(tmp_path: Path, wait: float, script: str = WAITS_FOR_GO) -> tuple[Controller, Path]:
    test = tmp_path / "waits.sh"
    test.write_text(script)
    test.chmod(0o755)
    (spec,) = resolve([str(test)])
    spec.env["MARKS"] = str(tmp_path)
    item = {**spec.to_dict(), "logdir": f"results/{spec.uid}"}
    header = {"max_parallel": None, "payload": {"key": "", "size": 0}, "specs": [item]}
    cache = tmp_path / "cache"
    args = ["mhtest.runners.executor", "--cache", str(cache), "--run", "r1", "--wait", str(wait)]
    executor = Controller(args)
    executor.say(json.dumps(header).encode() + b"\n")
    return executor, cache / "runs" / "r1"


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def alive(pid: int | None) -> bool:
    return journal.process_of(pid, "r1")


def test_a_follower_goes_on_from_the_byte_the_controller_got_to(tmp_path) -> None:
    executor, run = start(tmp_path, wait=300)
    runner = None
    try:
        first = executor.events_until("test.start")
        runner = journal.read_pid(str(run), journal.RUNNER)
        executor.drop()  # the test goes on
        assert alive(runner)
        (tmp_path / "go").write_text("")
        offset = len(executor.received)
        follower = Controller(
            ["mhtest.runners.attach", "--cache", str(tmp_path / "cache"), "--run", "r1"]
            + ["--from", str(offset)]
        )
        rest = follower.events_until("run.end")
        full = (run / journal.JOURNAL).read_bytes()
        assert executor.received + follower.received == full  # each byte once
        kinds = [e["type"] for e in first + rest]
        assert kinds.count("test.start") == kinds.count("test.end") == 1, kinds
        assert [e["status"] for e in rest if e["type"] == "test.end"] == ["PASS"]
        follower.say(b'{"op": "done"}\n')
        assert follower.proc.wait(15) == 0
        follower.close()
        # The runner removed the run and left before the follower did.
        assert not run.exists()
        assert not alive(runner)
    finally:
        executor.close()
        if alive(runner):
            os.killpg(runner, signal.SIGKILL)  # type: ignore[arg-type]


def test_stop_is_a_message_and_the_stopped_test_reports(tmp_path) -> None:
    executor, run = start(tmp_path, wait=300)
    try:
        executor.events_until("test.start")
        executor.say(b'{"op": "stop"}\n')
        events = executor.events_until("run.end", 30)
        ends = [e for e in events if e["type"] == "test.end"]
        assert [e["status"] for e in ends] == ["INTERRUPT"], ends
        executor.say(b'{"op": "done"}\n')
        assert executor.proc.wait(15) == 0
        assert not run.exists()
    finally:
        executor.drop()


def test_without_a_wait_the_end_of_input_stops_the_tests(tmp_path) -> None:
    executor, run = start(tmp_path, wait=0)
    runner = None
    try:
        executor.events_until("test.start")
        runner = journal.read_pid(str(run), journal.RUNNER)
        assert executor.proc.stdin is not None
        executor.proc.stdin.close()  # the connection ended: nobody comes back
        wait_until(lambda: not alive(runner), 20, "the runner to stop its test and leave")
        assert not run.exists()
        assert not (tmp_path / "go").exists()
    finally:
        executor.drop()


def test_a_run_whose_controller_is_silent_too_long_stops_and_goes(tmp_path) -> None:
    executor, run = start(tmp_path, wait=1)  # kept 61 s: made to look older here
    runner = None
    try:
        executor.events_until("test.start")
        runner = journal.read_pid(str(run), journal.RUNNER)
        executor.drop()
        old = time.time() - 3600
        os.utime(run / journal.ALIVE, (old, old))
        wait_until(lambda: not alive(runner), 20, "the runner to give up on its controller")
        assert not run.exists()
    finally:
        executor.close()
        if alive(runner):
            os.killpg(runner, signal.SIGKILL)  # type: ignore[arg-type]


def test_following_a_run_that_is_not_there(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mhtest.runners.attach", "--cache", str(tmp_path), "--run", "nope"]
        + ["--from", "0"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=30,
    )
    assert done.returncode == 3
    assert done.stderr.startswith("MHTEST-NO-RUN")


def test_sweep_removes_the_runs_of_dead_runners_once_their_keep_time_passed(tmp_path) -> None:
    cache = str(tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    old = time.time() - 3600
    for name, wait, quiet in (("stale", 10, old), ("recent", 10, time.time()), ("long", 7200, old)):
        directory = journal.create(cache, name, wait)
        journal.write(directory, journal.RUNNER, str(dead.pid))
        os.utime(os.path.join(directory, journal.ALIVE), (quiet, quiet))
    journal.sweep(cache)
    assert sorted(os.listdir(tmp_path / "runs")) == ["long", "recent"]
