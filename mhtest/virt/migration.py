"""MultihostMigration: live-migrate QEMU VMs between the hosts of a multi-host test.

Every worker (one per host) runs the same ``migration_scenario()``; each ``migrate()`` call
gives this host a role from ``srchost``/``dsthost``: source, destination, or bystander. The two
ends meet on mhtest's sync, under names unique to the migration (``mig<N>``: every worker
numbers its migrate() calls in the same order):

    source                                   destination
    prepare the VMs (start if not running)   start them with -incoming defer, set caps/params,
                                             migrate-incoming tcp:<host_address>:0
            ── exchange mig<N>:ready ──  (the real ports read back from query-migrate, or an error)
    set caps/params, start_work, migrate,
    follow query-migrate/MIGRATION events
            ── exchange mig<N>:done ──   (QEMU's figures, or which VM failed and QEMU's words)
    quit the source VMs                      check the VMs run, check_work

A failure on either side is carried in the exchange, so the other side raises at once with
the same reason; a worker that dies is noticed by the sync server, which aborts the peer's
wait. No QEMU is left behind: every VM this worker started is cleaned up by ``test()``.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import tempfile
import threading
import time
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import mhtest
from mhtest.runners.multihost import ENV_WORKER, MultiHostTest
from mhtest.virt.guest import MemoryPattern, incoming_config, linux_guest
from mhtest.virt.migration_data import (
    MigrationData,
    MigrationFailed,
    MigrationHandle,
    as_list,
    migration_figures,
    parse_settings,
)
from mhtest.virt.qemu import VM, VMConfig, VMError

__all__ = ["MigrationData", "MigrationFailed", "MigrationHandle", "MultihostMigration"]

log = logging.getLogger(__name__)

Work = Callable[["MigrationData"], None]


def _postcopy(params: dict[str, Any]) -> bool:
    """Whether the ``postcopy`` param asks for postcopy (True, yes, on, true, 1)."""
    value = params.get("postcopy", False)
    return value is True or str(value).strip().lower() in ("yes", "on", "true", "1")


class MultihostMigration(MultiHostTest):
    """Base class of multi-host migration tests: write ``migration_scenario()``.

    Run with ``mhtest run FILE --hosts A,B`` (or with no hosts: two local workers), the test
    is first the controller: it runs this same class as a worker on every host and folds
    their results. Each worker (it has the ``host`` param) runs the scenario.

    Params: ``vms`` (names), ``guest`` ("pattern": idle VM with a memory pattern, "idle": an
    empty VM, or "linux": the busybox guest), ``mem`` (MB), ``accel``, ``qemu_args`` (more
    QEMU arguments for every VM, shell-quoted), ``mig_timeout``,
    ``migrate_capabilities``, ``migrate_parameters``, ``postcopy`` (switch to postcopy once
    the first pass is under way), ``login_timeout``, ``sync_timeout``, ``worker_timeout``;
    from the multi-host runner: ``host``, ``hosts``, ``host_address``.

    The whiteboard is JSON: ``{"migrations": [{id, vm, src, dst, status, total-time,
    downtime, setup-time, transferred, wall, flow-wall, start, end}, ...]}`` (QEMU's times in
    ms; ``wall`` runs from the source's migrate command to seeing it completed, ``flow-wall``
    is this side's whole flow from migrate(), both in seconds; ``start`` and ``end`` are that
    flow's, in seconds since the epoch).
    """

    #: A migration notices a lost peer itself and reports the migration's own failure.
    sync_aborts_interrupt = False

    # -- what the scenario reads ----------------------------------------------------------

    @property
    def is_migration_worker(self) -> bool:
        """True in a worker (it runs the scenario), False in the controller (it fans out)."""
        return bool(os.environ.get(ENV_WORKER) or self.params.get("host"))

    def _load_hosts(self) -> list[Any]:
        # A worker's `hosts` param holds worker names, not host specs to resolve.
        return [] if self.is_migration_worker else super()._load_hosts()

    @property
    def hosts(self) -> list[str]:
        """The workers' names, in order (the controller: the hosts it fans out to)."""
        if not self.is_migration_worker:
            return super().hosts
        return as_list(self.params.get("hosts"))

    @property
    def host(self) -> str:
        host = self.params.get("host")
        if not host:
            raise mhtest.TestError("MultihostMigration needs the 'host' param (run it multi-host)")
        return str(host)

    @property
    def host_address(self) -> str:
        return str(self.params.get("host_address", default="127.0.0.1"))

    @property
    def login_timeout(self) -> float:
        return float(self.params.get("login_timeout", default=240))

    @property
    def mig_timeout(self) -> float:
        return float(self.params.get("mig_timeout", default=300))

    def _state(self) -> dict[str, Any]:
        if "_mig_state" not in self.__dict__:
            self._mig_state = {
                "vms": {},
                "count": 0,
                "records": [],
                "handles": [],
                "patterns": {},
                "pattern_dir": "",
            }
            self._mig_lock = threading.Lock()
        return self._mig_state

    # -- VMs ----------------------------------------------------------------------------------

    def vm_config(self, name: str) -> VMConfig:
        """The config of VM ``name`` (identical on every host); override for other guests."""
        mem = int(self.params.get("mem", default=128))
        accel = str(self.params.get("accel", default="auto"))
        guest = str(self.params.get("guest", default="pattern"))
        extra = self.params.get("qemu_args", default="")
        extra = shlex.split(extra) if isinstance(extra, str) else [str(x) for x in extra]
        if guest == "linux":
            config = linux_guest().config(name, memory_mb=max(mem, 256))
            if accel != "auto":
                config.accel = accel
        elif guest == "idle":
            config = VMConfig(name, memory_mb=mem, accel=accel)
        elif guest == "pattern":
            config = self.memory_pattern(name).config(VMConfig(name, memory_mb=mem, accel=accel))
        else:
            raise mhtest.TestError(f"param guest={guest!r}: use 'pattern', 'idle' or 'linux'")
        config.extra_args += extra
        return config

    def memory_pattern(self, name: str) -> MemoryPattern:
        """The pattern VM ``name`` carries in RAM (the same bytes on every host).

        The file lives in a temporary directory removed by cleanup_vms(), not in the results.
        """
        state = self._state()
        with self._mig_lock:
            if name not in state["patterns"]:
                if not state["pattern_dir"]:
                    state["pattern_dir"] = tempfile.mkdtemp(prefix="mhtest-pattern-")
                path = Path(state["pattern_dir"]) / f"{name}.bin"
                seed = zlib.crc32(name.encode())
                state["patterns"][name] = MemoryPattern.create(path, seed=seed)
            return state["patterns"][name]

    def get_vm(self, name: str) -> VM:
        vms = self._state()["vms"]
        if name not in vms:
            raise mhtest.TestError(f"{self.host}: VM {name} does not run on this host")
        return vms[name]

    def _start_vm(self, name: str, mig_id: str, incoming: bool) -> VM:
        config = self.vm_config(name)
        if incoming:
            config = incoming_config(config)
        workdir = Path(self.workdir) / "vms" / f"{name}-{mig_id}-{self.host}"
        vm = VM(config, workdir)
        with self._mig_lock:
            self._state()["vms"][name] = vm
        vm.start(incoming=incoming)
        return vm

    def _drop_vm(self, name: str) -> None:
        with self._mig_lock:
            vm = self._state()["vms"].pop(name, None)
        if vm is not None:
            vm.cleanup()

    # -- the public migration API ------------------------------------------------------------

    def migrate(
        self,
        vms: list[str] | str,
        srchost: str,
        dsthost: str,
        start_work: Work | None = None,
        check_work: Work | None = None,
        params_append: dict[str, Any] | None = None,
    ) -> MigrationHandle:
        """Start migrating ``vms`` from ``srchost`` to ``dsthost``; join() the handle."""
        state = self._state()
        state["count"] += 1  # every worker counts the same calls: names agree across hosts
        params = dict(self.params)
        params.update(params_append or {})
        mig_id = f"mig{state['count']}"
        data = MigrationData(mig_id, as_list(vms), srchost, dsthost, self.host, params)
        if srchost == dsthost:
            raise mhtest.TestError(f"{data.mig_id}: source and destination are both {srchost}")
        if data.role == "none":
            return MigrationHandle(data, None)
        handle = MigrationHandle(data, lambda: self._run_migration(data, start_work, check_work))
        state["handles"].append(handle)
        return handle

    def migrate_wait(
        self,
        vms: list[str] | str,
        srchost: str,
        dsthost: str,
        start_work: Work | None = None,
        check_work: Work | None = None,
        params_append: dict[str, Any] | None = None,
    ) -> MigrationData:
        """Migrate and wait for the end (both sides, check_work included)."""
        handle = self.migrate(vms, srchost, dsthost, start_work, check_work, params_append)
        return handle.join()

    def migration_scenario(self) -> None:
        """The scenario every worker runs: call migrate()/migrate_wait() here."""
        raise NotImplementedError("write migration_scenario() in your MultihostMigration test")

    # -- the two halves (overridable) ---------------------------------------------------------

    def migrate_vms_src(self, mig_data: MigrationData) -> None:
        """Migrate every VM of ``mig_data`` to its destination port and wait for the end."""
        started = {}
        for name in mig_data.vms:
            started[name] = time.monotonic()
            mig_data.vm(name).migrate(f"tcp:{mig_data.dst_address}:{mig_data.ports[name]}")
        if _postcopy(mig_data.params):
            for name in mig_data.vms:  # QEMU switches over after its first precopy pass
                mig_data.vm(name).cmd("migrate-start-postcopy")
        timeout = float(mig_data.params.get("mig_timeout", self.mig_timeout))
        for name in mig_data.vms:
            info = mig_data.vm(name).wait_migration(timeout)
            if info.get("status") != "completed":
                raise MigrationFailed(f"VM {name}: migration {info.get('status')}")
            mig_data.results[name] = migration_figures(info, time.monotonic() - started[name])

    def migrate_vms_dest(self, mig_data: MigrationData) -> None:
        """Hook run on the destination while the source migrates (default: nothing)."""

    # -- the flow -----------------------------------------------------------------------------

    def _sync_timeout(self) -> float:
        return float(self.params.get("sync_timeout", default=120))

    def _fail(self, data: MigrationData, where: str, reason: str) -> MigrationFailed:
        return MigrationFailed(
            f"{data.mig_id} {','.join(data.vms)} {data.src}->{data.dst}: "
            f"failed on {where}: {reason}"
        )

    def _exchange(self, data: MigrationData, step: str, payload: dict, timeout: float) -> dict:
        from mhtest.sync import SyncError

        try:
            answers = self.sync.exchange(f"{data.mig_id}:{step}", payload, count=2, timeout=timeout)
        except SyncError as exc:
            peer = data.dst if data.is_src() else data.src
            raise self._fail(data, data.host, f"lost {peer} at {step!r}: {exc}") from None
        peer = data.dst if data.is_src() else data.src
        if peer not in answers:
            raise self._fail(data, data.host, f"{step!r}: {peer} did not take part ({answers})")
        return answers[peer]

    def _run_migration(self, data: MigrationData, start_work: Work | None, check_work) -> None:
        log.info("%s: %s of %s, %s -> %s", self.host, data.mig_id, data.vms, data.src, data.dst)
        if data.is_src():
            self._run_source(data, start_work)
        else:
            self._run_destination(data, check_work)

    def _set_migration_settings(self, vm: VM, params: dict[str, Any], source: bool) -> None:
        caps = parse_settings(params.get("migrate_capabilities"))
        if source:
            caps.setdefault("events", True)
        if _postcopy(params):
            caps["postcopy-ram"] = True
        vm.set_migrate_capabilities(caps)
        vm.set_migrate_parameters(parse_settings(params.get("migrate_parameters")))

    def _run_source(self, data: MigrationData, start_work: Work | None) -> None:
        error = None
        try:
            vms = self._state()["vms"]
            for name in data.vms:
                vm = vms.get(name) or self._start_vm(name, data.mig_id, incoming=False)
                data.vm_objects[name] = vm
        except (VMError, mhtest.TestError) as exc:
            error = str(exc)
        peer = self._exchange(data, "ready", {"error": error}, self._sync_timeout())
        if error:
            raise self._fail(data, data.src, error)
        if peer.get("error"):
            raise self._fail(data, data.dst, peer["error"])
        data.dst_address, data.ports = peer["address"], peer["ports"]
        outcome: dict[str, Any] = {"error": None}
        try:
            for name in data.vms:
                self._set_migration_settings(data.vm(name), data.params, source=True)
            if start_work is not None:
                start_work(data)
            running = {name: data.vm(name).is_running() for name in data.vms}
            self.migrate_vms_src(data)
            for name, was_running in running.items():  # a paused VM arrives paused
                data.results.setdefault(name, {}).setdefault("source-running", was_running)
            outcome["results"] = data.results
        except Exception as exc:
            outcome["error"] = str(exc)
            try:  # tell the destination first, so that it stops now rather than time out
                self._exchange(data, "done", outcome, self._sync_timeout())
            except MigrationFailed as sync_exc:
                log.warning("%s", sync_exc)
            raise self._fail(data, data.src, str(exc)) from exc
        self._exchange(data, "done", outcome, self._sync_timeout())
        self._record(data)
        for name in data.vms:
            if data.results.get(name, {}).get("status") == "completed":
                self._drop_vm(name)  # the VM lives on the destination now

    def _run_destination(self, data: MigrationData, check_work: Work | None) -> None:
        payload: dict[str, Any] = {"error": None, "address": self.host_address, "ports": {}}
        try:
            for name in data.vms:
                if name in self._state()["vms"]:
                    raise VMError(f"VM {name} already runs on {self.host}")
                vm = self._start_vm(name, data.mig_id, incoming=True)
                data.vm_objects[name] = vm
                self._set_migration_settings(vm, data.params, source=False)
                _, port = vm.migrate_incoming(f"tcp:{self.host_address}:0")
                payload["ports"][name] = port
        except (VMError, mhtest.TestError) as exc:
            payload["error"] = str(exc)
            self._drop_vms(data)
        peer = self._exchange(data, "ready", payload, self._sync_timeout())
        if payload["error"]:
            raise self._fail(data, data.dst, payload["error"])
        if peer.get("error"):
            self._drop_vms(data)
            raise self._fail(data, data.src, peer["error"])
        data.dst_address, data.ports = self.host_address, payload["ports"]
        try:
            self.migrate_vms_dest(data)
        finally:
            wait = self.mig_timeout + self.login_timeout + self._sync_timeout()
            outcome = self._exchange(data, "done", {"error": None}, wait)
        if outcome.get("error"):
            self._drop_vms(data)
            raise self._fail(data, data.src, outcome["error"])
        data.results = outcome.get("results", {})
        completed = []
        for name in data.vms:
            result = data.results.get(name, {})
            if result.get("status") == "completed":
                self._wait_arrived(data, data.vm(name), result.get("source-running", True))
                completed.append(name)
            else:  # cancelled on purpose by the scenario: the VM stays on the source
                self._drop_vm(name)
        self._record(data)
        if check_work is not None and completed:  # the work of the VMs that arrived
            check_work(replace(data, vms=completed))

    def _wait_arrived(
        self, data: MigrationData, vm: VM, running: bool, timeout: float = 30.0
    ) -> None:
        """Wait until ``vm`` has loaded the migration: running again, or paused if it was."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = vm.status()
            except VMError as exc:
                raise self._fail(data, data.dst, str(exc)) from None
            if status == "running" or (status == "paused" and not running):
                return
            if status not in ("inmigrate", "paused") or time.monotonic() > deadline:
                info = vm.query_migrate()
                raise self._fail(
                    data,
                    data.dst,
                    f"VM {vm.name} is {status} after the migration "
                    f"({info.get('error-desc') or info.get('status')}; {vm.log_tail()})",
                )
            time.sleep(0.05)

    def _drop_vms(self, data: MigrationData) -> None:
        for name in data.vm_objects:
            self._drop_vm(name)

    def _record(self, data: MigrationData) -> None:
        with self._mig_lock:
            records = self._state()["records"]
            for name in data.vms:
                fig = data.results.get(name, {})
                records.append(
                    {
                        "id": data.mig_id,
                        "vm": name,
                        "src": data.src,
                        "dst": data.dst,
                        **fig,
                        "flow-wall": round(time.monotonic() - data.started, 3),
                        # When, on the clock (the timeline of results.html places it).
                        "start": round(time.time() - (time.monotonic() - data.started), 3),
                        "end": round(time.time(), 3),
                    }
                )
            self.whiteboard = json.dumps({"migrations": records})

    # -- the test -----------------------------------------------------------------------------

    def test(self) -> None:
        """Controller: run this test as a worker on every host. Worker: run the scenario."""
        if not self.is_migration_worker:
            self._fan_out()
            return
        state = self._state()
        try:
            self.migration_scenario()
            for handle in list(state["handles"]):
                if not handle.joined:
                    handle.join(self.mig_timeout + self.login_timeout + 2 * self._sync_timeout())
        except BaseException as exc:
            self._abort_peers(exc)
            raise
        finally:
            self.cleanup_vms()

    def _fan_out(self) -> None:
        if len(self.hosts) < 2:
            raise mhtest.TestError(
                f"a migration needs two hosts, got {self.hosts}: give them with --hosts A,B"
            )
        ref = f"{self.filename}:{type(self).__name__}.test"
        results = self.run_workers(
            [self.worker(ref, host) for host in self.hosts],
            timeout=float(self.params.get("worker_timeout", default=1800)),
        )
        records: dict[tuple, dict] = {}
        for r in results:  # the source's record of a migration has its whole flow
            try:
                board = json.loads(r.whiteboard or "{}")
            except ValueError:
                continue
            for rec in board.get("migrations", []):
                key = (rec.get("id"), rec.get("vm"))
                if key not in records or rec.get("src") == r.name:
                    records[key] = rec
        self.whiteboard = json.dumps({"migrations": list(records.values())})

    def _abort_peers(self, exc: BaseException) -> None:
        try:
            self.sync.abort(f"{self.host}: {exc}")
        except Exception as err:  # no sync, or the server is gone: nothing more to tell
            log.debug("%s: could not abort the peers: %s", self.host, err)

    def cleanup_vms(self) -> None:
        """Stop every VM this worker started (runs at the end of test(), even on failure)."""
        with self._mig_lock:
            vms = list(self._state()["vms"].values())
            self._state()["vms"].clear()
        for vm in vms:
            try:
                vm.cleanup()
            except Exception as exc:  # keep cleaning the others
                log.error("%s: cleaning up VM %s: %s", self.host, vm.name, exc)
        if self._state()["pattern_dir"]:
            shutil.rmtree(self._state()["pattern_dir"], ignore_errors=True)

    # -- ready-made work checks ---------------------------------------------------------------

    def check_memory_pattern(self, mig_data: MigrationData) -> None:
        """check_work for the pattern guest: the destination's RAM holds the pattern."""
        for name in mig_data.vms:
            pattern = self.memory_pattern(name)
            dump = Path(self.workdir) / f"dump-{name}-{mig_data.mig_id}.bin"
            got = pattern.dump_sha256(mig_data.vm(name), dump)
            dump.unlink()
            if got != pattern.sha256:
                raise MigrationFailed(
                    f"{mig_data.mig_id}: VM {name} on {self.host}: memory pattern differs "
                    f"after migration from {mig_data.src} (sha256 {got[:12]}, "
                    f"expected {pattern.sha256[:12]})"
                )
