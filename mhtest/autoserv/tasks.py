"""parallel, parallel_simple and subcommand as a control file sees them (mhtest.parallel).

Each task runs in a forked process, as Autoserv's did (mhtest.parallel): in its own
directory under the control file's (its subdir, default: the item's name), and with the item
as its machine, which names the results it makes. A single item runs in the control file's
own process, as Autoserv did. Before forking, what the tasks share is made ready (mhtest's
packed sources for hosts, the barrier server: see Runtime use below), so that every task
uses the same.

A failed item makes the call raise one ParallelFailed naming each failed item and its
reason (with the control file's line it failed at); the other items' results stay.
`return_results=True` returns the values instead, with the exception in place of each
failure.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
from typing import Any, Callable, Iterable, Sequence

from mhtest import parallel as mh_parallel
from mhtest.autoserv.errors import ParallelFailed
from mhtest.autoserv.runtime import Runtime
from mhtest.test import TestInterrupt

LOG = logging.getLogger(__name__)


def item_name(item: Any) -> str:
    """A task item as a name: a host's name, "h1,h2" for a tuple of hosts, else str()."""
    if isinstance(item, (tuple, list)):
        return ",".join(item_name(i) for i in item)
    return str(getattr(item, "name", None) or item)


def make_tasks(runtime: Runtime, prepare: Callable[[], None]) -> dict[str, Any]:
    """{parallel, parallel_simple, subcommand} for one control file."""

    class subcommand(mh_parallel.subcommand):  # noqa: N801 - Autoserv's name
        """subcommand(func, args, subdir=None): `subdir` is under the control file's directory."""

        def __init__(
            self, func: Callable[..., Any], args: Sequence[Any] = (), subdir: str | None = None
        ) -> None:
            label = subdir or next((item_name(a) for a in args if _is_host(a)), "")
            machine = label or None
            path = os.path.join(runtime.logdir, subdir) if subdir else ""
            super().__init__(_in_task(runtime, func, machine), args, path)
            self.label = label or str(self)

    def parallel(
        tasklist: Iterable[Any], timeout: float | None = None, return_results: bool = False
    ) -> list[Any] | None:
        """Run each subcommand at once, each in a process of its own; see the module docstring."""
        tasks = list(tasklist)
        if not tasks:
            return [] if return_results else None
        where = runtime.where()
        prepare()
        values = mh_parallel.parallel(tasks, timeout=timeout, return_results=True) or []
        failures = [
            (getattr(task, "label", str(task)), _reason(runtime, value))
            for task, value in zip(tasks, values)
            if isinstance(value, mh_parallel.TaskError)
        ]
        if return_results:
            return values
        if failures:
            raise _with_where(ParallelFailed(failures, len(tasks), values), where)
        return None

    def parallel_simple(
        function: Callable[[Any], Any],
        arglist: Sequence[Any],
        subdir_name_constructor: Callable[[Any], str] = item_name,
        log: bool = True,
        timeout: float | None = None,
        return_results: bool = False,
    ) -> list[Any] | None:
        """`function(item)` for every item at once (one item: in this process)."""
        items = list(arglist)
        if not items:
            LOG.warning("parallel_simple: no items (no machines?): nothing run")
            return [] if return_results else None
        if len(items) == 1:
            return _one(runtime, function, items[0], return_results)
        tasks = [
            subcommand(function, [item], subdir_name_constructor(item) if log else None)
            for item in items
        ]
        for task, item in zip(tasks, items):
            task.label = item_name(item)
        return parallel(tasks, timeout=timeout, return_results=return_results)

    return {"parallel": parallel, "parallel_simple": parallel_simple, "subcommand": subcommand}


def _one(runtime: Runtime, function: Callable[[Any], Any], item: Any, return_results: bool) -> Any:
    before, runtime.machine = runtime.machine, item_name(item)
    try:
        value = function(item)
    except Exception as exc:
        if not return_results:
            raise
        value = exc
    finally:
        runtime.machine = before
    return [value] if return_results else None


def _in_task(runtime: Runtime, func: Callable[..., Any], machine: str | None) -> Callable:
    """`func`, run in the forked task as `machine`, SIGTERM stopping it as an interrupt."""

    @functools.wraps(func)
    def task(*args: Any) -> Any:
        runtime.machine = machine or runtime.machine
        signal.signal(signal.SIGTERM, _interrupted)
        before = len(runtime.opened)
        try:
            return func(*args)
        finally:
            # The hosts this task made (their temporary directories too): the parent's
            # copies of its own hosts are the parent's to close.
            made, runtime.opened[before:] = runtime.opened[before:], []
            for host in made:
                try:
                    host.close()
                except Exception as exc:  # noqa: BLE001 - the task's own outcome matters more
                    LOG.warning("%s: closing failed: %s", getattr(host, "name", host), exc)

    return task


def _interrupted(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise TestInterrupt("interrupted by the user")


def _reason(runtime: Runtime, error: mh_parallel.TaskError) -> str:
    """A task's failure in one line, with the control file's line it failed at if known."""
    lines = re.findall(rf'File "{re.escape(runtime.filename)}", line (\d+)', error.traceback or "")
    message = (error.message or "").strip().splitlines()
    text = message[0] if message else ""
    prefix = f"{runtime.display}:{lines[-1]}: " if lines and runtime.display not in text else ""
    kind = (
        ""
        if error.exc_type in ("ControlError", "TestNotFound", "BarrierError")
        else (f"{error.exc_type}: ")
    )
    if error.timed_out:
        return f"{error.message}"
    return f"{prefix}{kind}{text}" if text else f"{prefix}{error.exc_type}"


def _with_where(error: ParallelFailed, where: str) -> ParallelFailed:
    error.args = (f"{where}: {error.args[0]}",)
    return error


def _is_host(value: Any) -> bool:
    from mhtest.hosts.base import Host

    return isinstance(value, Host)
