"""Remote tests whose host stops answering: the controller keeps their deadlines itself.

A partitioned host (its sshd processes stopped, as a dead link looks from here) is found
by the SSH keepalives within seconds; a host whose runner hangs while its connection lives
is caught by the test's own deadline (its timeout plus a margin). Either way its tests end
with the reason, what arrived of their results is kept, and the other hosts' tests go on.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mhtest.hosts.testing import SshdPool, find_sshd

from .conftest import Run, mhtest_command, wait_for
from .test_multihost import descendants

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

PARTITION_PY = '''
import os
import time

from mhtest import Test


class Partitioned(Test):
    """On the victim: writes 96 MiB of results and ends; elsewhere: runs a while."""

    timeout = 60

    def test(self):
        server = os.environ["SSH_CONNECTION"].split()[2]
        with open(os.path.join(self.params.get("marks"), server), "w") as out:
            out.write(str(os.getpid()))
        if server != self.params.get("victim"):
            time.sleep(float(self.params.get("other_sleep")))
            self.log.info("went on")
            return
        self.log.info("before the partition")
        with open(os.path.join(self.outputdir, "big.bin"), "wb") as out:
            for _ in range(96):
                out.write(os.urandom(1 << 20))
'''


def spool_size(pid: int, results: Path) -> int:
    """Bytes in the controller's unnamed results spools (deleted files under `results`)."""
    total = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
            if target.startswith(str(results)) and target.endswith("(deleted)"):
                total += os.stat(fd).st_size
        except OSError:
            continue
    return total


def sshd_processes(listener: int) -> list[int]:
    """The sshd processes serving the connections of the sshd `listener` (not itself)."""
    found = []
    for pid in descendants(listener):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if name.startswith("sshd"):
            found.append(pid)
    return found


def test_partitioned_host_is_found_out_and_the_others_go_on(write_tests, tmp_path, warm_hosts):
    """Its sshd stopped for 90 s while its results arrive, not waited for (reconnect
    timeout 0): found within seconds, not 90 s."""
    if find_sshd() is None:
        pytest.skip("sshd not found: install openssh-server to run tests against real hosts")
    warm_hosts(1)  # the hosts' mhtest cache (the same user and machine) is ready
    tests = write_tests({"partitioned.py": PARTITION_PY})
    results = tmp_path / "results"
    marks = tmp_path / "marks"
    marks.mkdir()
    with SshdPool(tmp_path / "sshd") as pool:
        good, victim = pool.hosts(2)
        args = [
            "run",
            str(tests / "partitioned.py"),
            "--hosts",
            f"{good.alias},{victim.alias}",
            "--ssh-config",
            good.ssh_config,
            "-p",
            f"marks={marks}",
            "-p",
            f"victim={victim.address}",
            "-p",
            "other_sleep=25",
            "--reconnect-timeout",  # not waited for (tests/functional/test_reconnect.py: it is)
            "0",
        ]
        started = time.monotonic()
        with subprocess.Popen(
            mhtest_command(args, results),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        ) as proc:
            stopped: list[int] = []
            resume = None
            try:
                wait_for(lambda: len(list(marks.iterdir())) == 2, 60, "both tests to start")
                # Its results are on their way: cut the host off in the middle of them.
                wait_for(lambda: spool_size(proc.pid, results) > 0, 60, "the victim's results")
                stopped = sshd_processes(victim.pid)
                assert stopped, "no sshd process serves the victim's connection"
                for pid in stopped:
                    os.kill(pid, signal.SIGSTOP)
                cut = time.monotonic()
                resume = threading.Timer(90, lambda: [_cont(p) for p in stopped])
                resume.start()
                out, err = proc.communicate(timeout=85)
            finally:
                if resume is not None:
                    resume.cancel()  # (a thread left behind changes later tests' process)
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate(timeout=30)
                for pid in stopped:
                    _cont(pid)
    ended = time.monotonic()
    run = Run(args, proc.returncode, out, err, results)
    assert ended - cut < 40, f"the job waited {ended - cut:.0f} s for a dead host\n{run}"
    by_host = {r["host"]: r for r in run.results()["tests"]}
    # The other host's test went on and passed (it ran 25 s, past the cut).
    assert by_host[good.alias]["status"] == "PASS", run
    assert "went on" in Path(by_host[good.alias]["logdir"], "debug.log").read_text()
    lost = by_host[victim.alias]
    assert lost["status"] == "ERROR", run
    assert re.search(
        rf"connection to {victim.alias} lost at \d\d:\d\d:\d\d", lost["fail_reason"]
    ), lost["fail_reason"]
    assert "exit status" not in lost["fail_reason"]
    # What arrived of its results is kept.
    assert "before the partition" in Path(lost["logdir"], "debug.log").read_text()
    assert started < cut


def _cont(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


HANGS_PY = '''
import os
import signal
import time

from mhtest import Test


def parent(pid):
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


class RunnerHangs(Test):
    """On the victim, stops the executor (the fork server's parent): its SSH connection lives."""

    timeout = 3

    def test(self):
        server = os.environ["SSH_CONNECTION"].split()[2]
        with open(os.path.join(self.params.get("marks"), server), "w") as out:
            out.write(f"{os.getpid()} {parent(os.getppid())}")
        if server == self.params.get("victim"):
            time.sleep(1)  # its start reaches the controller (a test not started has no deadline)
            self.log.info("stopping my runner")
            os.kill(parent(os.getppid()), signal.SIGSTOP)
        time.sleep(6 if server == self.params.get("victim") else 1)
'''


def test_a_runner_that_hangs_is_held_to_the_test_deadline(
    mhtest, write_tests, warm_hosts, tmp_path
):
    """Its host answers but never reports the end: made up at the timeout plus the margin."""
    from mhtest.dispatch import DEADLINE_MARGIN
    from mhtest.runners.remote import STOP_GRACE

    from .conftest import wait_gone

    good, victim = warm_hosts(2)
    tests = write_tests({"hangs.py": HANGS_PY})
    marks = tmp_path / "marks"
    marks.mkdir()
    started = time.monotonic()
    run = mhtest(
        "run",
        str(tests / "hangs.py"),
        "--hosts",
        f"{good.alias},{victim.alias}",
        "--ssh-config",
        good.ssh_config,
        "-p",
        f"marks={marks}",
        "-p",
        f"victim={victim.address}",
        timeout=100,
    )
    took = time.monotonic() - started
    assert took < 3 + DEADLINE_MARGIN + STOP_GRACE + 15, run
    by_host = {r["host"]: r for r in run.results()["tests"]}
    assert by_host[good.alias]["status"] == "PASS", run
    late = by_host[victim.alias]
    assert late["status"] == "INTERRUPT", run
    assert late["fail_reason"] == f"timeout of 3 s reached; {victim.alias} did not report the end"
    assert f"{victim.alias}: stopping its runner" in (run.job_dir / "job.log").read_text()
    # The runner was killed when its place stopped; its test went with it.
    pids = [int(pid) for pid in (marks / victim.address).read_text().split()]
    assert wait_gone(pids, 10) == [], "the stopped runner or its test is still there"
