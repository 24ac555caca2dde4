"""A job: an id, a results directory, tests run at their places, events collected.

The tests run through a Dispatcher (mhtest.dispatch). The job's sink is the collector,
the one place events from every runner arrive (local pipes, SSH channels): it turns
`test.end` events into TestResults, tells the result writers at once (results.json is
rewritten atomically after every test end) and drives the console.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mhtest import environment, events, exitcodes
from mhtest.dispatch import Dispatcher, Options
from mhtest.hosts.inventory import HostConfig
from mhtest.results import TestResult
from mhtest.spec import NESTED, TestSpec, dir_name

LOG = logging.getLogger(__name__)
DEFAULT_RESULTS_DIR = "~/mhtest/job-results"
#: Disk space set aside for the results files: a base, per test, and at most.
RESERVE_BASE = 64 << 10
RESERVE_PER_TEST = 8 << 10
RESERVE_MAX = 64 << 20


def _versions() -> dict[str, str]:
    """mhtest's and Python's versions, and those of the libraries this process has loaded.

    From the modules themselves: asking the package metadata costs ~15 ms per job.
    """
    import platform

    from mhtest import __version__

    found = {"mhtest": __version__, "python": platform.python_version()}
    for name, module in (("paramiko", "paramiko"), ("pyzmq", "zmq"), ("PyYAML", "yaml")):
        version = getattr(sys.modules.get(module), "__version__", None)
        if version:
            found[name] = str(version)
    return found


class _JobLog(logging.FileHandler):
    """job.log: a write that fails (a full disk) is remembered once, not printed per record."""

    error: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.error is None:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        self.error = self.error or sys.exc_info()[1]


class JobError(Exception):
    """The job cannot run as asked (unwritable results directory, …)."""


@dataclass
class JobConfig:
    """What a job was asked to do (the parsed command line, in plain data)."""

    results_dir: str = DEFAULT_RESULTS_DIR
    env: dict[str, str] = field(default_factory=dict)  # for every test process
    options: Options = field(default_factory=Options)  # how places are reached
    timeout: float | None = None  # for the whole job
    fork_server: Any = None  # a local ForkServer started early, for the local spawner
    #: How the job was asked for, kept in jobdata/<key>.json (secrets already masked):
    #: the command line, references, params, hosts, options, variants.
    jobdata: dict[str, Any] = field(default_factory=dict)


class Job:
    """One run of `mhtest run`: results directory, id, log, specs, results."""

    def __init__(
        self, config: JobConfig, writers: list[Any] | None = None, console: Any = None
    ) -> None:
        self.config = config
        self.writers = writers or []
        self.console = console
        self.unique_id = hashlib.sha1(
            f"{time.time()}-{os.getpid()}-{random.random()}".encode()
        ).hexdigest()
        self.start_time = time.time()
        self.end_time = 0.0
        self.specs: list[TestSpec] = []
        self.assignments: list[tuple[HostConfig, TestSpec]] = []
        self.results: list[TestResult] = []
        self.interrupted = False
        self.failed_fast: str | None = None  # the test that stopped a --failfast job
        self.crashed: str | None = None
        self.stop = threading.Event()
        self.dispatcher = Dispatcher(
            self.sink, config.options, stop=self.stop, fork_server=config.fork_server
        )
        self._lock = threading.Lock()
        self._started: dict[int, float] = {}
        self._reboots: dict[int, int] = {}  # uid -> reboots of its host it asked for
        #: What could not be written of the job's results: {what: why}.
        self.write_errors: dict[str, str] = {}
        self.logdir = self._make_logdir()
        self._log_handler = self._open_job_log()
        self._reserve: Path | None = None
        #: Shared by the job's tests here (Test.teststmpdir); removed when the job ends.
        self.tests_tmpdir = tempfile.mkdtemp(prefix="mhtest_")

    # set-up ------------------------------------------------------------------
    def _make_logdir(self) -> Path:
        base = Path(os.path.expanduser(self.config.results_dir))
        stamp = time.strftime("%Y-%m-%dT%H.%M", time.localtime(self.start_time))
        logdir = base / f"job-{stamp}-{self.unique_id[:7]}"
        try:
            base.mkdir(parents=True, exist_ok=True)
            # Private to its user: params and logs may hold what others must not read.
            logdir.mkdir(mode=0o700)
            (logdir / "test-results").mkdir(mode=0o700)
            (logdir / "id").write_text(self.unique_id + "\n", encoding="utf-8")
        except OSError as exc:
            raise JobError(
                f"cannot write the results directory {base}: {exc.strerror} "
                "(use --job-results-dir to choose another)"
            ) from None
        link = base / "latest"
        tmp = base / f".latest-{self.unique_id[:12]}"
        try:
            os.symlink(logdir.name, tmp)
            os.replace(tmp, link)
        except OSError as exc:
            LOG.warning("cannot update %s: %s", link, exc)
        return logdir

    def _open_job_log(self) -> _JobLog:
        handler = _JobLog(self.logdir / "job.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(name)s| %(message)s"))
        handler.setLevel(logging.DEBUG)
        logger = logging.getLogger("mhtest")
        logger.addHandler(handler)
        if logger.level == logging.NOTSET or logger.level > logging.DEBUG:
            logger.setLevel(logging.DEBUG)
        # paramiko's warnings and errors (a silent host's traceback) go here, not the console.
        paramiko = logging.getLogger("paramiko")
        paramiko.addHandler(handler)
        if paramiko.level == logging.NOTSET:
            paramiko.setLevel(logging.WARNING)
        return handler

    @property
    def log_file(self) -> Path:
        return self.logdir / "job.log"

    def add(self, assignments: list[tuple[HostConfig, TestSpec]]) -> None:
        """Tests and their places (see mhtest.dispatch.place): numbered, each given its
        results directory and the job's environment."""
        for place, spec in assignments:
            spec.uid = len(self.specs) + 1
            spec.logdir = str(self.logdir / "test-results" / dir_name(spec.name))
            spec.env = {
                **self.config.env,
                environment.ENV_JOB_ID: self.unique_id,
                **environment.common_tmpdir_variables(self.tests_tmpdir),
                **spec.env,
            }
            self.specs.append(spec)
            self.assignments.append((place, spec))

    # running -------------------------------------------------------------------
    def run(self) -> int:
        """Run every test at its place; returns the exit code."""
        LOG.info("job %s: %d test(s), results in %s", self.unique_id, len(self.specs), self.logdir)
        self.dispatcher.ahead(self.assignments)  # the hosts connect while the job takes notes
        self._reserve_space()
        self._record_how()
        self._call_writers("job_start", self)
        if self.console:
            self.console.job_start(self)
        outcome = self.dispatcher.run(self.assignments, self.config.timeout)
        self.interrupted = outcome.interrupted is not None
        self._finish()
        return self.exit_code()

    def interrupt(self, reason: str = "interrupted by the user") -> None:
        """Stop the job as Ctrl-C does (from any thread): tests end INTERRUPT, results kept."""
        self.dispatcher.interrupt(reason)

    def sink(self, event: dict) -> None:
        """The collector: every runner reports every event here (thread-safe)."""
        if event.get("type") == events.HOST_INFO:
            self._host_info(str(event.get("host")), event.get("facts") or {})
            return
        if event.get("type") == events.HOST_PHASE:
            LOG.debug("%s: %s", event.get("host"), event.get("phase"))
            if self.console:
                self.console.host_phase(str(event.get("host")), str(event.get("phase")))
            return
        with self._lock:
            kind = event.get("type")
            uid = event.get("uid")
            spec = (
                self.specs[uid - 1] if isinstance(uid, int) and 0 < uid <= len(self.specs) else None
            )
            if spec is None:
                LOG.warning("event for an unknown test: %.200r", event)
                return
            if kind == events.TEST_START:
                if spec.uid in self._started:
                    return
                self._started[spec.uid] = event.get("time", time.time())
                if self.console:
                    self.console.test_start(spec)
            elif kind == events.TEST_END:
                if any(r.uid == spec.uid for r in self.results):
                    return
                self._record(spec, event)
            elif kind == events.TEST_NESTED:
                self._nested(spec, event)
            elif kind == events.TEST_REBOOT:
                count = int(event.get("count") or 0)
                self._reboots[spec.uid] = count
                LOG.info("%s: reboot %d of %s", spec.name, count, event.get("host"))
                if self.console:
                    self.console.test_reboot(spec, str(event.get("host")), count)
            elif kind == events.TEST_SKIPPED:
                now = time.time()
                self._record(
                    spec,
                    {
                        "status": events.INTERRUPT,
                        "start": now,
                        "end": now,
                        "fail_reason": f"not started: {event.get('reason')}",
                    },
                )

    def _nested(self, parent: TestSpec, event: dict) -> None:
        """A result `parent` made while it ran (a control file's run_test): one of the job's.

        It gets the next number; its reference extends the parent's, its directory is
        inside the parent's (a name that would lead out is refused: the parent's own).
        """
        from mhtest.runners.untrusted import relative_parts

        name = str(event.get("name") or "").strip("/") or "result"
        parts = relative_parts(str(event.get("logdir") or "")) or []
        spec = TestSpec(
            ref=f"{parent.ref}/{name}",
            kind=NESTED,
            path=parent.path,
            tags=list(parent.tags),
            host=str(event.get("host") or parent.host),
        )
        spec.uid = len(self.specs) + 1
        spec.logdir = str(Path(parent.logdir, *parts))
        self.specs.append(spec)
        if self.console:
            self.console.tests_added(1)
        self._record(spec, event, name=f"{spec.uid}-{spec.ref}", parent=parent.uid)

    def _record(
        self, spec: TestSpec, event: dict, name: str | None = None, parent: int | None = None
    ) -> None:
        result = TestResult.from_end(
            spec, event, name=name, start=self._started.get(spec.uid), parent=parent
        )
        result.reboots = self._reboots.get(spec.uid, 0)
        if result.reboots and spec.uid in self._started:  # (its end says when it ran last)
            result.start = self._started[spec.uid]
        self.results.append(result)
        LOG.info(
            "%s: %s%s",
            result.name,
            result.status,
            f" ({result.fail_reason})" if result.fail_reason else "",
        )
        self._call_writers("test_end", self, result)
        if self.console:
            self.console.test_end(self, result)
        # --failfast: the first test that did not pass stops the job (every place); the
        # tests not started end INTERRUPT, "not started", as with Avocado's --failfast.
        if self.config.options.failfast and result.failed and self.failed_fast is None:
            self.failed_fast = result.name
            self.interrupt(f"failfast: {result.name} ended {result.status}")

    def _finish(self) -> None:
        self.end_time = time.time()
        self.results.sort(key=lambda r: r.uid)
        self._call_writers("render", self)
        self.release_space()
        LOG.info("job %s ended: exit code %d", self.unique_id, self.exit_code())
        logging.getLogger("mhtest").removeHandler(self._log_handler)
        logging.getLogger("paramiko").removeHandler(self._log_handler)
        try:
            self._log_handler.close()
        except OSError as exc:
            self._log_handler.error = self._log_handler.error or exc
        if self._log_handler.error is not None:
            self._write_error("job.log", self._log_handler.error)
        shutil.rmtree(self.tests_tmpdir, ignore_errors=True)
        if self.console:
            self.console.job_end(self)

    # what the job records of itself ----------------------------------------------
    def _record_how(self) -> None:
        """jobdata/ (how the job was run, versions) and this machine's facts (Avocado's way)."""
        from mhtest import sysinfo

        jobdata = self.logdir / "jobdata"
        items = {**self.config.jobdata, "versions": _versions(), "pwd": os.getcwd()}
        try:
            jobdata.mkdir(mode=0o700, exist_ok=True)
            for key, value in items.items():
                text = json.dumps(value, indent=1, default=str)
                (jobdata / f"{key}.json").write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            LOG.warning("cannot write %s: %s", jobdata, exc)
        if "cmdline" in items:
            LOG.info("command line: %s", " ".join(map(str, items["cmdline"])))
        LOG.info("versions: %s", ", ".join(f"{k} {v}" for k, v in items["versions"].items()))
        self._host_info("local", sysinfo.collect())

    def _host_info(self, host: str, facts: dict[str, Any]) -> None:
        from mhtest import sysinfo

        LOG.info("%s: %s", host, sysinfo.summary(facts))
        try:
            sysinfo.write(self.logdir / "sysinfo", host, facts)
        except OSError as exc:
            LOG.warning("cannot keep the facts of %s: %s", host, exc)

    # a full disk ---------------------------------------------------------------
    def _reserve_space(self) -> None:
        """Set disk space aside for the results files, given back when they need it.

        Tests may fill the results disk; results.json must still hold every result.
        """
        size = min(RESERVE_MAX, RESERVE_BASE + RESERVE_PER_TEST * len(self.specs))
        path = self.logdir / ".space-reserve"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)
        except (OSError, AttributeError) as exc:
            LOG.warning("cannot set %d bytes aside for the results in %s: %s", size, path, exc)
            try:
                path.unlink()
            except OSError:
                pass
            return
        self._reserve = path

    def release_space(self) -> bool:
        """Give the space set aside back (for the final results files); False if none was."""
        path, self._reserve = self._reserve, None
        if path is None:
            return False
        try:
            path.unlink()
        except OSError as exc:
            LOG.warning("cannot remove %s: %s", path, exc)
            return False
        return True

    def _write_error(self, what: str, exc: BaseException) -> None:
        self.write_errors[what] = getattr(exc, "strerror", None) or str(exc)

    def _call_writers(self, method: str, *args: Any) -> None:
        for writer in self.writers:
            func: Callable | None = getattr(writer, method, None)
            if func is None:
                continue
            what = f"{getattr(writer, 'name', writer)} results"
            try:
                try:
                    func(*args)
                except OSError as exc:
                    # The space set aside serves the final files, once the tests are done
                    # (running tests would use it up).
                    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
                    if method != "render" or not full or not self.release_space():
                        raise
                    LOG.info("the results disk is full: writing the results in the space set aside")
                    func(*args)
                if method == "render":
                    self.write_errors.pop(what, None)  # written in the end after all
            except OSError as exc:
                if exc.errno is None:  # not the disk: a plugin's own failure
                    self._plugin_failed(writer, method, exc)
                    continue
                LOG.debug("result plugin %s cannot write", what, exc_info=True)
                self._write_error(what, exc)
            except Exception as exc:  # noqa: BLE001 - a result plugin never stops a job
                self._plugin_failed(writer, method, exc)

    def _plugin_failed(self, writer: Any, method: str, exc: Exception) -> None:
        # The traceback goes to job.log only; the console gets one line.
        name = getattr(writer, "name", writer)
        LOG.debug("result plugin %s failed in %s", name, method, exc_info=exc)
        if self.console:
            self.console.warning(f"result plugin {name!r} failed: {exc}")

    def exit_code(self) -> int:
        code = exitcodes.OK
        if any(r.failed for r in self.results):
            code |= exitcodes.TESTS_FAIL
        if self.interrupted:
            code |= exitcodes.INTERRUPTED
        if self.crashed:
            code |= exitcodes.CRASH
        if self.write_errors:
            code |= exitcodes.JOB_FAIL
        return code

    @property
    def time_elapsed(self) -> float:
        return (self.end_time or time.time()) - self.start_time
