"""Result data and the built-in writers' corner cases (real jobs: tests/functional)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mhtest.plugins.result_json import JSONResult, job_summary, write_atomic
from mhtest.plugins.result_tap import TAPResult
from mhtest.plugins.result_xunit import XUnitResult
from mhtest.results import TestResult as Result
from mhtest.results import count_statuses

XSD = Path(__file__).resolve().parent / "data" / "junit.xsd"


@dataclass
class FinishedJob:
    """What a writer reads from a job: its results, times and directory."""

    logdir: Path
    results: list[Result]
    unique_id: str = "0123456789abcdef0123456789abcdef01234567"
    start_time: float = field(default_factory=lambda: time.time() - 2)
    end_time: float = field(default_factory=time.time)
    interrupted: bool = False

    @property
    def specs(self) -> list[Result]:
        return self.results

    @property
    def log_file(self) -> Path:
        return self.logdir / "job.log"

    @property
    def time_elapsed(self) -> float:
        return self.end_time - self.start_time


def result(uid: int, status: str, reason: str | None = None, **kw) -> Result:
    return Result(
        uid=uid,
        name=f"{uid}-t.py:T.test_{uid}",
        ref=kw.pop("ref", f"t.py:T.test_{uid}"),
        status=status,
        fail_reason=reason,
        start=100.0,
        end=100.25,
        **kw,
    )


def test_result_round_trip_and_time():
    child = result(2, "FAIL", "worker failed", host="h1")
    parent = result(1, "FAIL", "a worker failed", children=[child], tags=["net"])
    data = parent.to_dict()
    assert data["time"] == 0.25
    assert data["children"][0]["host"] == "h1"
    again = Result.from_dict(json.loads(json.dumps(data)))
    assert again == parent
    assert again.failed and not result(3, "WARN").failed
    assert {s for s in ("PASS", "WARN", "SKIP", "CANCEL") if result(1, s).failed} == set()


def test_count_statuses_has_every_status_in_console_order():
    counts = count_statuses([result(1, "FAIL"), result(2, "PASS"), result(3, "FAIL")])
    assert list(counts) == ["PASS", "FAIL", "ERROR", "SKIP", "WARN", "CANCEL", "INTERRUPT"]
    assert counts["FAIL"] == 2 and counts["PASS"] == 1 and counts["ERROR"] == 0


def test_job_summary_sorts_and_counts(tmp_path):
    job = FinishedJob(tmp_path, [result(2, "ERROR", "e"), result(1, "PASS")])
    summary = job_summary(job)
    assert [t["uid"] for t in summary["tests"]] == [1, 2]
    assert (summary["total"], summary["pass"], summary["errors"]) == (2, 1, 1)
    assert summary["job_id"] == job.unique_id


def test_write_atomic_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")
    write_atomic(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


NASTY = 'nul\x00 bell\x07 esc\x1b[0m <tag attr="v"> & ]]> \ufffe\ud800 surrogate 🙂 end'


@pytest.fixture
def nasty_job(tmp_path):
    (tmp_path / "t1").mkdir()
    (tmp_path / "t1" / "debug.log").write_bytes(b"log \x00\x1b line <x>\n\xff\xfe not utf-8\n")
    results = [
        result(1, "FAIL", NASTY, logdir=str(tmp_path / "t1")),
        result(2, "ERROR", "multi\nline\nreason", logdir=str(tmp_path / "missing")),
        result(3, "CANCEL", "# not a TAP directive"),
        result(4, "WARN", "warned"),
        result(5, "INTERRUPT", "timeout of 1 s reached", host="h2"),
        result(6, "PASS", ref="simple.sh"),
        result(7, "SKIP", "later"),
    ]
    return FinishedJob(tmp_path, results)


def test_xunit_with_unsafe_characters_validates(nasty_job):
    from lxml import etree

    XUnitResult().render(nasty_job)
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    doc = etree.parse(str(nasty_job.logdir / "results.xml"))
    assert schema.validate(doc), schema.error_log
    cases = doc.getroot().findall("testcase")
    message = cases[0].find("failure").get("message")
    assert message == 'nul bell esc[0m <tag attr="v"> & ]]>  surrogate 🙂 end'
    assert "line <x>" in cases[0].find("system-out").text
    assert cases[1].find("system-out") is None  # no debug.log: nothing to attach
    assert cases[4].get("classname") == "t.py@h2"
    assert (cases[5].get("classname"), cases[5].get("name")) == ("simple", "simple.sh")


def test_tap_keeps_one_line_per_test(nasty_job):
    TAPResult().render(nasty_job)
    lines = (nasty_job.logdir / "results.tap").read_text().splitlines()
    assert lines[:2] == ["TAP version 13", "1..7"]
    tests = [ln for ln in lines if ln.startswith(("ok ", "not ok "))]
    assert [ln.split(" - ")[0] for ln in tests] == [
        "not ok 1",
        "not ok 2",
        "ok 3",
        "ok 4",
        "not ok 5",
        "ok 6",
        "ok 7",
    ]
    assert tests[2] == "ok 3 - 3-t.py:T.test_3 # SKIP CANCEL: # not a TAP directive"
    # Every non-test line belongs to an indented YAML block.
    assert all(ln.startswith("  ") for ln in lines[2:] if ln not in tests)


def test_json_writer_rewrites_at_each_step(tmp_path):
    job = FinishedJob(tmp_path, [])
    writer = JSONResult()
    writer.job_start(job)
    path = tmp_path / "results.json"
    assert json.loads(path.read_text())["tests"] == []
    job.results.append(result(1, "FAIL", NASTY))
    writer.test_end(job, job.results[0])
    deadline = time.monotonic() + 10
    while not json.loads(path.read_text())["tests"] and time.monotonic() < deadline:
        time.sleep(0.01)  # written by the writer's own thread, soon after the test end
    assert json.loads(path.read_text())["tests"][0]["fail_reason"] == NASTY
    for uid in range(2, 50):
        job.results.append(result(uid, "PASS"))
        writer.test_end(job, job.results[-1])
    writer.render(job)
    data = json.loads(path.read_text())
    assert [t["uid"] for t in data["tests"]] == list(range(1, 50))
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
    assert not [t for t in threading.enumerate() if t.name == "writer-results.json"]


def test_json_writer_reports_a_write_error_at_the_end(tmp_path):
    job = FinishedJob(tmp_path / "job", [])
    job.logdir.mkdir()
    writer = JSONResult()
    writer.job_start(job)
    (job.logdir / "results.json").unlink()
    job.logdir.rmdir()  # the results directory disappears under the job
    job.results.append(result(1, "PASS"))
    writer.test_end(job, job.results[0])
    with pytest.raises(FileNotFoundError):
        writer.render(job)
