"""One queued file's jobs: a child process each (mhtest.queue.jobproc), started and waited for.

A client control file makes a job per machine of its queue, all at once; a server control
file makes one job whose `machines` are the queue's. Each job is an ordinary mhtest Job in
its own process (its job.log, its interrupt, its crash, apart from the others). Stopping
(`JobSet.wait` with `stop` set) sends each job SIGTERM, so its tests end INTERRUPT with
their results kept, and kills only what is still there STOP_GRACE later.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mhtest.dispatch import Options
from mhtest.hosts.inventory import HostConfig
from mhtest.spec import TestSpec

LOG = logging.getLogger(__name__)
#: After SIGTERM, how long a job has to stop its tests and write its results.
STOP_GRACE = 75.0
#: What a job's stderr is kept in (removed when empty), in its results directory.
STDERR_FILE = "job.stderr"


@dataclass
class JobRequest:
    """One job to run: where its tree goes, its tests and their places."""

    machine: str | None  # a client control file's machine; None: a server control file's
    results_dir: Path
    specs: list[TestSpec]
    places: list[HostConfig]
    options: Options
    jobdata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "results_dir": str(self.results_dir),
                "specs": [s.to_dict() for s in self.specs],
                "places": [dataclasses.asdict(p) for p in self.places],
                "options": self.options.to_dict(),
                "jobdata": self.jobdata,
            }
        )


class JobProcess:
    """A job's child process: what it said (started, job dir, exit code, error)."""

    def __init__(self, request: JobRequest, on_line: Callable[[JobProcess, dict], None]) -> None:
        self.request = request
        self.started: float | None = None
        self.ended: float | None = None
        self.job_dir: str | None = None
        self.error: str | None = None
        self._on_line = on_line
        request.results_dir.mkdir(parents=True, exist_ok=True)
        self._stderr_path = request.results_dir / STDERR_FILE
        with open(self._stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mhtest.queue.jobproc"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=request.results_dir,
                start_new_session=True,  # a terminal's Ctrl-C reaches the watcher only
            )
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(request.to_json().encode() + b"\n")
            self.proc.stdin.flush()  # stdin stays open: its end tells the job we are gone
        except OSError as exc:
            self.error = f"cannot start the job: {exc}"
        self._reader = threading.Thread(target=self._read, name=f"job-{self.pid}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def exit_code(self) -> int | None:
        return self.proc.returncode

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                LOG.debug("job %d said: %r", self.pid, raw)
                continue
            if not isinstance(line, dict):
                continue
            if "started" in line:
                self.started = float(line["started"])
                self.job_dir = str(line.get("job") or "")
            if "ended" in line:
                self.ended = float(line["ended"])
            if "error" in line:
                self.error = str(line["error"])
            try:
                self._on_line(self, line)
            except Exception:  # noqa: BLE001 - the job's output must still be read
                LOG.warning("job %d: recording %r failed", self.pid, line, exc_info=True)

    def signal(self, signum: int) -> None:
        """Send `signum` to the job's process, if it still runs (by its pid: ours); SIGKILL
        to its whole process group (the session it leads)."""
        if self.proc.poll() is None:
            try:
                if signum == signal.SIGKILL:
                    os.killpg(self.pid, signum)
                else:
                    os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def finish(self) -> None:
        """Once it exited: its pipes closed, its output read, an empty stderr file removed."""
        self._reader.join(5.0)
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        try:
            if self._stderr_path.stat().st_size == 0:
                self._stderr_path.unlink()
        except OSError:
            pass

    def stderr_tail(self, lines: int = 1) -> str:
        try:
            text = self._stderr_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])


class JobSet:
    """The jobs of one queued file, started together and waited for together."""

    def __init__(
        self,
        requests: list[JobRequest],
        on_line: Callable[[int, JobProcess, dict], None] | None = None,
    ) -> None:
        self.requests = requests
        self.jobs: list[JobProcess] = []
        self._on_line = on_line

    def start(self, on_spawned: Callable[[JobProcess], None] | None = None) -> None:
        """Start every job (on_spawned is told of each, in order)."""
        for index, request in enumerate(self.requests):
            job = JobProcess(request, lambda j, line, i=index: self._told(i, j, line))
            self.jobs.append(job)
            if on_spawned is not None:
                on_spawned(job)

    def _told(self, index: int, job: JobProcess, line: dict) -> None:
        if self._on_line is not None:
            self._on_line(index, job, line)

    def wait(self, stop: threading.Event, force: threading.Event | None = None) -> bool:
        """Wait for every job; when `stop` is set, stop them (SIGTERM; SIGKILL after
        STOP_GRACE, or when `force` is set). True when they were stopped."""
        stopping: float | None = None
        killed = False
        try:
            while any(j.proc.poll() is None for j in self.jobs):
                if stop.is_set() and stopping is None:
                    stopping = time.monotonic() + STOP_GRACE
                    for job in self.jobs:
                        job.signal(signal.SIGTERM)
                late = stopping is not None and time.monotonic() > stopping
                if not killed and (late or (force is not None and force.is_set())):
                    killed = True
                    LOG.warning("killing the jobs still running (%s)", "late" if late else "asked")
                    for job in self.jobs:
                        job.signal(signal.SIGKILL)
                time.sleep(0.05)
        finally:
            for job in self.jobs:
                if job.proc.poll() is None:  # (an exception here: nothing left behind)
                    job.signal(signal.SIGKILL)
                    job.proc.wait(10)
                job.finish()
        return stopping is not None
