"""MultiHostTest: a test that fans worker tests out to hosts and folds their results.

The multi-host test runs as an ordinary test on the controller. `run_workers()` starts
a sync server for the workers, runs every worker through the same runners as the rest
of mhtest (local child processes, or the RemoteTestRunner over SSH), hands each its
participant name and the server's address (through its own SSH connection by default),
and returns the workers' results. Any worker that did not pass makes the test fail,
with a reason naming the worker, its host and its own reason.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mhtest.results import TestResult
from mhtest.runners.fanout import ENV_WORKER, WorkerRun
from mhtest.sync.shell import ENV_ROLES

__all__ = ["ENV_WORKER", "MultiHostTest", "Worker"]
from mhtest.spec import TestSpec, dir_name
from mhtest.test import FAILED_STATUSES, Test, TestError, TestFail, TestInterrupt

LOG = logging.getLogger(__name__)
#: The longest worker name (it names a sync participant and a directory).
MAX_NAME = 100
#: Workers are stopped this long (at most a quarter of it) before this test's timeout.
STOP_MARGIN = 5.0
#: Parameters of the multi-host test that its workers do not inherit.
_NOT_INHERITED = {"timeout", "hosts"}


@dataclass
class Worker:
    """One worker of a multi-host test: a test reference to run on a host."""

    ref: str
    host: str
    params: dict[str, Any] = field(default_factory=dict)
    name: str | None = None


class MultiHostTest(Test):
    """Base class of tests that span hosts: describe workers, run them, get one result.

    `self.hosts` lists the hosts given with --hosts/--inventory (or the `hosts` param);
    with none, two `local` workers run as local processes, so every example runs on a
    bare machine.

    A worker gets this test's params (but `timeout` and `hosts`), its host's params from
    the inventory, the params given to `self.worker()`, and: `host`, its own name (its
    sync participant name); `hosts`, the names of all the workers of its run, in order;
    `host_address`, the address its host is reached at (127.0.0.1 for `local`).
    """

    #: How many `local` workers to use when no hosts are given.
    default_local_workers = 2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.worker_results: list[TestResult] = []
        self._roles: dict[str, str] = {}
        self._created = time.time()
        self._places: list[Any] | None = None

    # -- hosts -----------------------------------------------------------------
    @property
    def _host_configs(self) -> list[Any]:
        """The places this test spans (HostConfigs), found on first use."""
        if self._places is None:
            self._places = self._load_hosts()
        return self._places

    def _load_hosts(self) -> list[Any]:
        from mhtest.dispatch import local_place
        from mhtest.hosts.inventory import HostConfig

        if self.is_worker:
            # A worker's `hosts` param lists the worker names (see run_workers), not hosts.
            return []
        spec = self._spec
        if spec is not None and spec.hosts:
            return [HostConfig(**h) for h in spec.hosts]
        names = self.params.get("hosts")
        if names:
            from mhtest.hosts.inventory import resolve_hosts

            opts = self.host_options
            return resolve_hosts(
                names, inventory_path=opts.inventory, ssh_config_path=opts.ssh_config
            )
        return [local_place()] * self.default_local_workers

    @property
    def host_options(self) -> Any:
        """How to reach the hosts (mhtest.dispatch.Options: host keys, remote python, …)."""
        from mhtest.dispatch import Options

        return Options.from_dict(self._spec.host_options if self._spec is not None else None)

    @property
    def hosts(self) -> list[str]:
        """The names of the hosts this test spans, in order (in a worker: the workers')."""
        if self.is_worker:
            return [str(h) for h in self.params.get("hosts") or []]
        return [h.name for h in self._host_configs]

    @property
    def is_worker(self) -> bool:
        """True when this test runs as a worker of another multi-host test."""
        return bool(os.environ.get(ENV_WORKER))

    # -- workers ---------------------------------------------------------------
    def worker(
        self,
        test_ref: str,
        host: str,
        params: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> Worker:
        """Describe a worker: `test_ref` (relative to this test's file) run on `host`.

        The worker's `name` (default: the host's name, numbered when a host has several
        workers) is its sync participant name and its results directory's name.
        """
        if not isinstance(test_ref, str) or not test_ref.strip():
            raise TestError(f"worker on {host!r}: the test reference must be a non-empty string")
        if host not in self.hosts:
            raise TestError(
                f"worker {test_ref!r}: host {host!r} is not one of this test's hosts "
                f"({', '.join(self.hosts)}); give it with --hosts or -p hosts=…"
            )
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise TestError(f"worker {test_ref!r} on {host}: name must be a non-empty string")
        if name is not None and len(name) > MAX_NAME:
            raise TestError(f"worker name {name[:40]!r}…: at most {MAX_NAME} characters")
        if params is not None and not isinstance(params, dict):
            raise TestError(f"worker {test_ref!r} on {host}: params must be a dict")
        return Worker(ref=test_ref, host=host, params=dict(params or {}), name=name)

    def run_workers(
        self, workers: list[Worker], timeout: float | None = None, fail: bool = True
    ) -> list[TestResult]:
        """Run `workers` in parallel, meeting through a sync server; their results.

        With `fail` (the default), any worker that did not pass fails this test with a
        reason that names each such worker, its host and its own reason.
        """
        if not workers:
            raise TestError("run_workers() needs at least one worker")
        strays = [w for w in workers if not isinstance(w, Worker)]
        if strays:
            raise TestError(f"run_workers() takes workers made by self.worker(), not {strays[0]!r}")
        names = unique_names(workers)
        # Every worker knows each one's role (LAVA's lava-role, lava-group; restraint's
        # role variables): its `role` param, else its name.
        self._roles = {n: str(w.params.get("role") or n) for w, n in zip(workers, names)}
        started = time.monotonic()
        # The hosts' SSH connections open while the workers are resolved.
        configs = [self._host_config(w.host) for w in workers]
        keys = os.environ.get("MHTEST_SYNC_KEYS") or None
        facts = str(Path(self.logdir) / "sysinfo")
        record = str(Path(self.logdir) / "sync.jsonl")
        with WorkerRun(
            configs, self.host_options, keys_dir=keys, sysinfo_dir=facts, record_path=record
        ) as run:
            # Numbered on from earlier run_workers() calls: each worker its own directory.
            first = len(self.worker_results) + 1
            resolved: dict[str, TestSpec] = {}
            specs = [
                self._worker_spec(i, w, n, names, resolved)
                for i, (w, n) in enumerate(zip(workers, names), first)
            ]
            results = run.run(specs, self._workers_timeout(timeout))
        self.worker_results.extend(results)
        self.log.info("workers ended after %.2f s", time.monotonic() - started)
        for r in results:
            self.log.info(
                "worker %s on %s: %s%s",
                r.name,
                r.host,
                r.status,
                f" ({r.fail_reason})" if r.fail_reason else "",
            )
        # Root causes first: a worker stopped by another's failure names it anyway.
        failed = sorted(
            (r for r in results if r.status in FAILED_STATUSES),
            key=lambda r: (r.fail_class in ("SyncAborted", "SyncTimeout"), r.uid),
        )
        if run.interrupted is not None:
            summary = ", ".join(f"{r.name}: {r.status}" for r in results)
            raise TestInterrupt(f"{run.interrupted}; workers stopped ({summary})")
        if fail and failed:
            text = "; ".join(
                f"worker {r.name} on {r.host}: {r.status}: {r.fail_reason or 'no reason given'}"
                for r in failed
            )
            if run.timed_out is not None:
                raise TestInterrupt(f"workers did not end within {run.timed_out:.3g} s: {text}")
            raise TestFail(text)
        return results

    def _workers_timeout(self, timeout: float | None) -> float | None:
        """`timeout`, cut so that workers are stopped and fetched before this test's own.

        At its timeout the runner interrupts a test and kills it if it has not ended
        soon after (TIMEOUT_GRACE): too little to stop workers on hosts and fetch their
        results, so run_workers() stops them a little earlier.
        """
        if not self.timeout:
            return timeout
        started = self._spec.started if self._spec is not None else None
        left = self.timeout - (time.time() - (started or self._created))
        left -= min(STOP_MARGIN, 0.25 * self.timeout)
        left = max(left, 0.1)
        return left if timeout is None else min(timeout, left)

    def _host_config(self, name: str) -> Any:
        return next(h for h in self._host_configs if h.name == name)

    def _resolve(self, worker: Worker, name: str) -> TestSpec:
        """The one test `worker.ref` names (relative to this test's file), or TestError."""
        from mhtest.resolver import ResolutionError, builtin_resolvers, resolve

        ref = worker.ref
        path_part = ref.split(":", 1)[0]
        if not os.path.isabs(path_part) and self.basedir:
            ref = os.path.join(self.basedir, ref)
        try:
            # The built-in resolvers spare loading every plugin; the plugins come next.
            found = resolve(ref, builtin_resolvers())
        except ResolutionError:
            found = []
        try:
            if not found:
                found = resolve(ref)
        except ResolutionError as exc:
            raise TestError(f"worker {name} on {worker.host}: {exc}") from None
        if len(found) != 1:
            raise TestError(
                f"worker {name} on {worker.host}: {worker.ref!r} is {len(found)} tests; "
                "name one as FILE.py:Class.method"
            )
        return found[0]

    def _worker_spec(
        self,
        index: int,
        worker: Worker,
        name: str,
        names: list[str],
        resolved: dict[str, TestSpec],
    ) -> TestSpec:
        if worker.ref not in resolved:
            resolved[worker.ref] = self._resolve(worker, name)
        spec = copy.deepcopy(resolved[worker.ref])
        config = self._host_config(worker.host)
        inherited = {k: v for k, v in self.params.items() if k not in _NOT_INHERITED}
        spec.params = {
            **inherited,
            "host_address": "127.0.0.1" if config.is_local else config.address,
            **(config.params or {}),
            **worker.params,
            "host": name,
            "hosts": names,
        }
        spec.uid = index
        spec.ref = worker.ref
        spec.host = worker.host
        spec.secrets = sorted({*(self._spec.secrets if self._spec else ()), *config.secrets})
        spec.logdir = str(Path(self.logdir) / "workers" / dir_name(f"{index}-{name}"))
        spec.env = {ENV_WORKER: name, ENV_ROLES: json.dumps(self._roles)}
        return spec


def unique_names(workers: list[Worker]) -> list[str]:
    """Worker names: as given, else the host's name (numbered when hosts repeat)."""
    hosts = [w.host for w in workers]
    names = []
    for i, w in enumerate(workers):
        if w.name:
            names.append(w.name)
        elif hosts.count(w.host) > 1:
            names.append(f"{w.host}-{hosts[: i + 1].count(w.host)}")
        else:
            names.append(w.host)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TestError(
            f"worker names must be unique: {', '.join(twice)} given to more than one worker "
            "(pass name= to self.worker())"
        )
    return names
