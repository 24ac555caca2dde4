"""Asking for a reboot (mhtest.runners.reboot): the desk on a real Unix socket, the test's
side, and a test that asks where it cannot (on the controller): a one-line ERROR. The
reboots themselves run on a real guest: tests/functional/test_reboot_runs.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mhtest.runners import reboot


@pytest.fixture
def desk(tmp_path, monkeypatch):
    """A desk taking requests for test 7 (others refused); what it got is in .asked."""
    asked: list[tuple[int, str | None]] = []

    def handle(uid: int, command: str | None) -> str | None:
        if uid != 7:
            return f"no test {uid} in this run"
        asked.append((uid, command))
        return None

    path = str(tmp_path / reboot.SOCKET_NAME)
    d = reboot.Desk(path, handle)
    d.asked = asked
    monkeypatch.setenv(reboot.SOCKET_VAR, path)
    yield d
    d.close()


def test_a_request_is_taken_then_the_test_waits_to_be_rebooted(desk, monkeypatch) -> None:
    monkeypatch.setenv(reboot.TEST_VAR, "7")
    started = time.monotonic()
    with pytest.raises(reboot.RebootError, match="not rebooted within 0.5 s"):
        reboot.request("systemctl kexec", wait=0.5)
    assert time.monotonic() - started >= 0.5
    assert desk.asked == [(7, "systemctl kexec")]


def test_a_refused_request_says_why_at_once(desk, monkeypatch) -> None:
    monkeypatch.setenv(reboot.TEST_VAR, "8")
    with pytest.raises(reboot.RebootError, match="cannot reboot: no test 8 in this run"):
        reboot.request(wait=30)
    assert desk.asked == []


def test_outside_a_remote_run_there_is_no_desk(monkeypatch) -> None:
    monkeypatch.delenv(reboot.SOCKET_VAR, raising=False)
    with pytest.raises(reboot.RebootError, match="does not run on a remote host"):
        reboot.request(wait=30)


def test_the_shell_command_asks_the_desk(desk, monkeypatch, tmp_path) -> None:
    """`mhtest-reboot -c CMD` through the launcher a test's PATH has (workerbin)."""
    from mhtest.runners.workerbin import bin_dir

    monkeypatch.setenv(reboot.TEST_VAR, "7")
    command = Path(bin_dir(), "tmt-reboot")
    proc = subprocess.Popen(
        [str(command), "-c", "reboot -f", "-t", "30"], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 20
        while not desk.asked and time.monotonic() < deadline:
            time.sleep(0.05)
        assert desk.asked == [(7, "reboot -f")]
        assert proc.poll() is None  # it waits for the reboot
    finally:
        proc.kill()
        proc.wait(10)
    monkeypatch.setenv(reboot.TEST_VAR, "9")
    done = subprocess.run([str(command)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip() == "tmt-reboot: cannot reboot: no test 9 in this run"


def test_counts_and_the_desk_given_only_by_the_spec(monkeypatch) -> None:
    env = {reboot.SOCKET_VAR: "/outer/reboot.sock", reboot.TEST_VAR: "3", "PATH": "/bin"}
    reboot.set_variables(env, {reboot.COUNT_VAR: "2"})
    assert env == {"PATH": "/bin", **reboot.count_variables(2)}
    assert env["TMT_REBOOT_COUNT"] == env["RSTRNT_REBOOTCOUNT"] == env["REBOOTCOUNT"] == "2"
    reboot.set_variables(env, {reboot.SOCKET_VAR: "/run/x.sock", reboot.TEST_VAR: "4"})
    assert env[reboot.SOCKET_VAR] == "/run/x.sock" and env[reboot.COUNT_VAR] == "0"


def test_kept_results_come_back_and_the_old_run_goes(tmp_path) -> None:
    from mhtest.runners import journal

    cache = str(tmp_path / "cache")
    old = journal.create(cache, "0123abcd", 60)
    root = tmp_path / "mhtest.old"  # the old run's tests' directories (in /tmp on a host)
    journal.write(old, journal.ROOT, str(root))
    logdir = root / "results" / "5"
    (logdir / "data").mkdir(parents=True)
    (logdir / "debug.log").write_text("before the reboot\n")
    (logdir / "data" / "mark").write_text("1")
    reboot.keep_results(old, 5, str(logdir))
    fresh = tmp_path / "root2" / "results" / "5"
    assert reboot.restore_results(cache, "0123abcd", 5, str(fresh))
    assert (fresh / "debug.log").read_text() == "before the reboot\n"
    assert (fresh / "data" / "mark").read_text() == "1"
    assert not os.path.exists(old) and not root.exists()


LOCAL_PY = """
from mhtest import Test


class Local(Test):
    def test(self):
        self.log.info("count %d", self.reboot_count)
        self.reboot()
"""


def test_a_test_on_the_controller_cannot_reboot_it(tmp_path) -> None:
    test = tmp_path / "local.py"
    test.write_text(LOCAL_PY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MHTEST_REBOOT")}
    done = subprocess.run(
        [sys.executable, "-m", "mhtest", "run", str(test), "--job-results-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 1, done
    line = next(x for x in done.stdout.splitlines() if "local.py:Local.test" in x)
    assert "ERROR" in line and "cannot reboot: this test does not run on a remote host" in line
