"""Ctrl-C asks running tests to stop: tearDown still runs, a multi-host test keeps its workers."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from .conftest import running_mhtest, wait_for

TEARDOWN_PY = """
import os
import time

from mhtest import Test


class Slow(Test):
    def test(self):
        open(os.environ["MARK"] + ".started", "w").close()
        time.sleep(60)

    def tearDown(self):
        open(os.environ["MARK"] + ".teardown", "w").close()
"""

MULTI_PY = """
import os

from mhtest import MultiHostTest


class Crowd(MultiHostTest):
    def test(self):
        self.run_workers([self.worker("crowd_worker.py", h) for h in self.hosts], timeout=120)
"""

WORKER_PY = '''
import os
import time

from mhtest import Test


class CrowdWorker(Test):
    """:mhtest: worker"""

    def test(self):
        self.sync.barrier("up", timeout=30)
        open(os.path.join(os.environ["MARKDIR"], self.params.get("host")), "w").close()
        self.whiteboard = "was here"
        time.sleep(60)
'''


@pytest.mark.timeout(60)
def test_ctrl_c_runs_teardown_and_ends_interrupt(write_tests, tmp_path):
    write_tests({"slow.py": TEARDOWN_PY})
    mark = tmp_path / "mark"
    results = tmp_path / "results"
    with running_mhtest(["run", "t/slow.py"], tmp_path, results, env={"MARK": str(mark)}) as proc:
        wait_for(lambda: (tmp_path / "mark.started").exists(), what="the test to start")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 9, f"{out}\n{err}"
    assert (tmp_path / "mark.teardown").exists(), "tearDown did not run on Ctrl-C"
    data = json.loads((results / "latest" / "results.json").read_text())
    (test,) = data["tests"]
    assert test["status"] == "INTERRUPT"
    assert "interrupted by the user" in test["fail_reason"]


@pytest.mark.timeout(90)
def test_ctrl_c_keeps_the_workers_results_of_a_multihost_test(write_tests, tmp_path):
    write_tests({"crowd.py": MULTI_PY, "crowd_worker.py": WORKER_PY})
    marks = tmp_path / "marks"
    marks.mkdir()
    results = tmp_path / "results"
    with running_mhtest(
        ["run", "t/crowd.py", "-p", "hosts=local,local,local"],
        tmp_path,
        results,
        env={"MARKDIR": str(marks)},
    ) as proc:
        wait_for(lambda: len(list(marks.iterdir())) == 3, what="three workers past the barrier")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=45)
    assert proc.returncode == 9, f"{out}\n{err}"
    data = json.loads((results / "latest" / "results.json").read_text())
    (test,) = data["tests"]
    assert test["status"] == "INTERRUPT", test
    children = test["children"]
    assert sorted(c["name"] for c in children) == ["local-1", "local-2", "local-3"]
    assert {c["status"] for c in children} == {"INTERRUPT"}
    for child in children:
        assert child["whiteboard"] == "was here"
        assert (Path(child["logdir"]) / "whiteboard").read_text() == "was here"
