"""The Test base class of instrumented tests, their statuses and exceptions.

The lifecycle (setUp, test method, tearDown, status) lives in mhtest.runners.child;
this module holds only what a test author touches. Porting an Avocado test means
changing its import line.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from typing import Any, Callable

from mhtest import events
from mhtest.events import FAILED_STATUSES, STATUSES

__all__ = ["FAILED_STATUSES", "STATUSES"]  # the statuses live in mhtest.events


class TestBaseException(Exception):
    """Base of the exceptions a test raises to end itself with a given status."""

    status = events.ERROR


class TestFail(TestBaseException, AssertionError):
    """The test found a problem with what it tests: FAIL."""

    status = events.FAIL


class TestError(TestBaseException):
    """The test could not do its job (broken environment, bad setup): ERROR."""

    status = events.ERROR


class TestCancel(TestBaseException):
    """The test decided it cannot run here: CANCEL."""

    status = events.CANCEL


class TestSkip(TestBaseException):
    """The test is skipped before it starts (skip decorators): SKIP."""

    status = events.SKIP


class TestInterrupt(TestBaseException):
    """The test was interrupted (timeout, user): INTERRUPT."""

    status = events.INTERRUPT


_SKIP_ATTR = "__mhtest_skip__"


def _skip_decorator(condition: Any, message: str | None, negate: bool) -> Callable:
    def decorator(obj: Callable) -> Callable:
        @functools.wraps(obj)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            cond = condition(args[0]) if callable(condition) and args else condition
            if bool(cond) != negate:
                raise TestSkip(message or "skipped")
            return obj(*args, **kwargs)

        # The runner reads this before setUp: a skipped test runs neither setUp nor tearDown.
        setattr(wrapper, _SKIP_ATTR, (condition, message, negate))
        return wrapper

    return decorator


def skip(message: str | None = None) -> Callable:
    """Skip the decorated test (setUp and tearDown do not run)."""
    return _skip_decorator(True, message, False)


def skipIf(condition: Any, message: str | None = None) -> Callable:  # noqa: N802 - Avocado's name
    """Skip when `condition` (or `condition(test)` if callable) is true."""
    return _skip_decorator(condition, message, False)


def skipUnless(condition: Any, message: str | None = None) -> Callable:  # noqa: N802
    """Skip unless `condition` (or `condition(test)` if callable) is true."""
    return _skip_decorator(condition, message, True)


def skip_reason(method: Callable, test: Any) -> str | None:
    """The reason a skip decorator gives for `method` on `test`, or None to run it."""
    info = getattr(method, _SKIP_ATTR, None)
    if info is None:
        return None
    condition, message, negate = info
    cond = condition(test) if callable(condition) else condition
    return (message or "skipped") if bool(cond) != negate else None


def _translate_on(exceptions: Any, target: type[TestBaseException]) -> Callable:
    if isinstance(exceptions, type) and issubclass(exceptions, BaseException):
        func, caught = None, (exceptions,)
    elif callable(exceptions) and not isinstance(exceptions, tuple):
        func, caught = exceptions, (Exception,)
    else:
        func, caught = None, tuple(exceptions or (Exception,))

    def decorate(f: Callable) -> Callable:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return f(*args, **kwargs)
            except TestBaseException:
                raise
            except caught as exc:
                raise target(f"{type(exc).__name__}: {exc}") from exc

        return wrapper

    return decorate(func) if func is not None else decorate


def fail_on(exceptions: Any = None) -> Callable:
    """Turn the given exceptions (default: any) raised by the method into FAIL."""
    return _translate_on(exceptions, TestFail)


def cancel_on(exceptions: Any = None) -> Callable:
    """Turn the given exceptions (default: any) raised by the method into CANCEL."""
    return _translate_on(exceptions, TestCancel)


class _WarningCounter(logging.Handler):
    """Counts warnings the test logs: a warning turns PASS into WARN."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


class Test:
    """Base class of instrumented tests: subclass it and write `test*` methods.

    Attributes a test uses: `params`, `log`, `whiteboard`, `logdir`, `outputdir`,
    `workdir`, `basedir`, `name`, `timeout`, `sync` (in multi-host and --sync runs).
    """

    #: Seconds after which the runner kills the test (the `timeout` param overrides it).
    timeout: float | None = None
    #: In a multi-host worker: when another worker dies or aborts the run, end this test at
    #: once with the reason (False: learn of it at the next sync call, as a test that
    #: watches its peers itself prefers).
    sync_aborts_interrupt: bool = True

    def __init__(
        self,
        methodName: str = "test",  # noqa: N803 - Avocado's/unittest's name
        name: str | None = None,
        params: Any = None,
        logdir: str | None = None,
        workdir: str | None = None,
        basedir: str | None = None,
        filename: str | None = None,
    ) -> None:
        from mhtest.params import Params

        self._method_name = methodName
        self.name = name or f"{type(self).__name__}.{methodName}"
        self.params = params if isinstance(params, Params) else Params(params or {})
        self.logdir = logdir or os.getcwd()
        self.outputdir = os.path.join(self.logdir, "data")
        self.workdir = workdir or os.path.join(self.logdir, "work")
        self.basedir = basedir
        self.filename = filename
        self.whiteboard = ""
        self.log = logging.getLogger("mhtest.test")
        self._warnings = _WarningCounter()
        self.log.addHandler(self._warnings)
        self._sync: Any = None
        self._sync_lock = threading.Lock()
        #: The TestSpec the runner started this test from (None when made by hand).
        self._spec: Any = None
        param_timeout = self.params.get("timeout")
        if param_timeout is not None:
            try:
                self.timeout = float(param_timeout)
            except (TypeError, ValueError):
                raise TestError(
                    f"the timeout param must be a number of seconds, not {param_timeout!r}"
                ) from None

    # Avocado names ---------------------------------------------------------
    def setUp(self) -> None:  # noqa: N802
        """Prepare the test; an exception here makes the test ERROR."""

    def tearDown(self) -> None:  # noqa: N802
        """Clean up; runs after the test method even when it failed."""

    def fail(self, message: str | None = None) -> None:
        raise TestFail(message or "test failed")

    def error(self, message: str | None = None) -> None:
        raise TestError(message or "test error")

    def cancel(self, message: str | None = None) -> None:
        raise TestCancel(message or "test canceled")

    # unittest-style assertions, enough for ported tests -------------------
    def assertEqual(self, first: Any, second: Any, msg: str | None = None) -> None:  # noqa: N802
        if not first == second:
            raise TestFail(msg or f"{first!r} != {second!r}")

    def assertTrue(self, expr: Any, msg: str | None = None) -> None:  # noqa: N802
        if not expr:
            raise TestFail(msg or f"{expr!r} is not true")

    def assertFalse(self, expr: Any, msg: str | None = None) -> None:  # noqa: N802
        if expr:
            raise TestFail(msg or f"{expr!r} is not false")

    def assertIn(self, member: Any, container: Any, msg: str | None = None) -> None:  # noqa: N802
        if member not in container:
            raise TestFail(msg or f"{member!r} not found in {container!r}")

    @property
    def warnings_logged(self) -> int:
        """How many warnings this test logged through `self.log`."""
        return self._warnings.count

    @property
    def sync(self) -> Any:
        """The sync client of this test (barrier, exchange, post/wait, lock).

        Available in the workers of a multi-host test and in runs given
        `--sync-server`/`--sync`; otherwise using it is a test error.
        """
        with self._sync_lock:  # threads of one test share one client (one participant)
            if self._sync is None:
                from mhtest.sync.client import SyncClient

                self._sync = SyncClient.from_environment()
        if self._sync is None:
            raise TestError(
                "this test uses self.sync but no sync server is configured: "
                "run it as a multi-host worker or with --sync-server / --sync HOST:PORT"
            )
        return self._sync

    def _close_sync(self) -> None:
        if self._sync is not None:
            try:
                self._sync.close()
            finally:
                self._sync = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
