"""WorkerRun: runs the workers of a multi-host test and collects their results.

One sync server per run_workers() call, expecting every worker by name. Local workers
run together through one LocalRunner (they must all run at once: they meet at
barriers); each remote host gets a RemoteTestRunner and, unless --sync-direct, a
remote port forward on its own SSH connection that leads back to the sync server.
The hosts' SSH connections open as soon as the run is created, while the workers are
resolved; with --sync-direct the server then binds the address the hosts reach this
machine at (the local end of their SSH connections).

A worker that has ended (badly, or well while others still run, or never started) is
declared gone to the server on its behalf, so the others stop waiting for it at once
instead of at their timeout.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from mhtest import events
from mhtest.results import TestResult
from mhtest.runners.multihost import ENV_WORKER, worker_result
from mhtest.spec import TestSpec
from mhtest.test import TestInterrupt

LOG = logging.getLogger(__name__)
#: After a timeout or a stop, how long the runners get to kill their workers and report.
STOP_GRACE = 30.0
#: After an interrupt, how long the workers get to stop and send their results.
INTERRUPT_GRACE = 8.0
#: Failures that a worker suffers because of another one: nothing to declare for it.
SYNC_VICTIM = frozenset({"SyncAborted", "SyncTimeout"})
#: How long a host's connection (and packing mhtest's sources) may take.
CONNECT_WAIT = 60.0
BAD_ENDS = frozenset({"ERROR", "FAIL", "INTERRUPT"})


class Connections:
    """SSH connections to the remote hosts, opened in parallel from the start.

    `take(place)` hands over a connected SSHHost (or raises what connecting raised);
    `close()` closes those never taken.
    """

    def __init__(self, configs: list[Any], accept_new: bool) -> None:
        self._futures: dict[str, Future] = {}
        for config in configs:
            if config.is_local or config.name in self._futures:
                continue
            future: Future = Future()
            self._futures[config.name] = future
            threading.Thread(
                target=_connect,
                args=(config, accept_new, future),
                name=f"connect-{config.name}",
                daemon=True,
            ).start()

    def take(self, place: str) -> Any:
        try:
            return self._futures.pop(place).result(CONNECT_WAIT)
        except FutureTimeout:
            raise TimeoutError(f"{place}: no SSH connection within {CONNECT_WAIT:g} s") from None

    def peek_all(self) -> dict[str, Any]:
        """{place: connected host, or the exception} once every connection is settled."""
        settled: dict[str, Any] = {}
        for place, future in self._futures.items():
            try:
                settled[place] = future.result(CONNECT_WAIT)
            except Exception as exc:  # noqa: BLE001 - reported as its workers' ERROR
                settled[place] = exc
        return settled

    def close(self) -> None:
        for future in self._futures.values():
            future.add_done_callback(_close_host)
        self._futures.clear()


def _connect(config: Any, accept_new: bool, future: Future) -> None:
    from mhtest.hosts.inventory import make_host

    try:
        host = make_host(config, accept_new_host_keys=accept_new)
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


class WorkerRun:
    """The workers of one run_workers() call: `run(specs, timeout)` → their TestResults.

    Used as a context manager: the hosts' connections open on creation, and those not
    used are closed on exit.
    """

    def __init__(self, test: Any, configs: list[Any]) -> None:
        self.test = test
        self.specs: list[TestSpec] = []
        self.configs = configs
        self.options = test.host_options
        self.connections = Connections(configs, bool(self.options.get("accept_new_host_keys")))
        # mhtest's packed sources, for every host: built once, while the hosts connect.
        self._sources: Future = Future()
        if any(not c.is_local for c in configs):
            threading.Thread(target=_build_sources, args=(self._sources,), daemon=True).start()
        self.stop = threading.Event()
        self._place_done = threading.Event()  # set as each place's runner thread ends
        self._places_left = 0
        #: The timeout (s) after which the workers were stopped, if they were.
        self.timed_out: float | None = None
        self.interrupted: str | None = None
        self.results: dict[int, TestResult] = {}
        self._lock = threading.Lock()
        self.server: Any = None

    def names(self) -> list[str]:
        return [s.env[ENV_WORKER] for s in self.specs]

    # -- events ----------------------------------------------------------------
    def sink(self, event: dict) -> None:
        """The runners' events: keep each worker's end, declare bad ends to the server."""
        if event.get("type") != "test.end":
            return
        spec = next((s for s in self.specs if s.uid == event.get("uid")), None)
        if spec is None:
            return
        if self.timed_out is not None and event.get("status") == "INTERRUPT":
            event = {**event, "fail_reason": f"stopped: no end within {self.timed_out:.3g} s"}
        with self._lock:
            if spec.uid in self.results:
                return
            result = worker_result(spec, event)
            self.results[spec.uid] = result
            others_running = len(self.results) < len(self.specs)
        if result.fail_class in SYNC_VICTIM:
            return  # stopped by another worker's end, which the others already know of
        if result.status in BAD_ENDS:
            # It may have left before a barrier, or never joined: make sure nobody waits
            # for it, and tell them why.
            reason: str | None = (
                f"worker {result.name} on {result.host} ended {result.status}: {result.fail_reason}"
            )
        elif others_running:
            reason = None  # ended well (or skipped) while others run: it leaves
        else:
            return
        self.server.declare_gone(spec.env[ENV_WORKER], reason)

    # -- running ---------------------------------------------------------------
    def __enter__(self) -> WorkerRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.connections.close()

    def run(self, specs: list[TestSpec], timeout: float | None) -> list[TestResult]:
        """Start the sync server and every worker; wait (at most `timeout`); results."""
        from mhtest.sync.server import SyncServer

        _quiet_paramiko()
        self.specs = specs
        groups = self._groups()
        bind = "127.0.0.1:0"
        if self.options.get("sync_direct") and len(groups) > ("local" in groups):
            bind = _direct_bind(self.connections.peek_all())
        keys = os.environ.get("MHTEST_SYNC_KEYS") or None
        with SyncServer(bind=bind, expected=self.names(), keys_dir=keys) as server:
            self.server = server
            self._places_left = len(groups)
            for place, (config, place_specs) in groups.items():
                self._start(place, config, place_specs)
            self._wait(timeout)
        now = time.time()
        for spec in self.specs:
            if spec.uid not in self.results:
                self.results[spec.uid] = worker_result(
                    spec,
                    {
                        "status": "INTERRUPT" if self.stop.is_set() else "ERROR",
                        "fail_reason": "the worker never reported an end",
                        "start": now,
                        "end": now,
                    },
                )
        return [self.results[s.uid] for s in self.specs]

    def _wait(self, timeout: float | None) -> None:
        """Wait for the runner threads; past `timeout` stop the workers, past the grace give up.

        A TestInterrupt (the test process got SIGTERM: the job is being interrupted) stops
        the workers too, and is raised again once their results are in. A count and an
        Event, not Thread.join(): an exception raised inside join() can leave CPython
        believing a running thread has stopped.
        """
        deadline = time.monotonic() + timeout if timeout else None
        give_up = None
        interrupted: BaseException | None = None
        while True:
            try:
                with self._lock:
                    if not self._places_left:
                        break
                # Woken as a runner thread ends; the timeout keeps the deadline checks going.
                self._place_done.wait(0.05)
                self._place_done.clear()
                now = time.monotonic()
                if deadline is not None and now > deadline and not self.stop.is_set():
                    LOG.warning("workers did not end within %g s: stopping them", timeout)
                    self.timed_out = timeout
                    self.stop.set()
                    give_up = now + STOP_GRACE
                if give_up is not None and now > give_up:
                    LOG.error("runners did not stop within %g s; leaving them", STOP_GRACE)
                    break
            except TestInterrupt as exc:
                LOG.warning("interrupted: stopping the workers and fetching their results")
                interrupted = exc
                self.stop.set()
                give_up = min(give_up or float("inf"), time.monotonic() + INTERRUPT_GRACE)
        if interrupted is not None:
            self.interrupted = str(interrupted)

    def _groups(self) -> dict[str, tuple[Any, list[TestSpec]]]:
        """Specs by place: "local" for local workers, else the host's name."""
        groups: dict[str, tuple[Any, list[TestSpec]]] = {}
        for spec, config in zip(self.specs, self.configs):
            place = "local" if config.is_local else config.name
            groups.setdefault(place, (config, []))[1].append(spec)
        return groups

    def _start(self, place: str, config: Any, specs: list[TestSpec]) -> None:
        if place == "local":
            target, args = self._run_local, (specs,)
        else:
            target, args = self._run_remote, (place, specs)
        thread = threading.Thread(
            target=self._guard,
            args=(target, args, config.name, specs),
            name=f"workers-{place}",
            daemon=True,
        )
        thread.start()

    def _guard(self, target: Any, args: tuple, place: str, specs: list[TestSpec]) -> None:
        """Run one place's workers; a failure there ends only its workers, as ERROR."""
        try:
            target(*args)
        except Exception as exc:  # noqa: BLE001 - one host failing ends only its workers
            LOG.debug("workers on %s failed", place, exc_info=True)
            self._fail(specs, place, events.one_line(exc, place))
        finally:
            with self._lock:
                self._places_left -= 1
            self._place_done.set()

    def _fail(self, specs: list[TestSpec], place: str, reason: str) -> None:
        for spec in specs:
            self.sink(events.synthetic_end(spec.uid, "ERROR", reason, host=place))

    def _sync_env(self, spec: TestSpec, address: str) -> None:
        spec.env.update(
            {
                "MHTEST_SYNC_ADDRESS": address,
                "MHTEST_SYNC_PARTICIPANT": spec.env[ENV_WORKER],
                "MHTEST_SYNC_COUNT": str(len(self.specs)),
            }
        )
        keys = os.environ.get("MHTEST_SYNC_KEYS")
        if keys:
            spec.env["MHTEST_SYNC_KEYS"] = keys

    def _run_local(self, specs: list[TestSpec]) -> None:
        from mhtest.runners.local import LocalRunner

        for spec in specs:
            self._sync_env(spec, self.server.address)
        LocalRunner(len(specs), self.sink, self.stop).run(specs)

    def _run_remote(self, place: str, specs: list[TestSpec]) -> None:
        from mhtest.runners.remote import RemoteTestRunner
        from mhtest.runners.tunnel import RemoteForward

        host = self.connections.take(place)
        forward = None
        try:
            if self.options.get("sync_direct"):
                address = f"tcp://{_bracket(_local_address(host))}:{self.server.port}"
            else:
                forward = RemoteForward(host, ("127.0.0.1", self.server.port))
                address = f"tcp://127.0.0.1:{forward.remote_port}"
            for spec in specs:
                self._sync_env(spec, address)
            runner = RemoteTestRunner(
                host,
                self.sink,
                self.stop,
                python=self.options.get("remote_python") or "python3",
                max_parallel=len(specs),
                sources=self._sources.result(CONNECT_WAIT),
                max_results=self.options.get("max_results"),
            )
            runner.run(specs)
        finally:
            # Closing the forward also cuts a worker left running there from the server,
            # so its heartbeats stop and nobody waits for it.
            if forward is not None:
                forward.close()
            host.close()


def _quiet_paramiko() -> None:
    """Keep paramiko's per-channel DEBUG lines out of the test's debug.log."""
    logger = logging.getLogger("paramiko")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


def _local_address(host: Any) -> str:
    """This machine's address on `host`'s SSH connection: where the host reaches us."""
    return host.transport().sock.getsockname()[0]


def _direct_bind(hosts: dict[str, Any]) -> str:
    """Where the sync server listens for --sync-direct: the one address the hosts see us at."""
    seen = {_local_address(h) for h in hosts.values() if not isinstance(h, BaseException)}
    if len(seen) == 1:
        return f"{_bracket(seen.pop())}:0"
    if not seen:
        return "127.0.0.1:0"
    LOG.warning("hosts reach this machine at %s: the sync server listens on all addresses", seen)
    return "0.0.0.0:0"


def _bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address
