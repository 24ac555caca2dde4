"""Errors of control files, and the `error` module they see (Autotest's names).

A control file that cannot go on raises ControlError (or a subclass): its message is one
line naming the file and line, the host or the test, and what to do. The `error` module of
a control file maps Autotest's exception names onto mhtest's own classes, so that
`except error.AutoservRunError:` catches what `host.run()` raises (mhtest's CmdError):

    Autotest                       mhtest
    AutoservError, AutoservHostError   mhtest.hosts.HostError
    AutoservRunError, CmdError     mhtest.hosts.CmdError (`.result` is the CmdResult)
    AutoservSSHTimeout             mhtest.hosts.HostUnreachable
    AutoservRebootError            mhtest.hosts.RebootError
    AutotestError                  mhtest.test.TestBaseException
    TestError, TestFail            mhtest.test.TestError, TestFail
    TestNAError                    mhtest.test.TestCancel
"""

from __future__ import annotations

import types

from mhtest import events
from mhtest.hosts.errors import CmdError, CmdTimeout, HostError, HostUnreachable, RebootError
from mhtest.test import TestBaseException, TestCancel, TestError, TestFail


class ControlError(Exception):
    """A control file cannot go on: one line naming file, line, host or test, and what to do."""


class ControlSyntaxError(ControlError):
    """A control file does not compile (Python 2 syntax, a syntax error)."""


class TestNotFound(ControlError):
    """A test name in a control file resolves to no test."""

    __test__ = False  # not a pytest test class


class AutotestRunError(ControlError):
    """A client control file (Autotest.run) did not run to its end on its host."""


class ParallelFailed(ControlError):
    """Items of a parallel()/parallel_simple() failed; `failures` is [(item, reason)]."""

    def __init__(self, failures: list[tuple[str, str]], total: int, results: list | None = None):
        text = "; ".join(f"{item}: {reason}" for item, reason in failures)
        super().__init__(f"{len(failures)} of {total} parallel items failed: {text}")
        self.failures = failures
        self.results = results


class TestWarn(TestBaseException):
    """Autotest's TestWarn: the control file ends WARN."""

    __test__ = False
    status = events.WARN


def error_module() -> types.ModuleType:
    """A fresh `error` module for a control file (Autotest's names, mhtest's classes)."""
    module = types.ModuleType("error", "Autotest's error names, mapped onto mhtest's classes.")
    names = {
        "AutoservError": HostError,
        "AutoservHostError": HostError,
        "AutoservRunError": CmdError,
        "AutoservCommandTimeout": CmdTimeout,
        "AutoservSSHTimeout": HostUnreachable,
        "AutoservRebootError": RebootError,
        "AutoservSubcommandError": ParallelFailed,
        "AutotestError": TestBaseException,
        "AutotestRunError": AutotestRunError,
        "JobError": ControlError,
        "TestBaseException": TestBaseException,
        "TestError": TestError,
        "TestFail": TestFail,
        "TestNAError": TestCancel,
        "TestWarn": TestWarn,
        "CmdError": CmdError,
        "HostError": HostError,
        "ControlError": ControlError,
        "TestNotFound": TestNotFound,
    }
    for name, cls in names.items():
        setattr(module, name, cls)
    return module
