"""Multi-host tests through the real CLI: the examples on local workers and on real sshd hosts.

Every run is `python -m mhtest run …` in a subprocess; hosts are real OpenSSH sshd processes
on loopback addresses (tests/conftest.py). Failure cases (a worker killed, a host dropping)
use their own worker files, written into tmp_path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import MHTEST, Run, fork_servers_ahead, mhtest_command

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tests"
PINGPONG = str(EXAMPLES / "pingpong.py")
NETPERF = str(EXAMPLES / "netperf.py")
PINGPONG_FAIL = str(EXAMPLES / "pingpong_fail.py")
PASSTEST = str(EXAMPLES / "passtest.py")


def host_args(hosts) -> list[str]:
    """--hosts with the pool's ssh_config aliases, as a user with that config would type."""
    return ["--hosts", ",".join(h.alias for h in hosts), "--ssh-config", hosts[0].ssh_config]


def worker_dirs(run: Run, ref_part: str) -> dict[str, Path]:
    """{worker dir name: path} under the multi-host test's own directory."""
    test_dir = Path(run.result(ref_part)["logdir"])
    return {p.name: p for p in sorted((test_dir / "workers").iterdir())}


def check_examples(run: Run, names: list[str]) -> None:
    """The three examples' results as a user reads them, workers named `names`."""
    assert run.code == 1, run  # one test (pingpong_fail) failed, nothing else went wrong
    ping = run.result("pingpong.py:PingPong.test")
    assert ping["status"] == "PASS", run
    children = {c["name"]: c for c in ping["children"]}
    assert list(children) == names
    for i, name in enumerate(names):
        child = children[name]
        assert child["status"] == "PASS", child
        board = json.loads(child["whiteboard"])
        assert board["peer"] == names[(i + 1) % len(names)]
        assert 0 < board["rtt_ms_min"] <= board["rtt_ms_max"]
    dirs = worker_dirs(run, "pingpong.py:PingPong.test")
    assert list(dirs) == [f"{i}-{n}" for i, n in enumerate(names, 1)]
    for i, name in enumerate(names, 1):
        work = dirs[f"{i}-{name}"]
        assert "pinged" in (work / "debug.log").read_text()
        assert json.loads((work / "whiteboard").read_text()) == json.loads(
            children[name]["whiteboard"]
        )
        assert children[name]["logdir"] == str(work)

    net = run.result("netperf.py:NetPerf.test")
    assert net["status"] == "PASS", run
    assert [c["name"] for c in net["children"]] == ["server", "client"]
    assert json.loads(net["whiteboard"])["throughput_mbit_s"] > 0
    server = json.loads(net["children"][0]["whiteboard"])
    assert server["bytes_received"] == json.loads(net["whiteboard"])["bytes_sent"]

    fail = run.result("pingpong_fail.py:PingPongFail.test")
    assert fail["status"] == "FAIL"
    last = names[-1]
    host = last.rsplit("-", 1)[0] if last.startswith("local-") else last
    # The root cause comes first: the worker, its host, its status and its own reason.
    assert fail["fail_reason"].startswith(
        f"worker {last} on {host}: FAIL: {last} was told to fail before serving"
    ), fail["fail_reason"]
    statuses = {c["name"]: c["status"] for c in fail["children"]}
    assert statuses[last] == "FAIL"
    assert all(statuses[n] == "ERROR" for n in names[:-1]), statuses
    assert "FAIL (" in run.stdout and f"worker {last} on {host}" in run.stdout


@pytest.mark.timeout(60)
def test_examples_on_local_workers(mhtest) -> None:
    run = mhtest("run", PINGPONG, NETPERF, PINGPONG_FAIL)
    check_examples(run, ["local-1", "local-2"])


@pytest.mark.timeout(90)
def test_examples_on_three_sshd_hosts(mhtest, sshd_hosts) -> None:
    hosts = sshd_hosts(3)
    run = mhtest("run", PINGPONG, NETPERF, PINGPONG_FAIL, *host_args(hosts), timeout=80)
    check_examples(run, [h.alias for h in hosts])
    net = run.result("netperf.py:NetPerf.test")
    assert [c["host"] for c in net["children"]] == [hosts[0].alias, hosts[1].alias]
    # By default the workers reach the sync server through a port forwarded on their own
    # SSH connection: a port on the host, not the server's.
    addresses = {
        json.loads((d / "spec.json").read_text())["env"]["MHTEST_SYNC_ADDRESS"]
        for d in worker_dirs(run, "pingpong.py:PingPong.test").values()
    }
    assert len(addresses) == 3, addresses
    # paramiko's key-exchange chatter stays out of the test's own log (it was ~50 lines a host)
    log = Path(run.result("pingpong.py:PingPong.test")["logdir"], "debug.log").read_text()
    assert "paramiko" not in log, log


@pytest.mark.timeout(90)
def test_sync_direct_on_sshd_hosts(mhtest, sshd_hosts) -> None:
    hosts = sshd_hosts(3)
    run = mhtest("run", PINGPONG, "--sync-direct", *host_args(hosts), timeout=80)
    assert run.code == 0, run
    ping = run.result("pingpong.py:PingPong.test")
    assert [c["status"] for c in ping["children"]] == ["PASS"] * 3
    # Every host connects straight to the one server, at the address it sees us from.
    addresses = {
        json.loads((d / "spec.json").read_text())["env"]["MHTEST_SYNC_ADDRESS"]
        for d in worker_dirs(run, "pingpong.py:PingPong.test").values()
    }
    assert len(addresses) == 1, addresses
    assert addresses.pop().startswith("tcp://127.0.0.1:")


KILL_WORKERS = """
import os
import signal
import time
from pathlib import Path

from mhtest import MultiHostTest, Test


class Crowd(MultiHostTest):
    def test(self):
        first, *rest = self.hosts
        workers = [self.worker("workers.py:Victim.test", first, name="victim")]
        workers += [
            self.worker("workers.py:Waiter.test", h, name=f"waiter{i}")
            for i, h in enumerate(rest or [first], 1)
        ]
        self.run_workers(workers, timeout=150)


class Victim(Test):
    def test(self):
        self.sync.exchange("ready", os.getpid())
        marks = Path(self.params.get("marks"))
        if self.params.get("drop"):
            # Tell the outside world we are in place: it drops our host.
            (marks / "victim-ready").write_text(str(os.getpid()))
            self.sync.wait("nobody-posts-this", timeout=120)
        else:
            (marks / "victim-died").write_text(repr(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)


class Waiter(Test):
    def test(self):
        self.sync.exchange("ready", os.getpid())
        self.log.info("waiting at the barrier")
        if self.params.get("busy"):
            time.sleep(100)  # busy with its own work: no sync call to fail
        self.sync.barrier("never", timeout=120)
"""


def died_at(marks: Path, run: Run) -> float:
    """When the victim worker killed itself (the time it wrote just before)."""
    mark = marks / "victim-died"
    assert mark.exists(), f"the victim never got to kill itself\n{run}\n{run.results()}"
    return float(mark.read_text())


def check_victim_run(run: Run, died: float, victim_host: str, waiters: list[str]) -> dict:
    """The workers waiting for the victim (dead at `died`) were aborted in seconds, naming it."""
    crowd = run.result("workers.py:Crowd.test")
    assert crowd["status"] == "FAIL", run
    assert crowd["fail_reason"].startswith(f"worker victim on {victim_host}: ERROR: "), crowd
    children = {c["name"]: c for c in crowd["children"]}
    assert list(children) == ["victim", *waiters]
    for name in waiters:
        assert children[name]["status"] == "ERROR"
        assert children[name]["fail_class"] == "SyncAborted", children[name]
        assert "victim" in children[name]["fail_reason"]
        waited = children[name]["end"] - died
        assert waited < 10, f"{name} ended {waited:.1f} s after the victim died\n{run}"
        # Their own results were fetched: they did run and wait.
        log = Path(children[name]["logdir"], "debug.log").read_text()
        assert "waiting at the barrier" in log
    return children


@pytest.mark.timeout(60)
def test_worker_killed_aborts_the_others_local(mhtest, write_tests, tmp_path) -> None:
    base = write_tests({"workers.py": KILL_WORKERS})
    run = mhtest(
        "run",
        f"{base}/workers.py:Crowd.test",
        "-p",
        "hosts=local,local,local",
        "-p",
        f"marks={tmp_path}",
    )
    died = died_at(tmp_path, run)
    children = check_victim_run(run, died, "local", ["waiter1", "waiter2"])
    assert "killed by signal 9" in children["victim"]["fail_reason"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["local", "sshd"])
def test_worker_killed_stops_the_busy_others_at_once(
    mhtest, write_tests, sshd_hosts, tmp_path, where
) -> None:
    """Workers not in a sync call ran on until their next one; now they end at once."""
    base = write_tests({"workers.py": KILL_WORKERS})
    hosts = sshd_hosts(3) if where == "sshd" else []
    places = host_args(hosts) if hosts else ["-p", "hosts=local,local,local"]
    run = mhtest(
        "run", f"{base}/workers.py:Crowd.test", *places,
        "-p", f"marks={tmp_path}", "-p", "busy=1", timeout=55,
    )  # fmt: skip
    died = died_at(tmp_path, run)
    check_victim_run(run, died, hosts[0].alias if hosts else "local", ["waiter1", "waiter2"])


@pytest.mark.timeout(90)
def test_worker_killed_aborts_the_others_on_sshd_hosts(
    mhtest, write_tests, sshd_hosts, tmp_path
) -> None:
    hosts = sshd_hosts(3)
    base = write_tests({"workers.py": KILL_WORKERS})
    run = mhtest(
        "run",
        f"{base}/workers.py:Crowd.test",
        *host_args(hosts),
        "-p",
        f"marks={tmp_path}",
        timeout=80,
    )
    # The hosts are this machine: the victim's clock is ours.
    died = died_at(tmp_path, run)
    children = check_victim_run(run, died, hosts[0].alias, ["waiter1", "waiter2"])
    assert "killed by signal 9" in children["victim"]["fail_reason"]
    assert [c["host"] for c in children.values()] == [h.alias for h in hosts]


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (by /proc parent links)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        children = [p for p, pp in parents.items() if pp == parent]
        found += children
        todo += children
    return found


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "how", ["host-drops", pytest.param("executor-killed", marks=pytest.mark.slow)]
)
def test_host_that_drops_aborts_the_others(write_tests, tmp_path, how) -> None:
    from mhtest.hosts.testing import SshdPool, find_sshd

    if find_sshd() is None:
        pytest.skip("sshd not found: install openssh-server to run tests against real hosts")
    base = write_tests({"workers.py": KILL_WORKERS})
    ready = tmp_path / "victim-ready"
    results = tmp_path / "results"
    with SshdPool(tmp_path / "sshd") as pool:
        hosts = pool.hosts(3)
        args = mhtest_command(
            [
                "run",
                f"{base}/workers.py:Crowd.test",
                *host_args(hosts),
                "-p",
                f"marks={tmp_path}",
                "-p",
                "drop=yes",
                # A host that drops is waited for: not back within 3 s here.
                "--reconnect-timeout",
                "3",
            ],
            results,
        )
        with subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
        ) as proc:
            deadline = time.monotonic() + 40
            while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert ready.exists(), proc.communicate(timeout=30)
            time.sleep(0.3)  # the waiters reach their barrier
            victim = hosts[0]
            if how == "host-drops":
                # Its sshd and every session under it (the worker included) go.
                doomed = descendants(victim.pid)
                pool.stop_host(victim)
            else:
                # The executor (the worker's fork server's parent) dies; the SSH
                # connection and the worker itself stay: the worker must be cut off.
                doomed = [parent(parent(int(ready.read_text())))]
            for pid in doomed:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            dropped = time.time()
            stdout, stderr = proc.communicate(timeout=60)
    run = Run(args[len(MHTEST) :], proc.returncode, stdout, stderr, results)
    children = check_victim_run(run, dropped, victim.alias, ["waiter1", "waiter2"])
    # The victim's result names its host and what happened there.
    reason = children["victim"]["fail_reason"]
    if how == "host-drops":
        assert re.fullmatch(
            rf"lost {victim.alias} at \d\d:\d\d:\d\d, not back within 3 s", reason
        ), reason
    else:
        assert reason.startswith(f"{victim.alias}: "), reason
    if how == "executor-killed":
        assert "remote runner ended before the test did" in children["victim"]["fail_reason"]


@pytest.mark.timeout(60)
def test_unreachable_host_fails_its_worker_and_stops_the_others(mhtest, sshd_hosts) -> None:
    from mhtest.hosts.testing import free_port

    hosts = sshd_hosts(2)
    nobody = f"root@{hosts[0].address}:{free_port(hosts[0].address)}"
    hosts_arg = f"{hosts[0].alias},{hosts[1].alias},{nobody}"
    run = mhtest("run", PINGPONG, "--hosts", hosts_arg, "--ssh-config", hosts[0].ssh_config)
    ping = run.result("pingpong.py:PingPong.test")
    assert ping["status"] == "FAIL", run
    assert ping["fail_reason"].startswith(
        f"worker {nobody} on {nobody}: ERROR: {nobody}: connection refused on port "
    ), ping["fail_reason"]
    children = {c["name"]: c for c in ping["children"]}
    for info in hosts:
        # They were waiting for a peer that could never join: stopped at once, not at
        # their timeout, with their own results fetched.
        child = children[info.alias]
        assert child["fail_class"] == "SyncAborted", child
        assert nobody in child["fail_reason"]
        assert child["end"] - child["start"] < 10
        assert Path(child["logdir"], "debug.log").exists()


SLOW_WORKERS = """
import time

from mhtest import MultiHostTest, Test


class Slow(MultiHostTest):
    timeout = 6

    def test(self):
        self.run_workers([self.worker("slow.py:Sleeper.test", h) for h in self.hosts])


class Sleeper(Test):
    def test(self):
        self.sync.barrier("start")
        self.log.info("sleeping")
        time.sleep(100)
"""


@pytest.mark.timeout(60)
def test_timeout_stops_the_workers_and_keeps_their_results(mhtest, write_tests) -> None:
    base = write_tests({"slow.py": SLOW_WORKERS})
    run = mhtest("run", f"{base}/slow.py:Slow.test")
    slow = run.result("slow.py:Slow.test")
    # Stopped before the runner kills the test at 6 s: the workers' results are kept.
    assert slow["status"] == "INTERRUPT", run
    # (6 s less a quarter, less the moments the test took to start)
    assert re.match(
        r"workers did not end within 4\.[0-9]+ s: worker local-1 on local: ", slow["fail_reason"]
    ), slow
    assert slow["time"] < 6
    for child in slow["children"]:
        assert child["status"] == "INTERRUPT"
        assert re.fullmatch(r"stopped: no end within 4\.[0-9]+ s", child["fail_reason"])
        assert "sleeping" in Path(child["logdir"], "debug.log").read_text()


@pytest.mark.timeout(60)
def test_plain_fanout_stays(mhtest, sshd_hosts) -> None:
    hosts = sshd_hosts(2)
    run = mhtest("run", PASSTEST, *host_args(hosts))
    assert run.code == 0, run
    tests = run.results()["tests"]
    assert sorted(t["host"] for t in tests) == sorted(h.alias for h in hosts)
    assert all(t["status"] == "PASS" and not t["children"] for t in tests)


@pytest.mark.timeout(60)
def test_hosts_as_a_param(mhtest, sshd_hosts, tmp_path) -> None:
    # Three local workers, named after their host and numbered.
    run = mhtest("run", PINGPONG, "-p", "hosts=local,local,local")
    assert run.code == 0, run
    ping = run.result("pingpong.py:PingPong.test")
    assert [c["name"] for c in ping["children"]] == ["local-1", "local-2", "local-3"]
    # Aliases from the user's ~/.ssh/config, given as a param.
    hosts = sshd_hosts(2)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(hosts[0].ssh_config, home / ".ssh" / "config")
    cache = os.environ.get("MHTEST_CACHE_DIR") or os.path.expanduser("~/.cache/mhtest")
    run = mhtest(
        "run",
        PINGPONG,
        "-p",
        f"hosts={hosts[0].alias},{hosts[1].alias}",
        env={"HOME": str(home), "MHTEST_CACHE_DIR": cache},
    )
    assert run.code == 0, run
    ping = run.result("pingpong.py:PingPong.test")
    assert [c["host"] for c in ping["children"]] == [hosts[0].alias, hosts[1].alias]


def test_list_shows_multihost_kinds(mhtest) -> None:
    run = mhtest("list", PINGPONG, NETPERF, PASSTEST)
    assert run.code == 0, run
    kinds = {line.split()[1].split("/")[-1]: line.split()[0] for line in run.stdout.splitlines()}
    assert kinds == {
        "pingpong.py:PingPong.test": "instrumented/multihost",
        "netperf.py:NetPerf.test": "instrumented/multihost",
        "passtest.py:PassTest.test": "instrumented",
    }


def _processes_mentioning(text: str) -> set[int]:
    """PIDs of processes whose command line contains `text` (such as a test file's path)."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in argv:
            found.add(int(proc.name))
    return found


def test_multihost_test_starts_warm_and_its_fork_server_never_outlives_the_job(
    mhtest, write_tests
) -> None:
    tests = write_tests(
        {
            "warm.py": """
            import json
            import sys

            from mhtest import MultiHostTest


            class Warm(MultiHostTest):
                def test(self):
                    loaded = {m: m in sys.modules for m in ("paramiko", "mhtest.runners.fanout")}
                    self.whiteboard = json.dumps(loaded)
            """
        }
    )
    run = mhtest("run", str(tests / "warm.py"))
    assert run.code == 0, run.stdout + run.stderr
    # The job started the test's fork server early, importing SSH and the worker runs.
    loaded = json.loads(run.result("warm.py")["whiteboard"])
    assert loaded == {"paramiko": True, "mhtest.runners.fanout": True}
    # A bad --hosts ends the job before any test runs: the early server (a fork of the
    # job, so its command line is the job's) is gone by the time the job has exited.
    bad = mhtest("run", str(tests / "warm.py"), "--hosts", "a:b:c")
    assert bad.code == 2 and "malformed host 'a:b:c'" in bad.stderr
    assert _processes_mentioning(str(tests / "warm.py")) == set()


def test_fork_server_ahead_of_the_job(tmp_path: Path) -> None:
    """A job's fork server starts at once: preloading for multi-host tests, none for hosts."""
    from mhtest.runners.forkserver import MULTIHOST_PRELOAD

    multi = tmp_path / "multi.py"
    multi.write_text("from mhtest import MultiHostTest\n\nclass A(MultiHostTest):\n    pass\n")
    plain = tmp_path / "plain.py"
    plain.write_text("from mhtest import Test\n")
    servers = fork_servers_ahead(
        [
            # Plain tests sent to hosts: nothing runs here, no server.
            [str(plain), "--hosts=h1,h2", "-p", "x=multi.py"],
            ["--inventory", "inv.yaml", str(plain)],
            [str(plain), str(tmp_path / "none.py")],  # tests run here: a plain server
            ["--hosts", "h1,h2", f"{multi}:A"],
        ]
    )
    # Serving, and forked (its args: its name, then what it preloads).
    assert servers == [None, None, [True, []], [True, list(MULTIHOST_PRELOAD)]]
