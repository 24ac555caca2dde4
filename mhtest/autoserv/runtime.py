"""What one control file's run shares: its spec, places, options, results, hosts and helpers.

One Runtime per control file process (server or client). The tasks a control file forks
(parallel, parallel_simple) get a copy, with `machine` set to their item: the machine the
results they make are named after.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
import tempfile
from concurrent.futures import Future
from typing import Any, Callable

from mhtest.autoserv.names import search_dirs
from mhtest.autoserv.nested import NestedResults
from mhtest.dispatch import Options
from mhtest.hosts.inventory import LOCAL, HostConfig
from mhtest.spec import TestSpec

LOG = logging.getLogger(__name__)


class Runtime:
    """A control file's run (see module docstring)."""

    def __init__(self, spec: TestSpec, emit: Callable[..., None], display: str | None = None):
        self.spec = spec
        self.display = display or os.path.basename(spec.ref.rstrip("/")) or spec.ref
        self.filename = spec.path
        self.logdir = spec.logdir
        self.results = NestedResults(emit, spec.logdir)
        self.options = Options.from_dict(spec.host_options)
        self.places = [HostConfig(**h) for h in spec.hosts]
        self.machines = _unique(p.name for p in self.places)
        self.args = parse_args(spec.params.get("args"))
        self.tests_dirs = search_dirs(spec.path, spec.tests_path)
        #: The machine this process's results are about (a parallel task's item), if any.
        self.machine: str | None = None
        #: Where this place's own tests run (a client control file's host).
        self.here = spec.host or LOCAL
        #: A server control file's run (False: a client control file's, on its place).
        self.server = True
        #: Results' directories go under their machine's (a server control file's do; a
        #: client control file's directory is its machine's already).
        self.machine_dirs = True
        self.opened: list[Any] = []  # hosts the control file made: closed at its end
        self.sync: Any = None  # the control file's sync server (mhtest.autoserv.barrier)
        self.barrier: Any = None  # its `barrier` class (mhtest.autoserv.barrier.barrier_class)
        #: A private scratch directory (client control texts), removed at the end.
        self.work_dir = tempfile.mkdtemp(prefix="mhtest-control-")
        self._sources: Future | None = None
        self._pid = os.getpid()

    # -- where we are in the control file --------------------------------------------------
    def line(self) -> int | None:
        """The control file's line being run (the innermost frame of its code)."""
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_filename == self.filename:
                return frame.f_lineno
            frame = frame.f_back
        return None

    def where(self) -> str:
        """ "file:line" of the control file's line being run, for one-line messages."""
        line = self.line()
        return f"{self.display}:{line}" if line else self.display

    def dir_parts(self, name: str) -> list[str]:
        """The directory of result `name` ("<machine>/<test>"), under the control file's."""
        parts = name.split("/")
        return parts if self.machine_dirs or len(parts) < 2 else parts[1:]

    def machine_of(self, host: Any = None) -> str:
        """The machine a result is about: `host`'s name, else this task's item, else here."""
        if host is not None:
            return str(getattr(host, "name", None) or host)
        return self.machine or self.here

    # -- what runners share ----------------------------------------------------------------
    def sources(self) -> Future:
        """mhtest's packed sources for hosts, built once (before any fork: see prepare)."""
        if self._sources is None:
            from mhtest.runners.launch import Sources

            future: Future = Future()
            try:
                future.set_result(Sources.build())
            except Exception as exc:  # noqa: BLE001 - raised where a host needs them
                future.set_exception(exc)
            self._sources = future
        return self._sources

    def track(self, host: Any) -> Any:
        """Remember a host the control file made, to close it at the end."""
        self.opened.append(host)
        return host

    def close(self) -> None:
        """Close what the control file left open: its hosts (the last made first: a guest
        before its hypervisor), its sync server, its results."""
        for host in reversed(self.opened):
            try:
                host.close()
            except Exception as exc:  # noqa: BLE001 - one host must not stop the others
                LOG.warning("%s: closing failed: %s", getattr(host, "name", host), exc)
        self.opened.clear()
        if self.sync is not None:
            self.sync.close()
            self.sync = None
        self.results.close()
        if os.getpid() == self._pid:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def parse_args(value: Any) -> list[str]:
    """`--args` (a shell-like line, or a list) as a control file's `args` list."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    try:
        return shlex.split(str(value))
    except ValueError:
        return str(value).split()


def _unique(names: Any) -> list[str]:
    seen: list[str] = []
    for name in names:
        if name not in seen:
            seen.append(name)
    return seen
