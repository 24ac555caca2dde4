"""The lifecycle of an instrumented test and its status, by Avocado's rules.

setUp, then the test method, then tearDown, then the functions given to addCleanup:

- a skip decorator skips all of them: SKIP;
- in setUp: TestSkip is SKIP (tearDown does not run), cancel is CANCEL, an interrupt
  is INTERRUPT, anything else ERROR;
- in the test method: a TestFail or any AssertionError is FAIL, the test exceptions
  their own status, anything else ERROR;
- in tearDown (or a cleanup): a cancel or an interrupt takes over the status; anything
  else makes the test ERROR, even one that failed (not one that was interrupted);
- a warning logged through `self.log` turns a status that is not a failure into WARN.

The reason is str() of the exception, as in Avocado (so `self.fail()` gives "None").
The test reads its phase, status, fail_reason, fail_class and traceback as they are set.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from typing import Any, Callable, Iterator

from mhtest import events
from mhtest.exceptions import TestBaseException, TestCancel, TestInterrupt, TestSkip
from mhtest.test import Test, skip_reason

#: The reason of a test that passed but logged warnings (Avocado's words).
WARN_REASON = "Test passed but there were warnings during execution. Check the log for details."
_FAILED = (events.ERROR, events.FAIL, events.INTERRUPT)


class Outcome:
    """How a test ended so far: its status, reason, exception class and traceback."""

    def __init__(self) -> None:
        self.status = events.PASS
        self.fail_reason: str | None = None
        self.fail_class: str | None = None
        self.traceback: str | None = None

    def set(self, status: str, reason: str | None, fail_class: str | None, tb: str | None) -> None:
        self.status, self.fail_reason, self.fail_class, self.traceback = (
            status,
            reason,
            fail_class,
            tb,
        )

    def set_from(self, exc: BaseException, status: str | None = None) -> None:
        self.set(status or status_of(exc), str(exc), type(exc).__name__, traceback.format_exc())

    def publish(self, test: Test) -> None:
        """Let the test read it (in tearDown, and after)."""
        test._status, test._fail_reason = self.status, self.fail_reason
        test._fail_class, test._traceback = self.fail_class, self.traceback

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "fail_reason": self.fail_reason,
            "fail_class": self.fail_class,
        }


def status_of(exc: BaseException) -> str:
    """The status an exception raised by a test method gives."""
    if isinstance(exc, TestBaseException):
        return exc.status
    if isinstance(exc, AssertionError):
        return events.FAIL
    return events.ERROR


def call(func: Callable[[], Any]) -> None:
    """Call a test's method; an `async def` one runs to its end in an event loop."""
    result = func()
    if hasattr(result, "__await__"):
        # Imported here: asyncio (and the ssl it pulls in) would cost every forked child
        # page faults and the fork server ~20 ms of start-up, for async tests only.
        import asyncio

        asyncio.run(_await(result))


async def _await(awaitable: Any) -> Any:
    return await awaitable


def run_lifecycle(test: Test, method: Callable[[], Any]) -> dict[str, Any]:
    """Run the test's phases; its status, fail_reason and fail_class as a dict.

    Its `phases` say when setUp, the test and tearDown ran ([name, start, end], wall-clock
    seconds: the timeline of results.html).
    """
    outcome = Outcome()
    phases: list[list[Any]] = []
    test._running = True
    test.time_start, test.actual_time_start = time.monotonic(), time.time()
    try:
        reason = skip_reason(method, test)
        if reason is not None:
            test.log.info("SKIP: %s", reason)
            outcome.set(events.SKIP, reason, "TestSkip", None)
            outcome.publish(test)
        else:
            skipped = _setup_and_test(test, method, outcome, phases)
            _teardown(test, outcome, skipped, phases)
    finally:
        test._phase = "FINISHED"
        test._running = False
        test.time_end, test.actual_time_end = time.monotonic(), time.time()
        test.time_elapsed = test.time_end - test.time_start
        # The counter sits on the shared "mhtest.test" logger: stop counting for this test.
        test.log.removeHandler(test._warnings)
    return {**outcome.to_dict(), "phases": phases}


@contextlib.contextmanager
def _timed(phases: list[list[Any]], name: str) -> Iterator[None]:
    """Note [name, start, end] in `phases` around the block, however it ends."""
    phase: list[Any] = [name, time.time(), None]
    phases.append(phase)
    try:
        yield
    finally:
        phase[2] = time.time()


def _setup_and_test(
    test: Test, method: Callable[[], Any], outcome: Outcome, phases: list[list[Any]]
) -> bool:
    """setUp then the test method; True when setUp skipped the test (no tearDown then)."""
    log = test.log
    test._phase = "SETUP"
    try:
        with _timed(phases, "setUp"):
            call(test.setUp)
    except BaseException as exc:  # noqa: BLE001 - any error is the test's status
        status = status_of(exc)
        status = (
            status if status in (events.SKIP, events.CANCEL, events.INTERRUPT) else events.ERROR
        )
        outcome.set_from(exc, status)
        _log_exception(log, "setUp", exc)
        outcome.publish(test)
        return status == events.SKIP
    test._phase = "TEST"
    try:
        with _timed(phases, "test"):
            call(method)
    except BaseException as exc:  # noqa: BLE001 - any error is the test's status
        outcome.set_from(exc)
        _log_exception(log, outcome.status, exc)
    else:
        if test.warnings_logged:
            outcome.set(events.WARN, WARN_REASON, "TestWarn", None)
    outcome.publish(test)
    return False


def _teardown(test: Test, outcome: Outcome, skipped: bool, phases: list[list[Any]]) -> None:
    """tearDown (unless setUp skipped the test), then the cleanups; Avocado's overrides."""
    log = test.log
    try:
        if not skipped:
            test._phase = "TEARDOWN"
            with _timed(phases, "tearDown"):
                call(test.tearDown)
        errors = test._run_cleanups()
        for error in errors[1:]:
            text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            log.error("cleanup: %s", text.rstrip())
        if errors:
            raise errors[0]
    except BaseException as exc:  # noqa: BLE001 - any error is the test's status
        _log_exception(log, "tearDown", exc)
        if isinstance(exc, (TestCancel, TestInterrupt)):
            outcome.set_from(exc)
        elif isinstance(exc, TestSkip):
            outcome.set(
                events.ERROR,
                f"Using skip decorators in tearDown() is not allowed, you must fix your test. "
                f"Original skip exception: {exc}",
                "TestError",
                traceback.format_exc(),
            )
        elif outcome.status != events.INTERRUPT:
            outcome.set_from(exc, events.ERROR)
    else:
        if test.warnings_logged and outcome.status not in _FAILED:
            outcome.set(events.WARN, WARN_REASON, "TestWarn", None)
    outcome.publish(test)


def _log_exception(log: logging.Logger, what: str, exc: BaseException) -> None:
    if isinstance(exc, TestInterrupt):
        log.error("%s interrupted: %s", what, exc)
    log.error("%s: %s", what, traceback.format_exc().rstrip())
