"""Client control files: run on a host by mhtest's executor, with Autotest's client `job`.

    mhtest run client/tests/kernbench/control --hosts h1     # at every place given
    at.run(control_text_or_path, results_dir, host)           # from a server control file

A client control file runs as one test at its place: on a host, in the child program of
mhtest's executor there, exactly like any test sent to that host. Its `job`:

    job.run_test(name, *args, tag=None, **dargs)   run the test here (on this host); True
                                                   when it passed (PASS or WARN)
    job.record(status, subdir, operation, reason)  a result of its own
    job.barrier(hostid, tag, timeout)              meet other control files (see barrier.py)
    job.resultdir, job.tmpdir, job.args, job.control, job.profilers (accepted, ignored)

and `args`, `barrier`, `error`, `utils`, `os`, `sys`, `logging`. Test names resolve beside
the control file, then in --tests-path (mhtest.autoserv.names); the directories travel with
the control file to the host. The tests run through the dispatcher's local place on the host
(each in a process of its own, its timeout enforced), each a result of the job named
`<machine>/<test>[.<tag>]`, its files under the control file's directory. The control file
itself is one more result (see mhtest.autoserv.control for how it ends), and a copy of it
is kept in its directory as `control`.
"""

from __future__ import annotations

import builtins
import logging
import os
import shutil
import sys
from typing import Any, Callable

from mhtest.autoserv.barrier import Endpoint, barrier_class
from mhtest.autoserv.control import execute
from mhtest.autoserv.errors import error_module
from mhtest.autoserv.job import JobBase, run_named
from mhtest.autoserv.namespace import utils_module
from mhtest.autoserv.runner import ControlRunner
from mhtest.autoserv.runtime import Runtime
from mhtest.spec import TestSpec

LOG = logging.getLogger(__name__)


def run_client_control(spec: TestSpec, emit: Callable[..., None]) -> dict[str, Any]:
    """Run the client control file `spec` at this place; its outcome (status, fail_reason…)."""
    runtime = Runtime(spec, emit, display=os.path.basename(spec.path) or spec.ref)
    runtime.server = runtime.machine_dirs = False
    keep = os.path.join(spec.logdir, "control")
    if not os.path.exists(keep):
        try:
            shutil.copyfile(spec.path, keep)
        except OSError as exc:
            LOG.warning("cannot keep a copy of %s: %s", spec.path, exc)
    try:
        return execute(runtime, client_namespace)
    finally:
        runtime.close()


class ClientJob(JobBase):
    """The `job` of a client control file (see the module docstring)."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime, ControlRunner(runtime))
        self.tmpdir = os.path.join(runtime.work_dir, "tmp")
        os.makedirs(self.tmpdir, exist_ok=True)

    def run_test(self, name: str, *args: Any, tag: str | None = None, **dargs: Any) -> bool:
        """Run test `name` here (on this host); True when it passed (PASS or WARN)."""
        from mhtest.autoserv.hosts import place_of

        runtime = self._runtime
        return run_named(
            runtime,
            self._runner,
            name,
            place_of(runtime, None),
            args=args,
            tag=tag,
            dargs=dargs,
            machine=runtime.machine_of(),
        )


def client_namespace(runtime: Runtime, source: str) -> dict[str, Any]:
    """A client control file's globals (see the module docstring)."""
    runtime.barrier = barrier_class(Endpoint.from_environment, runtime.where)
    return {
        "__name__": "__main__",
        "__file__": runtime.filename,
        "__builtins__": builtins,
        "job": ClientJob(runtime),
        "args": list(runtime.args),
        "barrier": runtime.barrier,
        "error": error_module(),
        "utils": utils_module(),
        "os": os,
        "sys": sys,
        "logging": logging,
    }
