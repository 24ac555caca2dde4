"""What `mhtest run` prints: job header, one line per test end, totals, live progress."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from mhtest import events
from mhtest.results import count_statuses

_COLORS = {
    "PASS": "\x1b[32m",
    "WARN": "\x1b[33m",
    "SKIP": "\x1b[33m",
    "CANCEL": "\x1b[33m",
    "FAIL": "\x1b[31m",
    "ERROR": "\x1b[31m",
    "INTERRUPT": "\x1b[31m",
}
_RESET = "\x1b[0m"


class Console:
    """Plain lines when piped; colours and a live line of running tests on a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.running: dict[int, tuple[str, float]] = {}
        self.total = 0
        self.done = 0
        self._live_shown = False

    def _write(self, text: str) -> None:
        self._clear_live()
        self.stream.write(text + "\n")
        self.stream.flush()

    def _clear_live(self) -> None:
        if self._live_shown:
            self.stream.write("\r\x1b[K")
            self._live_shown = False

    def _show_live(self) -> None:
        if not self.tty or not self.running:
            return
        now = time.time()
        names = ", ".join(
            f"{name} ({now - t0:.0f}s)" for name, t0 in list(self.running.values())[:3]
        )
        more = f" +{len(self.running) - 3}" if len(self.running) > 3 else ""
        line = f" [{self.done}/{self.total}] running: {names}{more}"
        self.stream.write("\r\x1b[K" + line[:200])
        self.stream.flush()
        self._live_shown = True

    def job_start(self, job: Any) -> None:
        self.total = len(job.specs)
        self._write(f"JOB ID     : {job.unique_id}")
        self._write(f"JOB LOG    : {job.log_file}")

    def test_start(self, spec: Any) -> None:
        self.running[spec.uid] = (spec.name, time.time())
        self._show_live()

    def test_end(self, job: Any, result: Any) -> None:
        self.running.pop(result.uid, None)
        self.done += 1
        status = result.status
        if self.tty:
            status = f"{_COLORS.get(status, '')}{status}{_RESET}"
        host = f" [{result.host}]" if result.host != "local" else ""
        line = f" ({result.uid}/{self.total}) {result.ref}{host}: {status} ({result.time:.2f} s)"
        if result.fail_reason and result.status != events.PASS:
            line += f" {result.fail_reason.splitlines()[0][:300]}"
        self._write(line)
        self._show_live()

    def warning(self, text: str) -> None:
        self._write(f"WARNING: {text}")

    def job_end(self, job: Any) -> None:
        counts = count_statuses(job.results)
        summary = " | ".join(f"{k} {v}" for k, v in counts.items())
        if job.interrupted:
            self._write("Job interrupted by the user")
        self._write(f"RESULTS    : {summary}")
        self._write(f"JOB TIME   : {job.time_elapsed:.2f} s")
        if job.write_errors:
            what = "; ".join(f"{k}: {v}" for k, v in job.write_errors.items())
            self._write(
                f"ERROR      : the results in {job.logdir} are incomplete ({what}); "
                "free some space there or choose another place with --job-results-dir"
            )
