"""The same tests under Avocado 113 and under mhtest: same statuses, same reasons.

Each test file is written once with `from FRAMEWORK import …` and run as `from avocado
import …` under Avocado 113 and as `from mhtest import …` under mhtest (see
avocado_parity.py). Where mhtest differs on purpose, DIFFERENCES says how and why, and
the test checks that the difference is exactly that.
"""

from __future__ import annotations

import pytest

from .avocado_parity import Both, run_both, write_both

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

STATUSES_PY = """
import logging
import os
import time

from FRAMEWORK import Test, cancel_on, fail_on, skip, skipIf, skipUnless


class Asserts(Test):
    def test_equal(self):
        self.assertEqual(1, 2)

    def test_equal_lists_with_msg(self):
        self.assertEqual([1, 2], [1, 3], "lists differ")

    def test_not_equal(self):
        self.assertNotEqual(1, 1)

    def test_true(self):
        self.assertTrue(0)

    def test_false(self):
        self.assertFalse(1, "one is true")

    def test_is(self):
        self.assertIs(1, None)

    def test_is_not_none(self):
        self.assertIsNotNone(None)

    def test_is_none(self):
        self.assertIsNone(0)

    def test_in(self):
        self.assertIn(3, [1, 2])

    def test_raises_call(self):
        self.assertRaises(ValueError, int, "5")

    def test_raises_context(self):
        with self.assertRaises(KeyError):
            pass

    def test_raises_regex_call(self):
        self.assertRaisesRegex(ValueError, "^nope", int, "x")

    def test_raises_regex_context(self):
        with self.assertRaisesRegex(ValueError, "^nope"):
            int("x")

    def test_almost_equal(self):
        self.assertAlmostEqual(1.0, 1.1)

    def test_regex(self):
        self.assertRegex("abc", "^z")

    def test_count_equal(self):
        self.assertCountEqual([1, 1, 2], [1, 2, 2])

    def test_dict_equal(self):
        self.assertDictEqual({"a": 1}, {"a": 2})

    def test_max_diff_default(self):
        self.assertEqual(list(range(300)), list(range(1, 301)))

    def test_max_diff_none(self):
        self.maxDiff = None
        self.assertEqual("a\\n" * 50, "b\\n" * 50)

    def test_long_message_off(self):
        self.longMessage = False
        self.assertEqual(1, 2, "only mine")

    def test_logs(self):
        with self.assertLogs(self.log, level="INFO") as logs:
            self.log.info("hello")
        self.assertEqual([r.getMessage() for r in logs.records], ["hello"])

    def test_logs_missing(self):
        with self.assertLogs("nobody.logs.here", level="INFO"):
            pass

    def test_sub_test(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertLess(i, 1)

    def test_all_pass(self):
        self.assertTrue(1)
        self.assertIsInstance(1, int)
        self.assertGreater(2, 1)
        self.assertNotIn(3, [1])
        self.assertSequenceEqual((1, 2), [1, 2])
        with self.assertRaises(ValueError) as caught:
            int("x")
        self.assertIn("invalid", str(caught.exception))
        with self.assertWarns(DeprecationWarning):
            import warnings

            warnings.warn("old", DeprecationWarning)

    def test_skip_test(self):
        self.skipTest("not today")

    def test_add_cleanup(self):
        self.addCleanup(self.log.info, "cleaned up")

    def test_do_cleanups(self):
        self.addCleanup(self.log.info, "cleaned up")
        self.doCleanups()

    def test_assert_statement(self):
        assert 1 == 2

    def test_fail_without_message(self):
        self.fail()

    def test_error_without_message(self):
        self.error()

    def test_cancel_without_message(self):
        self.cancel()

    def test_exception(self):
        raise ValueError("bad value")


class SetUpSkipTest(Test):
    def setUp(self):
        self.skipTest("skipped in setUp")

    def test(self):
        pass


class SetUpCancel(Test):
    def setUp(self):
        self.cancel("canceled in setUp")

    def test(self):
        pass


class SetUpFail(Test):
    def setUp(self):
        self.fail("failed in setUp")

    def test(self):
        pass


class SetUpAssert(Test):
    def setUp(self):
        self.assertEqual(1, 2)

    def test(self):
        pass


class TearDownAfterFail(Test):
    def test(self):
        self.fail("first")

    def tearDown(self):
        raise RuntimeError("tearDown broke")


class TearDownAfterPass(Test):
    def test(self):
        pass

    def tearDown(self):
        raise RuntimeError("tearDown broke")


class TearDownFails(Test):
    def test(self):
        pass

    def tearDown(self):
        self.fail("failed in tearDown")


class TearDownCancel(Test):
    def test(self):
        pass

    def tearDown(self):
        self.cancel("canceled in tearDown")


class TearDownCancelAfterFail(Test):
    def test(self):
        self.fail("first")

    def tearDown(self):
        self.cancel("canceled in tearDown")


class Warnings(Test):
    def test_child_logger_error(self):
        self.log.getChild("child").error("a child's error")

    def test_child_logger_warning(self):
        self.log.getChild("child").warning("a child's warning")

    def test_other_logger_warning(self):
        logging.getLogger("somelib").warning("a library's warning")

    def test_own_warning(self):
        self.log.warning("my warning")

    def test_own_error(self):
        self.log.error("my error")

    def test_warning_then_fail(self):
        self.log.warning("my warning")
        self.fail("failed")

    def test_warning_then_cancel(self):
        self.log.warning("my warning")
        self.cancel("canceled")


class WarnInTearDown(Test):
    def test(self):
        pass

    def tearDown(self):
        self.log.warning("warned in tearDown")


class Skips(Test):
    def setUp(self):
        self.whiteboard = "setUp ran"

    @skip("not ready")
    def test_skip(self):
        pass

    @skip()
    def test_skip_without_message(self):
        pass

    @skipIf(True, "condition true")
    def test_skip_if(self):
        pass

    @skipIf(lambda test: test.params.get("nope") is None, "callable condition")
    def test_skip_if_callable(self):
        pass

    @skipUnless(False, "condition false")
    def test_skip_unless(self):
        pass

    @skipIf(False, "never")
    def test_not_skipped(self):
        pass


@skip("the whole class")
class SkippedClass(Test):
    def test_one(self):
        pass

    def test_two(self):
        pass


class Decorated(Test):
    @fail_on(ValueError)
    def test_fail_on(self):
        raise ValueError("bad value")

    @fail_on
    def test_fail_on_any(self):
        raise KeyError("k")

    @fail_on(ValueError)
    def test_fail_on_other(self):
        raise TypeError("not a value error")

    @cancel_on(ImportError)
    def test_cancel_on(self):
        raise ImportError("no module")


class Async(Test):
    async def test_pass(self):
        self.whiteboard = "awaited"

    async def test_fail(self):
        self.fail("async failure")


class Timeout(Test):
    timeout = 1

    def test(self):
        time.sleep(30)

    def tearDown(self):
        self.whiteboard = f"tearDown ran in {self.phase}"


class TimeoutSlowTearDown(Test):
    timeout = 1

    def test(self):
        time.sleep(30)

    def tearDown(self):
        time.sleep(60)
"""

#: Where mhtest differs from Avocado 113 on purpose: test → (why, {field: (Avocado's, mhtest's)}).
DIFFERENCES = {
    "Asserts.test_add_cleanup": (
        "Avocado 113 never calls what addCleanup() registered; mhtest does, after tearDown, "
        "as unittest does (see test_cleanups_run_under_mhtest_only)",
        {},
    ),
    "Skips.test_skip_unless": (
        "Avocado 113 runs setUp (and tearDown) when skipUnless is given a false value rather "
        "than a callable, then skips; mhtest runs neither for any skipped test",
        {"whiteboard": ("setUp ran", "")},
    ),
}
FIELDS = ("status", "fail_reason", "whiteboard")


@pytest.fixture(scope="module")
def statuses(tmp_path_factory: pytest.TempPathFactory) -> Both:
    base = tmp_path_factory.mktemp("statuses")
    write_both(base, {"statuses.py": STATUSES_PY})
    return run_both(base, ["statuses.py"])


def _names() -> list[str]:
    """The tests of STATUSES_PY, as `Class.method` (read the way mhtest's resolver does)."""
    from mhtest.resolver import analyse_python

    source = STATUSES_PY.replace("FRAMEWORK", "mhtest")
    return [
        f"{c.info.name}.{m}" for c in analyse_python(source, "statuses.py") for m, _ in c.methods
    ]


@pytest.mark.parametrize("name", _names())
def test_same_status_and_reason(statuses: Both, name: str) -> None:
    ref = f"statuses.py:{name}"
    assert ref in statuses.avocado, statuses.avocado_output
    assert ref in statuses.mhtest, statuses.mhtest_output
    differences = DIFFERENCES.get(name, ("", {}))[1]
    for field in FIELDS:
        avocado, mhtest = statuses.avocado[ref][field], statuses.mhtest[ref][field]
        assert (avocado, mhtest) == differences.get(field, (avocado, avocado)), field


def test_every_test_ran_under_both(statuses: Both) -> None:
    assert set(statuses.mhtest) == set(statuses.avocado) == {f"statuses.py:{n}" for n in _names()}


def test_timeout_runs_teardown_and_says_so_in_debug_log(statuses: Both) -> None:
    ref = "statuses.py:Timeout.test"
    for which in ("avocado", "mhtest"):
        assert statuses.outcome(which, ref) == ("INTERRUPT", "Test interrupted: Timeout reached")
        assert statuses.__getattribute__(which)[ref]["whiteboard"] == "tearDown ran in TEARDOWN"
        assert "Timeout reached" in statuses.debug_log(which, ref)
    assert "timeout of 1 s reached" in statuses.debug_log("mhtest", ref)
    # A tearDown that does not end is cut short (Avocado: after the test's timeout again;
    # mhtest: after TIMEOUT_GRACE), the test still INTERRUPT.
    slow = "statuses.py:TimeoutSlowTearDown.test"
    assert statuses.outcome("mhtest", slow) == statuses.outcome("avocado", slow)
    assert "did not end" in statuses.debug_log("mhtest", slow) or "killed" in statuses.debug_log(
        "mhtest", slow
    )


def test_cleanups_run_under_mhtest_only(statuses: Both) -> None:
    ref = "statuses.py:Asserts.test_add_cleanup"
    assert "cleaned up" in statuses.debug_log("mhtest", ref)
    assert "cleaned up" not in statuses.debug_log("avocado", ref)
    explicit = "statuses.py:Asserts.test_do_cleanups"
    for which in ("avocado", "mhtest"):
        assert "cleaned up" in statuses.debug_log(which, explicit)
