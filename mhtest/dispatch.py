"""Run tests at places: the one loop over places, under `mhtest run`, multi-host tests and more.

From Python::

    from mhtest.dispatch import run
    from mhtest.hosts import resolve_hosts
    from mhtest.resolver import resolve

    specs = resolve(["tests/net.py"])
    places = resolve_hosts(["h1", "h2", "local"])
    for result in run(specs, places, timeout=600, results_dir="out/"):
        print(result.host, result.name, result.status, result.fail_reason)

A place is a HostConfig; its `kind` picks the spawner plugin (`mhtest.spawner`) that runs
tests there: "local" (child processes on this machine) or "ssh" (the RemoteTestRunner).
`place()` says which test runs where, as `mhtest run` does: every plain test at every
place, a multi-host test here, spanning the places. A `Dispatcher` runs such assignments:
one thread per place, every event to one sink, a deadline for the whole run and one for
each test (its timeout, from its test.start, plus DEADLINE_MARGIN: a host that stops
answering cannot hold a test past it; one whose host is reconnecting waits for it, up to
the reconnect timeout), an interrupt (Ctrl-C, or SIGTERM in a multi-host
test's process) that asks every place to stop, and a made-up end for every test a place
could not run or report. `run()` wraps a Job around it
(the results tree, result files) and yields each result as its test ends.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterable, Iterator, Sequence

from mhtest import events
from mhtest.hosts.inventory import HostConfig
from mhtest.places import Options, Place, Provisions, Stopped, local_place, place, tests_dirs
from mhtest.spec import TestSpec
from mhtest.test import TestInterrupt

__all__ = [
    "Dispatcher",
    "DispatchError",
    "Options",
    "Outcome",
    "Place",
    "Stopped",
    "local_place",
    "place",
    "run",
]

LOG = logging.getLogger(__name__)
Sink = Callable[[dict], None]
#: A hook around one place's run: (place, connected host or None, its specs) -> context.
PlaceHook = Callable[[HostConfig, Any, "list[TestSpec]"], ContextManager[Any]]
#: After the run's timeout, how long the places get to stop their tests and report.
STOP_GRACE = 30.0
#: After an interrupt, how long the places get to stop their tests and report.
#: Longer than any runner below waits (see mhtest.runners.local.MULTIHOST_STOP_GRACE).
INTERRUPT_GRACE = 30.0
#: How long past its timeout a started test may go without an end before one is made up
#: here (its place's runner should have ended it at its timeout); results arriving for
#: it (test.files) move this deadline on. Longer than SSH keepalives take to find out that
#: a host went silent (mhtest.hosts.ssh: 15 s), so that a test whose host drops around
#: its end is held for the host to come back, not given an end (see Dispatcher._hold).
DEADLINE_MARGIN = 20.0
#: What the runners say of a test they stopped because the run was interrupted.
USER = "interrupted by the user"
#: The spawners that come with mhtest, by kind (loaded without scanning entry points).
BUILTIN_SPAWNERS = {
    "local": ("mhtest.plugins.spawner_local", "LocalSpawner"),
    "ssh": ("mhtest.plugins.spawner_ssh", "SSHSpawner"),
}


class DispatchError(Exception):
    """A place cannot be run at all (no spawner for its kind, …): one line."""


@dataclass
class Outcome:
    """How a Dispatcher.run() ended, besides the tests' own results."""

    interrupted: str | None = None  # why the run was interrupted, if it was
    timed_out: float | None = None  # the run's timeout, if it was stopped by it


class Dispatcher:
    """Runs assignments of tests to places: one thread per place, one sink, one deadline.

    `sink` receives every event of every test (from the places' threads). `stop` is set to
    ask every place to stop its tests (the run's timeout, an interrupt). Each test gets
    exactly one end: its own, or one made up here for a place that failed, a run that was
    interrupted or timed out, or a runner that never reported.
    """

    def __init__(
        self,
        sink: Sink,
        options: Options | None = None,
        *,
        stop: threading.Event | None = None,
        fork_server: Any = None,
        stop_grace: float = STOP_GRACE,
        interrupt_grace: float = INTERRUPT_GRACE,
        sources: Any = None,
    ) -> None:
        self.sink = sink
        self.options = options or Options()
        self.stop = stop or threading.Event()
        self.stop_grace = stop_grace
        self.interrupt_grace = interrupt_grace
        self.outcome = Outcome()
        #: Connections, sources, test files and a fork server, made ahead for the places.
        # (`sources`: a Future of mhtest's packed sources, when the caller has one: a
        # control file's runs share it.)
        self.provisions = Provisions(self.options, fork_server, sources)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._spawners: dict[str, Any] = {}
        self._specs: dict[int, TestSpec] = {}
        self._ended: set[int] = set()
        #: Started tests without an end: uid -> (deadline (monotonic), timeout).
        self._deadlines: dict[int, tuple[float, float]] = {}
        #: Places whose host is away (reconnecting): name -> until when (monotonic).
        self._held: dict[str, float] = {}
        self._places: dict[str, Place] = {}
        self._ahead: set[str] = set()  # places whose test files are being made (ahead())
        self._closed = False
        self._interrupt_asked: str | None = None

    # -- events -----------------------------------------------------------------------------
    def report(self, event: dict) -> None:
        """Every event of the run passes here: one end per test, then the caller's sink."""
        kind = event.get("type")
        uid = event.get("uid")
        with self._lock:
            if self._closed:
                return  # a runner that outlived the run: its tests have their ends
            if kind in (events.TEST_END, events.TEST_SKIPPED):
                if uid in self._ended:
                    return  # one end per test: the first (maybe made up here) stays
                self._ended.add(uid)
                self._deadlines.pop(uid, None)
                if event.get("status") == events.INTERRUPT or kind == events.TEST_SKIPPED:
                    event = self._why_stopped(event)
            elif kind == events.TEST_START and uid not in self._ended:
                timeout = _timeout(event, self._specs.get(uid))
                if timeout:
                    deadline = time.monotonic() + timeout + DEADLINE_MARGIN
                    self._deadlines.setdefault(uid, (deadline, timeout))
            elif kind == events.TEST_REBOOT:
                # Its host reboots, then it starts again with its whole timeout.
                self._deadlines.pop(uid, None)
            elif kind == events.TEST_FILES:
                if uid in self._deadlines:  # its results are on their way
                    deadline, timeout = self._deadlines[uid]
                    later = time.monotonic() + DEADLINE_MARGIN
                    self._deadlines[uid] = (max(deadline, later), timeout)
                return  # progress only: not for the sink
            elif kind == events.HOST_PHASE and event.get("hold") is not None:
                self._hold(str(event.get("host")), float(event["hold"]))
        self.sink(event)

    def _hold(self, host: str, hold: float) -> None:
        """`host` is away for at most `hold` s (0: it is back): its tests' deadlines wait.

        A test that ended there meanwhile is reported when the host is back; one whose
        deadline passed gets DEADLINE_MARGIN from then. (The caller holds the lock.)
        """
        now = time.monotonic()
        if hold > 0:
            self._held[host] = now + hold + DEADLINE_MARGIN
            return
        if self._held.pop(host, None) is None:
            return
        for uid, (deadline, timeout) in list(self._deadlines.items()):
            if self._specs[uid].host == host and deadline < now + DEADLINE_MARGIN:
                self._deadlines[uid] = (now + DEADLINE_MARGIN, timeout)

    def _why_stopped(self, event: dict) -> dict:
        """A test that ended INTERRUPT because the run stopped: say why the run stopped."""
        timed_out, interrupted = self.outcome.timed_out, self.outcome.interrupted
        key = "reason" if event.get("type") == events.TEST_SKIPPED else "fail_reason"
        if timed_out is not None and key == "fail_reason":
            return {**event, key: f"stopped: no end within {timed_out:.3g} s"}
        reason = str(event.get(key) or "")
        if interrupted is not None and interrupted != USER and reason.startswith(USER):
            return {**event, key: interrupted + reason[len(USER) :]}
        return event

    def interrupt(self, reason: str = "interrupted by the user") -> None:
        """Ask the run to stop as after Ctrl-C (from any thread)."""
        self._interrupt_asked = reason
        self._wake.set()

    # -- running ----------------------------------------------------------------------------
    def ahead(
        self, assignments: Sequence[tuple[HostConfig, TestSpec]]
    ) -> dict[str, tuple[HostConfig, list[TestSpec]]]:
        """Start what the places need (connections, test files) now; run() starts it too.

        A caller with work of its own before run() (the job's records) calls this first,
        so that the hosts' round trips overlap that work. The assignments by place.
        """
        groups: dict[str, tuple[HostConfig, list[TestSpec]]] = {}
        for config, spec in assignments:
            groups.setdefault(config.name, (config, []))[1].append(spec)
        self.provisions.connect_ahead(config for config, _ in groups.values())
        for config, specs in groups.values():
            if config.is_local or config.name in self._ahead:
                continue
            self._ahead.add(config.name)  # its test files are listed and hashed while it connects
            paths = [s.path for s in specs if s.path]
            _in_thread(
                f"payload-{config.name}", self.provisions.payload_ahead, paths, tests_dirs(specs)
            )
        return groups

    def run(
        self,
        assignments: Sequence[tuple[HostConfig, TestSpec]],
        timeout: float | None = None,
        on_place: PlaceHook | None = None,
    ) -> Outcome:
        """Run each spec at its place; returns when all have ended (or the run gave up)."""
        groups = self.ahead(assignments)
        for spec in (spec for _, spec in assignments):
            self._specs[spec.uid] = spec
        for config, specs in groups.values():
            self._places[config.name] = Place(config, specs, self.provisions, self.report, on_place)
        for where in list(self._places.values()):
            _in_thread(f"place-{where.config.name}", self._run_place, where)
        try:
            self._wait(timeout)
            self._make_up_ends()
        finally:
            with self._lock:
                self._closed = True
            self.provisions.close()
        return self.outcome

    def _run_place(self, where: Place) -> None:
        """One place's thread: its spawner runs its tests; a failure ends only them, as ERROR."""
        config = where.config
        try:
            self._spawner(config).run(where)
        except Exception as exc:  # noqa: BLE001 - one place failing must not stop the others
            LOG.debug("place %s failed", config.name, exc_info=True)
            status, reason = events.ERROR, events.one_line(exc, config.name)
            if where.stop.is_set():  # it failed because it was stopping (Ctrl-C …)
                status, reason = events.INTERRUPT, USER
            for spec in where.specs:
                self.report(events.synthetic_end(spec.uid, status, reason, host=config.name))
        finally:
            with self._lock:
                where.done = True
            self._wake.set()

    def _spawner(self, config: HostConfig) -> Any:
        kind = config.kind
        with self._lock:
            spawner = self._spawners.get(kind)
        if spawner is None:
            spawner = _load_spawner(kind, config.name)
            with self._lock:
                spawner = self._spawners.setdefault(kind, spawner)
        return spawner

    def _wait(self, timeout: float | None) -> None:
        """Wait for the places; past `timeout` stop them, past the grace give up waiting.

        A count and an Event, not Thread.join(): a Ctrl-C that lands inside join() can
        make CPython take a running thread for stopped (bpo-45274's fix). The first
        interrupt asks every place to stop; a second one stops the waiting.
        """
        deadline = time.monotonic() + timeout if timeout else None
        give_up: float | None = None
        while True:
            try:
                if self._all_done():
                    return
                self._wake.wait(0.1)
                self._wake.clear()
                now = time.monotonic()
                if self._interrupt_asked is not None and self.outcome.interrupted is None:
                    give_up = self._interrupted(self._interrupt_asked, give_up)
                if deadline is not None and now > deadline and not self.stop.is_set():
                    LOG.warning("tests did not end within %g s: stopping them", timeout)
                    self.outcome.timed_out = timeout
                    self._stop_all()
                    give_up = now + self.stop_grace
                if self.stop.is_set():
                    self._stop_all()  # (set from outside, too)
                self._check_deadlines(now)
                if give_up is not None and now > give_up:
                    LOG.error("places did not stop in time; not waiting for them any longer")
                    return
            except (KeyboardInterrupt, TestInterrupt) as exc:
                if self.outcome.interrupted is not None:
                    LOG.warning("interrupted again: not waiting for the places any longer")
                    return
                reason = str(exc) if isinstance(exc, TestInterrupt) else ""
                give_up = self._interrupted(reason or "interrupted by the user", give_up)

    def _interrupted(self, reason: str, give_up: float | None) -> float:
        LOG.warning("%s: stopping the tests and collecting their results", reason)
        self.outcome.interrupted = reason
        self._stop_all()
        return min(give_up or float("inf"), time.monotonic() + self.interrupt_grace)

    def _stop_all(self) -> None:
        self.stop.set()
        for where in self._places.values():
            where.stop.set()

    def _all_done(self) -> bool:
        """True when every place's thread ended, or was given up on (see _check_deadlines)."""
        now = time.monotonic()
        with self._lock:
            return all(
                p.done or (p.give_up is not None and now > p.give_up) for p in self._places.values()
            )

    def _check_deadlines(self, now: float) -> None:
        """An end for each started test past its deadline; its place stops once all ended.

        Its place's runner should have ended it at its timeout: when it has not (a host
        that stopped answering, a runner that hangs), the end is made up here, and the
        runner's own end, if it comes, is dropped. A place whose tests all have ends is
        asked to stop, and waited for at most `stop_grace` more.
        """
        with self._lock:
            late = [
                (uid, t)
                for uid, (d, t) in self._deadlines.items()
                if now > d and now > self._held.get(self._specs[uid].host, 0.0)
            ]
        for uid, timeout in late:
            spec = self._specs[uid]
            reason = f"timeout of {timeout:g} s reached; {spec.host} did not report the end"
            LOG.warning("%s: %s", spec.name, reason)
            self.report(events.synthetic_end(uid, events.INTERRUPT, reason, host=spec.host))
        if not late:
            return
        with self._lock:
            for where in self._places.values():
                ended = all(s.uid in self._ended for s in where.specs)
                if ended and not where.done and where.give_up is None:
                    LOG.warning("%s: stopping its runner (its tests ended here)", where.config.name)
                    where.stop.set()
                    where.give_up = now + self.stop_grace

    def _make_up_ends(self) -> None:
        """An end for every test that has none: what happened to the run says why."""
        for uid, spec in self._specs.items():
            if uid in self._ended:
                continue
            if self.outcome.interrupted is not None:
                status, reason = events.INTERRUPT, self.outcome.interrupted
            elif self.outcome.timed_out is not None:
                status, reason = events.INTERRUPT, "stopped: no end within the run's timeout"
            else:
                status, reason = events.ERROR, "the test never reported an end"
            self.report(events.synthetic_end(uid, status, reason, host=spec.host))


def run(
    specs: Iterable[TestSpec],
    places: Sequence[HostConfig] | None = None,
    *,
    timeout: float | None = None,
    results_dir: str | None = None,
    params: dict[str, Any] | None = None,
    options: Options | None = None,
    writers: list[Any] | None = None,
) -> Iterator[Any]:
    """Run `specs` at `places` as one job; yield each TestResult as its test ends.

    Every plain test runs at every place (here when `places` is empty); a multi-host test
    runs here and spans the places. The job's results tree goes under `results_dir`
    (default ~/mhtest/job-results: `latest` names it), with the result plugins' files
    unless `writers` says otherwise. Ctrl-C while iterating stops the tests, keeps their
    results and raises KeyboardInterrupt once they are recorded; leaving the loop early
    stops the tests that still run.
    """
    from mhtest.job import DEFAULT_RESULTS_DIR, Job, JobConfig

    config = JobConfig(
        results_dir=results_dir or DEFAULT_RESULTS_DIR,
        options=options or Options(),
        timeout=timeout,
    )
    ended: queue.Queue = queue.Queue()
    job = Job(config, [*(_default_writers() if writers is None else writers), _Feed(ended)])
    job.add(place(specs, places, params, config.options))
    done = threading.Event()

    def run_job() -> None:
        try:
            job.run()
        finally:
            done.set()
            ended.put(None)

    _in_thread("job", run_job)
    interrupted = False
    try:
        while True:
            try:
                result = ended.get(timeout=0.5)
            except queue.Empty:
                continue
            except KeyboardInterrupt:
                interrupted = True
                job.interrupt()
                continue
            if result is None:
                break
            yield result
    finally:
        if not done.is_set():
            job.interrupt("the caller stopped reading the results")
            done.wait(INTERRUPT_GRACE + STOP_GRACE)
    if interrupted:
        raise KeyboardInterrupt


class _Feed:
    """A result writer that hands each result to run()'s loop."""

    name = "feed"

    def __init__(self, ended: queue.Queue) -> None:
        self.ended = ended

    def test_end(self, job: Any, result: Any) -> None:
        self.ended.put(result)


def _default_writers() -> list[Any]:
    from mhtest.plugins import load_plugins

    return [cls() for _, cls in load_plugins("mhtest.result")]


def _load_spawner(kind: str, place_name: str) -> Any:
    """The spawner for places of `kind`: a built-in one, else the plugin of that name."""
    if kind in BUILTIN_SPAWNERS:
        import importlib

        module, name = BUILTIN_SPAWNERS[kind]
        return getattr(importlib.import_module(module), name)()
    from mhtest.plugins import load_plugins

    for name, cls in load_plugins("mhtest.spawner"):
        if name == kind or getattr(cls, "kind", None) == kind:
            return cls()
    raise DispatchError(
        f"{place_name}: no spawner plugin runs tests on places of kind {kind!r} "
        "(install the plugin that provides it)"
    )


def _timeout(event: dict, spec: TestSpec | None) -> float | None:
    """A started test's timeout: its test.start's, else what its spec or params say."""
    for value in (
        event.get("timeout"),
        spec.timeout if spec else None,
        (spec.params or {}).get("timeout") if spec else None,
    ):
        try:
            timeout = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if 0 < timeout < float("inf"):
            return timeout
    return None


def _in_thread(name: str, target: Callable[..., Any], *args: Any) -> None:
    threading.Thread(target=target, args=args, name=name, daemon=True).start()
