"""WorkerRun: runs the workers of a multi-host test and collects their results.

One sync server per run_workers() call, expecting every worker by name. Local workers
run together through one LocalRunner (they must all run at once: they meet at
barriers); each remote host gets a RemoteTestRunner and, unless --sync-direct, a
remote port forward on its own SSH connection that leads back to the sync server.
A worker that cannot start is reported to the server as gone, so the others stop
waiting for it at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from mhtest.results import TestResult
from mhtest.runners.multihost import ENV_WORKER, worker_result
from mhtest.spec import TestSpec

LOG = logging.getLogger(__name__)
#: After a timeout or a stop, how long the runners get to kill their workers and report.
STOP_GRACE = 30.0


class WorkerRun:
    """The workers of one run_workers() call: `run(timeout)` → their TestResults."""

    def __init__(self, test: Any, specs: list[TestSpec], configs: list[Any]) -> None:
        self.test = test
        self.specs = specs
        self.configs = configs
        self.options = test.host_options
        self.stop = threading.Event()
        self.results: dict[int, TestResult] = {}
        self._lock = threading.Lock()
        self.server: Any = None

    def names(self) -> list[str]:
        return [s.env[ENV_WORKER] for s in self.specs]

    def sink(self, event: dict) -> None:
        if event.get("type") != "test.end":
            return
        spec = next((s for s in self.specs if s.uid == event.get("uid")), None)
        if spec is None:
            return
        with self._lock:
            if spec.uid in self.results:
                return
            result = worker_result(spec, event)
            self.results[spec.uid] = result
        if result.status in ("ERROR", "FAIL", "INTERRUPT") and not event.get("reported_gone"):
            # A worker that ended badly may have left before a barrier: make sure nobody
            # waits for it (harmless if it already left or was seen to die).
            self._declare_gone(
                spec,
                f"worker {result.name} on {result.host} ended "
                f"{result.status}: {result.fail_reason}",
            )

    def run(self, timeout: float | None) -> list[TestResult]:
        from mhtest.sync.server import SyncServer

        bind = (
            "0.0.0.0:0" if self.options.get("sync_direct") and self._any_remote() else "127.0.0.1:0"
        )
        keys = os.environ.get("MHTEST_SYNC_KEYS") or None
        with SyncServer(bind=bind, expected=self.names(), keys_dir=keys) as server:
            self.server = server
            threads = self._start_groups()
            deadline = time.monotonic() + timeout if timeout else None
            for t in threads:
                while t.is_alive():
                    if (
                        deadline is not None
                        and time.monotonic() > deadline
                        and not self.stop.is_set()
                    ):
                        LOG.warning("workers did not end within %g s: stopping them", timeout)
                        self.stop.set()
                    t.join(0.1)
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

    def _any_remote(self) -> bool:
        return any(not c.is_local for c in self.configs)

    def _start_groups(self) -> list[threading.Thread]:
        groups: dict[str, list[TestSpec]] = {}
        configs: dict[str, Any] = {}
        for spec, config in zip(self.specs, self.configs):
            place = "local" if config.is_local else config.name
            groups.setdefault(place, []).append(spec)
            configs[place] = config
        threads = []
        for place, specs in groups.items():
            target = self._run_local if place == "local" else self._run_remote
            t = threading.Thread(
                target=self._guard,
                args=(target, configs[place], specs),
                name=f"workers-{place}",
                daemon=True,
            )
            t.start()
            threads.append(t)
        return threads

    def _guard(self, target: Any, config: Any, specs: list[TestSpec]) -> None:
        try:
            target(config, specs)
        except Exception as exc:  # noqa: BLE001 - one host failing ends only its workers
            LOG.debug("workers on %s failed", config.name, exc_info=True)
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            reason = text if config.name in text else f"{config.name}: {text}"
            now = time.time()
            for spec in specs:
                self.sink(
                    {
                        "type": "test.end",
                        "uid": spec.uid,
                        "status": "ERROR",
                        "fail_reason": reason,
                        "host": config.name,
                        "start": now,
                        "end": now,
                    }
                )

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

    def _run_local(self, config: Any, specs: list[TestSpec]) -> None:
        from mhtest.runners.local import LocalRunner

        for spec in specs:
            self._sync_env(spec, self.server.address)
        LocalRunner(len(specs), self.sink, self.stop).run(specs)

    def _run_remote(self, config: Any, specs: list[TestSpec]) -> None:
        from mhtest.hosts.inventory import make_host
        from mhtest.runners.remote import RemoteTestRunner
        from mhtest.runners.tunnel import RemoteForward

        host = make_host(
            config, accept_new_host_keys=bool(self.options.get("accept_new_host_keys"))
        )
        forward = None
        try:
            if self.options.get("sync_direct"):
                address = self._direct_address(host)
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
            )
            runner.run(specs)
        finally:
            if forward is not None:
                forward.close()
            host.close()

    def _direct_address(self, host: Any) -> str:
        """The sync server's address as the host sees this machine ($SSH_CONNECTION)."""
        seen = host.run("echo $SSH_CONNECTION", timeout=30).stdout.split()
        controller = seen[0] if seen else "127.0.0.1"
        return f"tcp://{controller}:{self.server.port}"

    def _declare_gone(self, spec: TestSpec, reason: str) -> None:
        """Abort the others' waits on behalf of a worker that never joined or ended badly."""
        from mhtest.sync import SyncError
        from mhtest.sync.client import SyncClient

        name = spec.env[ENV_WORKER]
        try:
            with SyncClient(self.server.address, name, timeout=5) as client:
                client.abort(reason)
        except SyncError as exc:
            # The name is still taken: the worker is connected, and its own end (or its
            # heartbeats stopping) tells the others.
            LOG.debug("cannot speak for worker %s: %s", name, exc)
