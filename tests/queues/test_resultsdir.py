"""A queued file's results directory: its name, queue.json, what its jobs ended with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mhtest.queue.resultsdir import QueueRecord, job_outcome, make_results_dir, worst

pytestmark = pytest.mark.timeout(60)


def test_a_name_taken_gets_a_timestamp_then_a_number(tmp_path: Path) -> None:
    results = tmp_path / "results"
    made = [make_results_dir(results, "basic-tests", now=1700000000) for _ in range(3)]
    assert [p.name for p in made] == [
        "basic-tests",
        "basic-tests.1700000000",
        "basic-tests.1700000000.2",
    ]
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        make_results_dir(tmp_path / "file", "x")


def test_queue_json_is_rewritten_whole(tmp_path: Path) -> None:
    record = QueueRecord(tmp_path, queue="q", file="f", jobs=[{"machine": "h1"}])
    record.job(0, status="PASS")
    record.update(status="PASS")
    again = QueueRecord.load(tmp_path)
    assert again is not None and again.data == {
        "queue": "q",
        "file": "f",
        "jobs": [{"machine": "h1", "status": "PASS"}],
        "status": "PASS",
    }
    assert list(tmp_path.iterdir()) == [tmp_path / "queue.json"]


def test_job_outcome(tmp_path: Path) -> None:
    assert job_outcome(tmp_path / "none") == {
        "status": "ERROR",
        "reason": job_outcome(tmp_path / "none")["reason"],
        "complete": False,
    }
    job = tmp_path / "h1" / "job-1"
    job.mkdir(parents=True)
    (tmp_path / "h1" / "latest").symlink_to("job-1")
    tests = [
        {"uid": 1, "status": "FAIL", "parent": None, "fail_reason": "1 of 2 results did not pass"},
        {"uid": 2, "status": "PASS", "parent": 1},
        {"uid": 3, "status": "FAIL", "parent": 1},
    ]
    (job / "results.json").write_text(
        json.dumps({"tests": tests, "end": 5.0, "interrupted": False})
    )
    assert job_outcome(tmp_path / "h1") == {
        "job": "job-1",
        "status": "FAIL",
        "counts": {"PASS": 1, "FAIL": 2},
        "interrupted": False,
        "complete": True,
        "reason": "1 of 2 results did not pass",
    }
    assert worst(["PASS", "WARN", "INTERRUPT", "FAIL"]) == "INTERRUPT" and worst([]) == "PASS"
