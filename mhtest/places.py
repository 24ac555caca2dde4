"""Places and what they need: which test runs where, and the means made ahead for them.

A place is a HostConfig (mhtest.hosts.inventory); its `kind` says how tests run there.
`place()` assigns tests to places as `mhtest run` does. `Options` says how places are
reached. A `Place` is what a spawner plugin gets to run one place's tests; `Provisions`
makes what places need ahead of time and shares it (connections opened while the tests
are resolved, mhtest's sources and the test files packed once for every host).
The Dispatcher (mhtest.dispatch) puts these together.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, ContextManager, Iterable, Sequence

from mhtest.hosts.inventory import LOCAL, HostConfig
from mhtest.spec import CONTROL_CLIENT, TestSpec

LOG = logging.getLogger(__name__)
#: How long a host's connection (and packing mhtest's sources) may take.
CONNECT_WAIT = 60.0


class Stopped(Exception):
    """A place was asked to stop while it was still getting ready (connecting, …)."""


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
    remote_exclude: list[str] = field(default_factory=list)  # .mhtestignore lines for all
    remote_send_dir: bool = False  # send each test's whole directory to the hosts
    failfast: bool = False  # stop at the first test that does not pass (--failfast)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Options:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


def tests_dirs(specs: Iterable[TestSpec]) -> list[str]:
    """The directories that go whole to a host with `specs`: a control file's tests path,
    and a client control file's own directory (its tests' names resolve there)."""
    found = set()
    for spec in specs:
        found.update(spec.tests_path)
        if spec.kind == CONTROL_CLIENT and spec.path:
            found.add(os.path.dirname(os.path.abspath(spec.path)))
    return sorted(found)


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
        self,
        config: HostConfig,
        specs: list[TestSpec],
        provisions: Provisions,
        sink: Callable[[dict], None],
        hook: Any = None,
    ) -> None:
        self.config = config
        self.specs = specs
        self.options = provisions.options
        #: Set when this place must stop its tests: the run stops, or every one of them
        #: was given an end here (a deadline) while its runner still waits.
        self.stop = threading.Event()
        self.done = False
        self.give_up: float | None = None  # when the dispatcher stops waiting for it
        self.sink = sink
        self._provisions = provisions
        self._hook = hook

    @property
    def max_parallel(self) -> int | None:
        """How many of this place's tests run at once (None: the place decides)."""
        if self.options.all_at_once:
            return len(self.specs)
        return self.options.max_parallel

    def connect(self) -> Any:
        """A connected Host for this place (opened ahead when it could be).

        Raises Stopped if the place is asked to stop first.
        """
        return self._provisions.take_connection(self.config, self.stop)

    def sources(self) -> Any:
        """mhtest's packed sources for hosts (built once per run)."""
        return self._provisions.sources()

    def payload(self) -> Any:
        """The test files this place's tests need (mhtest.runners.payload.Payload).

        Built once per set of test files, shared by the places that run the same tests.
        """
        paths = [s.path for s in self.specs if s.path]
        return self._provisions.payload(paths, self.stop, tests_dirs(self.specs))

    def take_fork_server(self) -> Any:
        """A local fork server started ahead of the run, for the first local place; or None."""
        return self._provisions.take_fork_server()

    def entered(self, host: Any) -> ContextManager[Any]:
        """The caller's hook around this place's run (sync forwards, …), given its host."""
        if self._hook is None:
            return contextlib.nullcontext()
        return self._hook(self.config, host, self.specs)


class Provisions:
    """What places need, made ahead and shared: SSH connections, mhtest's packed sources,
    the test files (payloads) and a fork server started early. Thread-safe."""

    def __init__(self, options: Options, fork_server: Any = None, sources: Any = None) -> None:
        self.options = options
        self._fork_server = fork_server
        self._lock = threading.Lock()
        self._connections: dict[str, Future] = {}
        self._sources: Future | None = sources
        self._payloads: dict[tuple, Future] = {}

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

    def take_connection(self, config: HostConfig, stop: threading.Event | None = None) -> Any:
        with self._lock:
            future = self._connections.pop(config.name, None)
        if future is None:
            future = Future()
            _connect(config, self.options, future)
        try:
            return _result(future, CONNECT_WAIT, stop)
        except FutureTimeout:
            why = f"{config.name}: no SSH connection within {CONNECT_WAIT:g} s"
            raise TimeoutError(why) from None
        except Stopped:
            future.add_done_callback(_close_host)  # it may still connect: not left open
            raise

    def payload(
        self, paths: list[str], stop: threading.Event | None = None, dirs: Sequence[str] = ()
    ) -> Any:
        """The payload of test files `paths` and whole directories `dirs`, built once.

        (See mhtest.runners.payload.)
        """
        from mhtest.runners import payload

        key = (
            tuple(paths),
            tuple(dirs),
            tuple(self.options.remote_exclude),
            self.options.remote_send_dir,
        )
        with self._lock:
            future = self._payloads.get(key)
            mine = future is None
            if mine:
                future = self._payloads[key] = Future()
        if mine:
            try:
                built = payload.build(
                    paths, self.options.remote_exclude, self.options.remote_send_dir, dirs
                )
            except BaseException as exc:
                future.set_exception(exc)
                raise
            future.set_result(built)
            return built
        return _result(future, None, stop)

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

    def payload_ahead(self, paths: list[str], dirs: Sequence[str] = ()) -> None:
        """payload(), for a thread of its own: a failure is left to the place to report."""
        try:
            self.payload(paths, dirs=dirs)
        except Exception:  # noqa: BLE001 - the place that takes it reports it
            LOG.debug("building the test files for %s failed", paths, exc_info=True)

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


def _result(future: Future, timeout: float | None, stop: threading.Event | None) -> Any:
    """future.result(timeout), watching `stop` meanwhile (Stopped when it is set)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if stop is not None and stop.is_set():
            raise Stopped("stopped before it was ready")
        wait = 0.1 if deadline is None else min(0.1, max(0.0, deadline - time.monotonic()))
        try:
            return future.result(wait)
        except FutureTimeout:
            if deadline is not None and time.monotonic() >= deadline:
                raise


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
