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
one thread per place, every event to one sink, a deadline for the whole run, an interrupt
(Ctrl-C, or SIGTERM in a multi-host test's process) that asks every place to stop, and a
made-up end for every test a place could not run or report. `run()` wraps a Job around it
(the results tree, result files) and yields each result as its test ends.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable, ContextManager, Iterable, Iterator, Sequence

from mhtest import events
from mhtest.hosts.inventory import LOCAL, HostConfig
from mhtest.spec import TestSpec
from mhtest.test import TestInterrupt

LOG = logging.getLogger(__name__)
Sink = Callable[[dict], None]
#: A hook around one place's run: (place, connected host or None, its specs) -> context.
PlaceHook = Callable[[HostConfig, Any, "list[TestSpec]"], ContextManager[Any]]
#: How long a host's connection (and packing mhtest's sources) may take.
CONNECT_WAIT = 60.0
#: After the run's timeout, how long the places get to stop their tests and report.
STOP_GRACE = 30.0
#: After an interrupt, how long the places get to stop their tests and report.
INTERRUPT_GRACE = 30.0
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
class Options:
    """How places are reached and how many tests run at once: plain data (a spec carries it)."""

    max_parallel: int | None = None  # tests at once per place; None: the place's CPU count
    all_at_once: bool = False  # start every test of a place at once (workers that meet)
    accept_new_host_keys: bool = False
    remote_python: str = "python3"
    sync_direct: bool = False  # multi-host workers reach the sync server directly
    inventory: str | None = None  # for hosts a multi-host test names in its params
    ssh_config: str | None = None
    max_results: int | None = None  # bytes a host may send back per test

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Options:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


@dataclass
class Outcome:
    """How a Dispatcher.run() ended, besides the tests' own results."""

    interrupted: str | None = None  # why the run was interrupted, if it was
    timed_out: float | None = None  # the run's timeout, if it was stopped by it


def local_place(name: str = LOCAL) -> HostConfig:
    """This machine as a place (tests in child processes, no SSH)."""
    return HostConfig(name=name, address=LOCAL, port=0, kind=LOCAL)


def place(
    specs: Iterable[TestSpec],
    places: Sequence[HostConfig] | None = None,
    params: dict[str, Any] | None = None,
    options: Options | None = None,
) -> list[tuple[HostConfig, TestSpec]]:
    """Which test runs where: every plain test at every place (here when none is given).

    A multi-host test runs here once and gets the places as its hosts (with `options`, to
    reach them). `params` go under each test's own, a place's params over them. The specs
    given are not changed: each assignment holds a copy.
    """
    here = local_place()
    host_options = (options or Options()).to_dict()
    assigned = []
    for spec in specs:
        merged = {**(params or {}), **spec.params}
        if spec.multihost or not places:
            copy = replace(spec, params=merged, env=dict(spec.env), host=here.name)
            if spec.multihost:
                copy.hosts = [asdict(p) for p in places or ()]
                copy.host_options = dict(host_options)
                copy.secrets = sorted(
                    {*spec.secrets, *(s for p in places or () for s in p.secrets)}
                )
            assigned.append((here, copy))
            continue
        for where in places:
            params_here = {**merged, **(where.params or {})}
            copy = replace(spec, params=params_here, env=dict(spec.env), host=where.name)
            copy.secrets = sorted({*spec.secrets, *where.secrets})
            assigned.append((where, copy))
    return assigned


class Place:
    """What a spawner gets to run one place's tests: its config, specs and the run's means."""

    def __init__(
        self, dispatcher: Dispatcher, config: HostConfig, specs: list[TestSpec], hook: Any
    ) -> None:
        self.config = config
        self.specs = specs
        self.options = dispatcher.options
        self.stop = dispatcher.stop
        self.sink: Sink = dispatcher.report
        self._dispatcher = dispatcher
        self._hook = hook

    @property
    def max_parallel(self) -> int | None:
        """How many of this place's tests run at once (None: the place decides)."""
        if self.options.all_at_once:
            return len(self.specs)
        return self.options.max_parallel

    def connect(self) -> Any:
        """A connected Host for this place (opened ahead when the dispatcher could)."""
        return self._dispatcher.take_connection(self.config)

    def sources(self) -> Any:
        """mhtest's packed sources for hosts (built once per dispatcher)."""
        return self._dispatcher.sources()

    def take_fork_server(self) -> Any:
        """A local fork server started ahead of the run, for the first local place; or None."""
        return self._dispatcher.take_fork_server()

    def entered(self, host: Any) -> ContextManager[Any]:
        """The caller's hook around this place's run (sync forwards, …), given its host."""
        if self._hook is None:
            return contextlib.nullcontext()
        return self._hook(self.config, host, self.specs)


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
        sources: Future | None = None,
    ) -> None:
        self.sink = sink
        self.options = options or Options()
        self.stop = stop or threading.Event()
        self.stop_grace = stop_grace
        self.interrupt_grace = interrupt_grace
        self.outcome = Outcome()
        self._fork_server = fork_server
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._connections: dict[str, Future] = {}
        # mhtest's packed sources for hosts: given when the caller has them (a control
        # file's runs share one), else built on first need.
        self._sources: Future | None = sources
        self._spawners: dict[str, Any] = {}
        self._specs: dict[int, TestSpec] = {}
        self._ended: set[int] = set()
        self._places_left = 0
        self._closed = False
        self._interrupt_asked: str | None = None

    # -- what places need -------------------------------------------------------------------
    def connect_ahead(self, places: Iterable[HostConfig]) -> None:
        """Start connecting to the SSH places (and packing mhtest's sources) now."""
        remote = False
        with self._lock:
            for config in places:
                if config.is_local or config.name in self._connections:
                    continue
                remote = True
                future: Future = Future()
                self._connections[config.name] = future
                _in_thread(f"connect-{config.name}", _connect, config, self.options, future)
        if remote:
            self._start_sources()

    def settled_connections(self) -> dict[str, Any]:
        """{place name: connected host, or the exception} once every connection is settled."""
        settled: dict[str, Any] = {}
        for name, future in list(self._connections.items()):
            try:
                settled[name] = future.result(CONNECT_WAIT)
            except Exception as exc:  # noqa: BLE001 - reported as its tests' ERROR
                settled[name] = exc
        return settled

    def take_connection(self, config: HostConfig) -> Any:
        with self._lock:
            future = self._connections.pop(config.name, None)
        if future is None:
            future = Future()
            _connect(config, self.options, future)
        try:
            return future.result(CONNECT_WAIT)
        except FutureTimeout:
            why = f"{config.name}: no SSH connection within {CONNECT_WAIT:g} s"
            raise TimeoutError(why) from None

    def sources(self) -> Any:
        self._start_sources()
        assert self._sources is not None
        return self._sources.result(CONNECT_WAIT)

    def _start_sources(self) -> None:
        with self._lock:
            if self._sources is not None:
                return
            self._sources = Future()
        _in_thread("pack-sources", _build_sources, self._sources)

    def take_fork_server(self) -> Any:
        with self._lock:
            server, self._fork_server = self._fork_server, None
        return server

    def close(self) -> None:
        """Close the connections opened ahead that no place took, and an unused fork server."""
        with self._lock:
            futures, self._connections = list(self._connections.values()), {}
            server, self._fork_server = self._fork_server, None
        for future in futures:
            future.add_done_callback(_close_host)
        if server is not None:
            server.close()

    # -- events -----------------------------------------------------------------------------
    def report(self, event: dict) -> None:
        """Every event of the run passes here: one end per test, then the caller's sink."""
        kind = event.get("type")
        with self._lock:
            if self._closed:
                return  # a runner that outlived the run: its tests have their ends
            if kind in (events.TEST_END, events.TEST_SKIPPED):
                uid = event.get("uid")
                if uid in self._ended:
                    return
                self._ended.add(uid)
                if event.get("status") == events.INTERRUPT:
                    event = self._why_stopped(event)
        self.sink(event)

    def _why_stopped(self, event: dict) -> dict:
        """A test that ended INTERRUPT because the run stopped: say why the run stopped."""
        timed_out, interrupted = self.outcome.timed_out, self.outcome.interrupted
        if timed_out is not None:
            return {**event, "fail_reason": f"stopped: no end within {timed_out:.3g} s"}
        reason = str(event.get("fail_reason") or "")
        if interrupted is not None and interrupted != USER and reason.startswith(USER):
            return {**event, "fail_reason": interrupted + reason[len(USER) :]}
        return event

    def interrupt(self, reason: str = "interrupted by the user") -> None:
        """Ask the run to stop as after Ctrl-C (from any thread)."""
        self._interrupt_asked = reason
        self._wake.set()

    # -- running ----------------------------------------------------------------------------
    def run(
        self,
        assignments: Sequence[tuple[HostConfig, TestSpec]],
        timeout: float | None = None,
        on_place: PlaceHook | None = None,
    ) -> Outcome:
        """Run each spec at its place; returns when all have ended (or the run gave up)."""
        groups: dict[str, tuple[HostConfig, list[TestSpec]]] = {}
        for config, spec in assignments:
            groups.setdefault(config.name, (config, []))[1].append(spec)
            self._specs[spec.uid] = spec
        self.connect_ahead(config for config, _ in groups.values())
        self._places_left = len(groups)
        for config, specs in groups.values():
            _in_thread(f"place-{config.name}", self._run_place, config, specs, on_place)
        try:
            self._wait(timeout)
            self._make_up_ends()
        finally:
            with self._lock:
                self._closed = True
            self.close()
        return self.outcome

    def _run_place(self, config: HostConfig, specs: list[TestSpec], hook: Any) -> None:
        """One place's thread: its spawner runs its tests; a failure ends only them, as ERROR."""
        try:
            self._spawner(config).run(Place(self, config, specs, hook))
        except Exception as exc:  # noqa: BLE001 - one place failing must not stop the others
            LOG.debug("place %s failed", config.name, exc_info=True)
            reason = events.one_line(exc, config.name)
            for spec in specs:
                self.report(events.synthetic_end(spec.uid, events.ERROR, reason, host=config.name))
        finally:
            with self._lock:
                self._places_left -= 1
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
                with self._lock:
                    if not self._places_left:
                        return
                self._wake.wait(0.1)
                self._wake.clear()
                now = time.monotonic()
                if self._interrupt_asked is not None and self.outcome.interrupted is None:
                    give_up = self._interrupted(self._interrupt_asked, give_up)
                if deadline is not None and now > deadline and not self.stop.is_set():
                    LOG.warning("tests did not end within %g s: stopping them", timeout)
                    self.outcome.timed_out = timeout
                    self.stop.set()
                    give_up = now + self.stop_grace
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
        self.stop.set()
        return min(give_up or float("inf"), time.monotonic() + self.interrupt_grace)

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


def _in_thread(name: str, target: Callable[..., Any], *args: Any) -> None:
    threading.Thread(target=target, args=args, name=name, daemon=True).start()


def _connect(config: HostConfig, options: Options, future: Future) -> None:
    from mhtest.hosts.inventory import make_host

    try:
        host = make_host(config, accept_new_host_keys=options.accept_new_host_keys)
        host.transport()
    except BaseException as exc:  # noqa: BLE001 - handed to whoever takes the host
        future.set_exception(exc)
    else:
        future.set_result(host)


def _build_sources(future: Future) -> None:
    from mhtest.runners.remote import Sources

    try:
        future.set_result(Sources.build())
    except BaseException as exc:  # noqa: BLE001 - raised in every host's thread
        future.set_exception(exc)


def _close_host(future: Future) -> None:
    if future.exception() is None:
        future.result().close()
