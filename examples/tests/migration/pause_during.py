"""Pause during migration: the VM arrives paused, and runs again when the test asks.

    mhtest run examples/tests/migration/pause_during.py --hosts h1,h2

The first hop pauses vm1 while QEMU migrates it (tp-qemu's mig_stop_during): it must arrive
``paused``, with its memory intact, and stay paused. The second hop takes it back offline
(``mig_offline``) and asks for it to be resumed on arrival (``resume_after_migration``).
"""

from __future__ import annotations

import time

from mhtest.virt.migration import MigrationData, MigrationFailed, MultihostMigration


class PauseDuringMigration(MultihostMigration):
    """vm1 is stopped mid-migration and arrives paused; back offline, then resumed."""

    def post_migration(
        self, vm, cancel_delay, mig_offline, dsthost, vm_ports, not_wait_for_migration, fd, mig_data
    ) -> None:
        if mig_offline:
            return
        time.sleep(0.5)  # under way (2 MiB/s for an 8 MiB pattern)
        status = vm.query_migrate().get("status")
        if status != "active":
            raise MigrationFailed(f"VM {vm.name}: migration {status} before it could be paused")
        vm.stop()

    def check_arrival(self, mig_data: MigrationData) -> None:
        if not mig_data.is_dst():
            return
        expected = "running" if mig_data.settings.resume_after_migration else "paused"
        vm = mig_data.vm("vm1")
        if mig_data.results["vm1"]["arrived"] != "paused" or vm.status() != expected:
            raise MigrationFailed(
                f"vm1 arrived {mig_data.results['vm1']['arrived']} and is {vm.status()}: "
                f"expected it to arrive paused and be {expected}"
            )
        self.check_memory_pattern(mig_data)

    def migration_scenario(self) -> None:
        src, dst = self.hosts[0], self.hosts[1]
        during = {"mig_speed": "2M", "not_wait_for_migration": "yes"}
        self.migrate_wait("vm1", src, dst, check_work=self.check_arrival, params_append=during)
        back = {"mig_offline": "yes", "resume_after_migration": "yes"}
        self.migrate_wait("vm1", dst, src, check_work=self.check_arrival, params_append=back)
