"""Tests that survive their host's connection: it drops, the controller comes back for them.

Each test runs the real CLI against real sshd hosts of its own (a private SshdPool, or a
host in a network namespace whose link it cuts) and a private host cache (mhtest's warm
environment linked in), so that it can see what is left on the host at the end. The
test on the host waits for a "go" mark that the test here writes after the cut: it ends
while its host is away, and its end and results arrive once the host is back, once each.
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

from mhtest.hosts import bootstrap
from mhtest.hosts.testing import SshdPool, find_sshd

from .conftest import Run, mhtest_command, pid_alive, wait_for, wait_gone
from .test_remote_deadline import sshd_processes

pytestmark = pytest.mark.timeout(180)

SURVIVOR_PY = '''
import os
import time

from mhtest import Test


class Survivor(Test):
    """Says it runs, waits for the go (its connection is cut meanwhile), leaves results."""

    timeout = 120

    def test(self):
        marks = self.params.get("marks")
        server = os.environ["SSH_CONNECTION"].split()[2]
        with open(os.path.join(marks, "started-" + server), "w") as out:
            out.write(str(os.getpid()))
        go = os.path.join(marks, "go")
        deadline = time.monotonic() + 100
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.log.info("went on after the cut")
        for i in range(3000):
            self.log.info("result line %d", i)
        with open(os.path.join(self.outputdir, "big.bin"), "wb") as out:
            out.write(os.urandom(int(self.params.get("size", 1 << 20))))
        self.whiteboard = "survived"
'''


def private_cache(tmp_path: Path) -> Path:
    """A host cache of this test's own, with mhtest's warm environment and sources linked."""
    cache = tmp_path / "host-cache"
    cache.mkdir()
    real = Path(bootstrap.REMOTE_CACHE).expanduser()
    for entry in real.iterdir():
        if entry.name.startswith(("env-", "src-", "python-")):
            (cache / entry.name).symlink_to(entry)
    return cache


def run_processes(cache: Path) -> list[int]:
    """Live processes whose command line names `cache` (the runs' runners and followers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(cache).encode() in words and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class Job:
    """`mhtest run REF` on `hosts`, in the background, with a private host cache."""

    def __init__(
        self, tmp_path: Path, ref: str, hosts: list, *extra: str, size: int = 8 << 20
    ) -> None:
        self.size = size
        self.marks = tmp_path / "marks"
        self.marks.mkdir()
        self.results = tmp_path / "results"
        self.cache = private_cache(tmp_path)
        self.args = [
            "run",
            ref,
            "--hosts",
            ",".join(h.alias for h in hosts),
            "--ssh-config",
            hosts[0].ssh_config,
            "-p",
            f"marks={self.marks}",
            "-p",
            f"size={size}",
            *extra,
        ]
        self.proc = subprocess.Popen(
            mhtest_command(self.args, self.results),
            cwd=tmp_path,
            env={**os.environ, "MHTEST_REMOTE_CACHE": str(self.cache)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def started(self, *hosts) -> None:
        for host in hosts:
            mark = self.marks / f"started-{host.address}"
            wait_for(lambda m=mark: m.exists() or self.proc.poll() is not None, 60, str(mark))
            assert mark.exists(), self.finish(10)

    def go(self) -> None:
        (self.marks / "go").write_text("")

    def finish(self, timeout: float) -> Run:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.communicate(timeout=30)
        self.ended = time.monotonic()
        return Run(self.args, self.proc.returncode, out, err, self.results)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)


def survivor(write_tests) -> str:
    return str(write_tests({"survivor.py": SURVIVOR_PY}) / "survivor.py")


def check_survived(run: Run, host: str, cache: Path, size: int = 8 << 20) -> dict:
    """The test passed with all its results, each once, and its host was left clean."""
    assert run.code == 0, run
    (result,) = [r for r in run.results()["tests"] if r["host"] == host]
    assert result["status"] == "PASS", run
    assert result["whiteboard"] == "survived"
    log = Path(result["logdir"], "debug.log").read_text()
    assert log.count("went on after the cut") == 1, log[-2000:]
    assert log.count("result line 2999\n") == 1
    assert Path(result["logdir"], "data", "big.bin").stat().st_size == size
    job_log = (run.job_dir / "job.log").read_text()
    assert f"{host}: connection lost at" in job_log, job_log[-3000:]
    assert f"{host}: back after" in job_log, job_log[-3000:]
    # Nothing is left on the host: no run directory, no process of the run.
    assert wait_gone(run_processes(cache), 10) == []
    assert not list((cache / "runs").iterdir())
    return result


@pytest.fixture
def pool(tmp_path, warm_hosts):
    if find_sshd() is None:
        pytest.skip("sshd not found: install openssh-server to run tests against real hosts")
    warm_hosts(1)  # mhtest's environment is in the real cache (linked by private_cache)
    with SshdPool(tmp_path / "sshd") as hosts:
        yield hosts


def test_session_killed_mid_test_the_test_passes_with_its_files_once(write_tests, tmp_path, pool):
    (host,) = pool.hosts(1)
    job = Job(tmp_path, survivor(write_tests), [host])
    try:
        job.started(host)
        sessions = sshd_processes(host.pid)
        assert sessions, "no sshd process serves the connection"
        signal_all(sessions, signal.SIGKILL)  # the connection drops; the listener stays
        time.sleep(1)
        job.go()
        run = job.finish(60)
    finally:
        job.kill()
    check_survived(run, host.alias, job.cache)


def test_results_cut_off_by_a_drop_arrive_whole_once(write_tests, tmp_path, pool):
    """The drop comes while the test's results stream back: the rest arrives once."""
    from .test_remote_deadline import spool_size

    (host,) = pool.hosts(1)
    job = Job(tmp_path, survivor(write_tests), [host], size=64 << 20)
    try:
        job.started(host)
        job.go()
        wait_for(lambda: spool_size(job.proc.pid, job.results) > 0, 60, "its results")
        signal_all(sshd_processes(host.pid), signal.SIGKILL)
        run = job.finish(60)
    finally:
        job.kill()
    check_survived(run, host.alias, job.cache, size=64 << 20)


@pytest.mark.slow
def test_sshd_stopped_for_20_s_then_continued(write_tests, tmp_path, pool):
    (host,) = pool.hosts(1)
    job = Job(tmp_path, survivor(write_tests), [host])
    stopped = []
    try:
        job.started(host)
        stopped = [host.pid, *sshd_processes(host.pid)]  # the listener too: no way in
        signal_all(stopped, signal.SIGSTOP)
        job.go()  # the test ends while its host does not answer
        continued = threading.Event()

        def resume() -> None:
            signal_all(stopped, signal.SIGCONT)
            continued.set()

        timer = threading.Timer(20, resume)
        timer.start()
        run = job.finish(90)
        timer.cancel()
    finally:
        signal_all(stopped, signal.SIGCONT)
        job.kill()
    assert continued.is_set(), run
    check_survived(run, host.alias, job.cache)


@pytest.mark.slow
def test_network_cut_for_20_s(write_tests, tmp_path, warm_hosts):
    from mhtest.hosts.netns import NetnsHost, available

    why = available()
    if why:
        pytest.skip(why)
    warm_hosts(1)
    with NetnsHost(tmp_path / "netns") as net:
        host = net.info
        job = Job(tmp_path, survivor(write_tests), [host])
        try:
            job.started(host)
            net.cut()
            cut = time.monotonic()
            job.go()
            time.sleep(20)
            net.restore()
            back = time.monotonic()
            run = job.finish(60)
        finally:
            net.restore()
            job.kill()
        assert back - cut >= 20
        check_survived(run, host.alias, job.cache)
        # Found out by keepalives (~15 s), then back within seconds of the link.
        assert job.ended - back < 15, f"{job.ended - back:.1f} s after the link was back"


def test_host_that_never_comes_back_is_error_in_bounded_time(write_tests, tmp_path, pool):
    good, victim = pool.hosts(2)
    job = Job(
        tmp_path,
        survivor(write_tests),
        [good, victim],
        "--reconnect-timeout",
        "8",
    )
    try:
        job.started(good, victim)
        sessions = sshd_processes(victim.pid)
        pool.stop_host(victim)  # nothing answers there any more
        signal_all(sessions, signal.SIGKILL)
        lost = time.monotonic()
        job.go()
        run = job.finish(60)
    finally:
        job.kill()
    assert job.ended - lost < 8 + 15, f"the job waited {job.ended - lost:.0f} s"
    by_host = {r["host"]: r for r in run.results()["tests"]}
    assert by_host[good.alias]["status"] == "PASS", run
    gone = by_host[victim.alias]
    assert gone["status"] == "ERROR", run
    assert re.fullmatch(
        rf"lost {victim.alias} at \d\d:\d\d:\d\d, not back within 8 s", gone["fail_reason"]
    ), gone["fail_reason"]
    # The victim's run waits for its controller a while longer (its keep time), then
    # stops and removes itself: as if that time had passed, it goes within seconds.
    (run_dir,) = (job.cache / "runs").iterdir()
    old = time.time() - 3600
    os.utime(run_dir / "alive", (old, old))
    assert wait_gone(run_processes(job.cache), 30) == []
    assert not list((job.cache / "runs").iterdir())


PAIR_PY = '''
import os
import time

from mhtest import MultiHostTest, Test


class Pair(MultiHostTest):
    timeout = 150

    def test(self):
        self.run_workers(
            [self.worker("pair.py:Side.test", h, name=f"side{i}") for i, h in enumerate(self.hosts)]
        )


class Side(Test):
    """:mhtest: worker"""

    def test(self):
        marks = self.params.get("marks")
        self.sync.barrier("one")
        server = os.environ["SSH_CONNECTION"].split()[2]
        with open(os.path.join(marks, "started-" + server), "w") as out:
            out.write(str(os.getpid()))
        deadline = time.monotonic() + 100
        while not os.path.exists(os.path.join(marks, "go")) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.sync.post("where", server)
        self.sync.barrier("two")
        seen = self.sync.exchange("after", server)
        assert sorted(seen) == ["side0", "side1"], seen
        assert len(self.sync.wait("where", count=2)) == 2
        self.log.info("met after the cut")
'''


def test_worker_whose_connection_drops_between_barriers_passes(write_tests, tmp_path, pool):
    good, victim = pool.hosts(2)
    ref = f"{write_tests({'pair.py': PAIR_PY})}/pair.py:Pair.test"
    job = Job(tmp_path, ref, [good, victim])
    try:
        job.started(good, victim)
        signal_all(sshd_processes(victim.pid), signal.SIGKILL)  # between the barriers
        time.sleep(0.5)
        job.go()
        run = job.finish(120)
    finally:
        job.kill()
    pair = run.result("pair.py:Pair.test")
    assert pair["status"] == "PASS", run
    children = {c["name"]: c for c in pair["children"]}
    assert [c["status"] for c in children.values()] == ["PASS", "PASS"], children
    for child in children.values():
        log = Path(child["logdir"], "debug.log").read_text()
        assert log.count("met after the cut") == 1, log[-2000:]
    test_log = Path(pair["logdir"], "debug.log").read_text()  # its own runs of the workers
    assert f"{victim.alias}: connection lost at" in test_log
    assert f"{victim.alias}: sync forward open again" in test_log
    assert wait_gone(run_processes(job.cache), 10) == []
    assert not list((job.cache / "runs").iterdir())


def test_ctrl_c_while_reconnecting_reaches_the_detached_tests(write_tests, tmp_path, pool):
    """Ctrl-C while the host is away: once it is back (within the stop grace), its tests
    are stopped there and report, and nothing is left on it."""
    (host,) = pool.hosts(1)
    job = Job(tmp_path, survivor(write_tests), [host])
    try:
        job.started(host)
        sessions = sshd_processes(host.pid)
        pool.stop_host(host)  # away: connections refused
        signal_all(sessions, signal.SIGKILL)
        time.sleep(1)  # it is reconnecting
        job.proc.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        time.sleep(1)
        pool.start_host(host)  # back within the stop grace: the stop gets there
        run = job.finish(60)
    finally:
        job.kill()
    assert job.ended - interrupted < 15, f"{job.ended - interrupted:.1f} s after Ctrl-C"
    (result,) = run.results()["tests"]
    assert result["status"] == "INTERRUPT", run
    assert "went on after the cut" not in Path(result["logdir"], "debug.log").read_text()
    assert wait_gone(run_processes(job.cache), 10) == []
    assert not list((job.cache / "runs").iterdir())
