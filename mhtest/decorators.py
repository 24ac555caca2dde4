"""Decorators of test methods and classes: skip, skipIf, skipUnless, fail_on, cancel_on.

They behave as Avocado's: a skipped test runs neither setUp nor tearDown, and fail_on /
cancel_on turn the exceptions they name into FAIL / CANCEL with the exception's repr as
the reason.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from mhtest.exceptions import TestBaseException, TestCancel, TestFail, TestSkip

_SKIP_ATTR = "__mhtest_skip__"


def _skip_method(method: Callable, condition: Any, message: str | None, negate: bool) -> Callable:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        cond = condition(args[0]) if callable(condition) and args else condition
        if bool(cond) != negate:
            raise TestSkip(message)
        return method(*args, **kwargs)

    # The runner reads this before setUp: a skipped test runs neither setUp nor tearDown.
    setattr(wrapper, _SKIP_ATTR, (condition, message, negate))
    return wrapper


def _skip_decorator(condition: Any, message: str | None, negate: bool) -> Callable:
    def decorator(obj: Any) -> Any:
        if isinstance(obj, type):  # a class: each of its own test methods
            for name, value in list(vars(obj).items()):
                if name.startswith("test") and callable(value):
                    setattr(obj, name, _skip_method(value, condition, message, negate))
            return obj
        return _skip_method(obj, condition, message, negate)

    return decorator


def skip(message: str | None = None) -> Callable:
    """Skip the decorated test, or every test of the decorated class."""
    return _skip_decorator(True, message, False)


def skipIf(condition: Any, message: str | None = None) -> Callable:  # noqa: N802 - Avocado's name
    """Skip when `condition` (or `condition(test)` if callable) is true."""
    return _skip_decorator(condition, message, False)


def skipUnless(condition: Any, message: str | None = None) -> Callable:  # noqa: N802
    """Skip unless `condition` (or `condition(test)` if callable) is true."""
    return _skip_decorator(condition, message, True)


def skip_reason(method: Callable, test: Any) -> str | None:
    """Why a skip decorator skips `method` on `test` (its message, as str()), or None."""
    info = getattr(method, _SKIP_ATTR, None)
    if info is None:
        return None
    condition, message, negate = info
    cond = condition(test) if callable(condition) else condition
    return str(TestSkip(message)) if bool(cond) != negate else None


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
                raise target(repr(exc)) from exc

        return wrapper

    return decorate(func) if func is not None else decorate


def fail_on(exceptions: Any = None) -> Callable:
    """Turn the given exceptions (default: any) raised by the method into FAIL."""
    return _translate_on(exceptions, TestFail)


def cancel_on(exceptions: Any = None) -> Callable:
    """Turn the given exceptions (default: any) raised by the method into CANCEL."""
    return _translate_on(exceptions, TestCancel)
