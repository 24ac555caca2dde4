"""Ctrl-C and SIGTERM during `mhtest run`, and the exit code bit field."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from .conftest import running_mhtest, wait_for, wait_gone

SLEEPY_PY = """
import os
import subprocess
import time

from mhtest import Test


class Fast(Test):
    def test(self):
        pass


class Sleepy(Test):
    def test(self):
        proc = subprocess.Popen(["sleep", "300"])
        with open(os.environ["PIDS"], "w") as fh:
            fh.write(f"{os.getpid()} {proc.pid}")
        time.sleep(30)


class NeverStarted(Test):
    def test(self):
        pass
"""


def read_pids(path: Path) -> tuple[int, int]:
    """Wait for Sleepy to write its pid and its `sleep` child's pid."""
    wait_for(lambda: path.exists() and path.read_text(), what="Sleepy to start")
    test_pid, sleep_pid = (int(p) for p in path.read_text().split())
    return test_pid, sleep_pid


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_keeps_finished_results_and_kills_children(write_tests, tmp_path, signum):
    interrupt_a_job(write_tests, tmp_path, signum)


def interrupt_a_job(write_tests, tmp_path, signum) -> dict[str, str]:
    """Run SLEEPY_PY, send `signum` while Sleepy sleeps, check what is left; the reasons."""
    write_tests({"sleepy.py": SLEEPY_PY})
    pids_file = tmp_path / "pids"
    results = tmp_path / "results"
    # One at a time: Fast ends, Sleepy runs, NeverStarted waits its turn.
    args = ["run", "t/sleepy.py", "--max-parallel", "1"]
    with running_mhtest(args, tmp_path, results, {"PIDS": str(pids_file)}) as proc:
        test_pid, sleep_pid = read_pids(pids_file)
        helpers = _children(proc.pid)  # the fork server
        assert helpers, "mhtest runs its tests through a helper process"
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode & 8, f"exit {proc.returncode}\n{out}\n{err}"
    assert proc.returncode == 9  # interrupted, and a test did not pass (INTERRUPT)
    assert "Traceback" not in err
    assert wait_gone([test_pid, sleep_pid, *helpers]) == []
    data = json.loads((results / "latest" / "results.json").read_text())
    statuses = {t["ref"].split(":")[1]: t["status"] for t in data["tests"]}
    assert statuses == {
        "Fast.test": "PASS",
        "Sleepy.test": "INTERRUPT",
        "NeverStarted.test": "INTERRUPT",
    }
    assert data["interrupted"] is True
    reasons = {t["ref"].split(":")[1]: t["fail_reason"] for t in data["tests"]}
    assert "interrupted" in reasons["Sleepy.test"]
    assert ":Sleepy.test: INTERRUPT" in out
    assert "RESULTS    : PASS 1 |" in out
    return reasons


@pytest.mark.timeout(60)
def test_interrupt_lets_the_runner_stop_in_order(write_tests, tmp_path):
    reasons = interrupt_a_job(write_tests, tmp_path, signal.SIGINT)
    assert reasons["NeverStarted.test"] == "not started: interrupted by the user"


PASS_PY = """
from mhtest import Test


class Pass(Test):
    def test(self):
        pass
"""

WARN_SKIP_CANCEL_PY = """
from mhtest import Test, skip


class Soft(Test):
    def test_warn(self):
        self.log.warning("w")

    @skip("s")
    def test_skip(self):
        pass

    def test_cancel(self):
        self.cancel("c")
"""

FAIL_PY = """
from mhtest import Test


class Fail(Test):
    def test(self):
        self.fail("f")
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "files, code",
    [
        (["pass.py"], 0),
        (["pass.py", "soft.py"], 0),  # WARN, SKIP and CANCEL do not fail a job
        (["pass.py", "fail.py"], 1),
        (["missing.py"], 2),
    ],
    ids=["pass", "warn-skip-cancel", "fail", "bad-input"],
)
def test_exit_code_bits(mhtest, write_tests, files, code):
    write_tests({"pass.py": PASS_PY, "soft.py": WARN_SKIP_CANCEL_PY, "fail.py": FAIL_PY})
    run = mhtest("run", *(f"t/{f}" for f in files))
    assert run.code == code, run


@pytest.mark.timeout(60)
def test_interrupt_before_any_test_ends_still_writes_results(write_tests, tmp_path):
    """SIGINT with only a sleeping test: results.json and results.xml are still written."""
    write_tests({"sleepy.py": SLEEPY_PY})
    pids_file = tmp_path / "pids"
    results = tmp_path / "results"
    with running_mhtest(
        ["run", "t/sleepy.py:Sleepy"], tmp_path, results, {"PIDS": str(pids_file)}
    ) as proc:
        test_pid, sleep_pid = read_pids(pids_file)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 9
    assert wait_gone([test_pid, sleep_pid]) == []
    job = (results / "latest").resolve()
    assert json.loads((job / "results.json").read_text())["interrupt"] == 1
    assert (job / "results.xml").exists() and (job / "results.tap").exists()
