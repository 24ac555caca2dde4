"""The exceptions a test raises to end itself with a status (Avocado's names)."""

from __future__ import annotations

from mhtest import events


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
