"""The child program: runs one TestSpec in this process and reports JSON-line events.

Runs in a process of its own (forked by the fork server, or started as
`python -m mhtest.runners.child SPEC.json`); its stdout and stderr go to files in the
test's results directory, its events to the file descriptor it is given.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from mhtest import environment, events
from mhtest.exceptions import TestInterrupt
from mhtest.params import Params, variant_values
from mhtest.runners import reboot
from mhtest.runners.lifecycle import run_lifecycle, status_of
from mhtest.runners.workerbin import child_env
from mhtest.spec import BROKEN, CONTROL_CLIENT, CONTROL_SERVER, SIMPLE, TestSpec
from mhtest.test import Test

__all__ = ["child_main", "load_test_class", "run_lifecycle", "run_spec", "start_simple"]

LOG_FORMAT = "%(asctime)s %(levelname)-5s| %(message)s"
#: What a worker's test gets when its run is aborted while it is not in a sync call.
ABORT_SIGNAL = signal.SIGUSR2


class EventWriter:
    """Writes events to a file descriptor, whole lines at a time."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __call__(self, type_: str, **fields: Any) -> None:
        data = events.encode(type_, **fields)
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]


def run_spec(spec: TestSpec, event_fd: int) -> int:
    """Run `spec` here: set up its directory and logging, run it, report its end."""
    emit = EventWriter(event_fd)
    logdir = Path(spec.logdir)
    try:
        (logdir / "data").mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(logdir / "debug.log", encoding="utf-8")
    except OSError as exc:  # a full disk, most likely: say so instead of dying unexplained
        return _cannot_write(spec, emit, exc)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG)
    # paramiko's per-packet and key-exchange DEBUG lines are not the test's story.
    paramiko_log = logging.getLogger("paramiko")
    if paramiko_log.level == logging.NOTSET:
        paramiko_log.setLevel(logging.WARNING)
    os.environ.update(spec.env)
    reboot.set_variables(os.environ, spec.env)
    os.environ.update(environment.test_variables(spec.name, spec.path, spec.logdir))
    os.environ.update(child_env(os.environ))
    start = time.time()
    logging.getLogger("mhtest.test").info("START %s", spec.name)
    count = reboot.reboot_count(spec.env)
    if count:
        logging.getLogger("mhtest.test").info("running again after reboot %d of its host", count)
    if spec.kind == BROKEN:
        outcome = {
            "status": events.ERROR,
            "fail_reason": spec.error,
            "fail_class": "ResolutionError",
        }
        emit(events.TEST_START, uid=spec.uid, name=spec.name, pid=os.getpid(), timeout=None)
    elif spec.kind == SIMPLE:
        timeout, problem = _simple_timeout(spec)
        emit(events.TEST_START, uid=spec.uid, name=spec.name, pid=os.getpid(), timeout=timeout)
        # On success this process becomes the test (exec); the runner reports its end from
        # the exit status. Only a failure to execute comes back here.
        outcome = _exec_simple(spec, emit.fd, handler) if problem is None else problem
    elif spec.kind in (CONTROL_SERVER, CONTROL_CLIENT):
        outcome = _run_control(spec, emit)
    else:
        outcome = _run_instrumented(spec, logdir, emit)
    whiteboard = outcome.pop("whiteboard", "")
    logging.getLogger("mhtest.test").info(
        "%s %s%s",
        outcome["status"],
        spec.name,
        f": {outcome['fail_reason']}" if outcome.get("fail_reason") else "",
    )
    _flush(handler)
    emit(
        events.TEST_END,
        uid=spec.uid,
        start=start,
        end=time.time(),
        whiteboard=whiteboard,
        **outcome,
    )
    return 0


def _simple_timeout(spec: TestSpec) -> tuple[float | None, dict[str, Any] | None]:
    """A simple test's timeout: the `timeout` param, as for instrumented tests.

    Returns (timeout, None), or (None, an ERROR outcome) when the param is not a number.
    """
    value = spec.params.get("timeout", variant_values(spec.variant).get("timeout"))
    if value is None:
        return spec.timeout, None
    try:
        return float(value), None
    except (TypeError, ValueError):
        reason = f"the timeout param must be a number of seconds, not {value!r}"
        return None, {"status": events.ERROR, "fail_reason": reason, "fail_class": "ParamError"}


def start_simple(spec_path: str, event_fd: int) -> int | None:
    """Start a simple test without running Python in its process: returns its PID.

    What run_spec() does in a forked child before it execs the test (the results
    directory, the START line, test.start, the output files, a session of its own, the
    script's directory as working directory), done here instead, and the test started with
    vfork+exec (subprocess). A Python child forked from a big process pays copy-on-write
    faults on every object it touches: 2.5-3.5 ms of CPU per test here. Returns None for
    anything else, or when the test cannot be started this way: the caller forks a child
    as usual, which reports the problem.
    """
    import json
    import subprocess

    try:
        spec = TestSpec.from_dict(json.loads(Path(spec_path).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    if spec.kind != SIMPLE:
        return None
    timeout, problem = _simple_timeout(spec)
    if problem is not None:
        return None
    logdir = Path(spec.logdir)
    previous = signal.signal(signal.SIGINT, signal.SIG_DFL)  # inherited by the exec'd test
    try:
        (logdir / "data").mkdir(parents=True, exist_ok=True)
        (logdir / "work").mkdir(exist_ok=True)
        with (
            open(os.devnull, "rb") as null,
            open(logdir / "stdout", "wb") as out,
            open(logdir / "stderr", "wb") as err,
        ):
            proc = subprocess.Popen(
                [spec.path],
                cwd=os.path.dirname(spec.path) or None,
                stdin=null,
                stdout=out,
                stderr=err,
                env=simple_environment(spec, os.environ),
                start_new_session=True,
            )
    except OSError:
        return None
    finally:
        signal.signal(signal.SIGINT, previous)
    # The caller reaps it (and learns its exit status); subprocess must never do so.
    proc.returncode = 0
    spec.mask_file(spec_path)  # read: secrets need not stay in the file
    events.append_debug_log(spec.logdir, f"START {spec.name}")  # the end says if it fails
    count = reboot.reboot_count(spec.env)
    if count:
        events.append_debug_log(spec.logdir, f"running again after reboot {count} of its host")
    EventWriter(event_fd)(
        events.TEST_START, uid=spec.uid, name=spec.name, pid=proc.pid, timeout=timeout
    )
    return proc.pid


def simple_environment(spec: TestSpec, base: Any) -> dict[str, str]:
    """A simple test's environment: `base`, the job's, the test's paths and ids (mhtest's
    and Avocado's names), then its params, as Avocado gives them."""
    env = {
        **base,
        **spec.env,
        **environment.test_variables(spec.name, spec.path, spec.logdir),
        **environment.param_variables({**variant_values(spec.variant), **spec.params}),
    }
    reboot.set_variables(env, spec.env)
    env.update(child_env(env))  # a worker's: the sync commands on its PATH, the roles
    return env


def _exec_simple(spec: TestSpec, event_fd: int, handler: logging.Handler) -> dict[str, Any]:
    """Replace this process with the simple test; returns only if it cannot be executed.

    fds 0, 1 and 2 already point at /dev/null and the test's stdout and stderr files; the
    event pipe and the log file close on exec, so the runner sees the stream end and learns
    the exit status from the fork server (see LocalRunner._simple_end).
    """
    _flush(handler)
    os.set_inheritable(event_fd, False)
    try:
        os.chdir(os.path.dirname(spec.path) or ".")
        os.makedirs(os.path.join(spec.logdir, "work"), exist_ok=True)
        os.execve(spec.path, [spec.path], simple_environment(spec, os.environ))
    except OSError as exc:
        return {"status": events.ERROR, "fail_reason": f"cannot execute {spec.ref}: {exc}"}
    raise AssertionError("unreachable: execv returned")


def load_test_class(spec: TestSpec) -> type:
    """Import the test file as a module of its own and return the spec's class."""
    path = spec.path
    directory = os.path.dirname(path)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    mod_name = "mhtest_test_" + Path(path).stem.replace("-", "_").replace(".", "_")
    module_spec = importlib.util.spec_from_file_location(mod_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[mod_name] = module
    module_spec.loader.exec_module(module)
    cls = getattr(module, spec.class_name or "", None)
    if not (isinstance(cls, type) and issubclass(cls, Test)):
        raise ImportError(f"{spec.path} has no mhtest.Test class {spec.class_name!r}")
    return cls


def _run_instrumented(spec: TestSpec, logdir: Path, emit: EventWriter) -> dict[str, Any]:
    log = logging.getLogger("mhtest.test")
    # The runner asks a test to stop with SIGTERM (the job is interrupted) and tells it
    # its timeout is reached with events.TIMEOUT_SIGNAL: either way the test ends
    # INTERRUPT, tearDown still runs, a multi-host test stops and fetches its workers.
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(events.TIMEOUT_SIGNAL, _timed_out)
    try:
        cls = load_test_class(spec)
        test = cls(
            methodName=spec.method or "test",
            name=spec.test_id,
            params=Params(spec.params, spec.variant),
            logdir=str(logdir),
            basedir=os.path.dirname(spec.path),
            filename=spec.path,
            tags=spec.tags,
        )
        test._spec = spec
        os.makedirs(test.workdir, exist_ok=True)
        method = getattr(test, spec.method or "test")
    except BaseException as exc:  # noqa: BLE001 - any import failure is the test's ERROR
        log.error("cannot load %s:\n%s", spec.ref, traceback.format_exc())
        emit(events.TEST_START, uid=spec.uid, name=spec.name, pid=os.getpid(), timeout=spec.timeout)
        if isinstance(exc, TestInterrupt):
            return {
                "status": status_of(exc),
                "fail_reason": str(exc),
                "fail_class": "TestInterrupt",
            }
        return {
            "status": events.ERROR,
            "fail_reason": f"cannot load test: {type(exc).__name__}: {exc}",
            "fail_class": type(exc).__name__,
        }
    emit(events.TEST_START, uid=spec.uid, name=spec.name, pid=os.getpid(), timeout=test.timeout)
    try:
        outcome = run_lifecycle(test, _stopped_by_aborts(test, method))
    except TestInterrupt as exc:  # arrived between two phases
        log.error("interrupted: %s", exc)
        outcome = {"status": status_of(exc), "fail_reason": str(exc), "fail_class": "TestInterrupt"}
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(events.TIMEOUT_SIGNAL, signal.SIG_IGN)
    signal.signal(ABORT_SIGNAL, signal.SIG_IGN)
    test._close_sync()
    try:
        (logdir / "whiteboard").write_text(test.whiteboard or "", encoding="utf-8")
    except OSError:
        pass  # a full disk: the whiteboard still travels in the test's end
    outcome["whiteboard"] = test.whiteboard or ""
    # A multi-host test's workers become the children of its result.
    workers = getattr(test, "worker_results", None)
    if workers:
        outcome["children"] = [w.to_dict() for w in workers]
    return outcome


def _run_control(spec: TestSpec, emit: EventWriter) -> dict[str, Any]:
    """An Autoserv control file (mhtest.autoserv): its results come as test.nested events."""
    timeout, problem = _simple_timeout(spec)  # the `timeout` param, as for any test
    emit(events.TEST_START, uid=spec.uid, name=spec.name, pid=os.getpid(), timeout=timeout)
    if problem is not None:
        return problem
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        if spec.kind == CONTROL_SERVER:
            from mhtest.autoserv.control import run_server_control as run
        else:
            from mhtest.autoserv.client import run_client_control as run
        return run(spec, emit)
    except TestInterrupt as exc:
        return {"status": events.INTERRUPT, "fail_reason": str(exc), "fail_class": "TestInterrupt"}
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stopped_by_aborts(test: Test, method: Callable[[], Any]) -> Callable[[], Any]:
    """For a multi-host worker: `method`, ended at once when the run is aborted.

    The worker joins the sync server before its test starts; when another worker dies or
    aborts, the server tells every participant, and this one's test method gets the
    SyncAborted (with the reason) wherever it is, not at its next sync call. setUp and
    tearDown are not interrupted. Other tests get `method` as it is.
    """
    if not (os.environ.get("MHTEST_WORKER") and os.environ.get("MHTEST_SYNC_ADDRESS")):
        return method
    if not getattr(test, "sync_aborts_interrupt", True):
        return method
    try:
        client = test.sync
    except Exception as exc:  # noqa: BLE001 - the test meets the same error at its first call
        logging.getLogger("mhtest.test").warning("cannot join the sync server yet: %s", exc)
        return method
    armed = threading.Event()
    main = threading.main_thread().ident

    def on_abort(error: BaseException) -> None:
        if armed.is_set() and main is not None:
            signal.pthread_kill(main, ABORT_SIGNAL)

    def aborted(signum: int, frame: Any) -> None:
        if armed.is_set() and client.aborted is not None:
            armed.clear()
            raise client.aborted

    signal.signal(ABORT_SIGNAL, aborted)
    client.on_abort = on_abort

    def armed_method() -> Any:
        armed.set()
        try:
            if client.aborted is not None:  # aborted while it was setting up
                raise client.aborted
            return method()
        finally:
            armed.clear()

    return armed_method


def _interrupted(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process
    raise TestInterrupt("interrupted by the user")


def _timed_out(signum: int, frame: Any) -> None:
    # Once: tearDown runs next, and the runner kills the test if it does not end in time.
    signal.signal(events.TIMEOUT_SIGNAL, signal.SIG_IGN)
    raise TestInterrupt(events.TIMEOUT_REASON)


def child_main(spec_path: str, event_fd: int = 1) -> int:
    """Entry point for a child started as a program: read the spec, run it."""
    import json

    spec = TestSpec.from_dict(json.loads(Path(spec_path).read_text(encoding="utf-8")))
    spec.mask_file(spec_path)  # read: secrets need not stay in the file
    if event_fd == 1:
        # Keep the event stream clean: the test's own stdout goes to its file.
        event_fd = os.dup(1)
    try:
        redirect_output(Path(spec.logdir))
    except OSError as exc:
        return _cannot_write(spec, EventWriter(event_fd), exc)
    return run_spec(spec, event_fd)


def _flush(handler: logging.Handler) -> None:
    """Flush debug.log; a full disk must not keep the test from reporting its end."""
    try:
        handler.flush()
    except OSError:
        pass


def _cannot_write(spec: TestSpec, emit: EventWriter, exc: OSError) -> int:
    """The test's end when its results directory cannot be written (a full disk)."""
    why = exc.strerror or str(exc)
    reason = f"cannot write the test's results directory {spec.logdir}: {why}"
    emit(events.TEST_START, uid=spec.uid, name=spec.name, pid=os.getpid(), timeout=None)
    emit(events.TEST_END, uid=spec.uid, status=events.ERROR, fail_reason=reason)
    return 0


def redirect_output(logdir: Path) -> None:
    """Point fds 0, 1, 2 at /dev/null and the test's stdout/stderr files."""
    logdir.mkdir(parents=True, exist_ok=True)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        target = os.open(logdir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1]))
