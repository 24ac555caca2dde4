"""A job: an id, a results directory, tests run at their places, events collected.

The tests run through a Dispatcher (mhtest.dispatch). The job's sink is the collector,
the one place events from every runner arrive (local pipes, SSH channels): it turns
`test.end` events into TestResults, tells the result writers at once (results.json is
rewritten atomically after every test end) and drives the console.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
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
from mhtest.spec import TestSpec, dir_name

LOG = logging.getLogger(__name__)
DEFAULT_RESULTS_DIR = "~/mhtest/job-results"


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
        self.crashed: str | None = None
        self.stop = threading.Event()
        self.dispatcher = Dispatcher(
            self.sink, config.options, stop=self.stop, fork_server=config.fork_server
        )
        self._lock = threading.Lock()
        self._started: dict[int, float] = {}
        self.logdir = self._make_logdir()
        self._log_handler = self._open_job_log()
        #: Shared by the job's tests here (Test.teststmpdir); removed when the job ends.
        self.tests_tmpdir = tempfile.mkdtemp(prefix="mhtest_")

    # set-up ------------------------------------------------------------------
    def _make_logdir(self) -> Path:
        base = Path(os.path.expanduser(self.config.results_dir))
        stamp = time.strftime("%Y-%m-%dT%H.%M", time.localtime(self.start_time))
        logdir = base / f"job-{stamp}-{self.unique_id[:7]}"
        try:
            (logdir / "test-results").mkdir(parents=True)
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

    def _open_job_log(self) -> logging.Handler:
        handler = logging.FileHandler(self.logdir / "job.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(name)s| %(message)s"))
        handler.setLevel(logging.DEBUG)
        logger = logging.getLogger("mhtest")
        logger.addHandler(handler)
        if logger.level == logging.NOTSET or logger.level > logging.DEBUG:
            logger.setLevel(logging.DEBUG)
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

    def _record(self, spec: TestSpec, event: dict) -> None:
        result = TestResult.from_end(spec, event, start=self._started.get(spec.uid))
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

    def _finish(self) -> None:
        self.end_time = time.time()
        self.results.sort(key=lambda r: r.uid)
        self._call_writers("render", self)
        if self.console:
            self.console.job_end(self)
        LOG.info("job %s ended: exit code %d", self.unique_id, self.exit_code())
        logging.getLogger("mhtest").removeHandler(self._log_handler)
        self._log_handler.close()
        shutil.rmtree(self.tests_tmpdir, ignore_errors=True)

    def _call_writers(self, method: str, *args: Any) -> None:
        for writer in self.writers:
            func: Callable | None = getattr(writer, method, None)
            if func is None:
                continue
            try:
                func(*args)
            except Exception as exc:  # noqa: BLE001 - a result plugin never stops a job
                # The traceback goes to job.log only; the console gets one line.
                LOG.debug(
                    "result plugin %s failed in %s",
                    getattr(writer, "name", writer),
                    method,
                    exc_info=True,
                )
                if self.console:
                    self.console.warning(
                        f"result plugin {getattr(writer, 'name', writer)!r} failed: {exc}"
                    )

    def exit_code(self) -> int:
        code = exitcodes.OK
        if any(r.failed for r in self.results):
            code |= exitcodes.TESTS_FAIL
        if self.interrupted:
            code |= exitcodes.INTERRUPTED
        if self.crashed:
            code |= exitcodes.CRASH
        return code

    @property
    def time_elapsed(self) -> float:
        return (self.end_time or time.time()) - self.start_time
