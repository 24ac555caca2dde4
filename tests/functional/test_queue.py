"""`mhtest queue` through the real CLI: spools, watchers, real sshd hosts (tests/conftest.py).

Files dropped into queues run on their machines with Autotest's results layout; watchers
share spools and machines without running anything twice or two jobs on one machine; a
watcher killed mid-job loses nothing; bad input is one line and the watcher goes on.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import MHTEST, wait_for, wait_gone
from .queueing import Watching, drop, job_results, record, wait_done, wait_started

pytestmark = pytest.mark.timeout(240)

SLEEPY = '''\
"""Sleeps `seconds`: a test a queued control file runs by name (--tests-path)."""
import time

from mhtest import Test


class Sleepy(Test):
    timeout = 120

    def test(self):
        seconds = float(self.params.get("seconds", 1))
        time.sleep(seconds)
        self.whiteboard = f"slept {seconds:g} s"
'''
NOOP = 'job.record("GOOD", None, "noop", "ran")\n'


def sleeping(seconds: float) -> str:
    """A client control file that runs the sleepy test."""
    return f'job.run_test("sleepy", seconds={seconds})\n'


def queue_tree(tmp_path: Path, queues: dict[str, str | None]) -> Path:
    """TOP/queue/<name>/ with each .machines (None: none), TOP/tests/sleepy.py; TOP."""
    top = tmp_path / "testing"
    for name, machines in queues.items():
        spool = top / "queue" / name
        spool.mkdir(parents=True)
        if machines is not None:
            (spool / ".machines").write_text(machines)
    (top / "tests").mkdir()
    (top / "tests" / "sleepy.py").write_text(SLEEPY)
    return top


def test_two_queues_run_in_parallel_with_autotests_layout(warm_hosts, tmp_path: Path) -> None:
    h1, h2, h3 = warm_hosts(3)
    # One queue of two machines; one named after its machine (no .machines).
    top = queue_tree(tmp_path, {"pair": f"{h1.alias}\n{h2.alias}\n", h3.alias: None})
    pair, single, results = top / "queue" / "pair", top / "queue" / h3.alias, top / "results"
    args = [
        "start-all",
        str(top),
        "--ssh-config",
        h1.ssh_config,
        "--tests-path",
        str(top / "tests"),
    ]
    with Watching(args, tmp_path / "console", tmp_path) as watching:
        watching.wait_line("watching", count=2)
        drop(pair, "both", sleeping(3))
        drop(single, "one", sleeping(3))
        drop(pair, "who.srv", 'job.record("GOOD", None, "machines", ",".join(machines))\n')
        done = wait_done(results, ["both", "one", "who.srv"])
        # Ctrl-C's twin: the job running then ends INTERRUPT, its results kept.
        drop(single, "slow", sleeping(100))
        job_log = results / "slow" / h3.alias / "latest" / "job.log"
        running = f"{h3.alias}: running"
        wait_for(lambda: job_log.is_file() and running in job_log.read_text(), 60, running)
        time.sleep(3)  # its test on the host starts
        stopping = time.monotonic()
        assert watching.stop(signal.SIGTERM) == 0, watching.console()
        assert time.monotonic() - stopping < 60
    # A client control file: a job per machine of its queue, in parallel (and in parallel
    # with the other queue's), each an ordinary job tree.
    both, one = done["both"], done["one"]
    assert both["status"] == "PASS" and both["machines"] == [h1.alias, h2.alias]
    jobs = both["jobs"] + one["jobs"]
    assert [j["machine"] for j in jobs] == [h1.alias, h2.alias, h3.alias]
    assert max(j["started"] for j in jobs) < min(j["ended"] for j in jobs), jobs
    for host, name in ((h1, "both"), (h2, "both"), (h3, "one")):
        found = job_results(results / name / host.alias)
        assert found[name]["status"] == "PASS" and found[name]["host"] == host.alias
        slept = found[f"{name}/{host.alias}/sleepy"]
        assert (slept["status"], slept["whiteboard"]) == ("PASS", "slept 3 s")
        assert (results / name / host.alias / "latest" / "job.log").is_file()
    assert (results / "both" / "both").read_text() == sleeping(3)  # the file, kept
    assert sorted(p.name for p in (results / "both").iterdir()) == [
        "both",
        h1.alias,
        h2.alias,
        "queue.json",
    ]
    # A server control file: one job, here, with `machines` set to the queue's.
    who = job_results(results / "who.srv")
    assert who["who.srv"]["status"] == "PASS"
    [machines] = [t for ref, t in who.items() if ref.endswith("/machines")]
    assert machines["fail_reason"] == f"{h1.alias},{h2.alias}"
    assert done["who.srv"]["kind"] == "server" and done["who.srv"]["jobs"][0]["machine"] is None
    # Stopped: INTERRUPT, results kept; the rest of the queue is untouched.
    slow = record(results, "slow")
    assert slow["status"] == "INTERRUPT" and slow["jobs"][0]["complete"]
    found = job_results(results / "slow" / h3.alias)
    assert found["slow"]["status"] == "INTERRUPT"
    assert found[f"slow/{h3.alias}/sleepy"]["status"] == "INTERRUPT"
    assert list(single.iterdir()) == [single / ".log", single / "claimed"]
    assert list((single / "claimed").iterdir()) == []
    log = (single / ".log").read_text()
    assert "slow: interrupted (the watcher was stopped)" in log and "watcher stopped" in log


def test_a_watcher_killed_mid_job_and_restarted_loses_nothing(tmp_path: Path) -> None:
    top = queue_tree(tmp_path, {"q": "local\n"})
    spool, results = top / "queue" / "q", top / "results"
    args = ["watch", str(spool), str(results)]
    with Watching(args, tmp_path / "first", tmp_path) as first:
        first.wait_line("watching")
        drop(spool, "a", "import time\ntime.sleep(100)\n")
        started = wait_started(results, "a")
        drop(spool, "b", NOOP)
        drop(spool, "c", NOOP)
        first.proc.kill()
        first.proc.wait(30)
    # Its job learns it at once (its stdin ends), stops its tests and keeps the results.
    job_pid = started["jobs"][0]["pid"]
    assert wait_gone([job_pid], 60) == []
    found = job_results(results / "a" / "local")
    assert found["a"]["status"] == "INTERRUPT"
    assert sorted(p.name for p in spool.iterdir() if not p.name.startswith(".")) == [
        "b",
        "c",
        "claimed",
    ]
    with Watching(args, tmp_path / "second", tmp_path) as second:
        done = wait_done(results, ["a", "b", "c"])
        line = second.wait_line("a: its watcher")
        assert second.stop() == 0
    assert f"a: its watcher {started['watcher']} died while it ran: local INTERRUPT" in line
    assert done["a"]["status"] == "INTERRUPT" and done["a"]["recovered_by"] != started["watcher"]
    assert done["b"]["status"] == done["c"]["status"] == "PASS"
    assert sorted(p.name for p in results.iterdir()) == ["a", "b", "c"]  # each once
    assert [p.name for p in spool.iterdir() if not p.name.startswith(".")] == ["claimed"]
    assert list((spool / "claimed").iterdir()) == []


@pytest.mark.slow
def test_two_watchers_on_one_spool_run_each_of_50_files_once(tmp_path: Path) -> None:
    top = queue_tree(tmp_path, {"q": "local\n"})
    spool, results = top / "queue" / "q", top / "results"
    watchers = []
    for n in (1, 2):
        # Each its own machine locks (as if on two controllers with `local` each), so the
        # two run at once and race for every file.
        args = ["watch", str(spool), str(results), "--locks", str(tmp_path / f"busy{n}")]
        watchers.append(Watching(args, tmp_path / f"console{n}", tmp_path))
    try:
        for watcher in watchers:
            watcher.wait_line("watching")
        names = [f"f{n:02d}" for n in range(50)]
        for name in names:
            drop(spool, name, NOOP)
        done = wait_done(results, names, timeout=400)
    finally:
        codes = [w.stop() for w in watchers]
        for watcher in watchers:
            watcher.__exit__()
    assert codes == [0, 0]
    assert sorted(p.name for p in results.iterdir()) == names  # none twice (no .timestamp)
    assert all(r["status"] == "PASS" for r in done.values())
    by = {r["watcher"] for r in done.values()}
    assert len(by) == 2, by  # both took files
    ended = [ln for ln in (spool / ".log").read_text().splitlines() if ": ended in " in ln]
    assert sorted(ln.split(": ")[1] for ln in ended) == names
    assert [p.name for p in spool.iterdir() if not p.name.startswith(".")] == ["claimed"]


def test_one_job_per_machine_across_queues_and_processes_and_status(
    warm_hosts, tmp_path: Path
) -> None:
    [h1] = warm_hosts(1)
    # The same machine, named two ways (an alias, and user@address:port).
    top = queue_tree(tmp_path, {"first": f"{h1.alias}\n", "second": f"{h1.spec}\n"})
    results = top / "results"
    watchers = []
    for name in ("first", "second"):
        args = ["watch", str(top / "queue" / name), str(results), "--ssh-config", h1.ssh_config]
        args += ["--tests-path", str(top / "tests")]
        watchers.append(Watching(args, tmp_path / name, tmp_path))
    first, second = watchers
    try:
        for watcher in watchers:
            watcher.wait_line("watching")
        drop(top / "queue" / "first", "long", sleeping(6))
        wait_started(results, "long")
        drop(top / "queue" / "second", "next", NOOP)
        assert "waiting for machine" in second.wait_line(f"waiting for machine {h1.spec}")
        status = subprocess.run(
            [*MHTEST, "queue", "status", str(top), "--json", "--ssh-config", h1.ssh_config],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        queues = {q["name"]: q for q in json.loads(status.stdout)}
        assert queues["first"]["machines"][0]["busy"]["queue"] == "first"
        assert queues["second"]["machines"][0]["busy"]["queue"] == "first"
        assert [r["file"] for r in queues["first"]["running"]] == ["long"]
        assert queues["second"]["waiting"] == ["next"] and queues["second"]["running"] == []
        text = subprocess.run(
            [*MHTEST, "queue", "status", str(top), "--ssh-config", h1.ssh_config],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        assert f"  machines: {h1.alias} busy (first)\n" in text
        assert "  running: long -> " in text and "  waiting: 1: next\n" in text
        done = wait_done(results, ["long", "next"])
    finally:
        codes = [w.stop(signal.SIGINT) for w in watchers]  # Ctrl-C
        for watcher in watchers:
            watcher.__exit__()
    assert codes == [0, 0]
    assert done["next"]["jobs"][0]["started"] > done["long"]["jobs"][0]["ended"]
    assert done["long"]["status"] == done["next"]["status"] == "PASS"


def test_bad_input_is_one_line_and_the_watcher_goes_on(tmp_path: Path) -> None:
    top = queue_tree(tmp_path, {"q": "local\n"})
    spool, results = top / "queue" / "q", top / "results"
    results.mkdir()
    with Watching(["watch", str(spool), str(results)], tmp_path / "console", tmp_path) as w:
        w.wait_line("watching")
        # A control file that does not compile.
        drop(spool, "py2.srv", 'print "hello"\n')
        line = w.wait_line("py2.srv: failed")
        # A .machines naming an unknown host.
        (spool / ".machines").write_text("local\nno-such-host.invalid\n")
        drop(spool, "x", NOOP)
        w.wait_line("x: failed")
        (spool / ".machines").write_text("local\n")
        # A results directory that cannot be written (a file in its place: root writes
        # anywhere).
        results.rename(tmp_path / "results-away")
        results.write_text("not a directory")
        drop(spool, "y", NOOP)
        w.wait_line("y: failed")
        results.unlink()
        (tmp_path / "results-away").rename(results)
        # The spool disappears, and comes back.
        spool.rename(tmp_path / "away")
        w.wait_line("disappeared")
        (tmp_path / "away").rename(spool)
        w.wait_line("the spool is back")
        arrived = drop(spool, "z", NOOP)
        done = wait_done(results, ["z"])
        assert w.stop() == 0
    reasons = {p.name: p.read_text() for p in (spool / "failed").glob("*.reason")}
    assert reasons == {
        "py2.srv.reason": "py2.srv:1: Python 2 syntax (print statement): control files are "
        "Python 3; write print(...)\n",
        "x.reason": f"{spool}/.machines:2: unknown host 'no-such-host.invalid': not an "
        "inventory name, an ssh_config alias nor a host name that resolves (Name or service "
        "not known)\n",
        "y.reason": f"cannot write the results directory {results}: not a directory\n",
    }
    assert (spool / "failed" / "py2.srv").read_text() == 'print "hello"\n'
    assert line.endswith(
        f"q: py2.srv: failed: {reasons['py2.srv.reason'].strip()} (moved to failed/py2.srv)"
    )
    log = (spool / ".log").read_text()
    for name, reason in reasons.items():
        assert f": {name[: -len('.reason')]}: failed: {reason.strip()} (moved to failed/" in log
        assert f"q: {name[: -len('.reason')]}: failed: {reason.strip()}" in w.console()
    assert (
        "q: the spool " in w.console() and "disappeared: waiting for it to come back" in w.console()
    )
    assert "the spool is back (it had disappeared at " in log
    # The watcher went on: the last file ran, and started within a second of arriving.
    assert done["z"]["status"] == "PASS"
    assert done["z"]["claimed"] - arrived < 1.0, done["z"]


def test_the_mirror_queues_a_release_dropped_into_its_directory_and_mails_it(
    tmp_path: Path, mailbox
) -> None:
    mirror, queues, controls = tmp_path / "mirror", tmp_path / "queue", tmp_path / "controls"
    for path in (mirror, queues / "x86_64", controls):
        path.mkdir(parents=True)
    (controls / "basic-tests").write_text(sleeping(1))
    (controls / "net.srv").write_text("print(kernel, machines)\n")
    (tmp_path / "mirror_clients").write_text(
        f"x86_64 {controls / 'basic-tests'} {controls / 'net.srv'}\n"
    )
    (tmp_path / "configs").write_text("x86_64 /boot/config-lab\n")
    args = ["mirror", "--clients", str(tmp_path / "mirror_clients"), "-f", "configs"]
    args += ["--email", "lab@example.org", "--smtp", f"127.0.0.1:{mailbox.port}"]
    with Watching([*args, str(mirror), str(queues)], tmp_path / "console", tmp_path) as watching:
        watching.wait_line("mirror: watching")
        deb = "linux-image-6.1.0-18-cloud-amd64_6.1.76-1_amd64.deb"
        drop(mirror, deb, "!<arch>\n")
        watching.wait_line("mirror: mailed lab@example.org")
        assert watching.stop() == 0
    queued = sorted(p.name for p in (queues / "x86_64").iterdir())
    assert queued == ["6.1.0-18-cloud-amd64-basic-tests.srv", "6.1.0-18-cloud-amd64-net.srv"]
    wrapped = (queues / "x86_64" / queued[0]).read_text()
    assert f"kernel_path = '{mirror / deb}'" in wrapped and "deb_kernel.DEBKernel()" in wrapped
    srv = (queues / "x86_64" / queued[1]).read_text()
    assert "config = '/boot/config-lab'\n" in srv and srv.endswith("print(kernel, machines)\n")
    [message] = mailbox.messages
    assert "6.1.0-18-cloud-amd64" in message.get_payload() and message["To"] == "lab@example.org"
    assert f"mirror: {deb}: queued x86_64/{queued[0]}" in watching.console()


def test_usage_errors_are_one_line(mhtest, tmp_path: Path) -> None:
    (tmp_path / "clients").write_text("x86_64\n")
    (tmp_path / "queue").mkdir()
    cases = {
        (
            "watch",
            str(tmp_path / "none"),
            str(tmp_path / "r"),
        ): f"{tmp_path / 'none'}: no such spool directory",
        ("start-all", str(tmp_path / "none")): f"{tmp_path / 'none'}: no queue directory in it",
        ("status", str(tmp_path / "none")): f"{tmp_path / 'none'}: no queue directory in it",
        (
            "mirror",
            "--clients",
            "clients",
            "m",
            "queue",
        ): "clients:1: a queue and at least one control file",
        ("mirror", "--clients", "clients", "m", "nowhere"): "nowhere: no such queue directory",
        (
            "watch",
            str(tmp_path / "queue"),
            "r",
            "--tests-path",
            "nope",
        ): "--tests-path: nope is not a directory",
    }
    for args, message in cases.items():
        run = mhtest("queue", *args, timeout=60)
        assert run.code == 2, run
        [line] = run.stderr.strip().splitlines()
        assert line.startswith(f"mhtest queue: error: {message}"), line
