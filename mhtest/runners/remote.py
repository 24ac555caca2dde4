"""The RemoteTestRunner: runs TestSpecs on a host over SSH and streams their events back.

For one host, on a warm host cache, one SSH command starts the executor
(mhtest.runners.launch: the startup probe, installing mhtest on a cold host). The test
files, unless cached there, go on its stdin as one tar stream, sent a block at a time
(Ctrl-C stops it between two); its events come back on its stdout (mhtest.runners.reports
takes them in), and each test's results directory arrives as `test.files` events just
before the test's end, so it is on disk here before the end is recorded. Round trips per
host, warm: connect, then one exec.

The tests run detached on the host and the executor streams their journal: a dropped
connection does not end them. This runner then waits for the host (up to
`reconnect_timeout`, mhtest.runners.reattach) and follows the journal again from the byte
it got to, so each event and result arrives once; a host not back in time ends its tests
ERROR ("lost h2 at 12:03:04, not back within 300 s"). Once the run's end arrives, the
host is told it may go: it removes the run and leaves nothing behind.

A test may ask for its host's reboot (mhtest.runners.reboot: test.reboot in the journal,
after the test's results so far). This runner then waits for the host's other running
tests to end, reboots the host (Host.reboot, which waits for a new boot id), and starts a
new run of the test (its results directory put back, its reboot count one higher) and of
the tests not started yet; the test's results so far are kept here only if it never gets
to run again (a stop, a failed reboot).

Ctrl-C sends the executor a stop message, which stops its tests (they are reported
INTERRUPT with their results); a second channel kills the run only if it does not end
within STOP_GRACE, which is longer than the executor gives its tests
(mhtest.runners.executor.STOP_GRACE) and shorter than whoever waits for this runner
(mhtest.runners.fanout.INTERRUPT_GRACE).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import socket
import threading
import time
from typing import Any, Callable

from mhtest import events
from mhtest.runners import reattach, reboot, untrusted
from mhtest.runners.exec_stream import ExecStream
from mhtest.runners.launch import PROBE_TIMEOUT, Interrupted, Launcher, Sources
from mhtest.runners.reports import HostReports
from mhtest.spec import TestSpec

LOG = logging.getLogger(__name__)
EventSink = Callable[[dict], None]
#: What the executor's fork server imports ahead when the tests use sync (workers of a
#: multi-host test): it does so while the executor reads its input.
SYNC_PRELOAD = ("zmq", "mhtest.sync.client")
#: How often a send that waits for the host looks at the stop (seconds).
SEND_POLL = 0.5
#: After a stop, how long the executor gets to end its tests and report them; results
#: still arriving then get RESULTS_GRACE after each piece.
STOP_GRACE = 8.0
RESULTS_GRACE = 3.0
#: How long a host whose connection dropped after all its tests reported is waited for,
#: to tell its run that everything arrived (it goes at once then).
TIDY_WAIT = 15.0
#: The longest reboot command a host may ask for (a test's `reboot(command)`).
MAX_REBOOT_COMMAND = 4096


class RemoteTestRunner:
    """Runs specs on one host: `run(specs)` returns when all have ended or failed."""

    def __init__(
        self,
        host: Any,
        sink: EventSink,
        stop: threading.Event,
        *,
        python: str = "python3",
        max_parallel: int | None = None,
        remote_cache: str | None = None,
        sources: Sources | None = None,
        max_results: int | None = None,
        payload: Any = None,
        reconnect_timeout: float = reattach.DEFAULT_TIMEOUT,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self.host = host
        self.sink = sink
        self.stop = stop
        self.max_parallel = max_parallel
        self.launcher = Launcher(host, stop, self._phase, python, remote_cache, sources)
        self.payload = payload  # a mhtest.runners.payload.Payload (built here when None)
        self.max_results = max_results or untrusted.MAX_RESULTS
        self.reports = HostReports(host.name, sink, self.max_results)
        #: How long a host whose connection dropped is waited for (0: not at all), and
        #: what to do each time it is back (re-open the sync forward, …).
        self.reconnect_timeout = max(0.0, float(reconnect_timeout))
        self.on_reconnect = on_reconnect
        self.run_id = ""
        self.offset = 0  # bytes of the run's journal received
        self.finished = False  # its run.end arrived
        self._killed = False
        #: A test's reboot, asked for and not done yet: (its uid there, reboot command).
        self.reboot_wanted: tuple[int, str | None] | None = None
        self.reboots: dict[int, int] = {}  # reboots of each test (by its uid there)
        self._resume: list[dict] = []  # what the next run's header says to resume

    def run(self, specs: list[TestSpec]) -> None:
        try:
            self._run(specs)
        except Interrupted:
            self.reports.fail_rest(specs, "interrupted by the user", events.INTERRUPT)
        except Exception as exc:  # noqa: BLE001 - any host fault ends this host's tests only
            LOG.debug("%s: remote run failed", self.host.name, exc_info=True)
            self.reports.fail_rest(specs, events.one_line(exc, self.host.name))

    def _run(self, specs: list[TestSpec]) -> None:
        from mhtest.places import tests_dirs
        from mhtest.runners import payload as payload_mod

        paths = [s.path for s in specs if s.path]
        files = self.payload or payload_mod.build(paths, dirs=tests_dirs(specs))
        remote_specs = files.remote_specs(specs)
        preload = SYNC_PRELOAD if any("MHTEST_SYNC_ADDRESS" in s.env for s in specs) else ()
        by_uid = {s.uid: (local, s) for local, s in zip(specs, remote_specs)}
        proc, stream = self._begin(files, remote_specs, preload)
        try:
            while True:
                self._relay(proc, stream, by_uid)
                missing = [s for s in specs if s.uid not in self.reports.ended]
                if self._killed:
                    break
                if self.reboot_wanted is not None and not self._others_running(by_uid):
                    if self.stop.is_set():  # no reboot: its run stops the test, as any
                        self.reports.forget_files(by_uid[self.reboot_wanted[0]][0])
                        self.reboot_wanted = None
                        continue
                    rebooted = self._reboot(proc, files, by_uid, preload)
                    if isinstance(rebooted, str):
                        if not self.stop.is_set():
                            self.reports.fail_rest(missing, rebooted)
                        break
                    proc, stream = rebooted
                    continue
                if self.finished or not missing:
                    if self.reconnect_timeout and self._lost(proc.channel):
                        self._drop(proc)
                        self._tidy_up(by_uid)
                    break
                if self.offset == 0 and stream.no_run:  # it never got its tests
                    proc.close()
                    proc, stream = self._begin(files, remote_specs, preload)
                    continue
                if not self._lost(proc.channel) or not self.reconnect_timeout:
                    if not self.stop.is_set():
                        self.reports.fail_rest(missing, self._why_ended(proc.channel, stream))
                    break
                self._drop(proc)
                back = self._come_back()
                if isinstance(back, str):
                    if not self.stop.is_set():
                        self.reports.fail_rest(missing, back)
                    break
                proc, stream = back
        finally:
            proc.close()
            self.reports.close()
        # Only a stop can leave tests unreported here.
        self.reports.fail_rest(specs, "interrupted by the user", events.INTERRUPT)

    def _begin(self, files: Any, specs: list[TestSpec], preload: tuple) -> tuple[Any, ExecStream]:
        """Start a run of `specs` on the host (a new run id), send it its input."""
        started = time.monotonic()
        self.run_id, self.offset = secrets.token_hex(8), 0
        proc, stream, cached = self.launcher.start(
            self.run_id, self.reconnect_timeout, preload, files.key
        )
        LOG.info("%s: executor started in %.2f s", self.host.name, time.monotonic() - started)
        try:
            if not cached and files.key:
                self._phase(f"sending the tests ({untrusted.human_size(files.size)})")
            self._send(proc.channel, specs, files, cached)
        except BaseException:
            proc.close()
            raise
        self._phase("running")
        return proc, stream

    @staticmethod
    def _drop(proc: Any) -> None:
        """Close a channel whose connection is lost, and the connection (it may not know
        yet, and the next one must be new)."""
        dead = proc.channel.get_transport()
        proc.close()
        if dead is not None:
            dead.close()

    def _come_back(self) -> tuple[Any, ExecStream] | str:
        """The connection dropped: wait for the host, then follow the run again.

        When the host is not back within the reconnect timeout (or the run was stopped
        meanwhile): why its tests end, instead.
        """
        name, timeout = self.host.name, self.reconnect_timeout
        lost_at = getattr(self.host, "lost_at", None) or time.time()
        LOG.warning(
            "%s: connection lost at %s; reconnecting for up to %g s",
            name,
            reattach.clock(lost_at),
            timeout,
        )
        self.sink(
            events.host_phase(name, f"reconnecting (lost at {reattach.clock(lost_at)})", timeout)
        )
        since = time.monotonic()
        deadline = since + timeout
        try:
            while reattach.wait_back(self.host, deadline, self.stop, STOP_GRACE):
                try:
                    if self.on_reconnect is not None:
                        self.on_reconnect()
                    back = self.launcher.follow(self.run_id, self.offset, deadline)
                except Exception as exc:  # noqa: BLE001 - it dropped again, …: try again
                    LOG.info("%s: not back yet: %s", name, exc)
                    self.stop.wait(reattach.BACKOFF_MAX)
                    continue
                LOG.warning(
                    "%s: back after %.1f s; following its run from byte %d",
                    name,
                    time.monotonic() - since,
                    self.offset,
                )
                return back
        finally:
            self.sink(events.host_phase(name, "running", 0))
        reason = reattach.lost_reason(name, lost_at, timeout)
        LOG.error("%s", reason)
        return reason

    def _reboot(
        self, proc: Any, files: Any, by_uid: dict, preload: tuple
    ) -> tuple[Any, ExecStream] | str:
        """Reboot the host for the test that asked, then run it again and the tests that
        did not start: the new run's (proc, stream), or why the host's tests end."""
        assert self.reboot_wanted is not None
        uid, command = self.reboot_wanted
        self.reboot_wanted = None
        local, remote = by_uid[uid]
        count = self.reboots[uid]
        name = self.host.name
        old_run = self.run_id
        self._drop(proc)  # the host goes down: this connection with it
        timeout = self.reconnect_timeout or reattach.DEFAULT_TIMEOUT
        LOG.warning("%s: reboot %d, for %s", name, count, local.name)
        self.sink(events.host_phase(name, f"rebooting for {local.name} (reboot {count})", timeout))
        try:
            error = self._wait_reboot(command, timeout)
        finally:
            self.sink(events.host_phase(name, "running", 0))
        if error:
            if not self.stop.is_set():
                LOG.error("%s: reboot %d failed: %s", name, count, error)
            self.reports.results_done(local)  # what it had before: kept
            return f"{name}: reboot {count} for {local.name} failed: {error}"
        LOG.warning("%s: back after reboot %d; running %s again", name, count, local.name)
        self.reports.forget_files(local)  # they come whole with its end
        if self.on_reconnect is not None:
            self.on_reconnect()
        again = dataclasses.replace(remote, env={**remote.env, reboot.COUNT_VAR: str(count)})
        later = [there for here, there in by_uid.values() if here.uid not in self.reports.started]
        self.reports.resumed.add(local.uid)
        self._resume = [{"run": old_run, "test": uid}]
        return self._begin(files, [again, *later], preload)

    def _wait_reboot(self, command: str | None, timeout: float) -> str | None:
        """Host.reboot(), stopped waiting for by a stop: None, or why it failed."""
        outcome: dict[str, str] = {}

        def reboot_host() -> None:
            try:
                self.host.reboot(timeout=timeout, reboot_cmd=command)
            except Exception as exc:  # noqa: BLE001 - any failure ends the host's tests
                outcome["error"] = events.one_line(exc, self.host.name)

        worker = threading.Thread(target=reboot_host, name=f"reboot-{self.host.name}")
        worker.daemon = True
        worker.start()
        while worker.is_alive():
            if self.stop.wait(0.2):
                return "interrupted by the user"
        return outcome.get("error")

    def _asked_reboot(self, event: dict, by_uid: dict) -> None:
        """A test asked for its host's reboot (checked: the host is not trusted)."""
        uid, command = event.get("uid"), event.get("command")
        pair = by_uid.get(uid)
        if pair is None or pair[0].uid in self.reports.ended or self.reboot_wanted is not None:
            LOG.warning("%s: reboot request for no running test: %.200r", self.host.name, event)
            return
        if command is not None and (
            not isinstance(command, str) or len(command) > MAX_REBOOT_COMMAND or "\0" in command
        ):
            LOG.warning(
                "%s: not a reboot command, the usual one instead: %.200r", self.host.name, command
            )
            command = None
        count = self.reboots.get(uid, 0) + 1
        if count > reboot.MAX_REBOOTS:  # (its host's desk refuses these: this one is hostile)
            limit = reboot.MAX_REBOOTS
            why = f"{self.host.name}: {pair[0].name} asked for reboot {count}, over {limit}"
            self.reports.fail_rest([pair[0]], why)
            return
        self.reboots[uid] = count
        self.reboot_wanted = (uid, command)
        self.sink(
            {"type": events.TEST_REBOOT, "uid": pair[0].uid, "host": self.host.name, "count": count}
        )

    def _others_running(self, by_uid: dict) -> bool:
        """Tests of this host started and not ended, besides the one that asked to reboot."""
        if self.reboot_wanted is None:
            return True
        asking = by_uid[self.reboot_wanted[0]][0].uid
        return bool(self.reports.started - self.reports.ended - {asking})

    def _tidy_up(self, by_uid: dict) -> None:
        """Every test reported, but the connection dropped before the run heard "done":
        follow it again briefly to say it (else it waits for us for its keep time)."""
        deadline = time.monotonic() + TIDY_WAIT
        if not reattach.wait_back(self.host, deadline, self.stop, 0.0):
            LOG.info("%s: not back within %g s to let its run go", self.host.name, TIDY_WAIT)
            return
        try:
            proc, stream = self.launcher.follow(self.run_id, self.offset, deadline)
        except Exception as exc:  # noqa: BLE001 - it only waits for us a while longer
            LOG.info("%s: cannot let its run go: %s", self.host.name, exc)
            return
        try:
            self._relay(proc, stream, by_uid)
        finally:
            proc.close()

    def _send(self, channel: Any, specs: list[TestSpec], files: Any, cached: bool) -> None:
        """The executor's input: a header line (specs, payload), then the payload's tar.

        The tar goes only when the host does not hold it yet; a stop ends the sending
        (Interrupted) within SEND_POLL seconds, whatever the host does.
        """
        from mhtest.runners.payload import LARGE
        from mhtest.runners.untrusted import human_size

        size = 0 if cached or not files.key else files.size
        header = {
            "max_parallel": self.max_parallel,
            "payload": {"key": files.key, "size": size},
            "specs": [s.to_dict() for s in specs],
        }
        if self._resume:
            header["resume"], self._resume = self._resume, []
        channel.settimeout(SEND_POLL)
        try:
            self._write(channel, json.dumps(header).encode() + b"\n")
            if not size:
                return
            if size >= LARGE:
                LOG.warning(
                    "%s: sending %s of test files (%d files; cached there for the next runs); "
                    "leave out what the tests do not need with .mhtestignore or --remote-exclude",
                    self.host.name,
                    human_size(size),
                    files.files,
                )
            started = time.monotonic()
            for block in files.blocks():
                self._write(channel, block)
            took = time.monotonic() - started
            LOG.info(
                "%s: sent %s of test files in %.2f s (%.0f MB/s)",
                self.host.name,
                human_size(size),
                took,
                size / 1e6 / max(took, 1e-6),
            )
        except (OSError, EOFError) as exc:
            # The executor is gone: its stderr (read by the relay) says why.
            LOG.debug("%s: sending the tests failed: %s", self.host.name, exc)

    def _phase(self, phase: str) -> None:
        self.sink(events.host_phase(self.host.name, phase))

    def _write(self, channel: Any, data: bytes) -> None:
        """All of `data` to the channel, as the host's window allows; Interrupted on a stop."""
        view = memoryview(data)
        waited_since = time.monotonic()
        while view:
            if self.stop.is_set():
                raise Interrupted()
            try:
                sent = channel.send(view)
            except socket.timeout:
                if time.monotonic() - waited_since > PROBE_TIMEOUT:
                    raise OSError(f"no room on the channel for {PROBE_TIMEOUT:g} s") from None
                continue
            if not sent:
                raise EOFError("the channel is closed")
            view = view[sent:]
            waited_since = time.monotonic()

    def _tell(self, channel: Any, message: bytes) -> None:
        """A message to the follower on the host (mhtest.runners.attach); lost if it is gone."""
        try:
            channel.send(message)
        except (OSError, EOFError, socket.timeout) as exc:
            LOG.debug("%s: cannot tell the executor %r: %s", self.host.name, message, exc)

    @staticmethod
    def _lost(channel: Any) -> bool:
        """True when the channel ended without the executor's exit: its connection ended it.

        sshd always sends a command's exit status (or signal) before closing its channel.
        """

        def told() -> bool:
            return channel.exit_status != -1 or bool(getattr(channel, "exit_signal", None))

        deadline = time.monotonic() + 5  # the exit status follows the end of output
        while not told() and not channel.closed and time.monotonic() < deadline:
            transport = channel.get_transport()
            if transport is None or not transport.is_active():
                break
            time.sleep(0.02)
        return not told()

    def _why_ended(self, channel: Any, stream: ExecStream) -> str:
        if self._lost(channel):
            lost = getattr(self.host, "lost", None)  # an SSHHost's keepalive says when
            return lost or f"connection to {self.host.name} lost at {time.strftime('%H:%M:%S')}"
        signal_name = getattr(channel, "exit_signal", None)  # recorded by SSHHost's transport
        if signal_name:
            how = f"killed by SIG{signal_name}"
        else:
            how = f"exit status {channel.exit_status}"
        why = stream.stderr_line()
        return (
            f"{self.host.name}: the remote runner ended before the test did "
            f"({how}{': ' + why if why else ''})"
        )

    # relaying ------------------------------------------------------------------------------

    def _relay(self, proc: Any, stream: ExecStream, by_uid: dict) -> None:
        """Events from the run's journal until the stream ends (run.end, a drop, a kill)."""
        kill_at: float | None = None
        next_ping = time.monotonic() + reattach.PING_EVERY
        if self.finished:  # (followed again after a drop that came after its end)
            self._tell(proc.channel, reattach.DONE)
        while not stream.eof:
            if self.reboot_wanted is not None and not self._others_running(by_uid):
                return  # the host may go down now
            now = time.monotonic()
            if self.stop.is_set() and kill_at is None:
                kill_at = now + STOP_GRACE
                LOG.info("%s: stopping the remote tests", self.host.name)
                self._tell(proc.channel, reattach.STOP)  # the executor stops its tests
            if kill_at is not None and self.reports.last_piece:
                kill_at = max(kill_at, self.reports.last_piece + RESULTS_GRACE)
            if kill_at is not None and now > kill_at:
                LOG.warning(
                    "%s: executor still running %g s after the stop: killing it",
                    self.host.name,
                    STOP_GRACE,
                )
                proc.pgid = stream.runner or proc.pgid or stream.pgid  # (its stderr was read here)
                proc.kill()
                self._killed = True
                return
            if now > next_ping:
                self._tell(proc.channel, reattach.PING)
                next_ping = now + reattach.PING_EVERY
            for line in stream.read(0.2):
                self.offset += len(line) + 1  # (its newline)
                try:
                    event = events.decode(line)
                except events.EventError as exc:
                    self.reports.bad_line(exc, line)
                    continue
                if event["type"] == events.RUN_END:
                    self.finished = True
                    self._tell(proc.channel, reattach.DONE)  # it may go
                    continue
                if event["type"] == events.TEST_REBOOT:
                    self._asked_reboot(event, by_uid)
                    continue
                self.reports.event(event, by_uid)
        LOG.debug("%s: executor stderr: %s", self.host.name, stream.stderr[-1000:])
