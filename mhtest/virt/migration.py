"""MultihostMigration: live-migrate QEMU VMs between the hosts of a multi-host test.

Every worker (one per host) runs the same ``migration_scenario()``; each ``migrate()`` call
gives this host a role from ``srchost``/``dsthost``: source, destination, or bystander. The two
ends meet on mhtest's sync, under names unique to the migration (``mig<N>``: every worker
numbers its migrate() calls in the same order). What each end does, and where the hooks a
test overrides are called (avocado-vt's places), is drawn in mhtest.virt.migration_flow.

No QEMU is left behind: every VM this worker started is cleaned up by ``test()``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import mhtest
from mhtest.runners.multihost import ENV_WORKER, MultiHostTest, unique_names
from mhtest.virt.guest import MemoryPattern, incoming_config, linux_guest
from mhtest.virt.migration_data import (
    MigrationData,
    MigrationFailed,
    MigrationHandle,
    MigrationSettings,
    as_list,
)
from mhtest.virt.migration_flow import MigrationFlow, Work, migrate_vm, run_each
from mhtest.virt.qemu import VM, VMConfig, VMError

__all__ = [
    "MigrationData",
    "MigrationFailed",
    "MigrationHandle",
    "MigrationSettings",
    "MultihostMigration",
]

log = logging.getLogger(__name__)


class MultihostMigration(MultiHostTest):
    """Base class of multi-host migration tests: write ``migration_scenario()``.

    Run with ``mhtest run FILE --hosts A,B`` (or with no hosts: two local workers), the test
    is first the controller: it runs this same class as a worker on every host and folds
    their results. Each worker (it has the ``host`` param) runs the scenario.

    Params of the VMs: ``vms`` (names), ``guest`` ("pattern": idle VM with a memory pattern,
    "idle": an empty VM, or "linux": the busybox guest), ``mem`` (MB), ``accel``,
    ``qemu_args`` (more QEMU arguments for every VM, shell-quoted).

    Params of a migration (avocado-vt's names; ``params_append`` of migrate() changes them
    for one migration): ``migration_protocol`` (``tcp``, or ``exec``: the stream goes
    through ``ssh`` to the destination host, reached at the address, port and user mhtest
    reaches it at, plus ``migration_ssh_options``; between local workers through a pipe),
    ``cancel_delay`` (cancel after N s: the VM stays on the source, a later migration
    works), ``not_wait_for_migration`` (post_migration() runs while QEMU migrates),
    ``mig_offline`` (stop the VM first: it arrives paused), ``paused_after_start_vm`` (start
    the source VM with -S, resume it just before migrating) with
    ``start_migration_timeout`` (seconds it runs before the migration starts),
    ``mig_speed`` (bytes/s: 1048576, "100M", "1G"), ``max_downtime`` (seconds) or
    ``downtime-limit`` (ms), ``migration_timeout`` (or ``mig_timeout``; default 300 s: then
    the migration is cancelled and fails), ``migrate_capabilities``,
    ``migrate_parameters`` (QEMU's names, they win), ``postcopy`` (switch to postcopy once
    the first pass is under way), ``resume_after_migration`` (check_vms_dst resumes a VM that
    arrived paused). And ``login_timeout``, ``sync_timeout``, ``worker_timeout``; from the
    multi-host runner: ``host``, ``hosts``, ``host_address``.

    ``check_work`` runs where avocado-vt runs it: on both ends once the migration ended
    (``mig_data.is_src()``/``is_dst()`` tell them apart), after check_vms_src/_dst, and not
    at all with ``cancel_delay``. ``start_work`` runs on the source only.

    The whiteboard is JSON: ``{"migrations": [{id, vm, src, dst, status, total-time,
    downtime, setup-time, transferred, wall, flow-wall, start, end, arrived, error-desc},
    ...]}`` (QEMU's times in ms; ``wall`` runs from the source's migrate command to seeing it
    end, ``flow-wall`` is this side's whole flow from migrate(), both in seconds; ``start``
    and ``end`` are that flow's, in seconds since the epoch; ``arrived`` is the VM's run
    state on the destination).
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
        return MigrationSettings.from_params(dict(self.params)).timeout

    def master_id(self) -> str:
        """The host that leads (avocado-vt's master): the first one."""
        return self.hosts[0]

    def _hosts_barrier(self, hosts: list[str], session_id: Any, tag: str, timeout: float) -> None:
        """Wait until every one of ``hosts`` reached ``tag`` of ``session_id`` (avocado-vt's).

        ``session_id`` is any JSON-able value (a string, avocado-vt's dicts of ids).
        """
        if isinstance(session_id, str):
            session = session_id
        else:
            session = json.dumps(session_id, sort_keys=True, default=str)
        name = f"{session}:{tag}"
        if len(name) > 200:
            name = f"{hashlib.sha256(session.encode()).hexdigest()[:16]}:{tag[:150]}"
        log.debug("%s: barrier %s of %s (%ss)", self.host, name, hosts, timeout)
        self.sync.barrier(name, count=len(hosts), timeout=float(timeout))

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

    def running_vms(self) -> list[VM]:
        """The VMs this worker runs now (started here, or arrived and not migrated away)."""
        vms = self._state()["vms"]
        with self._mig_lock:
            return [vm for vm in vms.values() if vm.is_alive()]

    def vms_here(self, mig_data: MigrationData) -> list[VM]:
        """The VMs of ``mig_data`` that are on this host now (arrived, or stayed)."""
        vms = self._state()["vms"]
        return [vm for vm in mig_data.vms if vms.get(vm.name) is vm]

    def _start_vm(self, name: str, mig_id: str, incoming: bool, paused: bool = False) -> VM:
        config = self.vm_config(name)
        if incoming:
            config = incoming_config(config)
        workdir = Path(self.workdir) / "vms" / f"{name}-{mig_id}-{self.host}"
        vm = VM(config, workdir)
        with self._mig_lock:
            self._state()["vms"][name] = vm
        try:
            vm.start(incoming=incoming, paused=paused)
        except BaseException:
            self._drop_vm(name)
            raise
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
        settings = MigrationSettings.from_params(params)
        mig_id = f"mig{state['count']}"
        data = MigrationData(
            mig_id, as_list(vms), srchost, dsthost, self.host, params, settings=settings
        )
        if srchost == dsthost:
            raise mhtest.TestError(f"{data.mig_id}: source and destination are both {srchost}")
        if start_work is not None and settings.paused_after_start_vm:
            raise mhtest.TestError(
                f"{mig_id}: start_work cannot run in a VM started paused "
                "(paused_after_start_vm=yes): drop one of them"
            )
        if data.role == "none":
            return MigrationHandle(data, None)
        flow = MigrationFlow(self, data, start_work, check_work)
        handle = MigrationHandle(data, flow.run)
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

    # -- the hooks (overridable; where they run: mhtest.virt.migration_flow) -----------------

    def prepare_for_migration(self, mig_data: MigrationData, migration_mode: str | None) -> None:
        """Start this end's VMs and make them ready; fills ``mig_data.vms``.

        The source (``migration_mode`` None) starts the VMs that do not run here yet; the
        destination (``migration_mode`` the protocol) starts them incoming and listens:
        ``mig_data.vm_ports`` (tcp) or ``mig_data.fifos`` (exec). Both set the migration
        capabilities and parameters the params ask for.
        """
        settings = mig_data.settings
        for name in mig_data.vms_name:
            if migration_mode is None:
                vm = self._state()["vms"].get(name) or self._start_vm(
                    name, mig_data.mig_id, incoming=False, paused=settings.paused_after_start_vm
                )
            elif name in self._state()["vms"]:
                raise VMError(f"VM {name} already runs on {self.host}")
            else:
                vm = self._start_vm(name, mig_data.mig_id, incoming=True)
            mig_data.vms.append(vm)
            caps = {"events": True, **settings.capabilities}
            if settings.postcopy:
                caps["postcopy-ram"] = True
            vm.apply_migration_settings(caps, settings.parameters)
            if migration_mode == "exec":
                mig_data.fifos[name] = vm.migrate_incoming_fifo()
            elif migration_mode is not None:
                mig_data.vm_ports[name] = vm.migrate_incoming(f"tcp:{self.host_address}:0")[1]

    def before_migration(self, mig_data: MigrationData) -> None:
        """Hook run on both ends right before the migration starts (default: nothing)."""

    def migrate_vms_src(self, mig_data: MigrationData) -> None:
        """Migrate every VM of ``mig_data`` at once; each as mhtest.virt.migration_flow's
        migrate_vm (post_migration included); raises on the first failure."""
        bound = mig_data.settings.timeout + 2 * 60.0
        run_each(mig_data.vms, lambda vm: migrate_vm(self, vm, mig_data), timeout=bound)

    def post_migration(
        self,
        vm: VM,
        cancel_delay: float | None,
        mig_offline: bool,
        dsthost: str,
        vm_ports: dict[str, int],
        not_wait_for_migration: bool,
        fd: Any,
        mig_data: MigrationData,
    ) -> None:
        """Hook run on the source after each VM's migrate (avocado-vt's arguments; ``fd`` is
        always None). With ``not_wait_for_migration`` QEMU is still migrating: set speeds,
        pause the VM, measure... The flow then follows the migration to its end."""

    def migrate_vms_dest(self, mig_data: MigrationData) -> None:
        """Hook run on the destination while the source migrates (default: nothing)."""

    def check_vms_src(self, mig_data: MigrationData) -> None:
        """After the migration, on the source: the VMs that stayed (cancelled) still run."""
        for vm in self.vms_here(mig_data):
            self._check_state(mig_data, vm)

    def check_vms_dst(self, mig_data: MigrationData) -> None:
        """After the migration, on the destination: the VMs that came are running or paused
        (as they were on the source); paused ones are resumed with resume_after_migration."""
        for vm in self.vms_here(mig_data):
            if self._check_state(mig_data, vm) == "paused" and (
                mig_data.settings.resume_after_migration
            ):
                vm.cont()

    def _check_state(self, mig_data: MigrationData, vm: VM) -> str:
        status = vm.status()
        if status not in ("running", "paused"):
            raise MigrationFailed(
                f"{mig_data.mig_id}: VM {vm.name} on {self.host} is {status} after the "
                f"migration ({vm.log_tail() or 'no log'})"
            )
        return status

    # -- records ------------------------------------------------------------------------------

    def _record(self, data: MigrationData) -> None:
        with self._mig_lock:
            records = self._state()["records"]
            for name in data.vms_name:
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
        sync_timeout = float(self.params.get("sync_timeout", default=120))
        try:
            self.migration_scenario()
            for handle in list(state["handles"]):
                if not handle.joined:
                    handle.join(self.mig_timeout + self.login_timeout + 2 * sync_timeout)
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
        workers = [self.worker(ref, host) for host in self.hosts]
        ssh_hosts = {}  # how a source reaches a destination with migration_protocol=exec
        for worker, name in zip(workers, unique_names(workers)):
            config = self._host_config(worker.host)
            if not config.is_local:
                ssh_hosts[name] = {
                    "address": config.address,
                    "port": config.port,
                    "user": config.user,
                }
        for worker in workers:
            worker.params["migration_ssh_hosts"] = ssh_hosts
        results = self.run_workers(
            workers, timeout=float(self.params.get("worker_timeout", default=1800))
        )
        records: dict[tuple, dict] = {}
        for r in results:  # one record per migration: the destination's, the source's on top
            try:
                board = json.loads(r.whiteboard or "{}")
            except ValueError:
                continue
            for rec in board.get("migrations", []):
                merged = records.setdefault((rec.get("id"), rec.get("vm")), {})
                if rec.get("src") == r.name:
                    merged.update(rec)
                else:
                    merged.update({k: v for k, v in rec.items() if k not in merged})
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
        """check_work for the pattern guest: the RAM of the VMs here holds the pattern (on
        the destination the VMs that came, on the source those that stayed)."""
        for vm in self.vms_here(mig_data):
            pattern = self.memory_pattern(vm.name)
            dump = Path(self.workdir) / f"dump-{vm.name}-{mig_data.mig_id}.bin"
            got = pattern.dump_sha256(vm, dump)
            dump.unlink()
            if got != pattern.sha256:
                raise MigrationFailed(
                    f"{mig_data.mig_id}: VM {vm.name} on {self.host}: memory pattern differs "
                    f"after migration from {mig_data.src} (sha256 {got[:12]}, "
                    f"expected {pattern.sha256[:12]})"
                )
