"""The RemoteTestRunner: runs TestSpecs on a host over SSH and streams their events back.

For one host, on a warm host cache, one SSH command does everything: a shell script
finds the interpreter, checks the cached environment (mhtest.hosts.bootstrap) and
whether the host holds the tests' files already (mhtest.runners.payload) and, when it
is ready, execs the executor (mhtest.runners.executor) in the same channel. The test
files, unless cached there, go on its stdin as one tar stream, sent a block at a time
(Ctrl-C stops it between two); its events come back on its stdout, and each test's
results directory arrives as `test.files` events just before the test's end, so it is
on disk here before the end is recorded. The executor works in private directories
that it removes itself: nothing else to clean up.

Only a cold host (nothing cached, or other sources) costs more: the probe's output
says what is missing, bootstrap installs it, and the command is started again.

Round trips per host, warm: connect, then one exec. Ctrl-C closes the executor's
stdin, which stops its tests (they are reported INTERRUPT with their results); a
second channel kills it only if it does not end within STOP_GRACE, which is longer
than the executor gives its tests (mhtest.runners.executor.STOP_GRACE) and shorter
than whoever waits for this runner (mhtest.runners.fanout.INTERRUPT_GRACE).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from mhtest import events
from mhtest.runners import untrusted
from mhtest.runners.exec_stream import ExecStream
from mhtest.spec import TestSpec

LOG = logging.getLogger(__name__)
EventSink = Callable[[dict], None]
#: Printed by the launch script right before it execs the executor.
EXEC_MARK = b"MHTEST-EXEC"
#: After it, "cached" when the host holds the payload (KEY: hex digits, nothing to quote).
LAUNCH = (
    '[ "$ok" = 1 ] && {{ p=; [ -f "$cache/payload-{key}/.mhtest-ready" ] && p=cached; '
    'echo "MHTEST-EXEC $p"; export PYTHONPATH="$src"; '
    'exec "$env/bin/python" -m mhtest.runners.executor --cache "$cache"{preload}; }}'
)
#: What the executor's fork server imports ahead when the tests use sync (workers of a
#: multi-host test): it does so while the executor reads its input.
SYNC_PRELOAD = ("zmq", "mhtest.sync.client")
#: Bound on the probe's answer (a loaded host runs its login scripts first).
PROBE_TIMEOUT = 120.0
#: Bound on installing mhtest on a cold host.
INSTALL_TIMEOUT = 900.0
#: How often a send that waits for the host looks at the stop (seconds).
SEND_POLL = 0.5
#: After a stop, how long the executor gets to end its tests and report them; results
#: still arriving then get RESULTS_GRACE after each piece.
STOP_GRACE = 8.0
RESULTS_GRACE = 3.0
#: Host-side cache directory, when not the hosts' ~/.cache/mhtest.
ENV_REMOTE_CACHE = "MHTEST_REMOTE_CACHE"
#: How many lines that are not events are logged per host.
MAX_BAD_LINES = 10


class Interrupted(Exception):
    """The job was stopped before the host's tests began."""


@dataclass
class Sources:
    """What every host needs from this machine to run mhtest; built once per job."""

    src_key: str
    archive: bytes
    deps_key: str

    @classmethod
    def build(cls) -> Sources:
        from mhtest.hosts import bootstrap

        src_key, archive = bootstrap.source_archive()
        return cls(src_key=src_key, archive=archive, deps_key=bootstrap.deps_key())


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
    ) -> None:
        from mhtest.hosts.bootstrap import REMOTE_CACHE

        self.host = host
        self.sink = sink
        self.stop = stop
        self.python = python
        self.max_parallel = max_parallel
        self.remote_cache = remote_cache or os.environ.get(ENV_REMOTE_CACHE) or REMOTE_CACHE
        self.sources = sources
        self.payload = payload  # a mhtest.runners.payload.Payload (built here when None)
        self.max_results = max_results or untrusted.MAX_RESULTS
        self.ended: set[int] = set()
        self.started: set[int] = set()
        self._spools: dict[int, tuple[TestSpec, untrusted.ResultsSpool]] = {}
        self._files_done: set[int] = set()
        #: Why a test's results were refused: its end becomes ERROR with that reason.
        self._refused: dict[int, str] = {}
        self._bad_lines = 0
        self._info_seen = False
        self._last_piece = 0.0  # when a piece of results last arrived (monotonic)
        self._nested_made: dict[int, int] = {}

    def run(self, specs: list[TestSpec]) -> None:
        try:
            self._run(specs)
        except Interrupted:
            self._fail_rest(specs, "interrupted by the user", events.INTERRUPT)
        except Exception as exc:  # noqa: BLE001 - any host fault ends this host's tests only
            LOG.debug("%s: remote run failed", self.host.name, exc_info=True)
            self._fail_rest(specs, events.one_line(exc, self.host.name))

    def _run(self, specs: list[TestSpec]) -> None:
        from mhtest.runners import payload as payload_mod

        started = time.monotonic()
        from mhtest.places import tests_dirs

        paths = [s.path for s in specs if s.path]
        files = self.payload or payload_mod.build(paths, dirs=tests_dirs(specs))
        remote_specs = files.remote_specs(specs)
        uses_sync = any("MHTEST_SYNC_ADDRESS" in s.env for s in specs)
        proc, stream, cached = self._launch(SYNC_PRELOAD if uses_sync else (), files.key)
        LOG.info("%s: executor started in %.2f s", self.host.name, time.monotonic() - started)
        try:
            if not cached and files.key:
                self._phase(f"sending the tests ({untrusted.human_size(files.size)})")
            self._send(proc.channel, remote_specs, files, cached)
            self._phase("running")
            self._relay(proc, stream, {s.uid: (local, s) for local, s in zip(specs, remote_specs)})
            missing = [s for s in specs if s.uid not in self.ended]
            if missing and not self.stop.is_set():
                self._fail_rest(missing, self._why_ended(proc.channel, stream))
        finally:
            proc.close()
            # Results cut off by a lost connection or a stop: keep what arrived.
            for spec, _spool in list(self._spools.values()):
                self._results_done(spec)
        # Only a stop can leave tests unreported here.
        self._fail_rest(specs, "interrupted by the user", events.INTERRUPT)

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
        import socket

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

    def _why_ended(self, channel: Any, stream: ExecStream) -> str:
        transport = channel.get_transport()
        if transport is None or not transport.is_active():
            lost = getattr(self.host, "lost", None)  # an SSHHost's keepalive says when
            if lost or not channel.status_event.is_set():  # (a closed channel is "ready")
                when = time.strftime("%H:%M:%S")
                return lost or f"connection to {self.host.name} lost at {when}"
        else:
            channel.status_event.wait(5)  # the exit status follows the end of output
        signal_name = getattr(channel, "exit_signal", None)  # recorded by SSHHost's transport
        if signal_name:
            how = f"killed by SIG{signal_name}"
        else:
            how = f"exit status {channel.exit_status if channel.exit_status_ready() else 'unknown'}"
        why = stream.stderr_line()
        return (
            f"{self.host.name}: the remote runner ended before the test did "
            f"({how}{': ' + why if why else ''})"
        )

    # starting ------------------------------------------------------------------------------

    def _launch(self, preload: tuple[str, ...] = (), key: str = "") -> tuple[Any, ExecStream, bool]:
        """Start the executor: one command on a warm host; install first on a cold one.

        Returns the process, its stream, and whether the host holds payload `key`.
        """
        from mhtest.hosts import bootstrap
        from mhtest.hosts.errors import HostError

        sources = self.sources or Sources.build()
        # Module names and a hex key only (constants here), so nothing to quote.
        launch = LAUNCH.format(
            key=key or "-", preload=f" --preload {','.join(preload)}" if preload else ""
        )
        script = bootstrap.probe_script(
            self.python, sources.deps_key, sources.src_key, self.remote_cache, then=launch
        )
        for attempt in (1, 2):
            self._phase("checking Python and mhtest")
            proc = self.host.start(script)
            stream = ExecStream(proc.channel)
            found, text, cached = self._read_probe(stream)
            if found:
                return proc, stream, cached
            proc.close()
            probe = bootstrap.parse_probe(self.host, self.python, text)
            if attempt == 2 or (probe["env_ok"] and probe["src_ok"]):
                why = stream.stderr_line() or text.strip().replace("\n", " | ")[-300:]
                raise HostError(f"{self.host.name}: cannot start mhtest there: {why}")
            started = time.monotonic()
            missing = "dependencies and sources" if not probe["env_ok"] else "sources"
            self._phase(f"installing mhtest ({missing})")
            self._interruptible(
                bootstrap.complete,
                self.host,
                probe,
                sources.archive,
                self.remote_cache,
                INSTALL_TIMEOUT,
            )
            what = (("dependencies", probe["env_ok"]), ("sources", probe["src_ok"]))
            LOG.info(
                "%s: mhtest installed in %s (%s, %.2f s)",
                self.host.name,
                self.remote_cache,
                " and ".join(w for w, ok in what if not ok),
                time.monotonic() - started,
            )
        raise AssertionError("unreachable")

    def _interruptible(self, func: Callable[..., Any], *args: Any) -> Any:
        """func(*args) in a thread of its own; a stop drops the host's connection at once.

        For the long steps that wait on the host (installing mhtest there): Ctrl-C must not
        wait for them. What they leave half-done on the host, they clean up or redo.
        """
        done = threading.Event()
        outcome: list[Any] = []

        def call() -> None:
            try:
                outcome.append((True, func(*args)))
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                outcome.append((False, exc))
            finally:
                done.set()

        threading.Thread(target=call, name=f"install-{self.host.name}", daemon=True).start()
        while not done.wait(0.1):
            if self.stop.is_set():
                drop = getattr(self.host, "drop_connection", None)
                if drop is not None:
                    drop()
                raise Interrupted()
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    def _read_probe(self, stream: ExecStream) -> tuple[bool, str, bool]:
        """Read the probe's lines up to EXEC_MARK: (mark seen, what was printed before,
        whether the host holds the payload)."""
        seen: list[bytes] = []
        deadline = time.monotonic() + PROBE_TIMEOUT
        while not stream.eof:
            if self.stop.is_set():
                stream.channel.close()
                raise Interrupted()
            if time.monotonic() > deadline:
                stream.channel.close()
                from mhtest.hosts.errors import HostError

                raise HostError(
                    f"{self.host.name}: no answer from the startup probe within "
                    f"{PROBE_TIMEOUT:g} s",
                    self.host.name,
                )
            lines = stream.read(0.2)
            for i, line in enumerate(lines):
                words = line.split()
                if words[:1] == [EXEC_MARK]:
                    stream.pending = lines[i + 1 :]  # the executor's own output
                    text = b"\n".join(seen).decode("utf-8", "replace")
                    return True, text, words[1:] == [b"cached"]
                seen.append(line)
        return False, b"\n".join(seen).decode("utf-8", "replace"), False

    # relaying ------------------------------------------------------------------------------

    def _relay(self, proc: Any, stream: ExecStream, by_uid: dict) -> None:
        kill_at: float | None = None
        while not stream.eof:
            if self.stop.is_set() and kill_at is None:
                kill_at = time.monotonic() + STOP_GRACE
                LOG.info("%s: stopping the remote tests", self.host.name)
                try:
                    proc.channel.shutdown_write()  # the executor stops its tests on EOF
                except OSError as exc:
                    LOG.debug("%s: cannot close the executor's input: %s", self.host.name, exc)
            if kill_at is not None and self._last_piece:
                kill_at = max(kill_at, self._last_piece + RESULTS_GRACE)
            if kill_at is not None and time.monotonic() > kill_at:
                LOG.warning(
                    "%s: executor still running %g s after the stop: killing it",
                    self.host.name,
                    STOP_GRACE,
                )
                proc.pgid = proc.pgid or stream.pgid  # (its stderr was read here)
                proc.kill()
                return
            for line in stream.read(0.2):
                try:
                    event = events.decode(line)
                except events.EventError as exc:
                    self._bad_line(exc, line)
                    continue
                self._event(event, by_uid)
        LOG.debug("%s: executor stderr: %s", self.host.name, stream.stderr[-1000:])

    def _bad_line(self, exc: Exception, line: bytes) -> None:
        """Log the first few lines that are not events (a host could send any number)."""
        self._bad_lines += 1
        if self._bad_lines <= MAX_BAD_LINES:
            LOG.warning("%s: bad event line (%s): %.200r", self.host.name, exc, line)
        elif self._bad_lines == MAX_BAD_LINES + 1:
            LOG.warning("%s: more bad event lines; no longer logging them", self.host.name)

    def _event(self, event: dict, by_uid: dict[int, tuple[TestSpec, TestSpec]]) -> None:
        if event["type"] == events.HOST_INFO:
            self._host_info(event)
            return
        pair = by_uid.get(event.get("uid"))
        if pair is None or pair[0].uid in self.ended:
            return  # not one of this host's tests, or already ended: nothing more counts
        local, _remote = pair
        kind = event["type"]
        if kind == events.TEST_FILES:
            self._receive_files(local, event)
            return
        if kind == events.TEST_START:
            if local.uid in self.started:
                return
            self.started.add(local.uid)
        elif kind in (events.TEST_END, events.TEST_SKIPPED):
            self.ended.add(local.uid)
            self._results_done(local)
        elif kind == events.TEST_NESTED:
            self._nested(local, event)
            return
        else:
            return  # no other event from a host is used
        event = untrusted.bound_end(event, self.host.name)
        event["host"] = self.host.name
        event["uid"] = local.uid
        refused = self._refused.pop(local.uid, None)
        if refused and kind == events.TEST_END:
            was = event.get("status")
            event.update(
                status=events.ERROR,
                fail_class=None,
                fail_reason=f"{self.host.name}: {refused} (the test itself ended {was})",
            )
        self.sink(event)

    def _nested(self, spec: TestSpec, event: dict) -> None:
        """A result the test made as it ran (a client control file's run_test), bounded.

        Its files come with the test's own, before the test's end.
        """
        made = self._nested_made.get(spec.uid, 0)
        if made >= untrusted.MAX_NESTED:
            if made == untrusted.MAX_NESTED:
                LOG.warning(
                    "%s: %s made over %d results: the rest are left out",
                    self.host.name,
                    spec.name,
                    made,
                )
                self._nested_made[spec.uid] = made + 1
            return
        self._nested_made[spec.uid] = made + 1
        event = untrusted.bound_nested(event, self.host.name)
        event["host"] = self.host.name
        event["uid"] = spec.uid
        self.sink(event)

    def _host_info(self, event: dict) -> None:
        """The host's facts (kernel, distribution, …), once, checked and bounded."""
        from mhtest import sysinfo

        if self._info_seen:
            return
        self._info_seen = True
        facts = sysinfo.bounded(event.get("facts"))
        self.sink({"type": events.HOST_INFO, "host": self.host.name, "facts": facts})

    def _receive_files(self, spec: TestSpec, event: dict) -> None:
        """A piece of the test's results archive: spooled; the last one is extracted."""
        if spec.uid in self._files_done:
            return  # extracted (or refused) already: more from the host is ignored
        if spec.uid not in self._spools:
            parent = os.path.dirname(spec.logdir.rstrip("/")) or "."
            spool = untrusted.ResultsSpool(parent, self.max_results)
            self._spools[spec.uid] = (spec, spool)
        spool = self._spools[spec.uid][1]
        try:
            spool.add(base64.b64decode(event.get("data", ""), validate=True))
        except (ValueError, TypeError) as exc:
            self._refused.setdefault(spec.uid, f"its results data is not base64 ({exc})")
        self._last_piece = time.monotonic()
        self.sink({"type": events.TEST_FILES, "uid": spec.uid})  # progress: its end is coming
        if event.get("last") is True:
            self._results_done(spec)

    def _results_done(self, spec: TestSpec) -> None:
        """Extract what arrived of the test's results (at its last piece, or at its end)."""
        self._files_done.add(spec.uid)
        pending = self._spools.pop(spec.uid, None)
        if pending is None:
            return
        try:
            problem = pending[1].extract(spec.logdir).problem(self.max_results)
        except OSError as exc:
            problem = f"cannot write its results here: {exc}"
        if problem:
            LOG.warning("%s: %s: %s", self.host.name, spec.name, problem)
            self._refused.setdefault(spec.uid, problem)

    def _fail_rest(self, specs: list[TestSpec], reason: str, status: str = events.ERROR) -> None:
        for spec in specs:
            if spec.uid in self.ended:
                continue
            self.ended.add(spec.uid)
            self.sink(events.synthetic_end(spec.uid, status, reason, host=self.host.name))
