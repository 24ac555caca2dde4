"""`mhtest run`: what Avocado gives a test at its timeout and a simple test in its
environment and log (side by side with Avocado 113 in test_avocado_parity*.py, slow)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import wait_gone

TIMEOUT_PY = """
import os
import subprocess
import time

from mhtest import Test


class Slow(Test):
    timeout = 1

    def setUp(self):
        self.helper = subprocess.Popen(["sleep", "300"])

    def test(self):
        self.log.info("sleeping")
        time.sleep(30)

    def tearDown(self):
        self.log.info("tearDown in phase %s, status %s", self.phase, self.status)
        with open(os.path.join(os.environ["MARKS"], "slow"), "w") as fh:
            fh.write(str(self.helper.pid))
        self.whiteboard = "tearDown ran"
"""


@pytest.mark.timeout(60)
def test_a_test_at_its_timeout_runs_teardown(mhtest, write_tests, tmp_path):
    write_tests({"timeout.py": TIMEOUT_PY})
    marks = tmp_path / "marks"
    marks.mkdir()
    run = mhtest("run", "t/timeout.py", env={"MARKS": str(marks)})
    result = run.result("Slow.test")
    assert (result["status"], result["fail_reason"]) == (
        "INTERRUPT",
        "Test interrupted: Timeout reached",
    ), run
    assert result["whiteboard"] == "tearDown ran"
    assert result["time"] < 5
    debug = (Path(result["logdir"]) / "debug.log").read_text()
    assert "timeout of 1 s reached" in debug
    assert "tearDown in phase TEARDOWN, status INTERRUPT" in debug
    assert "INTERRUPT 1-t/timeout.py:Slow.test: Test interrupted: Timeout reached" in debug
    # What the test started goes once it ended.
    assert wait_gone([int((marks / "slow").read_text())]) == []


ENV_SH = """
#!/bin/sh
echo "to stdout"
echo "to stderr" >&2
env | grep -E '^(MHTEST_|AVOCADO_|size=|timeout=)' | sort
"""

TRAP_SH = """
#!/bin/sh
trap 'echo "got TERM" > "$MARKS/trap"; exit 1' TERM
sleep 30 &
wait
"""


@pytest.mark.timeout(60)
def test_simple_test_environment_log_and_timeout(mhtest, write_tests, tmp_path):
    tests = write_tests({"env.sh": ENV_SH, "trap.sh": TRAP_SH}, executable=("env.sh", "trap.sh"))
    marks = tmp_path / "marks"
    marks.mkdir()
    run = mhtest(
        "run", "t/env.sh", "t/trap.sh", "-p", "size=4", "-p", "timeout=1", env={"MARKS": str(marks)}
    )
    env_result = run.result("t/env.sh")
    assert env_result["status"] == "PASS", run
    logdir = env_result["logdir"]
    env = dict(
        line.split("=", 1)
        for line in (Path(logdir) / "stdout").read_text().splitlines()
        if "=" in line
    )
    for name in ("TEST_LOGDIR", "TEST_OUTPUTDIR", "TEST_WORKDIR", "TEST_BASEDIR", "TEST_LOGFILE"):
        assert env[f"MHTEST_{name}"] == env[f"AVOCADO_{name}"], name
    assert env["MHTEST_TEST_LOGDIR"] == logdir
    assert env["MHTEST_TEST_LOGFILE"] == os.path.join(logdir, "debug.log")
    assert env["MHTEST_TEST_OUTPUTDIR"] == os.path.join(logdir, "data")
    assert env["MHTEST_TEST_BASEDIR"] == str(tests.resolve())
    assert os.path.isdir(env["MHTEST_TEST_WORKDIR"])
    assert env["MHTEST_TEST_ID"] == "1-t/env.sh"
    assert env["AVOCADO_VERSION"] == "113.0" and env["MHTEST_VERSION"]
    assert env["MHTEST_JOB_ID"] == (run.job_dir / "id").read_text().strip()
    assert env["MHTEST_TESTS_COMMON_TMPDIR"] == env["AVOCADO_TESTS_COMMON_TMPDIR"]
    assert not os.path.exists(env["MHTEST_TESTS_COMMON_TMPDIR"])  # removed with the job
    assert (env["size"], env["timeout"]) == ("4", "1")  # params, as Avocado gives them
    debug = (Path(logdir) / "debug.log").read_text()
    assert "[stdout] to stdout" in debug and "[stderr] to stderr" in debug
    trap = run.result("t/trap.sh")
    assert (trap["status"], trap["fail_reason"]) == (
        "INTERRUPT",
        "Test interrupted: Timeout reached",
    )
    assert (marks / "trap").read_text() == "got TERM\n"  # SIGTERM first: it could clean up
    assert "timeout of 1 s reached" in (Path(trap["logdir"]) / "debug.log").read_text()


UNITTEST_PY = """
import sys

from mhtest import Test


class Seen(Test):
    def test_1(self):
        self.whiteboard = str("unittest" in sys.modules)

    def test_2(self):
        self.whiteboard = str("unittest" in sys.modules)
        self.assertEqual(1, 1)

    def test_3(self):
        self.whiteboard = str("unittest" in sys.modules)
"""


@pytest.mark.timeout(60)
def test_unittest_is_loaded_for_the_tests_that_wait_only(mhtest, write_tests):
    """The fork server imports unittest (for assertions) once more tests wait than run at
    once: the tests forked after have it; a test alone never pays for it."""
    write_tests({"seen.py": UNITTEST_PY})
    run = mhtest("run", "t/seen.py", "--max-parallel", "1")
    seen = [run.result(f"Seen.test_{i}")["whiteboard"] for i in (1, 2, 3)]
    assert seen == ["False", "True", "True"], run
    alone = mhtest("run", "t/seen.py:Seen.test_3")
    assert alone.result("Seen.test_3")["whiteboard"] == "False"


SLOW_IMPORT_PY = """
import time

from mhtest import Test

time.sleep(30)  # importing the file outlasts the test's timeout


class SlowImport(Test):
    timeout = 1

    def test(self):
        pass
"""


@pytest.mark.timeout(60)
def test_a_test_whose_import_outlasts_its_timeout(mhtest, write_tests):
    write_tests({"slow_import.py": SLOW_IMPORT_PY})
    run = mhtest("run", "t/slow_import.py")
    result = run.result("SlowImport.test")
    assert (result["status"], result["fail_reason"]) == (
        "INTERRUPT",
        "Test interrupted: Timeout reached",
    ), run
    assert result["time"] < 5
