"""The Test base class of instrumented tests.

The lifecycle (setUp, test method, tearDown, status) lives in mhtest.runners.child;
this module holds only what a test author touches, with Avocado's names: porting an
Avocado test means changing its import line. unittest's assertions come from
mhtest.assertions, data files from mhtest.testdata, assets from mhtest.assets.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any, NoReturn

from mhtest.assertions import Assertions
from mhtest.decorators import cancel_on, fail_on, skip, skip_reason, skipIf, skipUnless
from mhtest.events import FAILED_STATUSES, STATUSES
from mhtest.exceptions import (
    TestBaseException,
    TestCancel,
    TestError,
    TestFail,
    TestInterrupt,
    TestSkip,
)
from mhtest.testid import TestID

# The statuses live in mhtest.events, the exceptions and decorators in their modules;
# their names stay importable from here.
__all__ = [
    "FAILED_STATUSES",
    "STATUSES",
    "Test",
    "TestBaseException",
    "TestCancel",
    "TestError",
    "TestFail",
    "TestInterrupt",
    "TestSkip",
    "cancel_on",
    "fail_on",
    "skip",
    "skipIf",
    "skipUnless",
    "skip_reason",
]

#: The phases of a test, in order (Test.phase).
PHASES = ("INIT", "SETUP", "TEST", "TEARDOWN", "FINISHED")


class _WarningCounter(logging.Handler):
    """Counts the warnings logged through the test's own log (not its children's):
    a warning turns PASS into WARN, as in Avocado."""

    def __init__(self, logger_name: str) -> None:
        super().__init__(level=logging.WARNING)
        self.logger_name = logger_name
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == self.logger_name and record.levelno == logging.WARNING:
            self.count += 1


def tags_dict(tags: Any) -> dict[str, Any]:
    """Tags as Avocado gives them to a test: {tag: None, key: [values]} from 'key:value's."""
    if isinstance(tags, dict):
        return tags
    out: dict[str, Any] = {}
    for tag in tags or ():
        key, sep, value = str(tag).partition(":")
        if sep:
            values = out.get(key) or []
            out[key] = sorted({*values, value})
        else:
            out.setdefault(tag, None)
    return out


class Test(Assertions):
    """Base class of instrumented tests: subclass it and write `test*` methods.

    A test reads, as in Avocado: `params`, `log`, `whiteboard`, `name` (its ID), `tags`,
    `status`, `running`, `phase`, `time_elapsed`, `fail_reason`, `fail_class`,
    `traceback`, `filename`, `basedir`, `logdir`, `logfile`, `outputdir`, `workdir`,
    `teststmpdir`, `cache_dirs`; calls `get_data()`, `fetch_asset()`, unittest's
    assertions; and `sync` in multi-host and --sync runs. On a remote host, `reboot()`
    reboots it and the test runs again after the boot (`reboot_count`).
    """

    #: Seconds after which the test is interrupted (the `timeout` param overrides it).
    timeout: float | None = None
    #: In a multi-host worker: when another worker dies or aborts the run, end this test at
    #: once with the reason (False: learn of it at the next sync call, as a test that
    #: watches its peers itself prefers).
    sync_aborts_interrupt: bool = True
    #: Written to the test's `whiteboard` file when it ends.
    whiteboard = ""
    #: Times of the test's start and end (time.monotonic()) and its duration, as in Avocado:
    #: -1 until known.
    time_start: float = -1
    time_end: float = -1
    time_elapsed: float = -1
    actual_time_start: float = -1
    actual_time_end: float = -1

    def __init__(
        self,
        methodName: str = "test",  # noqa: N803 - Avocado's/unittest's name
        name: str | None = None,
        params: Any = None,
        logdir: str | None = None,
        workdir: str | None = None,
        basedir: str | None = None,
        filename: str | None = None,
        tags: Any = None,
    ) -> None:
        from mhtest.params import Params

        self._testMethodName = methodName
        self.name = name if isinstance(name, TestID) else TestID(0, name or self._default_name())
        self.params = params if isinstance(params, Params) else Params(params or {})
        self.tags = tags_dict(tags)
        self.logdir = logdir or os.getcwd()
        self.logfile = os.path.join(self.logdir, "debug.log")
        self.outputdir = os.path.join(self.logdir, "data")
        self.workdir = workdir or os.path.join(self.logdir, "work")
        self.filename = filename or getattr(
            sys.modules.get(type(self).__module__), "__file__", None
        )
        self.basedir = basedir or (os.path.dirname(self.filename) if self.filename else None)
        self.log = logging.getLogger("mhtest.test")
        self._warnings = _WarningCounter(self.log.name)
        self.log.addHandler(self._warnings)
        # Set by the runner as the test goes (mhtest.runners.child): read-only here.
        self._phase = "INIT"
        self._running = False
        self._status: str | None = None
        self._fail_reason: str | None = None
        self._fail_class: str | None = None
        self._traceback: str | None = None
        self._sync: Any = None
        self._sync_lock = threading.Lock()
        #: The TestSpec the runner started this test from (None when made by hand).
        self._spec: Any = None
        self.timeout = self._param_timeout()

    def _default_name(self) -> str:
        return f"{type(self).__name__}.{self._testMethodName}"

    def _param_timeout(self) -> float | None:
        """The timeout: the `timeout` param or attribute, times the `timeout_factor` param."""
        value = self.params.get("timeout")
        value = self.timeout if value is None else value
        factor = self.params.get("timeout_factor")
        for what, text in (("timeout", value), ("timeout_factor", factor)):
            try:
                float(text) if text is not None else None
            except (TypeError, ValueError):
                raise TestError(
                    f"the {what} param must be a number of seconds, not {text!r}"
                ) from None
        if value is None:
            return None
        return float(value) * (float(factor) if factor is not None else 1.0)

    # Avocado names ---------------------------------------------------------
    def setUp(self) -> None:  # noqa: N802
        """Prepare the test; an exception here makes the test ERROR."""

    def tearDown(self) -> None:  # noqa: N802
        """Clean up; runs after the test method even when it failed."""

    def fail(self, msg: str | None = None, message: str | None = None) -> NoReturn:
        """End the test FAIL (`message` is Avocado's old name of `msg`)."""
        raise TestFail(msg or message)

    def error(self, msg: str | None = None, message: str | None = None) -> NoReturn:
        """End the test ERROR."""
        raise TestError(msg or message)

    def cancel(self, msg: str | None = None, message: str | None = None) -> NoReturn:
        """End the test CANCEL: it cannot run here."""
        raise TestCancel(msg or message)

    @property
    def reboot_count(self) -> int:
        """How many times this test rebooted its host (0 before its first reboot)."""
        from mhtest.runners.reboot import reboot_count

        return reboot_count()

    def reboot(self, command: str | None = None, timeout: float | None = None) -> NoReturn:
        """Reboot the host this test runs on (a remote host); the test runs again after
        the boot, from its start, with `reboot_count` one higher, in the same results
        directory: check the count to go on where it chose.

        `command` reboots the host instead of the usual `reboot`; `timeout` (seconds) is
        how long this waits for the reboot to come before the test ends ERROR. Does not
        return. Runs no tearDown: the boot ends this process.
        """
        from mhtest.runners import reboot

        wait = reboot.DEFAULT_WAIT if timeout is None else float(timeout)
        self.log.info("asking for reboot %d of the host", self.reboot_count + 1)
        for handler in logging.getLogger().handlers:
            handler.flush()
        try:
            reboot.request(command, wait)
        except reboot.RebootError as exc:
            raise TestError(str(exc)) from None

    @property
    def status(self) -> str | None:
        """The test's status: None until its test method ended (so tearDown can read it)."""
        return self._status

    @property
    def running(self) -> bool:
        return self._running

    @property
    def phase(self) -> str:
        """INIT, SETUP, TEST, TEARDOWN or FINISHED."""
        return self._phase

    @property
    def fail_reason(self) -> str | None:
        return self._fail_reason

    @property
    def fail_class(self) -> str | None:
        return self._fail_class

    @property
    def traceback(self) -> str | None:
        return self._traceback

    @property
    def teststmpdir(self) -> str:
        """A temporary directory shared by the tests of this job (at this place)."""
        from mhtest.environment import AVOCADO_COMMON_TMPDIR, ENV_COMMON_TMPDIR

        path = os.environ.get(ENV_COMMON_TMPDIR) or os.environ.get(AVOCADO_COMMON_TMPDIR)
        if path is None:
            raise OSError(f"environment variable {ENV_COMMON_TMPDIR} is not set (run with mhtest)")
        return path

    @property
    def cache_dirs(self) -> list[str]:
        """Where fetch_asset() looks for assets: $MHTEST_CACHE_DIRS or ~/mhtest/data/cache."""
        from mhtest.assets import cache_dirs

        return cache_dirs()

    def get_data(
        self, filename: str, source: str | None = None, must_exist: bool = True
    ) -> str | None:
        """The path of a data file of this test (`FILE.py.data/…`), or None (Avocado's rules)."""
        from mhtest.testdata import get_data

        return get_data(self, filename, source, must_exist)

    def fetch_asset(
        self,
        name: str,
        asset_hash: str | None = None,
        algorithm: str | None = None,
        locations: Any = None,
        expire: Any = None,
        find_only: bool = False,
        cancel_on_missing: bool = False,
    ) -> str:
        """A local path of asset `name` (a URL, or a name with `locations`), from the cache
        or fetched into it, checked against `asset_hash`; OSError (or CANCEL with
        `cancel_on_missing`) when it cannot be had."""
        from mhtest import assets

        seconds = assets.time_to_seconds(expire)
        try:
            if not (assets.urlparse(name).scheme or locations):
                return assets.find_by_name(name, self.cache_dirs, seconds, asset_hash)
            asset = assets.Asset(name, asset_hash, algorithm, locations, self.cache_dirs, seconds)
            return asset.find() if find_only else asset.fetch()
        except OSError:
            if cancel_on_missing:
                self.cancel(f"Missing asset {name}")
            raise

    def id(self) -> str:
        """unittest's test id: module.Class.method."""
        module = os.path.splitext(os.path.basename(self.filename or ""))[0] or type(self).__module__
        return f"{module}.{type(self).__qualname__}.{self._testMethodName}"

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

    def __str__(self) -> str:
        return str(self.name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
