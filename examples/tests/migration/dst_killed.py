"""The destination QEMU is killed mid-migration: the source fails with QEMU's reason, and lives.

    mhtest run examples/tests/migration/dst_killed.py --hosts h1,h2

The destination kills its own QEMU (SIGKILL) once the migration is under way. The source
QEMU sees its stream break: the migration fails on both hosts with QEMU's own words (e.g.
"Unable to write to socket: Broken pipe"), within seconds, and the VM keeps running on the
source. A second migration then takes it across.
"""

from __future__ import annotations

import os
import signal
import time

from mhtest.virt.migration import MigrationData, MigrationFailed, MultihostMigration


class DestinationKilled(MultihostMigration):
    """vm1's destination dies at 0.5 s; the source reports why, then migrates again."""

    def migrate_vms_dest(self, mig_data: MigrationData) -> None:
        if mig_data.mig_id != "mig1":
            return
        vm = mig_data.vm("vm1")
        vm.wait_migration_status(("active",), timeout=60)
        time.sleep(0.5)
        os.kill(vm.pid, signal.SIGKILL)

    def migration_scenario(self) -> None:
        src, dst = self.hosts[0], self.hosts[1]
        started = time.monotonic()
        try:
            self.migrate_wait("vm1", src, dst, params_append={"mig_speed": "2M"})
        except MigrationFailed as exc:
            reason = str(exc)
        else:
            raise MigrationFailed("the migration completed although its destination was killed")
        self.log.info("the migration failed after %.1f s: %s", time.monotonic() - started, reason)
        if "migration failed: " not in reason or f"failed on {src}" not in reason:
            raise MigrationFailed(f"not the source QEMU's own failure: {reason}")
        if self.host == src and self.get_vm("vm1").status() != "running":
            raise MigrationFailed(f"vm1 is {self.get_vm('vm1').status()} on the source")
        self.migrate_wait("vm1", src, dst, check_work=self.check_memory_pattern)
