"""ControlRunner: runs a control file's tests at places, each a result of the job as it ends.

`job.run_test` (here), `Autotest.run_test`/`Autotest.run` (on a host) and a client control
file's `job.run_test` (on its own host) all come here. The tests run through mhtest's
dispatcher (mhtest.dispatch.Dispatcher): a local place runs them in child processes, an
SSH place through the remote runner, mhtest's own executor on the host, bootstrapped there
first if needed. Each end becomes a result of the job (mhtest.autoserv.nested) named
`<machine>/<test>[.<tag>]`; a client control file run on a host sends its own results on
the way, and they pass through here with their directory moved under its.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mhtest import events
from mhtest.autoserv.runtime import Runtime
from mhtest.dispatch import Dispatcher
from mhtest.hosts.inventory import HostConfig
from mhtest.results import TestResult
from mhtest.spec import CONTROL_CLIENT, TestSpec
from mhtest.test import TestInterrupt

LOG = logging.getLogger(__name__)
#: After an interrupt, how long a control file's tests get to stop and report.
INTERRUPT_GRACE = 4.0


@dataclass
class Planned:
    """One test to run at a place, and the result it makes: its name and directory."""

    place: HostConfig
    spec: TestSpec
    name: str  # relative to the control file's reference: "<machine>/<test>[.<tag>]"
    rel: str  # its directory, relative to the control file's


class ControlRunner:
    """Runs Planned tests through a Dispatcher; `run()` returns their TestResults."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._lock = threading.Lock()

    def plan(
        self,
        place: HostConfig,
        spec: TestSpec,
        name: str,
        params: dict[str, Any],
        subdir: str | None = None,
    ) -> Planned:
        """A Planned for `spec` at `place`, named `name` ("<machine>/<test>"): its directory
        claimed (under `subdir` if given; ".2"… when taken, and the name follows), its
        params set."""
        parts = name.split("/")
        dirs = self.runtime.dir_parts(name)
        rel, path = self.runtime.results.claim_dir(*(subdir or "").split("/"), *dirs)
        name = "/".join([*parts[:-1], rel.rsplit("/", 1)[-1]])
        spec.params = {**spec.params, **params}
        spec.host = place.name
        spec.logdir = str(path)
        if spec.kind == CONTROL_CLIENT:  # its test names resolve at its place: send them
            spec.tests_path = list(self.runtime.tests_dirs)
        return Planned(place, spec, name, rel)

    def run(self, planned: list[Planned], timeout: float | None = None) -> list[TestResult]:
        """Run every Planned test; their results (each also sent to the job as it ends).

        Raises TestInterrupt once the results are in when the run was interrupted (the
        control file's process got SIGTERM: the job is being stopped).
        """
        by_uid = {}
        for uid, item in enumerate(planned, 1):
            item.spec.uid = uid
            by_uid[uid] = item
        done: dict[int, TestResult] = {}
        remote = any(not p.place.is_local for p in planned)
        dispatcher = Dispatcher(
            lambda event: self._sink(event, by_uid, done),
            self.runtime.options,
            interrupt_grace=INTERRUPT_GRACE,
            sources=self.runtime.sources() if remote else None,
        )
        hook = None
        if self.runtime.server and any(p.spec.kind == CONTROL_CLIENT for p in planned):
            # A server control file's client control files meet at its sync server; one
            # that a client control file runs (NAME/control) inherits its own.
            hook = self._sync().place_hook
        outcome = dispatcher.run([(p.place, p.spec) for p in planned], timeout, hook)
        results = [done[uid] for uid in sorted(done)]
        if outcome.interrupted is not None:
            raise TestInterrupt(outcome.interrupted)
        return results

    def _sync(self) -> Any:
        """The control file's sync server (started on first need), for client control files."""
        from mhtest.autoserv.barrier import ControlSync

        with self._lock:
            if self.runtime.sync is None:
                self.runtime.sync = ControlSync.start()
            return self.runtime.sync

    # -- events ------------------------------------------------------------------------------
    def _sink(self, event: dict, by_uid: dict[int, Planned], done: dict[int, TestResult]) -> None:
        kind = event.get("type")
        if kind == events.HOST_INFO:
            self._host_info(event)
            return
        item = by_uid.get(event.get("uid"))  # type: ignore[arg-type]
        if item is None:
            return
        if kind == events.TEST_END:
            result = TestResult.from_end(item.spec, event, name=item.name)
            with self._lock:
                if item.spec.uid in done:
                    return
                done[item.spec.uid] = result
            self.runtime.results.add(item.name, item.rel, {**event, "host": result.host})
        elif kind == events.TEST_NESTED:
            # A client control file's own result: its name has its machine already; its
            # directory is inside the client control file's.
            inner = str(event.get("logdir") or "")
            rel = f"{item.rel}/{inner}" if inner else item.rel
            name = str(event.get("name") or "result")
            self.runtime.results.add(name, rel, {**event, "host": item.place.name})

    def _host_info(self, event: dict) -> None:
        from mhtest import sysinfo

        host = str(event.get("host"))
        try:
            sysinfo.write(Path(self.runtime.logdir) / "sysinfo", host, event.get("facts") or {})
        except OSError as exc:
            LOG.warning("cannot keep the facts of %s: %s", host, exc)
