"""Autoserv control files through the real CLI, on real sshd hosts (tests/conftest.py).

The examples of examples/control (Autoserv's, modernised), and the bad input a user coming
from Autotest brings: each run_test and record is a result of the job of its own, the control
file one more; bad input is one line naming the file, the line, the host or the test.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from mhtest import exitcodes
from mhtest.secrets import MASK

from .conftest import Run, fork_servers_ahead, running_mhtest, wait_for

pytestmark = pytest.mark.timeout(120)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "control"
PASSTEST = str(Path(__file__).resolve().parents[2] / "examples" / "tests" / "passtest.py")


def machines(hosts) -> list[str]:
    """-m with the pool's ssh_config aliases, as autoserv's users type it."""
    return ["-m", ",".join(h.alias for h in hosts), "--ssh-config", hosts[0].ssh_config]


def results(run: Run) -> dict[str, dict]:
    """{ref: result} of results.json."""
    return {t["ref"]: t for t in run.results()["tests"]}


def one_line(text: str) -> str:
    assert "\n" not in text, text
    return text


def test_hosts_example_surveys_three_hosts_in_parallel(mhtest, warm_hosts) -> None:
    hosts = warm_hosts(3)
    run = mhtest("run", str(EXAMPLES / "hosts.srv"), *machines(hosts))
    assert run.code == 0, run
    found = results(run)
    ref = next(r for r in found if r.endswith("hosts.srv"))
    control = found[ref]
    assert control["status"] == "PASS" and control["parent"] is None
    for host in hosts:
        survey = found[f"{ref}/{host.alias}/survey"]
        assert survey["status"] == "PASS" and survey["parent"] == control["uid"]
        assert "CPUs" in survey["fail_reason"] and survey["host"] == host.alias
        # the task's own directory, with the file it fetched from the host
        task_dir = Path(control["logdir"], host.alias)
        assert (task_dir / "copy.srv").read_text() == (EXAMPLES / "hosts.srv").read_text()
        assert Path(survey["logdir"]) == task_dir / "survey"
    assert run.results()["total"] == 4
    stdout = Path(control["logdir"], "stdout").read_text()
    assert all(h.alias in stdout for h in hosts), stdout
    # Each task closed the host it made: its scratch directory there is gone (the hosts
    # are this machine).
    scratch = re.findall(r"\(scratch: (\S+)\)", stdout)
    assert len(scratch) == 3 and not any(Path(p).exists() for p in scratch), scratch
    assert f"{ref}/{hosts[0].alias}/survey: PASS" in run.stdout


def test_autotest_example_runs_a_client_control_file_on_a_host(mhtest, warm_hosts) -> None:
    [host] = warm_hosts(1)
    run = mhtest("run", str(EXAMPLES / "autotest.srv"), *machines([host]))
    assert run.code == 0, run
    found = results(run)
    ref = next(r for r in found if r.endswith("autotest.srv"))
    statuses = {r[len(ref) + 1 :]: t["status"] for r, t in found.items() if r != ref}
    # at.run's control text names "sleeptest": examples/control/sleeptest/, whose own
    # control file runs sleeptest.py twice; every one of them is a result.
    assert statuses == {
        f"{host.alias}/control": "PASS",
        f"{host.alias}/sleeptest/control": "PASS",
        f"{host.alias}/sleeptest": "PASS",
        f"{host.alias}/sleeptest.short": "PASS",
    }
    control_dir = Path(found[ref]["logdir"])
    client_dir = Path(found[f"{ref}/{host.alias}/control"]["logdir"])
    assert client_dir == control_dir / "job_results" / host.alias / "control"
    assert 'job.run_test("sleeptest", seconds=0.2)' in (client_dir / "control").read_text()
    test_dir = Path(found[f"{ref}/{host.alias}/sleeptest"]["logdir"])
    assert test_dir.is_relative_to(client_dir)
    assert "sleeping 0.2 s" in (test_dir / "debug.log").read_text()
    assert json.loads((test_dir / "spec.json").read_text())["params"]["seconds"] == 0.2
    assert "profilers" in (client_dir / "debug.log").read_text()  # said, and ignored
    # The client control file sleeptest/control, run by the other one on the host, meets
    # at the same sync server (it inherits its environment): none of its own there.
    inner = Path(found[f"{ref}/{host.alias}/sleeptest/control"]["logdir"])
    assert json.loads((inner / "spec.json").read_text())["env"] == {}
    assert "sync server" not in (inner / "debug.log").read_text()


def test_server_and_client_control_files_meet_around_a_tcp_test(mhtest, warm_hosts) -> None:
    server, client = warm_hosts(2)
    run = mhtest("run", str(EXAMPLES / "netperf.srv"), *machines([server, client]))
    assert run.code == 0, run
    found = results(run)
    ref = next(r for r in found if r.endswith("netperf.srv"))
    sent = found[f"{ref}/{client.alias}/tcp_client.client"]
    served = found[f"{ref}/{server.alias}/tcp_server.server"]
    assert float(sent["whiteboard"]) > 0
    assert int(served["whiteboard"]) == 8 << 20
    started = found[f"{ref}/controller/netperf-started"]
    assert started["fail_reason"] == f"{server.alias} serves {client.alias}"
    for host in (server, client):
        assert found[f"{ref}/{host.alias}/control"]["status"] == "PASS"
        assert found[f"{ref}/{host.alias}/kernel"]["status"] == "PASS"
    # The client control files reached the sync server through their own host's SSH
    # connection: a port forwarded on the host, not the server's own address.
    control_dir = Path(found[ref]["logdir"])
    spec = json.loads(
        (
            control_dir / "results-netperf-client" / client.alias / "control" / "spec.json"
        ).read_text()
    )
    assert spec["env"]["MHTEST_SYNC_ADDRESS"].startswith("tcp://127.0.0.1:")
    assert spec["env"]["MHTEST_SYNC_CLIENT_SECRET"] == MASK  # the key stays out of files


def test_pairs_with_a_machine_left_over(mhtest, warm_hosts) -> None:
    hosts = warm_hosts(3)
    run = mhtest("run", str(EXAMPLES / "pairs.srv"), *machines(hosts))
    assert run.code == 0, run
    found = results(run)
    ref = next(r for r in found if r.endswith("pairs.srv"))
    left = found[f"{ref}/{hosts[2].alias}/pairing"]
    assert (left["status"], left["fail_reason"]) == ("SKIP", "machine can not be tupled")
    assert found[f"{ref}/{hosts[0].alias}/sleeptest.first/control"]["status"] == "PASS"
    assert found[f"{ref}/{hosts[1].alias}/sleeptest.second/control"]["status"] == "PASS"
    assert found[ref]["status"] == "PASS"


def test_args_reach_the_control_file(mhtest, warm_hosts) -> None:
    hosts = warm_hosts(2)
    control = str(EXAMPLES / "run_test.srv")
    run = mhtest("run", control, *machines(hosts), "--args", "-t sleeptest -l logs")
    assert run.code == 0, run
    found = results(run)
    ref = next(r for r in found if r.endswith("run_test.srv"))
    for host in hosts:
        client = found[f"{ref}/{host.alias}/sleeptest/control"]
        expected = Path(found[ref]["logdir"], "logs", host.alias, "sleeptest", "control")
        assert Path(client["logdir"]) == expected
    bad = mhtest("run", control, *machines(hosts), "--args=-x")
    assert bad.code == 1, bad
    reason = one_line(results(bad)[ref]["fail_reason"])
    assert reason.startswith(f"{ref}:10: --args: option -x not recognized"), reason


def test_a_client_control_file_on_a_host(mhtest, warm_hosts) -> None:
    [host] = warm_hosts(1)
    control = EXAMPLES / "sleeptest" / "control"
    run = mhtest("run", str(control), "--hosts", host.alias, "--ssh-config", host.ssh_config)
    assert run.code == 0, run
    found = results(run)
    ref = next(r for r in found if r.endswith("sleeptest/control"))
    assert found[ref]["host"] == host.alias and found[ref]["status"] == "PASS"
    quick = found[f"{ref}/{host.alias}/sleeptest"]
    short = found[f"{ref}/{host.alias}/sleeptest.short"]
    assert (quick["whiteboard"], short["whiteboard"]) == ("slept 0.2 s", "slept 0.05 s")
    control_dir = Path(found[ref]["logdir"])
    assert Path(quick["logdir"]) == control_dir / "sleeptest"
    assert "sleeping 0.2 s" in (control_dir / "sleeptest" / "debug.log").read_text()
    assert (control_dir / "control").read_text() == control.read_text()
    assert f"{ref}/{host.alias}/sleeptest.short: PASS" in run.stdout


PY2 = """\
hosts = [hosts.create_host(m) for m in machines]
print hosts[0].run("uname -a").stdout
"""
SYNTAX = """\
for m in machines
    pass
"""
EVERY_MACHINE = """\
def check(machine):
    hosts.create_host(machine).run("true")

job.parallel_simple(check, machines)
"""
CLIENT_NAME = """\
at = autotest.Autotest(machines[0])
at.run('job.run_test("sleeptest")\\njob.run_test("no_such_test")\\n', tag="names")
"""
RAISE_STRING = """\
if len(machines) < 5:
    raise "Specify the machines to run on via the -m flag"
"""


def test_bad_input_is_one_line_each_and_the_rest_goes_on(
    mhtest, warm_hosts, broken_host, write_tests
) -> None:
    [host] = warm_hosts(1)
    down = broken_host("refused")
    folder = write_tests(
        {
            "py2.srv": PY2,
            "syntax.srv": SYNTAX,
            "machines.srv": EVERY_MACHINE,
            "names.srv": CLIENT_NAME,
            "raise_string": RAISE_STRING,
        }
    )
    run = mhtest(
        "run",
        PASSTEST,
        str(folder / "py2.srv"),
        str(folder / "syntax.srv"),
        str(folder / "machines.srv"),
        str(folder / "names.srv"),
        "--control",
        str(folder / "raise_string"),
        "--machines",
        f"{host.alias},no-such-host.invalid,{down.address}:{down.port}",
        "--ssh-config",
        host.ssh_config,
        "--tests-path",
        str(EXAMPLES),
        cwd=folder,
    )
    assert run.code == 1, run
    found = results(run)
    assert found["py2.srv"]["status"] == "ERROR"
    assert one_line(found["py2.srv"]["fail_reason"]) == (
        "py2.srv:2: Python 2 syntax (print statement): control files are Python 3; write print(...)"
    )
    assert found["syntax.srv"]["fail_reason"].startswith("syntax.srv:1: syntax error: ")
    # An unknown host and a host that is down: the file, the line, the host, the rest ran.
    reason = one_line(found["machines.srv"]["fail_reason"])
    assert reason.startswith("machines.srv:4: 2 of 3 parallel items failed: "), reason
    assert (
        "no-such-host.invalid: machines.srv:2: HostUnreachable: no-such-host.invalid: "
        "unknown host name 'no-such-host.invalid'"
    ) in reason
    assert f"{down.address}:{down.port}: connection refused on port {down.port}" in reason
    # A test name that resolves to nothing, in a client control file on a host.
    missing = found[f"names.srv/{host.alias}/no_such_test"]
    assert missing["status"] == "ERROR"
    assert one_line(missing["fail_reason"]).startswith(
        "control:2: no test named 'no_such_test' (looked for no_such_test.py and no_such_test/"
    )
    assert found[f"names.srv/{host.alias}/sleeptest/control"]["status"] == "PASS"
    client = found[f"names.srv/{host.alias}/control.names"]
    assert client["status"] == "FAIL"
    assert found["names.srv"]["status"] == "FAIL"
    assert "names.srv/" not in found["names.srv"]["fail_reason"]  # names relative to it
    assert f"{host.alias}/no_such_test ERROR" in found["names.srv"]["fail_reason"]
    # Python 2's raise of a string: said so (given with --control, whatever its name).
    assert one_line(found["raise_string"]["fail_reason"]).startswith(
        "raise_string:2: TypeError: exceptions must derive from BaseException (Python 2's "
        "raise of a string"
    )
    # A plain test in the same job runs at every machine: it passes where a host is up.
    plain = {
        t["host"]: t["status"]
        for t in run.results()["tests"]
        if t["ref"] == f"{PASSTEST}:PassTest.test"
    }
    assert plain[host.alias] == "PASS" and plain["no-such-host.invalid"] == "ERROR", plain


SLOW = """\
def one(machine):
    at = autotest.Autotest(hosts.create_host(machine))
    at.run_test("sleeptest/sleeptest.py", seconds=120)  # the test itself, not its control

job.parallel_simple(one, machines)
"""


def test_ctrl_c_stops_what_a_control_file_runs_and_keeps_the_results(
    warm_hosts, write_tests, tmp_path
) -> None:
    hosts = warm_hosts(2)
    folder = write_tests({"slow.srv": SLOW})
    results_dir = tmp_path / "results"
    args = ["run", "slow.srv", *machines(hosts), "--tests-path", str(EXAMPLES)]
    with running_mhtest(args, folder, results_dir) as proc:
        # A test's directory is made as it is sent to its host; give them time to start.
        wait_for(lambda: len(list(results_dir.glob("latest/test-results/1-*/*/sleeptest"))) == 2)
        time.sleep(3)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=60)
        assert time.monotonic() - started < 20
    assert proc.returncode & exitcodes.INTERRUPTED, stdout
    run = Run(args, proc.returncode, stdout, "", results_dir)
    found = results(run)
    assert found["slow.srv"]["status"] == "INTERRUPT"
    for host in hosts:
        test = found[f"slow.srv/{host.alias}/sleeptest/sleeptest.py"]
        assert test["status"] == "INTERRUPT"
        assert "sleeping 120 s" in Path(test["logdir"], "debug.log").read_text()


def test_a_server_control_file_gets_its_fork_server_ahead_of_the_job() -> None:
    from mhtest.runners.forkserver import CONTROL_PRELOAD

    argvs = [["net.srv", "-m", "h1,h2"], ["--control", "job_file", "--hosts=h1"]]
    assert fork_servers_ahead(argvs) == [[True, list(CONTROL_PRELOAD)]] * 2


HERE = """\
import sys

from autotest_lib.server import hosts as imported_hosts, utils as imported_utils
from autotest_lib.client.common_lib import error as imported_error

assert imported_utils is utils and imported_error is error and imported_hosts is hosts
local = hosts.create_host("local", initialize=False, auto_monitor=False)
print("args:", args, "machines:", machines, "kernel:", local.get_kernel_ver())
job.run_test("passtest", host=local, note="here")
job.run_test("passtest", "one", "two", tag="positional")
job.record("START", None, "nothing")  # not a result
job.record("END WARN", None, "tired", "a warning")
try:
    local.run("exit 3")
except error.AutoservRunError as exc:
    job.record("GOOD", None, "caught", f"exit status {exc.result.exit_status}")
sys.exit(0)
"""
CLIENTS_HERE = """\
at = autotest.Autotest("local")
assert at.run('job.run_test("passtest")\\n', tag="new")
at.run('print "old"\\n', tag="old")
"""
EXITS = "sys.exit(3)\n"
ASSERTS = "assert machines, 'no machines given'\n"
CANCELS = "raise error.TestNAError('not on this hardware')\n"


def test_server_control_files_here(mhtest, write_tests) -> None:
    folder = write_tests(
        {
            "here.srv": HERE,
            "exits.srv": EXITS,
            "asserts.srv": ASSERTS,
            "cancels.srv": CANCELS,
            "clients.srv": CLIENTS_HERE,
            "passtest.py": Path(PASSTEST).read_text(),
        }
    )
    refs = ["here.srv", "exits.srv", "asserts.srv", "cancels.srv", "clients.srv"]
    run = mhtest("run", *refs, "--args", "-v 1", cwd=folder)
    assert run.code == 1, run
    found = results(run)
    assert found["here.srv"]["status"] == "PASS", found["here.srv"]
    assert found["here.srv/local/passtest"]["status"] == "PASS"
    spec = json.loads(Path(found["here.srv/local/passtest"]["logdir"], "spec.json").read_text())
    assert spec["params"] == {"note": "here", "host": "local", "host_address": "127.0.0.1"}
    assert spec["tests_path"] == []  # only a client control file takes it along
    spec = json.loads(
        Path(found["here.srv/local/passtest.positional"]["logdir"], "spec.json").read_text()
    )
    assert spec["params"] == {"args": ["one", "two"]}
    assert found["here.srv/local/tired"]["status"] == "WARN"
    assert found["here.srv/local/caught"]["fail_reason"] == "exit status 3"
    assert "here.srv/local/nothing" not in found
    stdout = Path(found["here.srv"]["logdir"], "stdout").read_text()
    assert stdout.startswith("args: ['-v', '1'] machines: [] kernel: "), stdout
    assert (found["exits.srv"]["status"], found["exits.srv"]["fail_reason"]) == (
        "FAIL",
        "exits.srv:1: sys.exit: exit status 3",
    )
    assert found["asserts.srv"]["status"] == "FAIL"
    assert found["asserts.srv"]["fail_reason"] == "asserts.srv:1: AssertionError: no machines given"
    assert found["cancels.srv"]["status"] == "CANCEL"
    # Client control text run here (the local place, no SSH), and one in Python 2.
    assert found["clients.srv/local/control.new"]["status"] == "PASS"
    assert found["clients.srv/local/passtest"]["status"] == "PASS"
    old = "control:1: Python 2 syntax (print statement): control files are Python 3"
    assert found["clients.srv/local/control.old"]["fail_reason"].startswith(old)
    assert found["clients.srv"]["fail_reason"].startswith(
        f"clients.srv:3: client control text: {old}"
    )
    # The other result files list them too.
    xml = (run.job_dir / "results.xml").read_text()
    assert "here.srv/local/passtest.positional" in xml
    assert "here.srv/local/tired" in (run.job_dir / "results.tap").read_text()
