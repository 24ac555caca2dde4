"""What a test leaves running in its process group is ended when the test ends.

Each test runs in a process group of its own; once its process has exited, the runner
sends what is left in the group SIGTERM, then SIGKILL after a grace, and says so in the
test's debug.log.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .conftest import pid_alive, wait_gone

LEAVES_PY = """
import os
import subprocess
import time

from mhtest import Test


def mark(name, text):
    with open(os.path.join(os.environ["MARKS"], name), "w") as fh:
        fh.write(text)


def pipes(pid):
    fds = os.listdir(f"/proc/{pid}/fd")
    return sum(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:") for fd in fds)


class Sleeper(Test):
    def test(self):
        proc = subprocess.Popen(["sleep", "300"])
        mark("sleeper", str(proc.pid))


class PipeHolder(Test):
    def test(self):
        # It keeps the test's event pipe open: the runner used to stop listening to it
        # after 5 s and leave it running.
        proc = subprocess.Popen(["sleep", "300"], close_fds=False)
        mark("holder", f"{proc.pid} {pipes(proc.pid)}")


class Stubborn(Test):
    def test(self):
        proc = subprocess.Popen(["sh", "-c", "trap '' TERM; exec sleep 300"])
        # Once it has become `sleep`, it ignores SIGTERM.
        while open(f"/proc/{proc.pid}/comm").read().strip() != "sleep":
            time.sleep(0.01)
        mark("stubborn", str(proc.pid))


class Clean(Test):
    def test(self):
        subprocess.run(["true"], check=True)
"""

LEAVES_SH = """
#!/bin/sh
sleep 300 &
# Until it has become `sleep`, the child is a copy of this shell.
until [ "$(cat /proc/$!/comm)" = sleep ]; do :; done
echo $! > "$MARKS/simple"
exit 0
"""


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    path = tmp_path / "marks"
    path.mkdir()
    return path


def debug_log(run, ref: str) -> str:
    return Path(run.result(ref)["logdir"], "debug.log").read_text()


def check_killed(run, ref: str, pid: int, name: str, how: str = "SIGTERM") -> None:
    """The test passed, its leftover `pid` is gone and its debug.log says so."""
    assert run.result(ref)["status"] == "PASS", run
    assert wait_gone([pid], timeout=5) == [], f"{ref}: leftover {pid} still runs"
    log = debug_log(run, ref)
    line = f"killed 1 leftover process(es) of the test ({how}): pid {pid} ({name})"
    assert line in log, log


@pytest.mark.timeout(60)
def test_a_leftover_of_an_instrumented_test_is_killed(mhtest, write_tests, marks) -> None:
    write_tests({"leaves.py": LEAVES_PY})
    run = mhtest("run", "t/leaves.py:Sleeper", "t/leaves.py:Clean", env={"MARKS": str(marks)})
    assert run.code == 0, run
    check_killed(run, "t/leaves.py:Sleeper.test", int((marks / "sleeper").read_text()), "sleep")
    # A test that leaves nothing gets no such line.
    assert "leftover" not in debug_log(run, "t/leaves.py:Clean.test")


@pytest.mark.timeout(60)
def test_a_leftover_holding_the_event_pipe_is_killed_at_once(mhtest, write_tests, marks) -> None:
    write_tests({"leaves.py": LEAVES_PY})
    started = time.monotonic()
    run = mhtest("run", "t/leaves.py:PipeHolder", env={"MARKS": str(marks)})
    took = time.monotonic() - started
    assert run.code == 0, run
    pid, pipes = (int(n) for n in (marks / "holder").read_text().split())
    assert pipes >= 1, "the leftover does not hold the event pipe: this test tests nothing"
    check_killed(run, "t/leaves.py:PipeHolder.test", pid, "sleep")
    # Ended with the test's group, not after the runner gave up listening (EXIT_GRACE).
    assert took < 5, f"the run took {took:.1f} s"


@pytest.mark.timeout(60)
def test_a_leftover_that_ignores_sigterm_gets_sigkill(mhtest, write_tests, marks) -> None:
    write_tests({"leaves.py": LEAVES_PY})
    run = mhtest("run", "t/leaves.py:Stubborn", env={"MARKS": str(marks)})
    assert run.code == 0, run
    pid = int((marks / "stubborn").read_text())
    check_killed(run, "t/leaves.py:Stubborn.test", pid, "sleep", how="SIGTERM, then SIGKILL")


@pytest.mark.timeout(60)
def test_a_leftover_of_a_simple_test_is_killed(mhtest, write_tests, marks) -> None:
    write_tests({"leaves.sh": LEAVES_SH}, executable=("leaves.sh",))
    run = mhtest("run", "t/leaves.sh", env={"MARKS": str(marks)})
    assert run.code == 0, run
    pid = int((marks / "simple").read_text())
    check_killed(run, "t/leaves.sh", pid, "sleep")
    assert not pid_alive(pid)
