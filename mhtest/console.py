"""What `mhtest run` prints: job header, one line per test end, totals, what did not pass.

Piped (CI logs, files): plain lines only, plus a line when a host starts installing mhtest
(the slow part of a cold host). On a terminal, rich's live display adds, under the lines
already printed, a line per host while it is prepared (connecting, checking Python,
installing, sending the tests) and a ticking line of the running tests, cut to the
terminal's width; rich is imported only then.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from mhtest import events
from mhtest.results import count_statuses

_COLORS = {
    "PASS": "green",
    "WARN": "yellow",
    "SKIP": "yellow",
    "CANCEL": "yellow",
    "FAIL": "red",
    "ERROR": "red",
    "INTERRUPT": "red",
}
#: Statuses the short summary at the end lists, with their reasons.
NOT_PASSED = (events.FAIL, events.ERROR, events.INTERRUPT)
#: Host phases worth a plain line when piped (the others take a moment).
SLOW_PHASES = ("installing",)
REFRESH_PER_SECOND = 4


class Console:
    """Plain lines when piped; rich's live display of hosts and running tests on a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.running: dict[int, tuple[str, float]] = {}
        self.hosts: dict[str, str] = {}  # host -> phase, while it is being prepared
        self.total = 0
        self.done = 0
        self._lock = threading.RLock()
        self._live: Any = None
        self._rich: Any = None

    # -- output ----------------------------------------------------------------------------
    def _write(self, text: str, style: str | None = None) -> None:
        with self._lock:
            if self._rich is not None:
                from rich.text import Text

                line = Text(text)
                if style:
                    line.stylize(style)
                self._rich.print(line, soft_wrap=True)
            else:
                self.stream.write(text + "\n")
                self.stream.flush()

    def _start_live(self) -> None:
        """On a terminal: rich's console and live display (the footer below the lines)."""
        if not self.tty or self._live is not None:
            return
        from rich.console import Console as RichConsole
        from rich.live import Live

        self._rich = RichConsole(file=self.stream, highlight=False)
        self._live = Live(
            _Footer(self),
            console=self._rich,
            refresh_per_second=REFRESH_PER_SECOND,
            transient=True,
        )
        self._live.start()

    def _stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def footer_lines(self, width: int) -> list[str]:
        """The live lines: hosts being prepared, then the running tests (fit to `width`)."""
        with self._lock:
            now = time.time()
            lines = [f" {host}: {phase}…"[:width] for host, phase in self.hosts.items()]
            if self.running:
                shown, rest = [], len(self.running)
                head = f" [{self.done}/{self.total}] running: "
                for name, started in self.running.values():
                    item = f"{name} ({now - started:.0f}s)"
                    more = f" +{rest - 1}" if rest > 1 else ""
                    if len(head) + len(", ".join([*shown, item])) + len(more) > width:
                        break
                    shown.append(item)
                    rest -= 1
                tail = f" +{rest}" if rest else ""
                lines.append((head + ", ".join(shown) + tail)[:width])
            return lines

    # -- the job's calls --------------------------------------------------------------------
    def job_start(self, job: Any) -> None:
        self.total = len(job.specs)
        self._start_live()
        self._write(f"JOB ID     : {job.unique_id}")
        self._write(f"JOB LOG    : {job.log_file}")

    def host_phase(self, host: str, phase: str) -> None:
        """A host's preparation moved on (`phase` "running" or "done" ends its line)."""
        with self._lock:
            if phase in ("running", "done"):
                self.hosts.pop(host, None)
                return
            self.hosts[host] = phase
        if not self.tty and phase.startswith(SLOW_PHASES):
            self._write(f"HOST       : {host}: {phase}…")

    def tests_added(self, count: int) -> None:
        """Results a running test made (a control file's run_test) join the count."""
        with self._lock:
            self.total += count

    def test_start(self, spec: Any) -> None:
        with self._lock:
            self.running[spec.uid] = (spec.name, time.time())
            self.hosts.pop(spec.host, None)

    def test_reboot(self, spec: Any, host: str, count: int) -> None:
        """A test reboots its host (it runs again once the host is back)."""
        self._write(f"REBOOT     : {spec.ref} [{host}]: reboot {count}, then it runs again")

    def test_end(self, job: Any, result: Any) -> None:
        with self._lock:
            self.running.pop(result.uid, None)
            self.done += 1
        host = _host_suffix(result)
        status = f"{result.status} ({result.time:.2f} s)"
        variant = f";{result.variant}" if result.variant else ""
        line = f" ({result.uid}/{self.total}) {result.ref}{variant}{host}: {status}"
        if getattr(result, "reboots", 0):
            line += f" after {result.reboots} reboot{'s' if result.reboots > 1 else ''}"
        if result.fail_reason and result.status != events.PASS:
            line += f" {result.fail_reason.splitlines()[0][:300]}"
        self._write(line, _COLORS.get(result.status) if self.tty else None)

    def warning(self, text: str) -> None:
        self._write(f"WARNING: {text}")

    def job_end(self, job: Any) -> None:
        self._stop_live()
        counts = count_statuses(job.results)
        summary = " | ".join(f"{k} {v}" for k, v in counts.items())
        failed = [r for r in job.results if r.status in NOT_PASSED]
        if failed:
            self._write("NOT PASSED :")
            for r in failed:
                host = _host_suffix(r)
                reason = (r.fail_reason or "no reason given").splitlines()[0][:300]
                self._write(f" {r.status:<9} {r.name}{host}: {reason}")
        if job.interrupted:
            why = getattr(job.dispatcher.outcome, "interrupted", None)
            if why and why != "interrupted by the user":
                self._write(f"Job interrupted: {why}")
            else:
                self._write("Job interrupted by the user")
        self._write(f"RESULTS    : {summary}")
        self._write(f"JOB TIME   : {job.time_elapsed:.2f} s")
        if job.write_errors:
            what = "; ".join(f"{k}: {v}" for k, v in job.write_errors.items())
            self._write(
                f"ERROR      : the results in {job.logdir} are incomplete ({what}); "
                "free some space there or choose another place with --job-results-dir"
            )


def _host_suffix(result: Any) -> str:
    """ " [host]" after a remote test's name; none for a control file's result (its
    reference names its machine)."""
    if result.host == "local" or getattr(result, "parent", None) is not None:
        return ""
    return f" [{result.host}]"


class _Footer:
    """rich renderable of Console.footer_lines(), redrawn by Live as time goes by."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __rich_console__(self, rich_console: Any, options: Any) -> Any:
        from rich.text import Text

        for line in self.console.footer_lines(options.max_width):
            yield Text(line, no_wrap=True, overflow="ellipsis")
