"""Results a control file makes: sent as test.nested events, kept in a tally, made results
of the job by its collector (numbered, named after the control file, inside its directory)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from mhtest import events
from mhtest.autoserv.nested import TALLY, NestedResults
from mhtest.job import Job, JobConfig
from mhtest.spec import TestSpec


class Events:
    """An event writer that keeps what it is given."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def __call__(self, type_: str, **fields) -> None:
        self.sent.append(json.loads(events.encode(type_, **fields)))


def test_add_sends_an_event_and_keeps_the_tally(tmp_path: Path) -> None:
    sent = Events()
    results = NestedResults(sent, tmp_path)
    rel, path = results.claim_dir("h1", "sleeptest")
    results.add("h1/sleeptest", rel, {"status": "FAIL", "fail_reason": "too slow", "start": 1})
    results.close()
    [event] = sent.sent
    assert event["type"] == events.TEST_NESTED
    assert (event["name"], event["logdir"], event["status"]) == ("h1/sleeptest", rel, "FAIL")
    assert path == tmp_path / "h1" / "sleeptest" and path.is_dir()
    [line] = (tmp_path / TALLY).read_text().splitlines()
    assert json.loads(line) == {
        "name": "h1/sleeptest",
        "status": "FAIL",
        "fail_reason": "too slow",
        "logdir": "h1/sleeptest",
    }


def test_directories_are_unique_across_forked_processes(tmp_path: Path) -> None:
    results = NestedResults(Events(), tmp_path)
    pids = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - in the child
            code = 1
            try:
                for _ in range(5):
                    rel, _path = results.claim_dir("h1", "t")
                    results.add("h1/t", rel, {"status": "PASS"})
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    tally = results.tally()
    assert len(tally) == 20
    assert len({t["logdir"] for t in tally}) == 20  # t, t.2 … t.20: none shared
    assert all(json.dumps(t) for t in tally)  # every line whole


def test_claim_dir_keeps_names_inside(tmp_path: Path) -> None:
    results = NestedResults(Events(), tmp_path)
    rel, path = results.claim_dir("..", "a/b", ".")
    assert path.resolve().is_relative_to(tmp_path.resolve())
    assert rel == "__/a_b"


@pytest.fixture
def job(tmp_path: Path):
    made = Job(JobConfig(results_dir=str(tmp_path / "results")))
    yield made
    logging.getLogger("mhtest").removeHandler(made._log_handler)
    logging.getLogger("paramiko").removeHandler(made._log_handler)
    made._log_handler.close()


def test_the_collector_makes_each_a_result_of_the_job(job: Job) -> None:
    control = TestSpec(ref="net.srv", kind="control-server", path="/x/net.srv")
    job.add([(None, control)])
    job.sink({"type": events.TEST_START, "uid": 1})
    nested = {"type": events.TEST_NESTED, "uid": 1, "status": "PASS", "start": 1.0, "end": 2.0}
    job.sink({**nested, "name": "h1/sleeptest.quick", "logdir": "h1/sleeptest.quick", "host": "h1"})
    job.sink({**nested, "name": "h2/x", "logdir": "../../../etc", "status": "FAIL"})
    job.sink({"type": events.TEST_END, "uid": 1, "status": "FAIL", "fail_reason": "h2/x FAIL"})
    first, second = job.results[0], job.results[1]
    assert (first.uid, first.name) == (2, "2-net.srv/h1/sleeptest.quick")
    assert first.ref == "net.srv/h1/sleeptest.quick"
    assert (first.host, first.parent, first.time) == ("h1", 1, 1.0)
    assert first.logdir == f"{control.logdir}/h1/sleeptest.quick"
    assert second.logdir == control.logdir  # a directory outside it is refused
    assert [s.uid for s in job.specs] == [1, 2, 3]
    assert job.results[2].uid == 1 and job.exit_code() & 1
