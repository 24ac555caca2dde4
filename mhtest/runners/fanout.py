"""WorkerRun: runs the workers of a multi-host test and collects their results.

One sync server per run_workers() call, expecting every worker by name. The workers run
through the dispatcher (mhtest.dispatch), every worker of a place at once (they meet at
barriers); a remote host's workers reach the server, unless --sync-direct, through a
remote port forward on the host's own SSH connection. The hosts' SSH connections open as
soon as the run is created, while the workers are resolved; with --sync-direct the server
then binds the address the hosts reach this machine at (the local end of their SSH
connections).

A worker that has ended (badly, or well while others still run, or never started) is
declared gone to the server on its behalf, so the others stop waiting for it at once
instead of at their timeout.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import replace
from typing import Any, Iterator

from mhtest import events
from mhtest.dispatch import Dispatcher, Options
from mhtest.results import TestResult
from mhtest.spec import TestSpec

LOG = logging.getLogger(__name__)
#: Set in a worker's environment to its name: the test knows it runs as a worker.
ENV_WORKER = "MHTEST_WORKER"
#: After a timeout or a stop, how long the runners get to kill their workers and report.
STOP_GRACE = 30.0
#: After an interrupt, how long the workers get to stop and send their results: longer
#: than a remote runner waits for its host (mhtest.runners.remote.STOP_GRACE), shorter
#: than this test's own runner waits for it (mhtest.runners.local.MULTIHOST_STOP_GRACE).
INTERRUPT_GRACE = 12.0
#: Failures that a worker suffers because of another one: nothing to declare for it.
SYNC_VICTIM = frozenset({"SyncAborted", "SyncTimeout"})
BAD_ENDS = events.FAILED_STATUSES


class WorkerRun:
    """The workers of one run_workers() call: `run(specs, timeout)` → their TestResults.

    Used as a context manager: the hosts' connections open on creation (while the
    workers are resolved), and those not used are closed on exit.
    """

    def __init__(
        self,
        configs: list[Any],
        options: Options,
        keys_dir: str | None = None,
        sysinfo_dir: str | None = None,
        record_path: str | None = None,
    ) -> None:
        self.configs = configs
        self.options = options
        self.keys_dir = keys_dir
        self.sysinfo_dir = sysinfo_dir  # where the hosts' facts go (host.info events)
        self.record_path = record_path  # where the sync server's record goes (sync.jsonl)
        self.specs: list[TestSpec] = []
        self.dispatcher = Dispatcher(
            self.sink,
            replace(options, all_at_once=True),  # workers meet at barriers: all run at once
            stop_grace=STOP_GRACE,
            interrupt_grace=INTERRUPT_GRACE,
        )
        self.dispatcher.provisions.connect_ahead(configs)
        #: The timeout (s) after which the workers were stopped, if they were.
        self.timed_out: float | None = None
        self.interrupted: str | None = None
        self.results: dict[int, TestResult] = {}
        self._lock = threading.Lock()
        self.server: Any = None
        self.run_keys: Any = None

    def names(self) -> list[str]:
        return [s.env[ENV_WORKER] for s in self.specs]

    # -- events ----------------------------------------------------------------
    def sink(self, event: dict) -> None:
        """The workers' events: keep each worker's end, declare bad ends to the server."""
        if event.get("type") == events.HOST_INFO and self.sysinfo_dir:
            from mhtest import sysinfo

            try:
                sysinfo.write(self.sysinfo_dir, str(event.get("host")), event.get("facts") or {})
            except OSError as exc:
                LOG.warning("cannot keep the facts of %s: %s", event.get("host"), exc)
            return
        if event.get("type") != events.TEST_END:
            return
        spec = next((s for s in self.specs if s.uid == event.get("uid")), None)
        if spec is None:
            return
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
        self.dispatcher.provisions.close()

    def run(self, specs: list[TestSpec], timeout: float | None) -> list[TestResult]:
        """Start the sync server and every worker; wait (at most `timeout`); results.

        A TestInterrupt (the test process got SIGTERM: the job is being interrupted)
        stops the workers; `interrupted` then says why, once their results are in.
        """
        from mhtest.sync.keys import make_run_keys
        from mhtest.sync.record import SyncRecord
        from mhtest.sync.server import SyncServer

        self.specs = specs
        bind = "127.0.0.1:0"
        if self.options.sync_direct and any(not c.is_local for c in self.configs):
            bind = _direct_bind(self.dispatcher.provisions.settled_connections())
        # Every run is authenticated: with the keys directory given (--sync-keys), else
        # with keys made for this run, one per worker, each bound to its worker's name.
        self.run_keys = None if self.keys_dir else make_run_keys(self.names())
        record = SyncRecord(self.names()) if self.record_path else None
        with SyncServer(
            bind=bind,
            expected=self.names(),
            keys_dir=self.keys_dir,
            run_keys=self.run_keys,
            record=record,
        ) as server:
            self.server = server
            outcome = self.dispatcher.run(list(zip(self.configs, specs)), timeout, self._sync_place)
        if record is not None:
            try:
                record.write(self.record_path)
            except OSError as exc:
                LOG.warning("cannot keep the sync record in %s: %s", self.record_path, exc)
        self.timed_out = outcome.timed_out
        self.interrupted = outcome.interrupted
        return [self.results[s.uid] for s in self.specs]

    @contextlib.contextmanager
    def _sync_place(self, config: Any, host: Any, specs: list[TestSpec]) -> Iterator[None]:
        """Around one place's run: how its workers reach the sync server.

        Local workers connect straight; a remote host's through a port forward on its own
        SSH connection (or straight with --sync-direct). Closing the forward also cuts a
        worker left running there from the server, so nobody waits for it.
        """
        from mhtest.runners.tunnel import RemoteForward

        forward = None
        if host is None:
            address = self.server.address
        elif self.options.sync_direct:
            address = f"tcp://{_bracket(_local_address(host))}:{self.server.port}"
        else:
            forward = RemoteForward(host, ("127.0.0.1", self.server.port))
            address = f"tcp://127.0.0.1:{forward.remote_port}"
        try:
            for spec in specs:
                self._sync_env(spec, address)
            yield
        finally:
            if forward is not None:
                forward.close()

    def _sync_env(self, spec: TestSpec, address: str) -> None:
        spec.env.update(
            {
                "MHTEST_SYNC_ADDRESS": address,
                "MHTEST_SYNC_PARTICIPANT": spec.env[ENV_WORKER],
                "MHTEST_SYNC_COUNT": str(len(self.specs)),
            }
        )
        if self.keys_dir:
            spec.env["MHTEST_SYNC_KEYS"] = self.keys_dir
        else:  # its own keys only (masked in the spec.json files once read)
            spec.env.update(self.run_keys.client_env(spec.env[ENV_WORKER]))


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


def worker_result(spec: TestSpec, event: dict) -> TestResult:
    """A worker's TestResult from its test.end event (named after the worker)."""
    return TestResult.from_end(spec, event, name=spec.env.get(ENV_WORKER))
