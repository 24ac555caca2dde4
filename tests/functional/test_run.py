"""`mhtest run` of real test files: every status, timeouts, params, test directories."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from .conftest import wait_gone

STATUSES_PY = """
import asyncio
import os
import sys

from mhtest import Test, TestFail, cancel_on, fail_on, skip, skipIf, skipUnless


def mark(test, what):
    with open(os.path.join(os.environ["MARKS"], what), "w") as fh:
        fh.write(test.name)


class Pass(Test):
    def test(self):
        self.log.info("all good")


class Fail(Test):
    def test(self):
        self.fail("the answer is wrong")

    def tearDown(self):
        mark(self, "fail-teardown")


class Assert(Test):
    def test(self):
        assert 1 == 2, "one is not two"


class Error(Test):
    def test(self):
        self.error("no network to test")


class Crash(Test):
    def test(self):
        raise RuntimeError("unexpected crash")

    def tearDown(self):
        self.log.info("tearDown after the crash")
        mark(self, "crash-teardown")


class SetUpError(Test):
    def setUp(self):
        raise OSError("no disk")

    def test(self):
        mark(self, "setup-error-test")

    def tearDown(self):
        mark(self, "setup-error-teardown")


class Skips(Test):
    def setUp(self):
        mark(self, "skips-setup")

    def tearDown(self):
        mark(self, "skips-teardown")

    @skip("not ready")
    def test_skip(self):
        pass

    @skipIf(True, "condition true")
    def test_skip_if(self):
        pass

    @skipUnless(sys.platform == "plan9", "needs plan9")
    def test_skip_unless(self):
        pass


class Warn(Test):
    def test(self):
        self.log.warning("disk almost full")


class Cancel(Test):
    def test(self):
        self.cancel("tool missing")


class Async(Test):
    async def setUp(self):
        await asyncio.sleep(0)
        self.ready = True

    async def test_pass(self):
        await asyncio.sleep(0.01)
        self.whiteboard = "awaited" if self.ready else "no setUp"

    async def test_fail(self):
        await asyncio.sleep(0)
        self.fail("async failure")


class Decorators(Test):
    @fail_on(ValueError)
    def test_fail_on(self):
        raise ValueError("bad value")

    @fail_on
    def test_fail_on_any(self):
        raise KeyError("k")

    @cancel_on(ImportError)
    def test_cancel_on(self):
        raise ImportError("no module")

    @fail_on(ValueError)
    def test_fail_on_other(self):
        raise TypeError("not a value error")

    @cancel_on(ImportError)
    def test_cancel_on_fail(self):
        raise TestFail("a real failure")
"""

EXPECTED = {
    "Pass.test": ("PASS", None),
    "Fail.test": ("FAIL", "the answer is wrong"),
    "Assert.test": ("FAIL", "one is not two"),
    "Error.test": ("ERROR", "no network to test"),
    "Crash.test": ("ERROR", "unexpected crash"),
    "SetUpError.test": ("ERROR", "no disk"),
    "Skips.test_skip": ("SKIP", "not ready"),
    "Skips.test_skip_if": ("SKIP", "condition true"),
    "Skips.test_skip_unless": ("SKIP", "needs plan9"),
    "Warn.test": ("WARN", "warning"),
    "Cancel.test": ("CANCEL", "tool missing"),
    "Async.test_pass": ("PASS", None),
    "Async.test_fail": ("FAIL", "async failure"),
    "Decorators.test_fail_on": ("FAIL", "bad value"),
    "Decorators.test_fail_on_any": ("FAIL", "KeyError"),
    "Decorators.test_cancel_on": ("CANCEL", "no module"),
    "Decorators.test_fail_on_other": ("ERROR", "not a value error"),
    "Decorators.test_cancel_on_fail": ("FAIL", "a real failure"),
}


@pytest.fixture(scope="module")
def statuses_run(tmp_path_factory):
    """One job of STATUSES_PY, shared by the status tests (it is the slow part)."""
    import subprocess
    import textwrap

    from .conftest import Run, mhtest_command

    base = tmp_path_factory.mktemp("statuses")
    (base / "t").mkdir()
    (base / "t" / "statuses.py").write_text(textwrap.dedent(STATUSES_PY))
    marks = base / "marks"
    marks.mkdir()
    args = ["run", "t/statuses.py", "--max-parallel", "2"]
    proc = subprocess.run(
        mhtest_command(args, base / "results"),
        cwd=base,
        env={**__import__("os").environ, "MARKS": str(marks)},
        capture_output=True,
        text=True,
        timeout=50,
        stdin=subprocess.DEVNULL,
    )
    return Run(args, proc.returncode, proc.stdout, proc.stderr, base / "results"), marks


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_status_in_results_json_and_console(statuses_run, name):
    run, _ = statuses_run
    status, reason = EXPECTED[name]
    ref = f"t/statuses.py:{name}"
    result = run.result(ref)
    assert result["status"] == status, run
    if reason is None:
        assert result["fail_reason"] is None
    else:
        assert reason in result["fail_reason"]
    # The console line a user reads: `(i/N) ref: STATUS (t s) reason`
    line = re.search(
        rf"^ \((\d+)/{len(EXPECTED)}\) {re.escape(ref)}: {status} \(\d+\.\d\d s\)(.*)$",
        run.stdout,
        re.M,
    )
    assert line, run
    assert int(line.group(1)) == result["uid"]
    if reason is not None:
        assert reason in line.group(2)


@pytest.mark.timeout(60)
def test_statuses_totals_and_exit_code(statuses_run):
    run, _ = statuses_run
    assert run.code == 1, run
    counts = {}
    for status, _ in EXPECTED.values():
        counts[status] = counts.get(status, 0) + 1
    summary = re.search(r"^RESULTS +: (.*)$", run.stdout, re.M).group(1)
    shown = dict(part.rsplit(" ", 1) for part in summary.split(" | "))
    assert {k: int(v) for k, v in shown.items() if int(v)} == counts
    assert set(shown) == {"PASS", "FAIL", "ERROR", "SKIP", "WARN", "CANCEL", "INTERRUPT"}
    data = run.results()
    assert data["total"] == len(EXPECTED)
    assert (data["pass"], data["failures"], data["errors"]) == (
        counts["PASS"],
        counts["FAIL"],
        counts["ERROR"],
    )
    assert (data["skip"], data["warn"], data["cancel"], data["interrupt"]) == (
        counts["SKIP"],
        counts["WARN"],
        counts["CANCEL"],
        0,
    )
    assert re.search(r"^JOB TIME +: \d+\.\d\d s$", run.stdout, re.M)
    assert "Traceback" not in run.stderr


@pytest.mark.timeout(60)
def test_lifecycle_teardown_and_skips(statuses_run):
    run, marks = statuses_run
    made = {p.name for p in marks.iterdir()}
    # tearDown runs after a failure and after an unexpected exception ...
    assert {"fail-teardown", "crash-teardown"} <= made
    # ... and after a setUp error, whose test method never runs.
    assert "setup-error-teardown" in made
    assert "setup-error-test" not in made
    # A skipped test runs neither setUp nor tearDown.
    assert "skips-setup" not in made and "skips-teardown" not in made
    debug = (run.job_dir / "test-results" / "5-t_statuses.py:Crash.test" / "debug.log").read_text()
    assert "RuntimeError: unexpected crash" in debug
    assert "tearDown after the crash" in debug
    assert run.result("Async.test_pass")["whiteboard"] == "awaited"


TIMEOUTS_PY = """
import os
import subprocess
import time

from mhtest import Test


def start_sleeper(test, name):
    # A grandchild in the test's process group: the timeout must take it down too.
    proc = subprocess.Popen(["sleep", "300"])
    with open(os.path.join(os.environ["MARKS"], name), "w") as fh:
        fh.write(f"{os.getpid()} {proc.pid}")


class ClassTimeout(Test):
    timeout = 1

    def test(self):
        start_sleeper(self, "class")
        time.sleep(30)

    def tearDown(self):
        pass


class ParamTimeout(Test):
    def test(self):
        start_sleeper(self, "param")
        time.sleep(30)
"""


@pytest.mark.timeout(60)
def test_timeouts_interrupt_and_kill_the_process_group(mhtest, write_tests, tmp_path):
    write_tests({"timeouts.py": TIMEOUTS_PY})
    marks = tmp_path / "marks"
    marks.mkdir()
    for which, extra in (("ClassTimeout", []), ("ParamTimeout", ["-p", "timeout=1"])):
        run = mhtest("run", f"t/timeouts.py:{which}", *extra, env={"MARKS": str(marks)})
        assert run.code == 1, run
        result = run.result(which)
        assert result["status"] == "INTERRUPT", run
        assert result["fail_reason"] == "Test interrupted: Timeout reached"  # Avocado's
        assert 0.9 <= result["time"] < 5
        assert re.search(rf"{which}.test: INTERRUPT \(.*Timeout reached", run.stdout), run
        debug = (Path(result["logdir"]) / "debug.log").read_text()
        assert "timeout of 1 s reached" in debug, debug
    for name in ("class", "param"):
        pids = [int(p) for p in (marks / name).read_text().split()]
        assert wait_gone(pids) == [], f"{name}: test processes {pids} survived the timeout"


SIMPLE_SH = """
#!/bin/sh
echo "to stdout"
echo "to stderr" >&2
exit 0
"""

FAILING_SH = """
#!/bin/sh
echo "about to fail"
exit 3
"""


@pytest.mark.timeout(60)
def test_simple_tests_keep_stdout_and_stderr(mhtest, write_tests):
    write_tests({"ok.sh": SIMPLE_SH, "bad.sh": FAILING_SH}, executable=("ok.sh", "bad.sh"))
    run = mhtest("run", "t/ok.sh", "t/bad.sh")
    assert run.code == 1, run
    assert run.statuses() == {"t/ok.sh": "PASS", "t/bad.sh": "FAIL"}
    assert run.result("bad.sh")["fail_reason"] == "exit status 3"
    ok_dir = run.job_dir / "test-results" / "1-t_ok.sh"
    assert (ok_dir / "stdout").read_text() == "to stdout\n"
    assert (ok_dir / "stderr").read_text() == "to stderr\n"
    assert (run.job_dir / "test-results" / "2-t_bad.sh" / "stdout").read_text() == "about to fail\n"
    assert re.search(r"^ \(2/2\) t/bad.sh: FAIL \(.*exit status 3$", run.stdout, re.M), run


WHERE_SH = """
#!/bin/sh
echo "cwd=$(pwd)"
echo "pid=$$ pgid=$(cut -d' ' -f5 /proc/$$/stat)"
echo "ignored=$(sed -n 's/^SigIgn:[[:space:]]*//p' /proc/$$/status)"
echo "stdin=$(readlink /proc/$$/fd/0)"
echo "job=$JOB_VALUE"
"""


@pytest.mark.timeout(60)
def test_simple_test_process_is_set_up_as_a_user_expects(mhtest, write_tests):
    """Its own directory, its own process group, Ctrl-C not ignored, no stdin, the env."""
    base = write_tests({"where.sh": WHERE_SH}, executable=("where.sh",))
    run = mhtest("run", "t/where.sh", env={"JOB_VALUE": "from the job"})
    assert run.code == 0, run
    text = (run.job_dir / "test-results" / "1-t_where.sh" / "stdout").read_text()
    out = dict(line.split("=", 1) for line in text.splitlines() if not line.startswith("pid"))
    ids = re.search(r"pid=(\d+) pgid=(\d+)", text)
    assert ids and ids.group(1) == ids.group(2)  # a session (and process group) of its own
    assert out["cwd"] == str(base)
    assert int(out["ignored"], 16) & (1 << (signal.SIGINT - 1)) == 0
    assert out["stdin"] == "/dev/null"
    assert out["job"] == "from the job"


DIRS_PY = """
import os
import sys

from mhtest import Test


class Dirs(Test):
    def test(self):
        for name in ("logdir", "outputdir", "workdir"):
            path = getattr(self, name)
            assert os.path.isdir(path), f"{name} {path} is not a directory"
        with open(os.path.join(self.outputdir, "artifact.txt"), "w") as fh:
            fh.write("kept")
        with open(os.path.join(self.workdir, "scratch"), "w") as fh:
            fh.write("scratch")
        print("printed by the test")
        print("an error line", file=sys.stderr)
        self.whiteboard = "board: ünïcode"
"""


@pytest.mark.timeout(60)
def test_test_directories_whiteboard_and_output(mhtest, write_tests):
    write_tests({"dirs.py": DIRS_PY})
    run = mhtest("run", "t/dirs.py")
    assert run.code == 0, run
    test_dir = run.job_dir / "test-results" / "1-t_dirs.py:Dirs.test"
    assert (test_dir / "data" / "artifact.txt").read_text() == "kept"
    assert (test_dir / "whiteboard").read_text(encoding="utf-8") == "board: ünïcode"
    assert run.result("Dirs.test")["whiteboard"] == "board: ünïcode"
    assert (test_dir / "stdout").read_text() == "printed by the test\n"
    assert (test_dir / "stderr").read_text() == "an error line\n"
    assert "printed by the test" not in run.stdout
    debug = (test_dir / "debug.log").read_text()
    assert "START 1-t/dirs.py:Dirs.test" in debug and "PASS 1-t/dirs.py:Dirs.test" in debug


PARAMS_PY = """
import json

from mhtest import Test


class Params(Test):
    def test(self):
        keys = ("size", "sizes", "nested", "flag", "mode", "only_cli", "ratio")
        seen = {k: self.params.get(k, default="<default>") for k in keys}
        seen["missing"] = self.params.get("missing", default=42)
        seen["types"] = {k: type(v).__name__ for k, v in seen.items()}
        self.whiteboard = json.dumps(seen, sort_keys=True)
"""

PARAMS_A = """
size: 2
sizes: [1, 2, 4]
nested: {a: 1, b: [x, y]}
flag: true
mode: quick
ratio: 0.5
"""

PARAMS_B = """
mode: thorough
flag: false
"""


@pytest.mark.timeout(60)
def test_params_layers_and_types(mhtest, write_tests):
    import json

    base = write_tests({"params.py": PARAMS_PY, "a.yaml": PARAMS_A, "b.yaml": PARAMS_B})
    run = mhtest(
        "run",
        "t/params.py",
        "--params",
        str(base / "a.yaml"),
        "--params",
        "t/b.yaml",
        "-p",
        "size=4",
        "-p",
        "only_cli=a=b",
    )
    assert run.code == 0, run
    seen = json.loads(run.result("Params.test")["whiteboard"])
    assert seen["size"] == "4"  # -p wins over the files, and stays a string (Avocado)
    assert seen["sizes"] == [1, 2, 4]  # YAML types kept
    assert seen["nested"] == {"a": 1, "b": ["x", "y"]}
    assert seen["flag"] is False and seen["mode"] == "thorough"  # the later file wins
    assert seen["ratio"] == 0.5
    assert seen["only_cli"] == "a=b"  # only the first '=' splits
    assert seen["missing"] == 42
    assert seen["types"] == {
        "size": "str",
        "sizes": "list",
        "nested": "dict",
        "flag": "bool",
        "mode": "str",
        "only_cli": "str",
        "ratio": "float",
        "missing": "int",
    }


@pytest.mark.timeout(60)
def test_examples_directory_as_in_the_readme(mhtest, tmp_path):
    """The issue's command: every example gives its documented status."""
    import os
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "examples" / "tests"
    names = [
        "passtest.py",
        "failtest.py",
        "errortest.py",
        "skiptest.py",
        "canceltest.py",
        "warntest.py",
        "whiteboard.py",
        "params.py",
        "asynctest.py",
        "timeouttest.py",
        "true.sh",
    ]
    refs = [os.path.relpath(examples / n, tmp_path) for n in names]
    run = mhtest(
        "run",
        *refs,
        "-p",
        "size=4",
        "--params",
        str(examples / "params.yaml"),
        "--max-parallel",
        "2",
    )
    assert run.code == 1, run
    by_class = {ref.rsplit("/", 1)[1]: status for ref, status in run.statuses().items()}
    assert by_class == {
        "passtest.py:PassTest.test": "PASS",
        "failtest.py:FailTest.test": "FAIL",
        "errortest.py:ErrorTest.test": "ERROR",
        "errortest.py:CrashTest.test": "ERROR",
        "errortest.py:SetUpErrorTest.test": "ERROR",
        "skiptest.py:SkipTest.test_skip": "SKIP",
        "skiptest.py:SkipTest.test_skip_if": "SKIP",
        "skiptest.py:SkipTest.test_skip_unless": "SKIP",
        "canceltest.py:CancelTest.test": "CANCEL",
        "warntest.py:WarnTest.test": "WARN",
        "whiteboard.py:WhiteBoard.test": "PASS",
        "params.py:Params.test": "PASS",
        "asynctest.py:AsyncTest.test": "PASS",
        "timeouttest.py:TimeoutTest.test": "INTERRUPT",
        "true.sh": "PASS",
    }
    assert run.result("params.py")["whiteboard"] == "size='4' sizes=[1, 2, 4]"


RENDEZVOUS_PY = """
import os
import time

from mhtest import Test


def meet(me, other):
    # Each test waits for the other's file: they can only both pass if they run at once.
    marks = os.environ["MARKS"]
    open(os.path.join(marks, me), "w").close()
    for _ in range(200):
        if os.path.exists(os.path.join(marks, other)):
            return
        time.sleep(0.01)
    raise AssertionError(f"{other} never ran beside {me}")


class A(Test):
    def test(self):
        meet("a", "b")


class B(Test):
    def test(self):
        meet("b", "a")
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("parallel, statuses", [("2", ["PASS", "PASS"]), ("1", ["FAIL", "PASS"])])
def test_max_parallel(mhtest, write_tests, tmp_path, parallel, statuses):
    write_tests({"rendezvous.py": RENDEZVOUS_PY})
    marks = tmp_path / "marks"
    marks.mkdir()
    run = mhtest("run", "t/rendezvous.py", "--max-parallel", parallel, env={"MARKS": str(marks)})
    assert [t["status"] for t in run.results()["tests"]] == statuses, run


HANGS_SH = """
#!/bin/sh
echo $$ > "$MARKS/hangs"
sleep 30
"""


@pytest.mark.timeout(60)
def test_simple_test_honours_the_timeout_param(mhtest, write_tests, tmp_path):
    write_tests({"hangs.sh": HANGS_SH}, executable=("hangs.sh",))
    marks = tmp_path / "marks"
    marks.mkdir()
    run = mhtest("run", "t/hangs.sh", "-p", "timeout=1", env={"MARKS": str(marks)})
    assert run.code == 1, run
    result = run.result("t/hangs.sh")
    assert result["status"] == "INTERRUPT"
    assert result["fail_reason"] == "Test interrupted: Timeout reached"
    assert "timeout of 1 s reached" in (Path(result["logdir"]) / "debug.log").read_text()
    assert wait_gone([int((marks / "hangs").read_text())]) == []
    bad = mhtest("run", "t/hangs.sh", "-p", "timeout=soon", env={"MARKS": str(marks)})
    assert bad.code == 1, bad
    assert bad.result("t/hangs.sh")["fail_reason"] == (
        "the timeout param must be a number of seconds, not 'soon'"
    )
