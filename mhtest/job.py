"""A job: an id, a results directory, specs run through spawners, events collected.

The collector is the one place events from every runner arrive (local pipes, SSH
channels). It turns `test.end` events into TestResults, tells the result writers at
once (results.json is rewritten atomically after every test end) and drives the
console.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mhtest import events, exitcodes
from mhtest.results import TestResult
from mhtest.spec import TestSpec, dir_name

LOG = logging.getLogger(__name__)
DEFAULT_RESULTS_DIR = "~/mhtest/job-results"


class JobError(Exception):
    """The job cannot run as asked (unwritable results directory, …)."""


@dataclass
class JobConfig:
    """What a job was asked to do (the parsed command line, in plain data)."""

    max_parallel: int = os.cpu_count() or 1
    results_dir: str = DEFAULT_RESULTS_DIR
    hosts: list[Any] = field(default_factory=list)  # HostConfig objects; empty: local
    env: dict[str, str] = field(default_factory=dict)  # for every test process
    options: dict[str, Any] = field(default_factory=dict)  # spawner options (ssh, python…)
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
        self.results: list[TestResult] = []
        self.interrupted = False
        self.crashed: str | None = None
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._started: dict[int, float] = {}
        self.logdir = self._make_logdir()
        self._log_handler = self._open_job_log()

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

    def add_specs(self, specs: list[TestSpec]) -> None:
        """Number the specs, give each its results directory and the job's environment."""
        for spec in specs:
            spec.uid = len(self.specs) + 1
            spec.logdir = str(self.logdir / "test-results" / dir_name(spec.name))
            spec.env = {**self.config.env, **spec.env}
            self.specs.append(spec)

    # running -------------------------------------------------------------------
    def run(self, spawners: dict[str, Any]) -> int:
        """Run every spec through the spawner of its place; returns the exit code."""
        LOG.info("job %s: %d test(s), results in %s", self.unique_id, len(self.specs), self.logdir)
        self._call_writers("job_start", self)
        if self.console:
            self.console.job_start(self)
        groups: dict[str, list[TestSpec]] = {}
        for spec in self.specs:
            groups.setdefault(spec.host, []).append(spec)
        # Wait on events, not Thread.join(): a Ctrl-C that lands inside join() can make
        # CPython mark a running thread as stopped (bpo-45274's fix), and we would stop
        # waiting for the runners that must still report their interrupted tests.
        done = []
        for place, specs in groups.items():
            spawner = spawners["local" if place == "local" else "ssh"]
            finished = threading.Event()
            threading.Thread(
                target=self._run_group,
                args=(spawner, place, specs, finished),
                name=f"runner-{place}",
                daemon=True,
            ).start()
            done.append(finished)
        try:
            for finished in done:
                while not finished.wait(0.1):
                    pass
        except KeyboardInterrupt:
            self.interrupted = True
            self.stop.set()
            deadline = time.monotonic() + 30
            for finished in done:
                finished.wait(max(0.0, deadline - time.monotonic()))
        self._finish()
        return self.exit_code()

    def _run_group(
        self, spawner: Any, place: str, specs: list[TestSpec], finished: threading.Event
    ) -> None:
        try:
            spawner.run(place, specs, self.sink, self.stop)
        except Exception as exc:  # noqa: BLE001 - one place failing must not stop the others
            LOG.debug("runner for %s failed", place, exc_info=True)
            reason = events.one_line(exc, place)
            for spec in specs:
                self.sink(events.synthetic_end(spec.uid, "ERROR", reason))
        finally:
            finished.set()

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
            if kind == "test.start":
                self._started[spec.uid] = event.get("time", time.time())
                if self.console:
                    self.console.test_start(spec)
            elif kind == "test.end":
                if any(r.uid == spec.uid for r in self.results):
                    return
                self._record(spec, event)
            elif kind == "test.skipped":
                now = time.time()
                self._record(
                    spec,
                    {
                        "status": "INTERRUPT",
                        "start": now,
                        "end": now,
                        "fail_reason": f"not started: {event.get('reason')}",
                    },
                )

    def _record(self, spec: TestSpec, event: dict) -> None:
        result = TestResult(
            uid=spec.uid,
            name=spec.name,
            ref=spec.ref,
            status=event.get("status", "ERROR"),
            host=event.get("host") or spec.host,
            fail_reason=event.get("fail_reason"),
            fail_class=event.get("fail_class"),
            start=event.get("start") or self._started.get(spec.uid, time.time()),
            end=event.get("end") or time.time(),
            logdir=spec.logdir,
            whiteboard=event.get("whiteboard") or "",
            tags=list(spec.tags),
            children=[TestResult.from_dict(c) for c in event.get("children") or []],
        )
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
        # Tests that never reported an end (a runner that died) must still be on disk.
        done = {r.uid for r in self.results}
        for spec in self.specs:
            if spec.uid not in done:
                reason = "interrupted by the user" if self.interrupted else "the test never ended"
                self._record(
                    spec,
                    {"status": "INTERRUPT" if self.interrupted else "ERROR", "fail_reason": reason},
                )
        self.results.sort(key=lambda r: r.uid)
        self._call_writers("render", self)
        if self.console:
            self.console.job_end(self)
        LOG.info("job %s ended: exit code %d", self.unique_id, self.exit_code())
        logging.getLogger("mhtest").removeHandler(self._log_handler)
        self._log_handler.close()

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
