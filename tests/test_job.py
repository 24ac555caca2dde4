"""Job: the results tree, the collector and the exit code, driven through the real local runner."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from mhtest import exitcodes
from mhtest.dispatch import Options, place
from mhtest.job import Job, JobConfig, JobError
from mhtest.resolver import resolve

pytestmark = pytest.mark.timeout(60)

TESTS_PY = """
import time

from mhtest import Test


class Passes(Test):
    def test(self):
        self.whiteboard = "fine"


class Fails(Test):
    def test(self):
        self.fail("wrong answer")


class Sleeps(Test):
    def test(self):
        time.sleep(30)
"""


class Recorder:
    """A result writer that remembers what the job told it, in order."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def job_start(self, job: Job) -> None:
        self.calls.append(("job_start", len(job.specs)))

    def test_end(self, job: Job, result) -> None:
        self.calls.append(("test_end", result.status))

    def render(self, job: Job) -> None:
        self.calls.append(("render", len(job.results)))


@pytest.fixture
def tests_file(tmp_path: Path) -> Path:
    path = tmp_path / "t.py"
    path.write_text(TESTS_PY)
    return path


def make_job(tmp_path: Path, tests_file: Path, *names: str, **options) -> tuple[Job, Recorder]:
    from mhtest.plugins.result_json import JSONResult

    recorder = Recorder()
    config = JobConfig(results_dir=str(tmp_path / "results"), options=Options(**options))
    job = Job(config, [JSONResult(), recorder])
    job.add(place(resolve([f"{tests_file}:{n}" for n in names])))
    return job, recorder


def test_results_are_on_disk_as_each_test_ends(tmp_path, tests_file) -> None:
    job, recorder = make_job(tmp_path, tests_file, "Passes", "Fails", max_parallel=1)
    code = job.run()
    assert code == exitcodes.TESTS_FAIL
    assert recorder.calls[0] == ("job_start", 2)
    ends = [c[1] for c in recorder.calls if c[0] == "test_end"]
    assert sorted(ends) == ["FAIL", "PASS"]
    assert recorder.calls[-1] == ("render", 2)
    final = json.loads((job.logdir / "results.json").read_text())
    assert [(t["status"], t["fail_reason"]) for t in final["tests"]] == [
        ("PASS", None),
        ("FAIL", "wrong answer"),
    ]
    assert (tmp_path / "results" / "latest").resolve() == job.logdir
    assert "job " in (job.logdir / "job.log").read_text()


def test_interrupt_from_another_thread_keeps_every_result(tmp_path, tests_file) -> None:
    job, _ = make_job(tmp_path, tests_file, "Passes", "Sleeps", "Sleeps", max_parallel=2)
    threading.Timer(1.5, job.interrupt).start()
    code = job.run()
    assert code == exitcodes.TESTS_FAIL | exitcodes.INTERRUPTED
    statuses = [r.status for r in job.results]
    assert statuses[0] == "PASS" and statuses[1:] == ["INTERRUPT", "INTERRUPT"]
    reasons = {r.fail_reason for r in job.results[1:]}
    assert reasons <= {"interrupted by the user", "not started: interrupted by the user"}
    on_disk = json.loads((job.logdir / "results.json").read_text())
    assert [t["status"] for t in on_disk["tests"]] == statuses


def test_an_unwritable_results_directory_is_a_job_error(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(JobError, match=r"cannot write the results directory .*--job-results-dir"):
        Job(JobConfig(results_dir=str(blocker / "results")))
