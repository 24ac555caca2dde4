"""unittest.TestCase's assertions and helpers on mhtest.Test, with unittest loaded on first use.

Avocado's Test is a unittest.TestCase, so ported tests call `self.assertEqual`,
`self.assertRaises`, `self.subTest`, `self.addCleanup`… Inheriting from TestCase would
make every test pay for importing unittest (argparse, difflib, pprint and more), used or
not. Instead each of those methods is a small stub here that hands the call to a
TestCase made for the test on its first use: the messages are unittest's own, and
`maxDiff`, `longMessage` and `failureException` are read from the test, as a TestCase
reads its own.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

#: The TestCase methods a test calls as its own (those that a Python lacks raise
#: AttributeError there, as they would on a TestCase).
NAMES = (
    "addCleanup",
    "addTypeEqualityFunc",
    "assertAlmostEqual",
    "assertAlmostEquals",
    "assertCountEqual",
    "assertDictContainsSubset",
    "assertDictEqual",
    "assertEndsWith",
    "assertEqual",
    "assertEquals",
    "assertFalse",
    "assertGreater",
    "assertGreaterEqual",
    "assertHasAttr",
    "assertIn",
    "assertIs",
    "assertIsInstance",
    "assertIsNone",
    "assertIsNot",
    "assertIsNotNone",
    "assertIsSubclass",
    "assertLess",
    "assertLessEqual",
    "assertListEqual",
    "assertLogs",
    "assertMultiLineEqual",
    "assertNoLogs",
    "assertNotAlmostEqual",
    "assertNotAlmostEquals",
    "assertNotEndsWith",
    "assertNotEqual",
    "assertNotEquals",
    "assertNotHasAttr",
    "assertNotIn",
    "assertNotIsInstance",
    "assertNotIsSubclass",
    "assertNotRegex",
    "assertNotRegexpMatches",
    "assertNotStartsWith",
    "assertRaises",
    "assertRaisesRegex",
    "assertRaisesRegexp",
    "assertRegex",
    "assertRegexpMatches",
    "assertSequenceEqual",
    "assertSetEqual",
    "assertStartsWith",
    "assertTrue",
    "assertTupleEqual",
    "assertWarns",
    "assertWarnsRegex",
    "assert_",
    "doCleanups",
    "enterContext",
    "failIf",
    "failIfAlmostEqual",
    "failIfEqual",
    "failUnless",
    "failUnlessAlmostEqual",
    "failUnlessEqual",
    "failUnlessRaises",
    "skipTest",
    "subTest",
)


def _stub(name: str) -> Callable[..., Any]:
    def method(self: Assertions, *args: Any, **kwargs: Any) -> Any:
        case = self._unittest_case()
        try:
            bound = getattr(case, name)
        except AttributeError:
            import sys

            version = ".".join(map(str, sys.version_info[:2]))
            raise AttributeError(f"unittest.TestCase has no {name}() in Python {version}") from None
        return bound(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"unittest.TestCase.{name}(), as on Avocado's Test."
    return method


class Assertions:
    """The unittest.TestCase API of a test, as Avocado's Test (a TestCase) has it."""

    #: As on unittest.TestCase: the longest diff shown in a failed assertion (None: all).
    maxDiff: int | None = 80 * 8
    #: As on unittest.TestCase: add the standard message to a custom `msg`.
    longMessage: bool = True
    #: As on unittest.TestCase: what a failed assertion raises.
    failureException: type[BaseException] = AssertionError

    def _unittest_case(self) -> Any:
        """The TestCase that does this test's assertions, made on first use."""
        case = self.__dict__.get("_mhtest_unittest_case")
        if case is None:
            case = _case_class()(self)
            self.__dict__["_mhtest_unittest_case"] = case
        return case

    def _run_cleanups(self) -> list[BaseException]:
        """Call the functions given to addCleanup (last first); the exceptions they raised.

        unittest calls them after tearDown; Avocado 113 never does (see the README).
        """
        case = self.__dict__.get("_mhtest_unittest_case")
        errors: list[BaseException] = []
        while case is not None and case._cleanups:
            function, args, kwargs = case._cleanups.pop()
            try:
                function(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - each is reported by the runner
                errors.append(exc)
        return errors


for _name in NAMES:
    setattr(Assertions, _name, _stub(_name))
del _name


@functools.cache
def _case_class() -> type:
    """The TestCase class the stubs use (defined here so that unittest loads on first use)."""
    import unittest

    class OwnedCase(unittest.TestCase):
        """A TestCase working for one mhtest test: its settings are the test's."""

        def __init__(self, owner: Any) -> None:
            super().__init__()
            self._owner = owner

        maxDiff = property(  # type: ignore[assignment]  # noqa: N815 - unittest's names
            lambda self: self._owner.maxDiff,
            lambda self, value: setattr(self._owner, "maxDiff", value),
        )
        longMessage = property(  # type: ignore[assignment]  # noqa: N815
            lambda self: self._owner.longMessage,
            lambda self, value: setattr(self._owner, "longMessage", value),
        )
        failureException = property(  # type: ignore[assignment]  # noqa: N815
            lambda self: self._owner.failureException
        )

        def fail(self, msg: Any = None) -> None:
            # unittest's own checks end in self.fail(): the test's, as on Avocado (TestFail).
            self._owner.fail(msg)

        def id(self) -> str:
            return self._owner.id()

        def __str__(self) -> str:
            return str(self._owner)

    return OwnedCase
