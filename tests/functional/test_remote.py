"""`mhtest run --hosts`: the RemoteTestRunner against real sshd hosts, through the real CLI.

The hosts are the session's loopback sshd processes (tests/conftest.py); mhtest is
installed in their cache once per session (`warm_hosts`), so each run here is the warm
path a user sees on the second run.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mhtest.hosts.testing import HostInfo

from .conftest import MHTEST, pid_alive, wait_for, wait_gone

pytestmark = pytest.mark.timeout(120)


def write_ssh_config(path: Path, hosts: dict[str, HostInfo], extra: str = "") -> Path:
    """An ssh_config with one `Host ALIAS` block per entry (its key and known_hosts)."""
    blocks = []
    for alias, info in hosts.items():
        lines = [
            f"Host {alias}",
            f"    HostName {info.address}",
            f"    Port {info.port}",
            f"    User {info.user}",
            f"    IdentityFile {info.key_file}",
            f"    UserKnownHostsFile {info.known_hosts}",
            *(f"    {line.strip()}" for line in extra.splitlines() if line.strip()),
        ]
        blocks.append("\n".join(lines) + "\n")
    path.write_text("\n".join(blocks))
    return path


WHERE_PY = '''
import os
import sys

from mhtest import Test


class Where(Test):
    """Says where it ran: the SSH server address it was reached on."""

    def test(self):
        server = os.environ["SSH_CONNECTION"].split()[2]
        self.log.info("running on %s as pid %d", server, os.getpid())
        print(f"stdout from {server}")
        with open(os.path.join(os.path.dirname(__file__), "data.txt")) as data:
            self.whiteboard = f"{server} {data.read().strip()} {self.params.get('role')}"
'''

SLEEPER_PY = '''
import os
import time

from mhtest import Test


class Sleeper(Test):
    """Records its pid and where it runs from, then sleeps until stopped."""

    timeout = 60

    def test(self):
        server = os.environ["SSH_CONNECTION"].split()[2]
        marks = self.params.get("marks")
        with open(os.path.join(marks, f"{server}.pid"), "w") as out:
            out.write(f"{os.getpid()} {os.path.dirname(os.path.abspath(__file__))}")
        time.sleep(60)


class Short(Sleeper):
    timeout = 2
'''


@pytest.mark.timeout(120)
def test_one_test_on_three_hosts_is_three_results(mhtest, write_tests, warm_hosts) -> None:
    infos = warm_hosts(3)
    tests = write_tests({"where.py": WHERE_PY, "data.txt": "data-file-came-along"})
    run = mhtest(
        "run",
        str(tests / "where.py"),
        "--hosts",
        ",".join(i.alias for i in infos),
        "--ssh-config",
        infos[0].ssh_config,
        "-p",
        "role=worker",
    )
    assert run.code == 0, run
    results = run.results()["tests"]
    assert len(results) == 3
    by_host = {r["host"]: r for r in results}
    assert set(by_host) == {i.alias for i in infos}
    for info in infos:
        result = by_host[info.alias]
        assert result["status"] == "PASS"
        # it really ran behind that host's sshd, with its data file and the params
        assert result["whiteboard"] == f"{info.address} data-file-came-along worker"
        assert re.search(rf"where.py:Where.test \[{info.alias}\]: PASS", run.stdout), run
        logdir = Path(result["logdir"])
        assert logdir.is_relative_to(run.job_dir)
        assert f"running on {info.address}" in (logdir / "debug.log").read_text()
        assert (logdir / "whiteboard").read_text() == result["whiteboard"]
        assert (logdir / "stdout").read_text() == f"stdout from {info.address}\n"
    cases = ET.parse(run.job_dir / "results.xml").getroot().iter("testcase")
    assert sorted(c.get("classname").rsplit("@", 1)[1] for c in cases) == sorted(by_host)
    tap = (run.job_dir / "results.tap").read_text()
    for info in infos:
        assert re.search(rf"^ok \d+ - .*where.py:Where.test@{info.alias}$", tap, re.M), tap


@pytest.mark.timeout(90)
def test_ctrl_c_interrupts_and_leaves_no_test_process(write_tests, warm_hosts, tmp_path) -> None:
    infos = warm_hosts(2)
    tests = write_tests({"sleeper.py": SLEEPER_PY})
    marks = tmp_path / "marks"
    marks.mkdir()
    results_dir = tmp_path / "results"
    command = [
        *MHTEST,
        "run",
        f"{tests / 'sleeper.py'}:Sleeper",
        "--hosts",
        ",".join(i.alias for i in infos),
        "--ssh-config",
        infos[0].ssh_config,
        "-p",
        f"marks={marks}",
        "--job-results-dir",
        str(results_dir),
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    ) as proc:
        try:
            wait_for(lambda: len(list(marks.glob("*.pid"))) == 2, 60, "both tests to start")
            recorded = [p.read_text().split() for p in marks.glob("*.pid")]
            pids = [int(pid) for pid, _ in recorded]
            assert all(pid_alive(p) for p in pids)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=40)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode & 8, f"exit {proc.returncode}\n{out}\n{err}"
    assert wait_gone(pids, 10) == [], "test processes survived Ctrl-C on the hosts"
    # the executor's private directory (the tests' copy) is gone too
    assert not any(Path(where).exists() for _, where in recorded)
    job = (results_dir / "latest").resolve()
    results = json.loads((job / "results.json").read_text())["tests"]
    assert sorted(r["host"] for r in results) == sorted(i.alias for i in infos)
    assert {r["status"] for r in results} == {"INTERRUPT"}
    for result in results:
        assert (Path(result["logdir"]) / "debug.log").exists(), result


@pytest.mark.timeout(60)
def test_remote_timeout_is_enforced(mhtest, write_tests, warm_hosts, tmp_path) -> None:
    (info,) = warm_hosts(1)
    tests = write_tests({"sleeper.py": SLEEPER_PY})
    marks = tmp_path / "marks"
    marks.mkdir()
    started = time.monotonic()
    run = mhtest(
        "run",
        f"{tests / 'sleeper.py'}:Short",
        "--hosts",
        info.alias,
        "--ssh-config",
        info.ssh_config,
        "-p",
        f"marks={marks}",
    )
    assert time.monotonic() - started < 30
    assert run.code & 1, run
    result = run.result("Short")
    assert result["status"] == "INTERRUPT" and result["host"] == info.alias
    assert result["fail_reason"] == "Test interrupted: Timeout reached"
    assert "timeout of 2 s reached" in (Path(result["logdir"]) / "debug.log").read_text()
    pid = int((marks / f"{info.address}.pid").read_text().split()[0])
    assert wait_gone([pid], 10) == [], "the timed-out test process is still running"
    assert "START" in (Path(result["logdir"]) / "debug.log").read_text()


LEAVES_PY = """
import subprocess

from mhtest import Test


class Leaves(Test):
    def test(self):
        self.whiteboard = str(subprocess.Popen(["sleep", "300"]).pid)
"""


@pytest.mark.timeout(60)
def test_remote_leftover_is_killed_and_said_in_the_fetched_log(mhtest, write_tests, warm_hosts):
    """The host's runner ends what a test left running before it sends the test's results."""
    (info,) = warm_hosts(1)
    tests = write_tests({"leaves.py": LEAVES_PY})
    run = mhtest(
        "run", str(tests / "leaves.py"), "--hosts", info.alias, "--ssh-config", info.ssh_config
    )
    assert run.code == 0, run
    result = run.result("Leaves")
    pid = int(result["whiteboard"])
    assert wait_gone([pid], 10) == [], "the test's leftover still runs on the host"
    log = (Path(result["logdir"]) / "debug.log").read_text()
    assert f"killed 1 leftover process(es) of the test (SIGTERM): pid {pid} (sleep)" in log, log


INVENTORY = """
all:
  vars:
    role: plain
  hosts:
    web1:
      ansible_host: {a.address}
      ansible_port: {a.port}
      ansible_user: {a.user}
      ansible_ssh_private_key_file: {a.key_file}
      role: server
  children:
    clients:
      vars:
        role: client
      hosts:
        web2:
          ansible_host: {b.address}
          ansible_port: {b.port}
          ansible_user: {b.user}
          ansible_ssh_private_key_file: {b.key_file}
"""


@pytest.mark.timeout(60)
def test_inventory_hosts_and_their_params(mhtest, write_tests, warm_hosts, tmp_path) -> None:
    a, b = warm_hosts(2)
    tests = write_tests({"where.py": WHERE_PY, "data.txt": "d"})
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(INVENTORY.format(a=a, b=b))
    # An inventory names no known_hosts file: the user's ~/.ssh/known_hosts is used.
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "known_hosts").write_text(Path(a.known_hosts).read_text())
    env = {"HOME": str(home), "MHTEST_CACHE_DIR": str(Path("~/.cache/mhtest").expanduser())}
    run = mhtest("run", str(tests / "where.py"), "--inventory", str(inventory), env=env)
    assert run.code == 0, run
    boards = {r["host"]: r["whiteboard"] for r in run.results()["tests"]}
    assert boards == {"web1": f"{a.address} d server", "web2": f"{b.address} d client"}
    # a group name selects its hosts
    run = mhtest(
        "run", str(tests / "where.py"), "--inventory", str(inventory), "--hosts", "clients", env=env
    )
    assert run.code == 0, run
    assert [r["host"] for r in run.results()["tests"]] == ["web2"]


def test_an_inventory_host_with_a_local_connection_runs_here(mhtest, write_tests, tmp_path):
    """Its kind picks the runner, not its name (it used to fail: no attribute 'start')."""
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text("all:\n  hosts:\n    mybox: {ansible_connection: local, role: db}\n")
    tests = write_tests({"here.py": HERE_PY})
    run = mhtest("run", str(tests / "here.py"), "--inventory", str(inventory), "--hosts", "mybox")
    assert run.code == 0, run
    (result,) = run.results()["tests"]
    assert (result["host"], result["status"], result["whiteboard"]) == ("mybox", "PASS", "db here")


HERE_PY = """
import os

from mhtest import Test


class Here(Test):
    def test(self):
        self.whiteboard = f"{self.params.get('role')} {os.environ.get('SSH_CONNECTION', 'here')}"
"""


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--hosts", "root@bad host"], "malformed host 'root@bad host'"),
        (["--hosts", "h1,,h2"], "empty host name"),
        (["--hosts", "h1:99999"], "port 99999"),
        (["--inventory", "{bad_yaml}"], "invalid YAML"),
        (["--inventory", "{no_file}"], "cannot read"),
    ],
)
def test_malformed_hosts_and_inventories_are_one_line_errors(
    mhtest, tmp_path, args, expected
) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("all:\n  hosts:\n    web1: {ansible_host: [unclosed\n")
    args = [a.format(bad_yaml=bad_yaml, no_file=tmp_path / "missing.yaml") for a in args]
    test = Path(__file__).resolve().parents[2] / "examples" / "tests" / "passtest.py"
    run = mhtest("run", str(test), *args)
    assert run.code == 2, run
    lines = [ln for ln in run.stderr.splitlines() if not ln.startswith("mhtest: warning: plugin")]
    assert len(lines) == 1 and expected in lines[0], run
    if "--inventory" in args:
        assert str(args[-1]) in lines[0]
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").iterdir())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_second_run_reuses_the_cached_environment(mhtest, write_tests, warm_hosts, tmp_path):
    """A fresh host cache: the first run installs mhtest, the second only starts it.

    (The controller's wheels are built by then: `warm_hosts` made them.)
    """
    (info,) = warm_hosts(1)
    tests = write_tests({"where.py": WHERE_PY, "data.txt": "d"})
    env = {"MHTEST_REMOTE_CACHE": str(tmp_path / "host-cache")}
    args = ["run", str(tests / "where.py"), "--hosts", info.alias, "--ssh-config", info.ssh_config]
    times = []
    logs = []
    outputs = []
    for _ in range(2):
        started = time.monotonic()
        run = mhtest(*args, env=env, timeout=280)
        times.append(time.monotonic() - started)
        assert run.code == 0, run
        logs.append((run.job_dir / "job.log").read_text())
        outputs.append(run.stdout)
        if not times[1:]:
            (ready,) = (tmp_path / "host-cache").glob("env-*/.mhtest-ready")
            stamp = ready.stat().st_mtime_ns
    assert re.search(r"mhtest installed in \S+ \(dependencies and sources", logs[0])
    # The console says what the wait is for (it said nothing for seconds)
    assert f"HOST       : {info.alias}: installing mhtest (dependencies and sources)" in outputs[0]
    assert "HOST" not in outputs[1]
    # Sources are installed again only when mhtest's own code changed in between (this tree
    # may be edited while the tests run); the dependency environment is never rebuilt.
    assert "(dependencies" not in logs[1]
    assert ready.stat().st_mtime_ns == stamp
    assert times[1] < times[0], f"cold run {times[0]:.2f} s, warm run {times[1]:.2f} s"


FAILING_PY = """
from mhtest import Test


class Wrong(Test):
    def test(self):
        self.log.info("about to fail")
        self.fail("the answer is 41")
"""


@pytest.mark.timeout(60)
def test_several_tests_from_several_directories_per_host(mhtest, write_tests, warm_hosts):
    infos = warm_hosts(2)
    tests = write_tests({"a/where.py": WHERE_PY, "a/data.txt": "from-a", "b/wrong.py": FAILING_PY})
    run = mhtest(
        "run",
        str(tests / "a" / "where.py"),
        str(tests / "b" / "wrong.py"),
        "--hosts",
        ",".join(i.alias for i in infos),
        "--ssh-config",
        infos[0].ssh_config,
    )
    assert run.code == 1, run
    results = run.results()["tests"]
    assert sorted((r["host"], r["ref"].rsplit(":", 1)[1], r["status"]) for r in results) == sorted(
        (i.alias, test, status)
        for i in infos
        for test, status in (("Where.test", "PASS"), ("Wrong.test", "FAIL"))
    )
    for result in results:
        debug = (Path(result["logdir"]) / "debug.log").read_text()
        if result["status"] == "FAIL":
            assert result["fail_reason"] == "the answer is 41"
            assert "about to fail" in debug
        else:
            assert result["whiteboard"].split()[1] == "from-a"
