"""The local runner: each test in its own child process, forked by the fork server.

It feeds specs to the fork server up to `max_parallel` at a time, reads each child's
events from its own pipe, kills a child's whole process group when its timeout passes
or the job is interrupted, and reports every test's events to one callback. The same
runner serves `mhtest run` here and the executor that a remote host runs.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from mhtest import events
from mhtest.spec import CONTROL_SERVER, SIMPLE, TestSpec

LOG = logging.getLogger(__name__)
EventSink = Callable[[dict], None]
#: How long a child may take to go after its test ended before the runner stops waiting.
EXIT_GRACE = 5.0
#: After an interrupt, how long tests get between SIGTERM and SIGKILL.
STOP_GRACE = 10.0
#: What a multi-host test's process needs before it can connect to its hosts: a job
#: with such a test starts its fork server early, importing these while the job itself
#: starts up. zmq and the remote runner are left out: the test imports them while its
#: SSH connections open (measured faster than waiting for them here).
MULTIHOST_PRELOAD = (
    "mhtest.hosts._paramiko:load",  # paramiko, as mhtest imports it
    "mhtest.hosts.ssh",
    "mhtest.hosts.inventory",
    "mhtest.resolver",
    "mhtest.dispatch",
    "mhtest.runners.multihost",
    "mhtest.runners.fanout",
)
#: What a server control file's process needs (mhtest.autoserv): the hosts' modules, the
#: remote runner (imported here once, not again in each task the control file forks), and
#: the control file's own machinery.
CONTROL_PRELOAD = (
    *MULTIHOST_PRELOAD[:5],
    "mhtest.plugins.spawner_ssh",
    "mhtest.runners.remote",
    "mhtest.runners.executor",
    "mhtest.hosts.bootstrap",
    "mhtest.sysinfo",
    "mhtest.autoserv.control",
    "mhtest.autoserv.namespace",
)


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
    end_time: float | None = None
    stopping: bool = False  # asked to stop (SIGTERM) because the job is interrupted
    exec_seen: bool = False  # test.start arrived: a simple test's child then exec'd it


class _ForkedProcess:
    """The few Popen methods ForkServer uses, for a process made with os.fork()."""

    def __init__(self, pid: int, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.005)
        return self.returncode  # type: ignore[return-value]

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)


def _serve_forked(sock: socket.socket, preload: Sequence[str]) -> None:
    """The body of a fork server made by os.fork(): as `python -m mhtest.runners.forkserver`."""
    code = 1
    try:
        os.setsid()  # Ctrl-C reaches the job, which decides
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        from mhtest.runners import forkserver

        forkserver.run(sock, list(preload))
        code = 0
    except BaseException:  # noqa: BLE001 - say why, then leave
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


class ForkServer:
    """A handle on the fork server process (see mhtest.runners.forkserver).

    With `fork=True` (only while this process has a single thread) the server is a fork
    of this process rather than a new interpreter: it starts without Python's start-up
    and imports. The CLI starts a job's server that way at its very start (see
    fork_server_ahead), and each remote executor its own.
    """

    def __init__(self, preload: Sequence[str] = (), fork: bool = False) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = parent
        self.spawned = False
        if fork and threading.active_count() == 1:
            pid = os.fork()
            if pid == 0:
                parent.close()
                _serve_forked(child, preload)
            child.close()
            self.proc: Any = _ForkedProcess(pid, ["mhtest fork server", *preload])
            return
        env = dict(os.environ)
        # The fork server must import this very mhtest, wherever it was imported from.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        command = [sys.executable, "-m", "mhtest.runners.forkserver", str(child.fileno())]
        if preload:
            command += ["--preload", ",".join(preload)]
        self.proc = subprocess.Popen(
            command,
            pass_fds=[child.fileno()],
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the job, which decides
        )
        child.close()

    def spawn(self, key: str, spec_path: str, event_fd: int, simple: bool = False) -> None:
        """Start the test in `spec_path`; `simple` for a simple test (no Python in its process)."""
        request = {"op": "spawn", "key": key, "spec": spec_path, "simple": simple}
        message = json.dumps(request).encode()
        self.spawned = True
        socket.send_fds(self.sock, [message], [event_fd])

    def receive(self) -> dict | None:
        try:
            data = self.sock.recv(65536)
        except OSError:
            return None
        return json.loads(data) if data else None

    def close(self, timeout: float = 10.0) -> None:
        """Close the socket (the server then kills its children and exits); wait for it.

        Safe to call again: a job closes a fork server it started early even if its
        runner already did. One that never spawned has no children: it is killed at once
        rather than waited for (it may still be importing its preload).
        """
        try:
            self.sock.close()
            if not self.spawned and self.proc.poll() is None:
                self.proc.kill()
        finally:
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                LOG.warning("fork server %d did not exit; killing it", self.proc.pid)
                self.proc.kill()
                self.proc.wait(timeout=timeout)


def fork_server_ahead(argv: Sequence[str]) -> ForkServer | None:
    """For `mhtest run ARGV`: a fork server started before the job loads its plugins.

    When a test file named in ARGV mentions a multi-host base class (a text search: the
    resolver decides later, and this server serves any local test as well), it starts
    now and imports MULTIHOST_PRELOAD on the other CPU while the job starts up (for a
    server control file, `*.srv` or --control, CONTROL_PRELOAD). Else,
    when the tests run here (no --hosts, no --inventory), a plain one starts now. None
    for a job that sends its tests to hosts.
    """
    from mhtest.resolver import MULTIHOST_BASES

    if any(arg.endswith(".srv") or arg.startswith("--control") for arg in argv):
        return ForkServer(preload=CONTROL_PRELOAD, fork=True)  # a server control file
    needles = [name.encode() for name in MULTIHOST_BASES]
    for arg in argv:
        path = arg.split(":", 1)[0]  # file.py:Filter
        if not path.endswith(".py") or not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as source:
                text = source.read(1 << 20)
        except OSError:
            continue
        if any(needle in text for needle in needles):
            return ForkServer(preload=MULTIHOST_PRELOAD, fork=True)
    if any(arg.split("=", 1)[0] in ("--hosts", "--inventory") for arg in argv):
        return None
    return ForkServer(fork=True)


class LocalRunner:
    """Runs TestSpecs in child processes on this machine."""

    def __init__(
        self,
        max_parallel: int,
        sink: EventSink,
        stop: threading.Event,
        server: ForkServer | None = None,
    ) -> None:
        self.max_parallel = max(1, max_parallel)
        self.sink = sink
        self.stop = stop
        self._server = server  # a fork server started earlier, which run() takes over

    def run(self, specs: list[TestSpec]) -> None:
        """Run every spec; returns when all have ended (or were interrupted)."""
        if not specs:
            return
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
        try:
            while pending or running:
                if self.stop.is_set() and give_up is None:
                    give_up = time.time() + STOP_GRACE
                    self._ask_to_stop(running, pending)
                if give_up is not None and time.time() >= give_up:
                    self._interrupt(running, pending, "interrupted by the user")
                    break
                while give_up is None and pending and len(running) < self.max_parallel:
                    self._start(server, sel, running, pending.pop())
                timeout = self._next_timeout(running)
                for key, _ in sel.select(timeout):
                    if key.data is None:
                        self._server_message(server, sel, running)
                    else:
                        self._read(sel, running, key.data)
                self._check_deadlines(running)
                self._retire(sel, running)
        finally:
            for run in running.values():
                self._kill(run)
                self._close_pipe(sel, run)
            sel.close()
            server.close()

    # starting and reading ------------------------------------------------
    def _start(
        self, server: ForkServer, sel: selectors.BaseSelector, running: dict, spec: TestSpec
    ) -> None:
        logdir = Path(spec.logdir)
        spec_path = logdir / "spec.json"
        run = _Running(spec=spec, rfd=-1)
        spec.started = run.started
        try:
            logdir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "w", encoding="utf-8") as out:
                out.write(json.dumps(spec.to_dict()))
        except OSError as exc:  # a full disk, most likely: this test ends, the next may run
            why = exc.strerror or str(exc)
            reason = f"cannot write the test's results directory {logdir}: {why}"
            self.sink(events.synthetic_end(spec.uid, events.ERROR, reason, start=run.started))
            return
        rfd, wfd = os.pipe()
        run.rfd = rfd
        key = str(spec.uid)
        if spec.timeout:
            run.deadline = run.started + spec.timeout
        running[key] = run
        os.set_blocking(rfd, False)
        sel.register(rfd, selectors.EVENT_READ, key)
        try:
            server.spawn(key, str(spec_path), wfd, simple=spec.kind == SIMPLE)
        except OSError as exc:
            self._end(run, events.ERROR, f"cannot start the test process: {exc}")
        finally:
            os.close(wfd)

    def _server_message(
        self, server: ForkServer, sel: selectors.BaseSelector, running: dict
    ) -> None:
        msg = server.receive()
        if msg is None:
            sel.unregister(server.sock)
            for run in running.values():
                if not run.ended:
                    self._end(run, events.ERROR, "the fork server died; the test did not finish")
                run.eof = True
                run.exit_status = run.exit_status if run.exit_status is not None else -1
            return
        run = running.get(msg.get("key"))
        if run is None:
            return
        if msg["op"] == "started":
            run.pid = msg["pid"]
        elif msg["op"] == "exited":
            run.exit_status = msg["status"]

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
            if event.get("timeout"):
                run.deadline = run.started + float(event["timeout"])
            run.pid = event.get("pid") or run.pid
        elif event["type"] == events.TEST_END:
            run.ended = True
            run.end_time = time.time()
            if run.stopping and event.get("status") in (events.FAIL, events.ERROR):
                # Failing because the job pulled the rug: say so.
                event["status"] = events.INTERRUPT
                event["fail_reason"] = f"interrupted by the user ({event.get('fail_reason')})"
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

    @staticmethod
    def _signal(run: _Running, sig: int) -> None:
        """Signal the test's whole process group, if it is still running."""
        if run.pid and run.exit_status is None:
            try:
                os.killpg(run.pid, sig)
            except ProcessLookupError:
                pass
            except PermissionError as exc:
                LOG.warning("cannot signal test process group %d: %s", run.pid, exc)

    def _kill(self, run: _Running) -> None:
        self._signal(run, signal.SIGKILL)

    def _check_deadlines(self, running: dict) -> None:
        now = time.time()
        for run in running.values():
            if not run.ended and run.deadline is not None and now >= run.deadline:
                self._kill(run)
                limit = run.deadline - run.started
                self._end(run, events.INTERRUPT, f"timeout of {limit:g} s reached; test killed")
            elif (
                run.ended
                and run.exit_status is None
                and run.end_time is not None
                and now - run.end_time > EXIT_GRACE
            ):
                self._kill(run)
                run.exit_status = -signal.SIGKILL
            if (
                run.ended
                and not run.eof
                and run.exit_status is not None
                and run.end_time is not None
                and now - run.end_time > EXIT_GRACE
            ):
                # A process the test left behind still holds the event pipe: stop listening.
                run.eof = True

    def _retire(self, sel: selectors.BaseSelector, running: dict) -> None:
        for key in [k for k, r in running.items() if r.exit_status is not None and r.eof]:
            run = running.pop(key)
            if not run.ended and run.stopping:
                self._end(run, events.INTERRUPT, "interrupted by the user")
            elif not run.ended and run.spec.kind == SIMPLE and run.exec_seen:
                self._simple_end(run)
            elif not run.ended:
                status = run.exit_status
                how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
                self._end(run, events.ERROR, f"the test process died ({how}) before the test ended")
            self._close_pipe(sel, run)

    def _simple_end(self, run: _Running) -> None:
        """A simple test (the child exec'd it): PASS on exit status 0, else FAIL."""
        status = run.exit_status or 0
        if status == 0:
            outcome, reason = events.PASS, None
        elif status < 0:
            outcome, reason = events.FAIL, f"killed by signal {-status}"
        else:
            outcome, reason = events.FAIL, f"exit status {status}"
        end = f"{outcome} {run.spec.name}" + (f": {reason}" if reason else "")
        error = events.append_debug_log(run.spec.logdir, f"exit status {status}", end)
        if error is not None:
            LOG.warning("cannot write %s/debug.log: %s", run.spec.logdir, error)
        self._end(run, outcome, reason)

    @staticmethod
    def _close_pipe(sel: selectors.BaseSelector, run: _Running) -> None:
        # Once closed, the number may belong to the next test's pipe: forget it at once.
        if run.rfd < 0:
            return
        sel.unregister(run.rfd)
        os.close(run.rfd)
        run.rfd = -1

    def _ask_to_stop(self, running: dict, pending: list) -> None:
        """The job is interrupted: tests not started never will be; running ones get SIGTERM.

        An instrumented test then ends INTERRUPT after its tearDown, a multi-host test
        stops its workers and keeps their results; SIGKILL follows after STOP_GRACE.
        """
        reason = "interrupted by the user"
        while pending:
            spec = pending.pop()
            self.sink({"type": events.TEST_SKIPPED, "uid": spec.uid, "reason": reason})
        for run in running.values():
            run.stopping = True
            self._signal(run, signal.SIGTERM)

    def _interrupt(self, running: dict, pending: list, reason: str) -> None:
        for run in running.values():
            self._kill(run)
            self._end(run, events.INTERRUPT, reason)
        while pending:
            spec = pending.pop()
            self.sink({"type": events.TEST_SKIPPED, "uid": spec.uid, "reason": reason})

    @staticmethod
    def _next_timeout(running: dict) -> float:
        now = time.time()
        deadlines = [r.deadline for r in running.values() if r.deadline and not r.ended]
        soonest = min(deadlines, default=now + 0.2)
        return max(0.0, min(0.2, soonest - now))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""
