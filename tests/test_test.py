"""The mhtest.Test API a test author touches, and the lifecycle rules of mhtest.runners.child.

The end-to-end evidence (real child processes, the CLI) is in tests/functional/test_run.py;
these cover the rules one by one, in this process.
"""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

import mhtest
from mhtest import cancel_on, fail_on, skip, skipIf, skipUnless
from mhtest.runners.child import run_lifecycle
from mhtest.runners.lifecycle import WARN_REASON
from mhtest.test import skip_reason


class Recorder(mhtest.Test):
    """A test class whose steps record that they ran."""

    def setUp(self):
        self.steps = ["setUp"]

    def tearDown(self):
        self.steps.append("tearDown")


def run(cls, method="test", **kwargs):
    test = cls(methodName=method, params=kwargs.get("params"), logdir=kwargs.get("logdir"))
    outcome = run_lifecycle(test, getattr(test, method))
    return test, outcome


def test_avocado_names_are_exported():
    names = ("Test", "TestFail", "TestError", "TestCancel", "fail_on", "cancel_on", "skip")
    for name in (*names, "skipIf", "skipUnless"):
        assert hasattr(mhtest, name)
    assert issubclass(mhtest.TestFail, AssertionError)
    assert not issubclass(mhtest.TestError, AssertionError)
    assert not issubclass(mhtest.TestCancel, AssertionError)


def test_import_mhtest_stays_light():
    """The local test path must not pay for paramiko or ZeroMQ."""
    import subprocess
    import sys

    code = (
        "import sys, mhtest, mhtest.runners.child, mhtest.runners.local, mhtest.job; "
        "print(sorted(m for m in ('paramiko', 'zmq') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "body, status, reason",
    [
        (lambda self: None, "PASS", None),
        (lambda self: self.fail("f"), "FAIL", "f"),
        (lambda self: self.fail(), "FAIL", "None"),  # Avocado's reason: str(None)
        (lambda self: self.error("e"), "ERROR", "e"),
        (lambda self: self.cancel("c"), "CANCEL", "c"),
        (lambda self: self.assertEqual(1, 2), "FAIL", "1 != 2"),
        (lambda self: self.assertIn(3, [1]), "FAIL", "3 not found in [1]"),
        (lambda self: self.assertTrue(0, "zero"), "FAIL", "0 is not true : zero"),
        (lambda self: [][1], "ERROR", "list index out of range"),
        (lambda self: (_ for _ in ()).throw(AssertionError()), "FAIL", ""),
        (lambda self: self.log.warning("w"), "WARN", WARN_REASON),
        (lambda self: self.log.error("e"), "PASS", None),  # only warnings make WARN
        (lambda self: self.log.getChild("sub").warning("w"), "PASS", None),  # its own log only
        (lambda self: self.skipTest("no"), "ERROR", "no"),  # as in Avocado
    ],
)
def test_status_rules(body, status, reason):
    cls = type("T", (Recorder,), {"test": body})
    test, outcome = run(cls)
    assert (outcome["status"], outcome["fail_reason"]) == (status, reason)
    assert test.steps == ["setUp", "tearDown"]


def test_setup_error_skips_the_test_but_not_teardown():
    class T(Recorder):
        def setUp(self):
            super().setUp()
            raise OSError("no disk")

        def test(self):
            self.steps.append("test")

    test, outcome = run(T)
    assert outcome["status"] == "ERROR" and outcome["fail_reason"] == "no disk"
    assert test.steps == ["setUp", "tearDown"]


def test_cancel_in_setup_is_cancel():
    class T(Recorder):
        def setUp(self):
            super().setUp()
            self.cancel("not here")

        def test(self):
            pass

    assert run(T)[1]["status"] == "CANCEL"


def test_teardown_error_turns_pass_and_fail_into_error():
    class Broken(Recorder):
        def tearDown(self):
            raise RuntimeError("cleanup failed")

        def test(self):
            pass

        def test_fails(self):
            self.fail("first problem")

    error = {"status": "ERROR", "fail_reason": "cleanup failed", "fail_class": "RuntimeError"}
    outcome = run(Broken)[1]
    phases = outcome.pop("phases")
    assert outcome == error
    failing = run(Broken, "test_fails")[1]
    failing.pop("phases")
    assert failing == error  # Avocado's rule
    # When each part ran, for the timeline of results.html; a part that raised has its end.
    assert [name for name, _, _ in phases] == ["setUp", "test", "tearDown"]
    times = [t for _, start, end in phases for t in (start, end)]
    assert times == sorted(times)


def test_warning_does_not_hide_a_failure():
    class T(Recorder):
        def test(self):
            self.log.warning("w")
            self.fail("f")

    assert run(T)[1]["status"] == "FAIL"


def test_warnings_are_counted_per_test():
    class T(Recorder):
        def test(self):
            self.log.warning("w")

        def test_quiet(self):
            self.log.info("fine")

    first, outcome = run(T)
    assert outcome["status"] == "WARN"
    # A second test in the same process does not inherit the first one's warnings,
    # and the first one stops counting once it has ended.
    assert run(T, "test_quiet")[1]["status"] == "PASS"
    assert run(T)[1]["status"] == "WARN"
    assert first.warnings_logged == 1
    assert first._warnings not in first.log.handlers


def test_async_lifecycle():
    class T(Recorder):
        async def setUp(self):
            await asyncio.sleep(0)
            self.steps = ["async setUp"]

        async def test(self):
            await asyncio.sleep(0)
            self.steps.append("async test")

        async def test_fail(self):
            await asyncio.sleep(0)
            raise AssertionError("async assert")

    test, outcome = run(T)
    assert outcome["status"] == "PASS"
    assert test.steps == ["async setUp", "async test", "tearDown"]
    assert run(T, "test_fail")[1]["status"] == "FAIL"


def test_skip_decorators_skip_setup_and_teardown():
    class T(Recorder):
        steps: list = []

        @skip("not ready")
        def test_skip(self):
            self.steps.append("ran")

        @skipIf(lambda self: self.params.get("arch") == "s390", "not on s390")
        def test_skip_if(self):
            pass

        @skipUnless(False, "never")
        def test_skip_unless(self):
            pass

        @skipIf(False)
        def test_runs(self):
            pass

    for method, reason in (("test_skip", "not ready"), ("test_skip_unless", "never")):
        test, outcome = run(T, method)
        assert outcome.pop("phases") == []  # nothing of it ran
        assert outcome == {"status": "SKIP", "fail_reason": reason, "fail_class": "TestSkip"}
        assert test.steps == []
    assert run(T, "test_skip_if", params={"arch": "s390"})[1]["status"] == "SKIP"
    assert run(T, "test_skip_if", params={"arch": "x86"})[1]["status"] == "PASS"
    assert run(T, "test_runs")[1]["status"] == "PASS"
    assert skip_reason(T.test_runs, None) is None


def test_fail_on_and_cancel_on():
    class T(Recorder):
        @fail_on(ValueError)
        def test_value(self):
            raise ValueError("v")

        @fail_on((KeyError, IndexError))
        def test_tuple(self):
            raise IndexError("i")

        @fail_on
        def test_bare(self):
            raise OSError("o")

        @fail_on(ValueError)
        def test_other(self):
            raise OSError("not translated")

        @cancel_on(ImportError)
        def test_cancel(self):
            raise ImportError("no module")

        @cancel_on(Exception)
        def test_keeps_test_exceptions(self):
            self.fail("real failure")

    expected = {
        "test_value": ("FAIL", "ValueError('v')"),  # Avocado's: the repr
        "test_tuple": ("FAIL", "IndexError('i')"),
        "test_bare": ("FAIL", "OSError('o')"),
        "test_other": ("ERROR", "not translated"),
        "test_cancel": ("CANCEL", "ImportError('no module')"),
        "test_keeps_test_exceptions": ("FAIL", "real failure"),
    }
    for method, (status, reason) in expected.items():
        outcome = run(T, method)[1]
        assert (outcome["status"], outcome["fail_reason"]) == (status, reason), method


def test_attributes(tmp_path):
    class T(mhtest.Test):
        timeout = 3

        def test(self):
            pass

    test = T(methodName="test", params={"x": 1}, logdir=str(tmp_path))
    assert test.name == "0-T.test"  # Avocado's TestID shape, uid 0 when made by hand
    assert (test.name.uid, test.name.name, test.name.variant) == (0, "T.test", None)
    assert test.logdir == str(tmp_path)
    assert test.outputdir == str(tmp_path / "data")
    assert test.workdir == str(tmp_path / "work")
    assert test.whiteboard == ""
    assert test.timeout == 3
    assert test.params.get("x") == 1
    assert isinstance(test.log, logging.Logger)
    assert T(params={"timeout": "1.5"}).timeout == 1.5  # the param overrides the attribute
    with pytest.raises(mhtest.TestError, match="timeout param must be a number.*'soon'"):
        T(params={"timeout": "soon"})
    with pytest.raises(mhtest.TestError, match="no sync server"):
        test.sync  # noqa: B018


def test_what_the_test_sees_as_it_goes():
    seen = {}

    class T(mhtest.Test):
        def setUp(self):
            seen["setUp"] = (self.phase, self.status, self.running)

        def test(self):
            seen["test"] = (self.phase, self.status, self.running, self.time_elapsed)
            self.fail("boom")

        def tearDown(self):
            seen["tearDown"] = (self.phase, self.status, self.fail_reason, self.fail_class)
            seen["traceback"] = self.traceback

    test = T()
    assert (test.phase, test.status, test.running) == ("INIT", None, False)
    run_lifecycle(test, test.test)
    assert seen["setUp"] == ("SETUP", None, True)
    assert seen["test"] == ("TEST", None, True, -1)
    assert seen["tearDown"] == ("TEARDOWN", "FAIL", "boom", "TestFail")
    assert "TestFail: boom" in seen["traceback"]
    assert (test.phase, test.status, test.running) == ("FINISHED", "FAIL", False)
    assert test.time_elapsed >= 0


@pytest.mark.parametrize(
    "test_body, teardown, expected",
    [
        # A cancel (or an interrupt) in tearDown takes over, whatever the test did.
        (lambda s: s.fail("f"), lambda s: s.cancel("c"), ("CANCEL", "c")),
        # An error in tearDown does not hide an interruption (a timeout).
        (
            lambda s: (_ for _ in ()).throw(mhtest.test.TestInterrupt("Timeout reached")),
            lambda s: [][1],
            ("INTERRUPT", "Timeout reached"),
        ),
        # A warning turns what is not a failure into WARN, a cancel included (Avocado's rule).
        (lambda s: (s.log.warning("w"), s.cancel("c")), lambda s: None, ("WARN", WARN_REASON)),
        (lambda s: None, lambda s: s.log.warning("w"), ("WARN", WARN_REASON)),
        (lambda s: s.log.warning("w"), lambda s: s.fail("f"), ("ERROR", "f")),
        (lambda s: None, lambda s: (_ for _ in ()).throw(mhtest.TestSkip("s")), ("ERROR", None)),
    ],
)
def test_teardown_rules(test_body, teardown, expected):
    cls = type("T", (mhtest.Test,), {"test": test_body, "tearDown": teardown})
    test = cls()
    outcome = run_lifecycle(test, test.test)
    assert outcome["status"] == expected[0]
    if expected[1] is not None:
        assert outcome["fail_reason"] == expected[1]


def test_skip_raised_in_setup_skips_teardown():
    class T(Recorder):
        def setUp(self):
            super().setUp()
            raise mhtest.TestSkip("not here")

        def test(self):
            self.steps.append("test")

    test, outcome = run(T)
    assert (outcome["status"], outcome["fail_reason"]) == ("SKIP", "not here")
    assert test.steps == ["setUp"]


def test_skip_decorates_a_whole_class():
    @skip("the whole class")
    class T(Recorder):
        def test_one(self):
            pass

        def test_two(self):
            pass

    for method in ("test_one", "test_two"):
        test, outcome = run(T, method)
        assert (outcome["status"], outcome["fail_reason"]) == ("SKIP", "the whole class")
        assert not hasattr(test, "steps")  # setUp did not run


def test_fail_error_cancel_take_msg_or_avocados_old_message():
    test = mhtest.Test()
    for method, exc in ((test.fail, mhtest.TestFail), (test.error, mhtest.TestError)):
        with pytest.raises(exc, match="^why$"):
            method(message="why")
        with pytest.raises(exc, match="^None$"):
            method()
    with pytest.raises(mhtest.TestCancel, match="^why$"):
        test.cancel("why")


def test_tags_teststmpdir_get_data_and_id(tmp_path, monkeypatch):
    (tmp_path / "disk.py.data" / "T.test").mkdir(parents=True)
    (tmp_path / "disk.py.data" / "shared.txt").write_text("")
    (tmp_path / "disk.py.data" / "T.test" / "own.txt").write_text("")

    class T(mhtest.Test):
        def test(self):
            pass

    test = T(filename=str(tmp_path / "disk.py"), tags=["fast", "arch:x86_64", "arch:arm"])
    assert test.tags == {"fast": None, "arch": ["arm", "x86_64"]}
    assert test.basedir == str(tmp_path)
    assert test.logfile == os.path.join(test.logdir, "debug.log")
    assert test.get_data("shared.txt") == str(tmp_path / "disk.py.data" / "shared.txt")
    assert test.get_data("own.txt") == str(tmp_path / "disk.py.data" / "T.test" / "own.txt")
    assert test.get_data("own.txt", source="file") is None
    assert test.get_data("later.txt", must_exist=False).endswith("disk.py.data/T.test/later.txt")
    with pytest.raises(ValueError, match="not one of: variant, test, file"):
        test.get_data("x", source="elsewhere")
    assert test.id() == "disk.test_tags_teststmpdir_get_data_and_id.<locals>.T.test"
    monkeypatch.delenv("MHTEST_TESTS_COMMON_TMPDIR", raising=False)
    monkeypatch.delenv("AVOCADO_TESTS_COMMON_TMPDIR", raising=False)
    with pytest.raises(OSError, match="MHTEST_TESTS_COMMON_TMPDIR is not set"):
        test.teststmpdir  # noqa: B018
    monkeypatch.setenv("MHTEST_TESTS_COMMON_TMPDIR", str(tmp_path))
    assert test.teststmpdir == str(tmp_path)


def test_timeout_factor_param():
    class T(mhtest.Test):
        timeout = 10

    assert T(params={"timeout_factor": "1.5"}).timeout == 15
    assert T(params={"timeout": 2, "timeout_factor": 3}).timeout == 6
    with pytest.raises(mhtest.TestError, match="timeout_factor param must be a number"):
        T(params={"timeout_factor": "x"})
