"""The `job` object of a server control file, and what it shares with a client control file's.

    job.run_test("sleeptest", host=h, tag="quick", seconds=1)   # here, on the controller
    job.parallel_simple(run_on, machines)                        # one subdir per machine
    job.record("GOOD", None, "reboot", "came back")              # a result of its own

Every `run_test` and `record` is a result of the job of its own, named
`<control>/<machine>/<test>[.<tag>]` (see mhtest.autoserv.nested): the machine is the host
given (for `record`, the subdir given), else the item of the parallel task it runs in, else
`local` (the controller). A test name that is a client control file (`NAME/control`) makes
the result `<machine>/NAME/control`, beside those of the tests it runs.
`run_test` returns True when the test passed (PASS or WARN); a test name that resolves to
nothing is an ERROR result saying where it was looked for, and False.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Callable

from mhtest import events
from mhtest.autoserv.errors import ControlError, TestNotFound
from mhtest.autoserv.names import find_test
from mhtest.autoserv.runner import ControlRunner, Planned
from mhtest.autoserv.runtime import Runtime
from mhtest.hosts.inventory import HostConfig
from mhtest.spec import CONTROL_CLIENT

LOG = logging.getLogger(__name__)
#: Autotest's status codes (and mhtest's own) → the result's status; None: not a result.
STATUSES: dict[str, str | None] = {
    "GOOD": events.PASS,
    "FAIL": events.FAIL,
    "ERROR": events.ERROR,
    "ABORT": events.INTERRUPT,
    "WARN": events.WARN,
    "ALERT": events.ERROR,
    "TEST_NA": events.SKIP,
    "NOSTATUS": events.ERROR,
    "START": None,
    "INFO": None,
    "RUNNING": None,
    **{status: status for status in events.STATUSES},
}
PASSED = (events.PASS, events.WARN)


def test_label(name: str, tag: str | None) -> str:
    """The test part of a result's name: NAME, or NAME.TAG (Autotest's directory name)."""
    return f"{name}.{tag}" if tag else name


def jsonable_params(values: dict[str, Any]) -> dict[str, Any]:
    """run_test's keyword arguments as params: JSON values as they are, hosts by name,
    anything else as its str()."""
    params = {}
    for key, value in values.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = str(getattr(value, "name", None) or value)
        params[key] = value
    return params


def run_named(
    runtime: Runtime,
    runner: ControlRunner,
    name: str,
    place: HostConfig,
    *,
    args: tuple = (),
    tag: str | None = None,
    dargs: dict[str, Any] | None = None,
    subdir: str | None = None,
    machine: str | None = None,
) -> bool:
    """Run the test(s) `name` means at `place`; True when every one passed."""
    machine = machine or place.name
    label = test_label(str(name), tag)
    params = jsonable_params(dict(dargs or {}))
    if args:
        params["args"] = jsonable_params({"a": list(args)})["a"]
    try:
        found = find_test(name, runtime.tests_dirs, runtime.where())
    except TestNotFound as exc:
        record_result(runtime, events.ERROR, f"{machine}/{label}", str(exc), "TestNotFound")
        return False
    planned: list[Planned] = []
    for spec in found.specs:
        part = label if len(found.specs) == 1 else f"{label}:{spec.class_name}.{spec.method}"
        if spec.kind == CONTROL_CLIENT:  # NAME/control: the result is that file's
            part = f"{part}/{os.path.basename(spec.path)}"
        planned.append(runner.plan(place, spec, f"{machine}/{part}", params, subdir))
    results = runner.run(planned)
    return bool(results) and all(r.status in PASSED for r in results)


def record_result(
    runtime: Runtime, status: str, name: str, reason: str | None, fail_class: str | None = None
) -> None:
    """A result made by hand (job.record, a test not found): its own directory, a debug.log
    line saying what it was, and the job told."""
    rel, path = runtime.results.claim_dir(*runtime.dir_parts(name))
    name = "/".join([*name.split("/")[:-1], rel.rsplit("/", 1)[-1]])
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    try:
        with open(os.path.join(path, "debug.log"), "a", encoding="utf-8") as log:
            log.write(f"{stamp} INFO | {status} {name}{': ' + reason if reason else ''}\n")
    except OSError as exc:
        LOG.warning("cannot write %s/debug.log: %s", path, exc)
    outcome = {"status": status, "fail_reason": reason, "fail_class": fail_class}
    machine = name.split("/", 1)[0]  # the result is about it (its host, in results.json)
    runtime.results.add(name, rel, {**outcome, "start": now, "end": now, "host": machine})


class Profilers:
    """`job.profilers`: mhtest has no profilers; adding one is logged and ignored."""

    def add(self, profiler: str, *args: Any, **kwargs: Any) -> None:
        LOG.warning("job.profilers.add(%r): mhtest has no profilers: ignored", profiler)

    def delete(self, profiler: str) -> None:
        LOG.info("job.profilers.delete(%r): ignored", profiler)

    def present(self) -> bool:
        return False


class JobBase:
    """What the `job` of a server and of a client control file share: record, barrier, …"""

    def __init__(self, runtime: Runtime, runner: ControlRunner) -> None:
        self._runtime = runtime
        self._runner = runner
        self.resultdir = runtime.logdir
        self.control = runtime.filename
        self.args = list(runtime.args)
        self.profilers = Profilers()
        self.tag = ""

    def record(
        self,
        status_code: str,
        subdir: str | None,
        operation: str | None,
        status: str = "",
        optional_fields: dict[str, Any] | None = None,
    ) -> None:
        """job.record(status_code, subdir, operation, status): a result of its own (START,
        INFO and RUNNING only go to the log). ControlError for an unknown status code."""
        runtime = self._runtime
        code = str(status_code or "").strip()
        if code.startswith("END "):
            code = code[4:].strip()
        if code.upper() not in STATUSES:
            known = "GOOD, FAIL, ERROR, WARN, ABORT, TEST_NA, START, INFO"
            raise ControlError(
                f"{runtime.where()}: job.record: unknown status {status_code!r} (use {known}, "
                "or an mhtest status such as PASS)"
            )
        mapped = STATUSES[code.upper()]
        what = operation or subdir or "record"
        if mapped is None:
            LOG.info("%s %s %s%s", code, subdir or "----", what, f": {status}" if status else "")
            return
        # In a server control file a subdir is a machine's (Autoserv's per-machine directory).
        machine = (subdir if runtime.machine_dirs else None) or runtime.machine_of()
        record_result(runtime, mapped, f"{machine}/{what}", status or None)

    def barrier(self, hostid: str, tag: str, timeout: float | None = None) -> Any:
        """Autotest's barrier: meet other control files at `tag` (mhtest.autoserv.barrier)."""
        return self._runtime.barrier(hostid, tag, timeout)


class ServerJob(JobBase):
    """The `job` of a server control file (see the module docstring)."""

    def __init__(
        self, runtime: Runtime, runner: ControlRunner, parallel_simple: Callable[..., Any]
    ) -> None:
        super().__init__(runtime, runner)
        self._parallel_simple = parallel_simple
        self.machines = list(runtime.machines)
        self.tmpdir = os.path.join(runtime.logdir, "tmp")

    def run_test(
        self, name: str, *args: Any, host: Any = None, tag: str | None = None, **dargs: Any
    ) -> bool:
        """Run test `name` here, on the controller (`host`, if given, among its params)."""
        from mhtest.autoserv.hosts import place_of
        from mhtest.dispatch import local_place

        runtime = self._runtime
        if host is not None:
            target = place_of(runtime, host)
            dargs = {
                **dargs,
                "host": target.name,
                "host_address": "127.0.0.1" if target.is_local else target.address,
            }
        return run_named(
            runtime,
            self._runner,
            name,
            local_place(),
            args=args,
            tag=tag,
            dargs=dargs,
            machine=runtime.machine_of(host),
        )

    def parallel_simple(
        self,
        function: Callable[[Any], Any],
        machines: Any,
        log: bool = True,
        timeout: float | None = None,
        return_results: bool = False,
    ) -> list[Any] | None:
        """`function(machine)` for every machine at once, each in a subdir of its own."""
        return self._parallel_simple(
            function, machines, log=log, timeout=timeout, return_results=return_results
        )
