"""Run functions in parallel, Autoserv style: subcommand, parallel(), parallel_simple().

    from mhtest.parallel import parallel_simple
    parallel_simple(lambda host: host.run("make -C /src install"), hosts, timeout=600)

Each task runs in a forked child process, in its own process group. A process, unlike a
thread, can really be stopped: on timeout the parent sends SIGTERM to the task's process
group (the task unwinds; a command it is running on an SSH host gets its remote process group
killed on the way out), then SIGKILL after a grace period. So no task is left running once
parallel() returns or raises. Forking also isolates tasks from each other (a crash, os._exit
or a leaked file descriptor stays in its child), which is what Autoserv did.

A task's return value comes back to the parent as JSON (never pickle): JSON types, dataclasses
and objects with ``to_dict()`` arrive as plain data; anything else arrives as its repr().
Exceptions arrive as TaskError (type name, message, traceback, host).

Hosts passed as arguments are safe to use in the child: SSHHost notices the fork and opens its
own connection there.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any

log = logging.getLogger(__name__)

KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL for a task past its timeout
POLL = 0.01


class TaskError(Exception):
    """One task that raised, crashed or ran out of time (as seen from the parent)."""

    def __init__(
        self,
        task: str,
        host: str | None,
        exc_type: str,
        message: str,
        tb: str = "",
        timed_out: bool = False,
    ) -> None:
        where = f" on {host}" if host else ""
        super().__init__(f"{task}{where}: {exc_type}: {message}")
        self.task = task
        self.host = host
        self.exc_type = exc_type
        self.message = message
        self.traceback = tb
        self.timed_out = timed_out


class ParallelError(Exception):
    """Some tasks failed; `.failures` holds a TaskError for each, and the message lists them."""

    def __init__(self, failures: list[TaskError], total: int) -> None:
        lines = [f"{len(failures)} of {total} parallel tasks failed:"]
        lines += [f"  {failure}" for failure in failures]
        super().__init__("\n".join(lines))
        self.failures = failures


class _Terminated(BaseException):
    """Raised inside a task when the parent stops it (SIGTERM): lets `finally` blocks run."""


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return repr(value)


class subcommand:  # noqa: N801 - Autoserv's name
    """One function call to run in a forked child: ``subcommand(func, args, subdir=None)``.

    `subdir`, if given, is created and made the child's working directory (Autoserv used it
    for a per-host results directory).
    """

    def __init__(
        self, func: Callable[..., Any], args: Sequence[Any] = (), subdir: str = ""
    ) -> None:
        self.func = func
        self.args = tuple(args)
        self.subdir = subdir
        self.pid: int | None = None
        self.result: Any = None
        self.error: TaskError | None = None
        self.host = next((str(a) for a in self.args if _is_host(a)), None)
        self.done = False
        self._result_file: str | None = None

    def __str__(self) -> str:
        name = getattr(self.func, "__name__", repr(self.func))
        shown = ", ".join(_short(a) for a in self.args)
        return f"{name}({shown})"

    # -- child -------------------------------------------------------------------------------

    def fork_start(self) -> None:
        """Fork the child and start the call there."""
        fd, self._result_file = tempfile.mkstemp(prefix="mhtest-task-", suffix=".json")
        os.close(fd)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, reported through the file
            self._child()
        self.pid = pid

    def _child(self) -> None:
        code = 1
        try:
            os.setpgid(0, 0)
            signal.signal(signal.SIGTERM, _raise_terminated)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            if self.subdir:
                os.makedirs(self.subdir, exist_ok=True)
                os.chdir(self.subdir)
            try:
                outcome: dict[str, Any] = {"ok": True, "result": self.func(*self.args)}
                code = 0
            except _Terminated:
                outcome = {"ok": False, "type": "TaskTimeout", "message": "stopped by the parent"}
            except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent
                outcome = {
                    "ok": False,
                    "type": type(exc).__name__,
                    "message": str(exc),
                    "traceback": traceback.format_exc(),
                }
            with open(self._result_file or os.devnull, "w", encoding="utf-8") as out:
                json.dump(outcome, out, default=_jsonable)
        except BaseException:  # noqa: BLE001 - never return into the parent's code
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    # -- parent ------------------------------------------------------------------------------

    def fork_waitfor(self, timeout: float | None = None) -> int:
        """Wait for the child (killing it after `timeout`); its exit status (0 = success)."""
        if self.pid is None:
            raise RuntimeError(f"{self}: fork_start() was not called")
        deadline = None if timeout is None else time.monotonic() + timeout
        status = self._poll_until(deadline)
        timed_out = status is None
        if timed_out:
            status = self._stop()
        self._collect(status, timed_out, timeout)
        self.done = True
        return 0 if self.error is None else 1

    def _poll_until(self, deadline: float | None) -> int | None:
        assert self.pid is not None
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(POLL)

    def _stop(self) -> int:
        assert self.pid is not None
        log.warning("%s: timed out; stopping its process group %d", self, self.pid)
        _signal_group(self.pid, signal.SIGTERM)
        status = self._poll_until(time.monotonic() + KILL_GRACE)
        _signal_group(self.pid, signal.SIGKILL)  # whatever the task left in its group
        if status is None:
            _, status = os.waitpid(self.pid, 0)
        return status

    def _collect(self, status: int, timed_out: bool, timeout: float | None) -> None:
        outcome: dict[str, Any] = {}
        if self._result_file:
            try:
                with open(self._result_file, encoding="utf-8") as src:
                    text = src.read()
                outcome = json.loads(text) if text else {}
            except (OSError, ValueError) as exc:
                log.warning("%s: unreadable result: %s", self, exc)
            finally:
                try:
                    os.unlink(self._result_file)
                except OSError:
                    pass
        if timed_out:
            self.error = TaskError(
                str(self),
                self.host,
                "TaskTimeout",
                f"did not finish within {timeout:g} s",
                timed_out=True,
            )
        elif outcome.get("ok"):
            self.result = outcome.get("result")
        elif outcome:
            self.error = TaskError(
                str(self),
                self.host,
                outcome.get("type", "Error"),
                outcome.get("message", ""),
                outcome.get("traceback", ""),
            )
        else:
            self.error = TaskError(str(self), self.host, "Crash", _describe_status(status))


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"task process killed by signal {os.WTERMSIG(status)}"
    return f"task process exited with status {os.WEXITSTATUS(status)} without a result"


def _is_host(value: Any) -> bool:
    from mhtest.hosts.base import Host

    return isinstance(value, Host)


def _short(value: Any) -> str:
    text = str(value) if _is_host(value) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parallel(
    tasks: Iterable[subcommand], timeout: float | None = None, return_results: bool = False
) -> list[Any] | None:
    """Run every subcommand at once and wait for all (at most `timeout` seconds overall).

    Raises ParallelError listing every failed task, unless `return_results`, in which case the
    list of results is returned, a TaskError in place of each failure.
    """
    tasks = list(tasks)
    started: list[subcommand] = []
    try:
        for task in tasks:
            task.fork_start()
            started.append(task)
        deadline = None if timeout is None else time.monotonic() + timeout
        for task in tasks:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            task.fork_waitfor(remaining)
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM) or failed to fork: leave nothing running behind
        # us, but let the tasks unwind first (their remote commands are stopped on the way).
        running = [t for t in started if t.pid is not None and not t.done]
        for task in running:
            _signal_group(task.pid, signal.SIGTERM)  # type: ignore[arg-type]
        give_up = time.monotonic() + KILL_GRACE
        for task in running:
            task._poll_until(give_up)
            _signal_group(task.pid, signal.SIGKILL)  # type: ignore[arg-type]
            try:
                os.waitpid(task.pid, 0)  # type: ignore[arg-type]
            except ChildProcessError:
                pass
        raise
    failures = [task.error for task in tasks if task.error is not None]
    if return_results:
        return [task.error if task.error is not None else task.result for task in tasks]
    if failures:
        raise ParallelError(failures, len(tasks))
    return None


def parallel_simple(
    func: Callable[[Any], Any],
    arglist: Sequence[Any],
    timeout: float | None = None,
    return_results: bool = False,
    subdir_name_constructor: Callable[[Any], str] | None = None,
) -> list[Any] | None:
    """Run ``func(arg)`` for each arg (typically each host) in parallel; see parallel()."""
    if not arglist:
        log.warning("parallel_simple called with an empty argument list (no hosts?)")
        return [] if return_results else None
    tasks = [
        subcommand(func, [arg], subdir_name_constructor(arg) if subdir_name_constructor else "")
        for arg in arglist
    ]
    return parallel(tasks, timeout=timeout, return_results=return_results)
