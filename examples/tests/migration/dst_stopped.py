"""The destination QEMU stops (SIGSTOP) for a few seconds mid-migration, then goes on.

    mhtest run examples/tests/migration/dst_stopped.py --hosts h1,h2

The source's stream stalls while nobody reads it; once the destination continues (SIGCONT)
the migration completes and the memory is intact. The destination follows QEMU's own status
of the incoming migration, so the stall costs no fixed wait anywhere.
"""

from __future__ import annotations

import os
import signal
import time

from mhtest.virt.migration import MigrationData, MigrationFailed, MultihostMigration


class DestinationStopped(MultihostMigration):
    """vm1's destination QEMU is stopped for 3 s while the pattern is on its way."""

    stop_seconds = 3.0

    def migrate_vms_dest(self, mig_data: MigrationData) -> None:
        vm = mig_data.vm("vm1")
        vm.wait_migration_status(("active",), timeout=60)
        os.kill(vm.pid, signal.SIGSTOP)
        try:
            time.sleep(self.stop_seconds)
        finally:
            os.kill(vm.pid, signal.SIGCONT)

    def migration_scenario(self) -> None:
        src, dst = self.hosts[0], self.hosts[1]
        data = self.migrate_wait(
            "vm1", src, dst, check_work=self.check_memory_pattern, params_append={"mig_speed": "4M"}
        )
        if data.results["vm1"]["status"] != "completed":
            raise MigrationFailed(f"the migration ended {data.results['vm1']}")
