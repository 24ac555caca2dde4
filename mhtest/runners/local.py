"""The local runner: each test in its own child process, forked by the fork server.

It feeds specs to the fork server up to `max_parallel` at a time, reads each child's
events from its own pipe, kills a child's whole process group when its timeout passes
or the job is interrupted, ends what a test left running in its group once it exited
(mhtest.runners.leftovers), and reports every test's events to one callback: a test's
end once its process and what it left are gone. The same runner serves `mhtest run` here
and the executor that a remote host runs.

Any number of tests may run at once: the runner keeps at most SPAWN_WINDOW requests
unanswered by the fork server, reading its replies and the tests' events in between, and
makes room for one event pipe per running test under the open-files limit
(mhtest.runners.limits.ensure_open_files).
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mhtest import events
from mhtest.runners.forkserver import CONTROL_PRELOAD, MULTIHOST_PRELOAD, ForkServer
from mhtest.runners.leftovers import Leftovers, signal_group
from mhtest.runners.limits import ensure_open_files
from mhtest.spec import CONTROL_SERVER, SIMPLE, TestSpec

LOG = logging.getLogger(__name__)
EventSink = Callable[[dict], None]
#: How long a child may take to go after its test ended before the runner stops waiting.
EXIT_GRACE = 5.0
#: After an interrupt, how long tests get between SIGTERM and SIGKILL.
STOP_GRACE = 10.0
#: After its timeout, how long a test gets to run its tearDown before SIGKILL.
TIMEOUT_GRACE = 10.0
#: What the fork server imports, once more tests wait than run at once, for the tests
#: forked after: unittest, for mhtest.assertions (each test importing it cost 4-5 ms).
LATER_IMPORTS = ("unittest",)
#: The same for a multi-host test: it stops its workers first, and waits for them at most
#: mhtest.runners.fanout.INTERRUPT_GRACE; the job waits for it at most
#: mhtest.dispatch.INTERRUPT_GRACE.
MULTIHOST_STOP_GRACE = 15.0
#: Spawn requests the fork server may leave unanswered: the runner starts many tests a
#: few at a time, reading replies and events in between.
SPAWN_WINDOW = 32


@dataclass
class _Running:
    spec: TestSpec
    rfd: int
    pid: int = 0
    started: float = field(default_factory=time.time)
    deadline: float | None = None
    buffer: events.LineBuffer = field(default_factory=events.LineBuffer)
    ended: bool = False  # test.end seen (or synthesised)
    eof: bool = False
    exit_status: int | None = None
    exit_time: float | None = None
    end_time: float | None = None
    end_event: dict | None = None  # the test's own test.end, held until it is all gone
    leftovers: Leftovers | None = None  # what it left in its process group, being ended
    killed: bool = False  # its group got SIGKILL while it ran: nothing left to end
    stopping: bool = False  # asked to stop (SIGTERM) because the job is interrupted
    timed_out: bool = False  # told its timeout is reached; deadline is then the grace's end
    exec_seen: bool = False  # test.start arrived: a simple test's child then exec'd it


class LocalRunner:
    """Runs TestSpecs in child processes on this machine."""

    def __init__(
        self,
        max_parallel: int,
        sink: EventSink,
        stop: threading.Event,
        server: ForkServer | None = None,
        stop_grace: float = STOP_GRACE,
        failfast: bool = False,
    ) -> None:
        self.max_parallel = max(1, max_parallel)
        self.sink = sink
        #: --failfast: after a test that did not pass, none starts (its end is known first).
        self.failfast = failfast
        self.failed: str | None = None  # why no test starts any more (failfast)
        self._names: dict[object, str] = {}  # uid -> test name, for failfast's reason
        if failfast:
            self.sink = self._watching(sink)
        self.stop = stop
        self.stop_grace = stop_grace
        self._server = server  # a fork server started earlier, which run() takes over
        self._unanswered = 0  # spawn requests the fork server has not answered yet
        #: The test that asked for its host's reboot (mhtest.runners.reboot): while it
        #: waits for it, no other test starts and its own deadline waits.
        self.rebooting: object = None

    def hold_for_reboot(self, uid: object) -> None:
        """Test `uid` asked for its host's reboot (from any thread)."""
        self.rebooting = uid

    def run(self, specs: list[TestSpec]) -> None:
        """Run every spec; returns when all have ended (or were interrupted)."""
        if not specs:
            return
        self._names = {spec.uid: spec.name for spec in specs}
        pending = list(reversed(specs))
        running: dict[str, _Running] = {}
        if self._server is None:  # none started ahead (see fork_server_ahead)
            multihost = any(spec.multihost for spec in specs)
            control = any(spec.kind == CONTROL_SERVER for spec in specs)
            preload = CONTROL_PRELOAD if control else MULTIHOST_PRELOAD if multihost else ()
            self._server = ForkServer(preload=preload)
        server, self._server = self._server, None
        sel = selectors.DefaultSelector()
        sel.register(server.sock, selectors.EVENT_READ, None)
        give_up: float | None = None  # once stopping: when SIGTERM's grace ends
        gone: list[_Running] = []  # out of `running`, their ends not yet reported
        last_of_first_batch = len(specs) - self.max_parallel + 1  # as len(pending)
        try:
            # Once the fork server runs: its tests keep the usual limit.
            ensure_open_files(min(self.max_parallel, len(specs)))
            while pending or running:
                if self.stop.is_set() and give_up is None:
                    give_up = time.time() + self._grace(running)
                    self._ask_to_stop(running, pending)
                if give_up is not None and time.time() >= give_up:
                    self._interrupt(running, pending, "interrupted by the user")
                    break
                while self.failfast and gone:  # its status before anything else starts
                    self._finish(gone.pop(0))
                if self.failed is not None and give_up is None:
                    self._skip(pending, self.failed)
                if self.rebooting is not None:
                    self._waiting_for_reboot(running)
                while (
                    give_up is None
                    and self.failed is None
                    and self.rebooting is None
                    and pending
                    and len(running) < self.max_parallel
                    and self._unanswered < SPAWN_WINDOW
                ):
                    if len(pending) == last_of_first_batch > 1:  # and tests wait: once
                        server.then_import = LATER_IMPORTS
                    self._start(server, sel, running, pending.pop())
                # Reported once their places are taken: the job's bookkeeping no longer
                # delays the next tests.
                while gone:
                    self._finish(gone.pop(0))
                timeout = self._next_timeout(running)
                for key, _ in sel.select(timeout):
                    if key.data is None:
                        self._server_messages(server, sel, running)
                    else:
                        self._read(sel, running, key.data)
                self._check_deadlines(running)
                self._end_leftovers(running)
                gone = self._retire(sel, running)
        finally:
            for run in gone:
                self._finish(run)
            for run in running.values():
                self._kill(run)
                self._report_end(run)
                self._close_pipe(sel, run)
            sel.close()
            server.close()

    # starting and reading ------------------------------------------------
    def _start(
        self, server: ForkServer, sel: selectors.BaseSelector, running: dict, spec: TestSpec
    ) -> None:
        key = str(spec.uid)
        run = _Running(spec=spec, rfd=-1)
        spec.started = run.started
        if spec.timeout:
            run.deadline = run.started + spec.timeout
        running[key] = run
        logdir = Path(spec.logdir)
        spec_path = logdir / "spec.json"
        try:
            logdir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "w", encoding="utf-8") as out:
                out.write(json.dumps(spec.to_dict()))
        except OSError as exc:  # a full disk, most likely: this test ends, the next may run
            why = exc.strerror or str(exc)
            self._not_started(run, f"cannot write the test's results directory {logdir}: {why}")
            return
        try:
            rfd, wfd = os.pipe()
        except OSError as exc:
            self._not_started(run, str(exc))
            return
        run.rfd = rfd
        os.set_blocking(rfd, False)
        sel.register(rfd, selectors.EVENT_READ, key)
        try:
            server.spawn(key, str(spec_path), wfd, simple=spec.kind == SIMPLE)
        except OSError as exc:
            self._not_started(run, str(exc))
        else:
            self._unanswered += 1
        finally:
            os.close(wfd)

    def _waiting_for_reboot(self, running: dict) -> None:
        """The test waiting for its reboot has no deadline; once it ended, tests start."""
        run = running.get(str(self.rebooting))
        if run is None or run.ended:
            self.rebooting = None
        elif not run.timed_out:
            run.deadline = None

    def _not_started(self, run: _Running, reason: str) -> None:
        if not reason.startswith("cannot "):
            reason = f"cannot start the test process: {reason}"
        self._end(run, events.ERROR, reason)
        run.eof = True
        self._exited(run, -1)

    def _server_messages(
        self, server: ForkServer, sel: selectors.BaseSelector, running: dict
    ) -> None:
        replies, gone = server.receive()
        for msg in replies:
            if msg["op"] in ("started", "failed"):
                self._unanswered -= 1
            run = running.get(msg.get("key"))
            if run is None:
                continue
            if msg["op"] == "started":
                run.pid = msg["pid"]
            elif msg["op"] == "failed":
                self._not_started(run, msg.get("error") or "the fork server failed")
            elif msg["op"] == "exited":
                self._exited(run, msg["status"])
                if not run.killed:
                    run.leftovers = Leftovers.find(msg["pid"])
        if not gone:
            return
        sel.unregister(server.sock)
        self._unanswered = 0
        for run in running.values():
            if not run.ended:
                self._end(run, events.ERROR, "the fork server died; the test did not finish")
            run.eof = True
            if run.exit_status is None:
                self._exited(run, -1)

    def _read(self, sel: selectors.BaseSelector, running: dict, key: str) -> None:
        run = running[key]
        try:
            chunk = os.read(run.rfd, 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            run.eof = True
            self._close_pipe(sel, run)
            return
        for line in run.buffer.feed(chunk):
            try:
                event = events.decode(line)
            except events.EventError as exc:
                LOG.warning("test %s sent a bad event line (%s): %.200r", run.spec.name, exc, line)
                continue
            self._child_event(run, event)

    def _child_event(self, run: _Running, event: dict) -> None:
        if run.ended:
            return
        event["uid"] = run.spec.uid
        if event["type"] == events.TEST_START:
            run.exec_seen = True
            if event.get("timeout") and not run.timed_out:  # (else: the grace's end)
                run.deadline = run.started + float(event["timeout"])
            run.pid = event.get("pid") or run.pid
        elif event["type"] == events.TEST_END:
            run.ended = True
            run.end_time = time.time()
            if run.timed_out:
                if event.get("status") != events.INTERRUPT:
                    # Whatever it made of the interruption, the test reached its timeout.
                    event["status"] = events.INTERRUPT
                    event["fail_reason"] = events.TIMEOUT_REASON
                # What it started goes with it, as at a timeout it did not survive.
                self._kill(run)
            elif run.stopping and event.get("status") in (events.FAIL, events.ERROR):
                # Failing because the job pulled the rug: say so.
                event["status"] = events.INTERRUPT
                event["fail_reason"] = f"interrupted by the user ({event.get('fail_reason')})"
            # Reported once its process and what it left behind are gone (see _finish).
            run.end_event = event
            return
        self.sink(event)

    # ending ----------------------------------------------------------------
    def _end(self, run: _Running, status: str, reason: str) -> None:
        if run.ended:
            return
        run.ended = True
        run.end_time = time.time()
        event = events.synthetic_end(run.spec.uid, status, reason, start=run.started)
        event["whiteboard"] = _read_text(Path(run.spec.logdir) / "whiteboard")
        self.sink(event)

    def _report_end(self, run: _Running) -> None:
        """Report the test.end the test sent, if it is still held."""
        event, run.end_event = run.end_event, None
        if event is not None:
            self.sink(event)

    @staticmethod
    def _exited(run: _Running, status: int) -> None:
        run.exit_status = status
        run.exit_time = time.time()

    @staticmethod
    def _signal(run: _Running, sig: int, group: bool = True) -> None:
        """Signal the test's whole process group (or its own process), if it still runs."""
        if run.pid and run.exit_status is None:
            if group:
                signal_group(run.pid, sig)
                return
            try:
                os.kill(run.pid, sig)
            except ProcessLookupError:
                pass
            except PermissionError as exc:
                LOG.warning("cannot signal test process %d: %s", run.pid, exc)

    def _kill(self, run: _Running) -> None:
        """SIGKILL the test's process group: the test, or what it left behind."""
        if run.exit_status is None:
            run.killed = True
            self._signal(run, signal.SIGKILL)
        elif run.leftovers is not None:
            run.leftovers.kill()
            self._leftovers_ended(run)

    def _time_out(self, run: _Running, now: float) -> None:
        """The test reached its timeout: tell it, and kill it if it does not end in time.

        An instrumented test's own process gets events.TIMEOUT_SIGNAL (its tearDown runs,
        what it started lives on until it ends); a simple test's group gets SIGTERM.
        """
        limit = (run.deadline or now) - run.started
        run.timed_out = True
        run.deadline = now + TIMEOUT_GRACE
        self._debug_log(run, f"timeout of {limit:g} s reached: interrupting the test")
        if run.spec.kind == SIMPLE:
            self._signal(run, signal.SIGTERM)
        else:
            self._signal(run, events.TIMEOUT_SIGNAL, group=False)

    def _check_deadlines(self, running: dict) -> None:
        now = time.time()
        for run in running.values():
            if not run.ended and run.deadline is not None and now >= run.deadline:
                if not run.timed_out:
                    self._time_out(run, now)
                    continue
                self._kill(run)
                output = events.output_lines(run.spec.logdir) if run.spec.kind == SIMPLE else []
                killed = f"not ended {TIMEOUT_GRACE:g} s after its timeout: killed"
                self._debug_log(run, *output, killed)
                self._end(run, events.INTERRUPT, events.TIMEOUT_REASON)
            elif (
                run.ended
                and run.exit_status is None
                and run.end_time is not None
                and now - run.end_time > EXIT_GRACE
            ):
                self._kill(run)
                self._exited(run, -signal.SIGKILL)
            if (
                not run.eof
                and run.leftovers is None
                and run.exit_time is not None
                and now - run.exit_time > EXIT_GRACE
            ):
                # A process outside the test's process group holds the event pipe: stop
                # listening. (One inside it was ended with the group.)
                run.eof = True

    def _end_leftovers(self, running: dict) -> None:
        for run in running.values():
            if run.leftovers is not None and run.leftovers.poll():
                self._leftovers_ended(run)

    def _leftovers_ended(self, run: _Running) -> None:
        leftovers, run.leftovers = run.leftovers, None
        if leftovers is not None:
            line = leftovers.report()
            LOG.info("test %s: %s", run.spec.name, line)
            self._debug_log(run, line)

    def _retire(self, sel: selectors.BaseSelector, running: dict) -> list[_Running]:
        """Take out the tests that are all gone (process, pipe, leftovers); they are returned."""
        done = [
            k
            for k, r in running.items()
            if r.exit_status is not None and r.eof and r.leftovers is None
        ]
        retired = [running.pop(key) for key in done]
        for run in retired:
            self._close_pipe(sel, run)
        return retired

    def _finish(self, run: _Running) -> None:
        """Report the end of a retired test: its own, or one made from how its process ended."""
        self._report_end(run)
        if not run.ended and run.stopping:
            self._end(run, events.INTERRUPT, "interrupted by the user")
        elif not run.ended and run.spec.kind == SIMPLE and run.exec_seen:
            self._simple_end(run)
        elif not run.ended and run.timed_out:  # it died of it before it could say
            self._end(run, events.INTERRUPT, events.TIMEOUT_REASON)
        elif not run.ended:
            status = run.exit_status
            how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
            self._end(run, events.ERROR, f"the test process died ({how}) before the test ended")

    def _simple_end(self, run: _Running) -> None:
        """A simple test (the child exec'd it): PASS on exit status 0, else FAIL.

        Its stdout and stderr go into its debug.log too, as in Avocado.
        """
        status = run.exit_status or 0
        if run.timed_out:
            outcome, reason = events.INTERRUPT, events.TIMEOUT_REASON
        elif status == 0:
            outcome, reason = events.PASS, None
        elif status < 0:
            outcome, reason = events.FAIL, f"killed by signal {-status}"
        else:
            outcome, reason = events.FAIL, f"exit status {status}"
        end = f"{outcome} {run.spec.name}" + (f": {reason}" if reason else "")
        output = events.output_lines(run.spec.logdir)
        self._debug_log(run, *output, f"exit status {status}", end)
        self._end(run, outcome, reason)

    @staticmethod
    def _debug_log(run: _Running, *lines: str) -> None:
        """Add the runner's own lines to the test's debug.log (its process is gone)."""
        error = events.append_debug_log(run.spec.logdir, *lines)
        if error is not None:
            LOG.warning("cannot write %s/debug.log: %s", run.spec.logdir, error)

    @staticmethod
    def _close_pipe(sel: selectors.BaseSelector, run: _Running) -> None:
        # Once closed, the number may belong to the next test's pipe: forget it at once.
        if run.rfd < 0:
            return
        sel.unregister(run.rfd)
        os.close(run.rfd)
        run.rfd = -1

    def _grace(self, running: dict) -> float:
        """SIGTERM to SIGKILL: longer while a multi-host test stops its workers."""
        if any(run.spec.multihost for run in running.values()):
            return max(self.stop_grace, MULTIHOST_STOP_GRACE)
        return self.stop_grace

    def _ask_to_stop(self, running: dict, pending: list) -> None:
        """The job is interrupted: tests not started never will be; running ones get SIGTERM.

        An instrumented test then ends INTERRUPT after its tearDown, a multi-host test
        stops its workers and keeps their results; SIGKILL follows after the grace.
        """
        reason = "interrupted by the user"
        while pending:
            spec = pending.pop()
            self.sink({"type": events.TEST_SKIPPED, "uid": spec.uid, "reason": reason})
        for run in running.values():
            run.stopping = True
            self._signal(run, signal.SIGTERM)

    def _watching(self, sink: EventSink) -> EventSink:
        """`sink`, noting the first test that ends without passing (for failfast)."""

        def watch(event: dict) -> None:
            failed = event.get("status") in events.FAILED_STATUSES
            if event.get("type") == events.TEST_END and failed and self.failed is None:
                name = event.get("name") or self._names.get(event.get("uid"), "a test")
                self.failed = f"failfast: {name} ended {event.get('status')}"
            sink(event)

        return watch

    def _skip(self, pending: list, reason: str) -> None:
        while pending:
            spec = pending.pop()
            self.sink({"type": events.TEST_SKIPPED, "uid": spec.uid, "reason": reason})

    def _interrupt(self, running: dict, pending: list, reason: str) -> None:
        for run in running.values():
            self._kill(run)
            self._report_end(run)
            self._end(run, events.INTERRUPT, reason)
        while pending:
            spec = pending.pop()
            self.sink({"type": events.TEST_SKIPPED, "uid": spec.uid, "reason": reason})

    @staticmethod
    def _next_timeout(running: dict) -> float:
        now = time.time()
        deadlines = [r.deadline for r in running.values() if r.deadline and not r.ended]
        soonest = min(deadlines, default=now + 0.2)
        wait = max(0.0, min(0.2, soonest - now))
        if any(r.leftovers is not None for r in running.values()):
            wait = min(wait, 0.02)  # they usually go at once on SIGTERM
        return wait


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""
