"""Cancel a migration, then migrate again: ``cancelled``, then ``completed``.

    mhtest run examples/tests/migration/cancel.py --hosts h1,h2

avocado-vt's ``cancel_delay``: the source cancels N seconds into the migration (its speed is
capped so that it is still going), the VM keeps running where it was, and a second migration
without the delay takes it across with its memory intact (tp-qemu's cancel_with_delay).
"""

from __future__ import annotations

from mhtest.virt.migration import MigrationFailed, MultihostMigration


class CancelThenMigrate(MultihostMigration):
    """Cancelled after 1 s at 1 MiB/s, then migrated at full speed."""

    def migration_scenario(self) -> None:
        src, dst = self.hosts[0], self.hosts[1]
        slow = {"cancel_delay": 1, "mig_speed": "1M"}
        data = self.migrate_wait("vm1", src, dst, params_append=slow)
        status = data.results["vm1"]["status"]
        if status != "cancelled":
            raise MigrationFailed(f"the first migration ended {status}, not cancelled")
        if self.host == src and self.get_vm("vm1").status() != "running":
            raise MigrationFailed(f"vm1 is {self.get_vm('vm1').status()} after the cancel")
        if self.host == dst and self.running_vms():
            raise MigrationFailed(f"{dst} still runs {self.running_vms()} after the cancel")
        fast = {"cancel_delay": None, "mig_speed": None}  # QEMU's own speed again
        data = self.migrate_wait(
            "vm1", src, dst, check_work=self.check_memory_pattern, params_append=fast
        )
        if data.results["vm1"]["status"] != "completed":
            raise MigrationFailed(f"the second migration ended {data.results['vm1']}")
