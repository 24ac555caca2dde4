"""One migration on one of its two ends, calling the test's hooks where avocado-vt calls them.

    source                                     destination
    prepare_for_migration(mig_data, None)      prepare_for_migration(mig_data, protocol)
      start the VMs not running here (-S with     start the VMs with -incoming defer, set
      paused_after_start_vm), set caps/params     caps/params, listen: tcp:<host_address>:0
                                                  (tcp) or a named pipe (exec)
            ── exchange mig<N>:ready ──  (the real ports / pipes, or an error)
    start_work(mig_data)
    paused_after_start_vm: cont, then wait
      start_migration_timeout seconds
    before_migration(mig_data)                 before_migration(mig_data)
    migrate_vms_src(mig_data): per VM          migrate_vms_dest(mig_data)
      mig_offline: stop; migrate; unless
      not_wait_for_migration: wait for the end
      (or cancel after cancel_delay);
      post_migration(vm, ...); follow QEMU's
      status to the end (migration_timeout:
      cancel and fail)
            ── exchange mig<N>:done ──   (QEMU's figures, or the failure in QEMU's words)
    quit the VMs that left                     wait for each VM that came: the incoming
                                               migration's status (query-migrate), then its
                                               run state (running, or paused if it was)
    check_vms_src(mig_data)                    check_vms_dst(mig_data)
    check_work(mig_data)                       check_work(mig_data)
    (with cancel_delay set, neither the checks nor check_work run, as in avocado-vt)

A failure on either side is carried in the exchange, so the other side raises at once with
the same reason; a worker that dies is noticed by the sync server, which fails the peer's
wait; a destination QEMU that dies or stalls shows in the source QEMU's own status.
"""

from __future__ import annotations

import logging
import shlex
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from mhtest.virt.migration_data import MigrationData, MigrationFailed, migration_figures
from mhtest.virt.qemu import VM, MigrationError, MigrationTimeout, VMError

if TYPE_CHECKING:
    from mhtest.virt.migration import MultihostMigration

log = logging.getLogger(__name__)

Work = Callable[[MigrationData], None]
#: How long a cancelled migration may take to say so.
CANCEL_TIMEOUT = 60.0
#: How long a destination VM may stay "inmigrate" once its incoming migration completed.
SETTLE_TIMEOUT = 10.0


class MigrationFlow:
    """Runs one migration on this worker's end (see the module docstring)."""

    def __init__(
        self,
        test: MultihostMigration,
        data: MigrationData,
        start_work: Work | None,
        check_work: Work | None,
    ) -> None:
        self.test = test
        self.data = data
        self.settings = data.settings
        self.start_work = start_work
        self.check_work = check_work

    def run(self) -> None:
        data = self.data
        log.info(
            "%s: %s of %s, %s -> %s", data.host, data.mig_id, data.vms_name, data.src, data.dst
        )
        if data.is_src():
            self._source()
        else:
            self._destination()

    # -- the source ---------------------------------------------------------------------------

    def _source(self) -> None:
        data, test = self.data, self.test
        error = None
        try:
            test.prepare_for_migration(data, None)
        except Exception as exc:  # the destination hears of it at once, in the exchange
            error = str(exc) or type(exc).__name__
        peer = self._exchange("ready", {"error": error}, self._sync_timeout())
        if error:
            raise self._fail(data.src, error)
        if peer.get("error"):
            raise self._fail(data.dst, peer["error"])
        data.dst_address, data.vm_ports = peer["address"], peer["ports"]
        data.uris = {name: self._uri(name, peer) for name in data.vms_name}
        try:
            if self.start_work is not None:
                self.start_work(data)
            if self.settings.paused_after_start_vm:
                for vm in data.vms:
                    vm.cont()
                time.sleep(self.settings.start_migration_timeout)
            test.before_migration(data)
            test.migrate_vms_src(data)
        except Exception as exc:
            try:  # tell the destination first, so that it stops now rather than time out
                self._exchange("done", {"error": str(exc)}, self._sync_timeout())
            except MigrationFailed as sync_exc:
                log.warning("%s", sync_exc)
            test._record(data)
            raise self._fail(data.src, str(exc)) from exc
        self._exchange("done", {"error": None, "results": data.results}, self._sync_timeout())
        for name in data.vms_name:
            if data.results.get(name, {}).get("status") == "completed":
                test._drop_vm(name)  # the VM lives on the destination now
        test._record(data)
        if self.settings.cancel_delay is None:
            test.check_vms_src(data)
            if self.check_work is not None:
                self.check_work(data)

    def _uri(self, name: str, peer: dict[str, Any]) -> str:
        """Where the source sends VM ``name``: the destination's port, or its pipe."""
        if self.settings.protocol == "tcp":
            return f"tcp:{peer['address']}:{peer['ports'][name]}"
        write = f"cat > {shlex.quote(peer['fifos'][name])}"
        target = (self.data.params.get("migration_ssh_hosts") or {}).get(self.data.dst)
        if not target:  # a local destination: the pipe is on this machine
            return f"exec:{write}"
        ssh = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-p", str(target["port"])]
        user = target.get("user")
        login = f"{user}@{target['address']}" if user else target["address"]
        return "exec:" + shlex.join([*ssh, *self.settings.ssh_options, login, write])

    # -- the destination ----------------------------------------------------------------------

    def _destination(self) -> None:
        data, test = self.data, self.test
        payload: dict[str, Any] = {"error": None, "address": test.host_address}
        try:
            test.prepare_for_migration(data, self.settings.protocol)
        except Exception as exc:  # the source hears of it at once, in the exchange
            payload["error"] = str(exc) or type(exc).__name__
            self._drop_vms()
        payload.update(ports=data.vm_ports, fifos=data.fifos)
        peer = self._exchange("ready", payload, self._sync_timeout())
        if payload["error"]:
            raise self._fail(data.dst, payload["error"])
        if peer.get("error"):
            self._drop_vms()
            raise self._fail(data.src, peer["error"])
        data.dst_address = test.host_address
        wait = self.settings.timeout + self.settings.start_migration_timeout
        wait += test.login_timeout + self._sync_timeout()
        try:
            test.before_migration(data)
            test.migrate_vms_dest(data)
        finally:  # even when a hook failed: the source is waiting for this answer
            outcome = self._exchange("done", {"error": None}, wait)
        if outcome.get("error"):
            gone = [f"VM {vm.name} on {data.host} is gone" for vm in data.vms if not vm.is_alive()]
            self._drop_vms()
            raise self._fail(data.src, "; ".join([outcome["error"], *gone]))
        data.results = outcome.get("results", {})
        for vm in data.vms:
            result = data.results.setdefault(vm.name, {})
            if result.get("status") == "completed":
                result["arrived"] = self._wait_arrived(vm)
            else:  # cancelled: the VM stays on the source
                test._drop_vm(vm.name)
        test._record(data)
        if self.settings.cancel_delay is None:
            test.check_vms_dst(data)
            if self.check_work is not None:
                self.check_work(data)

    def _wait_arrived(self, vm: VM) -> str:
        """Follow the incoming migration to its end; the VM's run state (running or paused)."""
        try:
            info = vm.wait_migration_status(("completed", "failed"), self._sync_timeout())
            if info.get("status") == "failed":
                raise self._fail(
                    self.data.dst,
                    f"VM {vm.name}: the incoming migration failed: "
                    f"{info.get('error-desc') or vm.log_tail() or 'no reason given'}",
                )
            deadline = time.monotonic() + SETTLE_TIMEOUT
            status = vm.status()
            while status == "inmigrate" and time.monotonic() < deadline:
                time.sleep(0.02)
                status = vm.status()
        except VMError as exc:
            raise self._fail(self.data.dst, str(exc)) from None
        if status not in ("running", "paused"):
            raise self._fail(
                self.data.dst,
                f"VM {vm.name} is {status} after the migration ({vm.log_tail() or 'no log'})",
            )
        log.info("%s: VM %s arrived %s", self.data.host, vm.name, status)
        return status

    def _drop_vms(self) -> None:
        for vm in self.data.vms:
            self.test._drop_vm(vm.name)

    # -- both ---------------------------------------------------------------------------------

    def _sync_timeout(self) -> float:
        return float(self.data.params.get("sync_timeout") or 120)

    def _fail(self, where: str, reason: str) -> MigrationFailed:
        data = self.data
        return MigrationFailed(
            f"{data.mig_id} {','.join(data.vms_name)} {data.src}->{data.dst}: "
            f"failed on {where}: {reason}"
        )

    def _exchange(self, step: str, payload: dict, timeout: float) -> dict:
        from mhtest.sync import SyncError

        data = self.data
        peer = data.dst if data.is_src() else data.src
        try:
            answers = self.test.sync.exchange(
                f"{data.mig_id}:{step}", payload, count=2, timeout=timeout
            )
        except SyncError as exc:
            raise self._fail(data.host, f"lost {peer} at {step!r}: {exc}") from None
        if peer not in answers:
            raise self._fail(data.host, f"{step!r}: {peer} did not take part ({answers})")
        return answers[peer]


# -- the source's side of one VM (migrate_vms_src's default) --------------------------------


def migrate_vm(test: MultihostMigration, vm: VM, data: MigrationData) -> None:
    """Migrate ``vm`` as avocado-vt's VM.migrate does, calling post_migration; figures in
    ``data.results``. Raises MigrationError with QEMU's reason when it fails."""
    settings = data.settings
    if settings.offline:
        vm.stop()
    started = time.monotonic()
    try:
        vm.migrate(data.uris[vm.name])
        if settings.postcopy:  # QEMU switches over after its first precopy pass
            vm.cmd("migrate-start-postcopy")
        if not settings.not_wait_for_migration:
            _follow(vm, data, started)
        test.post_migration(
            vm,
            settings.cancel_delay,
            settings.offline,
            data.dst,
            data.vm_ports,
            settings.not_wait_for_migration,
            None,
            data,
        )
        info = _follow(vm, data, started)  # at once when it ended already
    except (MigrationError, MigrationFailed):
        _record_failure(vm, data, started)
        raise
    if settings.offline and info.get("status") == "cancelled":
        vm.cont()  # it stays here: running again, as avocado-vt leaves it
    data.results[vm.name] = migration_figures(info, time.monotonic() - started)


def _follow(vm: VM, data: MigrationData, started: float) -> dict:
    """QEMU's end of the migration: cancelled after cancel_delay, else waited for (bounded)."""
    settings = data.settings
    if settings.cancel_delay is not None:
        try:
            info = vm.wait_migration(started + settings.cancel_delay - time.monotonic())
        except MigrationTimeout:
            log.info("VM %s: cancelling the migration after %ss", vm.name, settings.cancel_delay)
            vm.migrate_cancel()
            return vm.wait_migration(CANCEL_TIMEOUT)
        if info.get("status") == "completed":
            raise MigrationFailed(
                f"VM {vm.name}: the migration completed before cancel_delay="
                f"{settings.cancel_delay:g}s: slow it down (mig_speed) or cancel sooner"
            )
        return info
    try:
        return vm.wait_migration(started + settings.timeout - time.monotonic())
    except MigrationTimeout as exc:
        vm.migrate_cancel()  # the source keeps the VM; QEMU shuts the stalled channel
        try:
            after = f"cancelled it: QEMU says {vm.wait_migration(CANCEL_TIMEOUT)['status']}"
        except MigrationError as cancel_exc:
            after = f"cancelling it: {cancel_exc}"
        raise MigrationError(f"{exc} (migration_timeout); {after}") from None


def _record_failure(vm: VM, data: MigrationData, started: float) -> None:
    try:
        info = vm.query_migrate()
    except VMError as exc:  # the source QEMU is gone too: say so in the record
        info = {"status": "failed", "error-desc": str(exc)}
    data.results[vm.name] = migration_figures(info, time.monotonic() - started)


def run_each(vms: list[VM], action: Callable[[VM], None], timeout: float) -> None:
    """``action(vm)`` for every VM, at the same time; the first error is raised after all end.

    ``timeout`` bounds the wait for them (each action has its own bounds: this is a backstop).
    """
    if len(vms) == 1:
        action(vms[0])
        return
    errors: list[BaseException] = []

    def one(vm: VM) -> None:
        try:
            action(vm)
        except BaseException as exc:  # raised in the caller's thread below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(vm,), name=f"migrate-{vm.name}") for vm in vms]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    late = [t.name for t in threads if t.is_alive()]
    if late:
        raise MigrationFailed(f"{', '.join(late)}: still running after {timeout:.0f}s")
    if errors:
        raise errors[0]
