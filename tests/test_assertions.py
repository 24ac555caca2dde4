"""unittest's assertions and helpers on mhtest.Test (mhtest.assertions), in this process.

Their statuses and reasons side by side with Avocado 113's: tests/functional/test_avocado_parity.py.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

import mhtest
from mhtest.assertions import NAMES
from mhtest.runners.child import run_lifecycle


def make(body=None, **attrs):
    cls = type("T", (mhtest.Test,), {"test": body or (lambda self: None), **attrs})
    return cls(methodName="test")


def outcome(body, **attrs):
    test = make(body, **attrs)
    return run_lifecycle(test, test.test)


def test_every_unittest_method_a_test_calls_is_there():
    import unittest

    public = {n for n in dir(unittest.TestCase) if n.startswith(("assert", "fail"))}
    helpers = {"addCleanup", "doCleanups", "subTest", "skipTest", "enterContext"}
    wanted = (public | helpers) & set(dir(unittest.TestCase)) - {"fail", "failureException"}
    assert wanted <= set(NAMES)
    for name in wanted:
        assert callable(getattr(mhtest.Test, name)), name


def test_importing_and_running_a_test_does_not_import_unittest():
    code = (
        "import sys, mhtest\n"
        "from mhtest.runners.child import run_lifecycle\n"
        "class T(mhtest.Test):\n"
        "    def test(self):\n"
        "        self.log.info('no assertions here')\n"
        "t = T()\n"
        "assert run_lifecycle(t, t.test)['status'] == 'PASS'\n"
        "print('unittest' in sys.modules)\n"
        "t.assertEqual(1, 1)\n"
        "print('unittest' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


@pytest.mark.parametrize(
    "body, status, reason",
    [
        (lambda self: self.assertEqual(1, 2), "FAIL", "1 != 2"),
        (lambda self: self.assertIn(3, [1]), "FAIL", "3 not found in [1]"),
        (lambda self: self.assertAlmostEqual(1.0, 1.1), "FAIL", "1.0 != 1.1 within 7 places"),
        (lambda self: self.assertRaises(ValueError, int, "5"), "FAIL", "ValueError not raised"),
        (lambda self: self.assertRegex("abc", "^z"), "FAIL", "Regex didn't match"),
        (lambda self: self.assertCountEqual([1], [2]), "FAIL", "Element counts were not equal"),
        (lambda self: self.assertDictEqual({"a": 1}, {"a": 2}), "FAIL", "{'a': 1} != {'a': 2}"),
        (lambda self: self.assertIsNone(0), "FAIL", "0 is not None"),
        (lambda self: self.skipTest("later"), "ERROR", "later"),  # as in Avocado 113
        (lambda self: self.assertRaises(ValueError, int, "x"), "PASS", None),
        (lambda self: self.assertRaises(KeyError, int, "x"), "ERROR", "invalid literal"),
    ],
)
def test_failed_assertions_are_fail_with_unittests_message(body, status, reason):
    result = outcome(body)
    assert result["status"] == status
    assert (result["fail_reason"] or "").startswith(reason or "")


def test_context_managers():
    def body(self):
        with self.assertRaises(KeyError) as caught:
            {}["k"]
        assert caught.exception.args == ("k",)
        with self.assertRaisesRegex(ValueError, "invalid"):
            int("x")
        with self.assertLogs(self.log, level="INFO") as logs:
            self.log.info("hello")
        assert logs.output == ["INFO:mhtest.test:hello"]
        with self.subTest(i=1):
            pass
        with self.assertRaises(ValueError):
            pass

    result = outcome(body)
    assert (result["status"], result["fail_reason"]) == ("FAIL", "ValueError not raised")


def test_failed_check_ends_in_the_tests_fail():
    """unittest's checks end in self.fail(): the test's own, so TestFail as in Avocado."""
    result = outcome(lambda self: self.assertIn(3, [1]))
    assert result["fail_class"] == "TestFail"
    assert outcome(lambda self: self.assertEqual(1, 2))["fail_class"] == "AssertionError"


def test_max_diff_and_long_message_are_the_tests():
    long_a, long_b = list(range(300)), list(range(1, 301))
    truncated = outcome(lambda self: self.assertEqual(long_a, long_b))["fail_reason"]
    assert "Set self.maxDiff to None to see it" in truncated
    full = outcome(lambda self: self.assertEqual(long_a, long_b), maxDiff=None)["fail_reason"]
    assert "maxDiff" not in full and len(full) > len(truncated)

    def set_on_instance(self):
        self.maxDiff = None
        self.assertEqual(long_a, long_b)

    assert "maxDiff" not in outcome(set_on_instance)["fail_reason"]
    terse = outcome(lambda self: self.assertEqual(1, 2, "mine"), longMessage=False)
    assert terse["fail_reason"] == "mine"
    assert outcome(lambda self: self.assertEqual(1, 2, "mine"))["fail_reason"] == "1 != 2 : mine"


def test_cleanups_run_after_teardown_last_first(caplog):
    order = []

    def body(self):
        self.addCleanup(order.append, "first registered")
        self.addCleanup(order.append, "second registered")

    result = outcome(body, tearDown=lambda self: order.append("tearDown"))
    assert result["status"] == "PASS"
    assert order == ["tearDown", "second registered", "first registered"]


def test_a_failing_cleanup_is_an_error_and_the_others_still_run(caplog):
    ran = []

    def broken():
        raise OSError("cannot unmount")

    def body(self):
        self.addCleanup(ran.append, "still ran")
        self.addCleanup(broken)

    with caplog.at_level(logging.ERROR, logger="mhtest.test"):
        result = outcome(body)
    assert (result["status"], result["fail_reason"]) == ("ERROR", "cannot unmount")
    assert ran == ["still ran"]


def test_explicit_do_cleanups_leaves_nothing_to_run_again():
    ran = []

    def body(self):
        self.addCleanup(ran.append, "once")
        self.doCleanups()

    assert outcome(body)["status"] == "PASS"
    assert ran == ["once"]


def test_a_method_this_python_lacks_says_so():
    missing = [n for n in NAMES if not hasattr(__import__("unittest").TestCase, n)]
    if not missing:
        pytest.skip("this Python's TestCase has every name")
    test = make()
    with pytest.raises(AttributeError, match=rf"no {missing[0]}\(\) in Python 3"):
        getattr(test, missing[0])()
