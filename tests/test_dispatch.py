"""The dispatch API: tests run at places through the real runners, as a user calls it.

Local places run real child processes (the fork-server runner); SSH places are the
session's real sshd hosts (tests/conftest.py) with a warm mhtest cache.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from mhtest.dispatch import Dispatcher, Options, local_place, place, run
from mhtest.hosts.inventory import HostConfig, resolve_hosts
from mhtest.resolver import resolve

pytestmark = pytest.mark.timeout(120)

TESTS_PY = '''
import os
import time

from mhtest import Test


class Quick(Test):
    def test(self):
        self.whiteboard = os.environ.get("SSH_CONNECTION", "here").split()[-2:][0]


class Fails(Test):
    def test(self):
        self.fail("on purpose")


class Slow(Test):
    """:mhtest: worker"""

    def test(self):
        time.sleep(float(self.params.get("sleep", 30)))
'''


@pytest.fixture
def tests_file(tmp_path: Path) -> Path:
    path = tmp_path / "t" / "net.py"
    path.parent.mkdir()
    path.write_text(TESTS_PY)
    return path


def job_results(results_dir: Path) -> dict:
    return json.loads((results_dir / "latest" / "results.json").read_text())


def test_run_yields_each_result_and_writes_the_results_tree(tests_file, tmp_path) -> None:
    out = tmp_path / "out"
    specs = resolve([f"{tests_file}:Quick", f"{tests_file}:Fails"])
    seen = [
        (r.host, r.name.split(":")[-1], r.status, r.fail_reason)
        for r in run(specs, results_dir=str(out))
    ]
    assert sorted(seen) == [
        ("local", "Fails.test", "FAIL", "on purpose"),
        ("local", "Quick.test", "PASS", None),
    ]
    on_disk = job_results(out)
    assert sorted(t["status"] for t in on_disk["tests"]) == ["FAIL", "PASS"]
    for test in on_disk["tests"]:
        assert (Path(test["logdir"]) / "debug.log").exists()
    assert (out / "latest" / "results.xml").exists()


def test_run_at_hosts_and_here_one_result_per_place(tests_file, tmp_path, warm_hosts) -> None:
    infos = warm_hosts(2)
    places = resolve_hosts(
        [info.alias for info in infos] + ["local"], ssh_config_path=infos[0].ssh_config
    )
    specs = resolve([f"{tests_file}:Quick"])
    results = list(run(specs, places, timeout=60, results_dir=str(tmp_path / "out")))
    by_host = {r.host: r for r in results}
    assert sorted(by_host) == sorted([infos[0].alias, infos[1].alias, "local"])
    assert {r.status for r in results} == {"PASS"}
    for info in infos:  # each really ran behind its own sshd
        assert by_host[info.alias].whiteboard == info.address
    assert by_host["local"].whiteboard == "here"


def test_a_local_place_with_another_name_runs_here(tests_file, tmp_path) -> None:
    """An inventory host with `ansible_connection: local`: its kind picks the runner."""
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("all:\n  hosts:\n    mybox: {ansible_connection: local, role: db}\n")
    places = resolve_hosts("mybox", inventory_path=str(inventory))
    assert places[0].kind == "local" and places[0].name == "mybox"
    (result,) = run(resolve([f"{tests_file}:Quick"]), places, results_dir=str(tmp_path / "o"))
    assert (result.host, result.status, result.whiteboard) == ("mybox", "PASS", "here")


def test_a_place_that_fails_ends_only_its_own_tests(tests_file, tmp_path, broken_host) -> None:
    refused = broken_host("refused")
    bad = HostConfig(
        name="gone", address=refused.address, port=refused.port, user=refused.user,
        key_file=refused.key_file, known_hosts=refused.known_hosts,
    )  # fmt: skip
    specs = resolve([f"{tests_file}:Quick"])
    results = {r.host: r for r in run(specs, [bad, local_place()], results_dir=str(tmp_path))}
    assert results["local"].status == "PASS"
    assert results["gone"].status == "ERROR"
    assert results["gone"].fail_reason.startswith("gone: ")
    assert "refused" in results["gone"].fail_reason


def test_a_place_of_an_unknown_kind_is_error_naming_it(tests_file, tmp_path) -> None:
    odd = HostConfig(name="pod1", address="pod1", kind="docker")
    (result,) = run(resolve([f"{tests_file}:Quick"]), [odd], results_dir=str(tmp_path))
    assert result.status == "ERROR"
    assert result.fail_reason == (
        "pod1: no spawner plugin runs tests on places of kind 'docker' "
        "(install the plugin that provides it)"
    )


def collect(events_seen: list) -> callable:
    lock = threading.Lock()

    def sink(event: dict) -> None:
        with lock:
            events_seen.append(event)

    return sink


def numbered(specs, logdir: Path):
    for uid, spec in enumerate(specs, 1):
        spec.uid = uid
        spec.logdir = str(logdir / str(uid))
    return specs


def ends(seen: list) -> dict[int, dict]:
    return {e["uid"]: e for e in seen if e["type"] in ("test.end", "test.skipped")}


def test_the_run_timeout_stops_every_place(tests_file, tmp_path) -> None:
    seen: list = []
    specs = numbered(resolve([f"{tests_file}:Slow"] * 2), tmp_path)
    started = time.monotonic()
    outcome = Dispatcher(collect(seen)).run([(local_place(), s) for s in specs], timeout=1.0)
    assert time.monotonic() - started < 15
    assert outcome.timed_out == 1.0 and outcome.interrupted is None
    got = ends(seen)
    assert sorted(got) == [1, 2]
    for end in got.values():
        assert end["status"] == "INTERRUPT"
        assert end["fail_reason"] == "stopped: no end within 1 s"


def test_an_interrupt_stops_what_runs_and_starts_nothing_more(tests_file, tmp_path) -> None:
    seen: list = []
    specs = numbered(resolve([f"{tests_file}:Slow"] * 3), tmp_path)
    dispatcher = Dispatcher(collect(seen), Options(max_parallel=1))
    threading.Timer(1.0, dispatcher.interrupt).start()
    outcome = dispatcher.run([(local_place(), s) for s in specs])
    assert outcome.interrupted == "interrupted by the user"
    got = ends(seen)
    assert got[1]["type"] == "test.end" and got[1]["status"] == "INTERRUPT"
    assert [got[u]["type"] for u in (2, 3)] == ["test.skipped", "test.skipped"]


def test_ctrl_c_while_iterating_keeps_the_results(tests_file, tmp_path) -> None:
    out = tmp_path / "out"
    specs = resolve([f"{tests_file}:Quick", f"{tests_file}:Slow"])
    got = []
    threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        for result in run(specs, results_dir=str(out)):
            got.append((result.name.split(":")[-1], result.status))
    assert sorted(got) == [("Quick.test", "PASS"), ("Slow.test", "INTERRUPT")]
    assert sorted(t["status"] for t in job_results(out)["tests"]) == ["INTERRUPT", "PASS"]


def test_leaving_the_loop_early_stops_the_tests(tests_file, tmp_path) -> None:
    specs = resolve([f"{tests_file}:Quick", f"{tests_file}:Slow"])
    results = run(specs, results_dir=str(tmp_path / "out"), options=Options(max_parallel=2))
    started = time.monotonic()
    first = next(results)
    results.close()
    assert first.status == "PASS"
    assert time.monotonic() - started < 20
    on_disk = {t["ref"].split(":")[-1]: t for t in job_results(tmp_path / "out")["tests"]}
    assert on_disk["Slow.test"]["status"] == "INTERRUPT"
    assert "stopped reading the results" in on_disk["Slow.test"]["fail_reason"]


def test_place_fans_plain_tests_out_and_keeps_multihost_tests_here() -> None:
    here = Path(__file__).resolve().parent.parent / "examples" / "tests"
    specs = resolve([str(here / "passtest.py"), str(here / "pingpong.py")])
    h1 = HostConfig(name="h1", address="10.0.0.1", params={"role": "a"})
    h2 = HostConfig(name="h2", address="10.0.0.2")
    assigned = place(specs, [h1, h2], {"size": 4}, Options(remote_python="python3.11"))
    where = [(config.name, spec.ref.split(":")[-1]) for config, spec in assigned]
    assert where == [("h1", "PassTest.test"), ("h2", "PassTest.test"), ("local", "PingPong.test")]
    assert assigned[0][1].params == {"size": 4, "role": "a"}
    multihost = assigned[2][1]
    assert [h["name"] for h in multihost.hosts] == ["h1", "h2"]
    assert multihost.host_options["remote_python"] == "python3.11"
    assert specs[0].params == {} and specs[0].host == "local"  # the given specs are untouched


class AwaySpawner:
    """A spawner whose host goes away (reconnecting) while its test ends there."""

    def __init__(self, away: float | None) -> None:
        self.away = away

    def run(self, where) -> None:
        from mhtest import events

        (spec,) = where.specs
        host = where.config.name
        where.sink({"type": events.TEST_START, "uid": spec.uid, "timeout": 0.2})
        if self.away is not None:
            where.sink(events.host_phase(host, "reconnecting (lost at 12:00:00)", 30))
            time.sleep(self.away)  # the test ends there meanwhile; its end is journaled
            where.sink(events.host_phase(host, "running", 0))
        else:
            time.sleep(2.0)
        where.sink({"type": events.TEST_END, "uid": spec.uid, "status": "PASS"})


@pytest.mark.parametrize("away", [1.5, None])
def test_a_reconnecting_host_holds_its_tests_deadlines(tests_file, tmp_path, away, monkeypatch):
    """Its test's timeout and the margin pass while its host is away: no end is made up."""
    from mhtest import dispatch

    monkeypatch.setattr(dispatch, "DEADLINE_MARGIN", 0.5)
    seen: list = []
    (spec,) = numbered(resolve([f"{tests_file}:Quick"]), tmp_path)
    spec.host = "h2"  # (as place() assigns it)
    config = HostConfig(name="h2", address="h2", kind="away")
    dispatcher = Dispatcher(collect(seen))
    dispatcher._spawners["away"] = AwaySpawner(away)
    dispatcher.run([(config, spec)])
    (end,) = ends(seen).values()
    if away is None:  # (not away: its silence is the runner's fault)
        assert end["status"] == "INTERRUPT", end
        assert end["fail_reason"] == "timeout of 0.2 s reached; h2 did not report the end"
    else:
        assert end["status"] == "PASS", end
