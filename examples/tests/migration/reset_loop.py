"""The guest resets over and over while it migrates (tp-qemu's with_reboot).

    mhtest run examples/tests/migration/reset_loop.py --hosts h1,h2

vm1 starts paused (``paused_after_start_vm``), runs for ``start_migration_timeout`` seconds
(early boot), and before_migration() starts a loop of ``system_reset`` (each one waits for
QEMU's RESET event) that goes on for ``reset_timeout`` seconds into the migration (as
tp-qemu's reboot_timeout: every reset writes the 8 MiB pattern into RAM again, faster than
4 MiB/s can carry it, so the migration converges only once the loop ends). The pattern must
arrive intact, and the VM running.
"""

from __future__ import annotations

import random
import threading
import time

from mhtest.virt.migration import MigrationData, MigrationFailed, MultihostMigration


class ResetLoopDuringMigration(MultihostMigration):
    """system_reset every 0.1-0.4 s for 3 s while vm1 migrates at 4 MiB/s."""

    def before_migration(self, mig_data: MigrationData) -> None:
        if not mig_data.is_src():
            return
        self.resets = 0
        self.stop_resets = threading.Event()
        vm = mig_data.vm("vm1")
        end = time.monotonic() + float(mig_data.params.get("reset_timeout", 3))

        def reset_loop() -> None:
            while not self.stop_resets.is_set() and time.monotonic() < end:
                mark = vm.event_mark()
                vm.cmd("system_reset")
                vm.wait_event("RESET", 10, since=mark)
                self.resets += 1
                self.stop_resets.wait(random.uniform(0.1, 0.4))

        self.reset_thread = threading.Thread(target=reset_loop, name="reset-loop", daemon=True)
        self.reset_thread.start()

    def post_migration(
        self, vm, cancel_delay, mig_offline, dsthost, vm_ports, not_wait_for_migration, fd, mig_data
    ) -> None:
        self.stop_resets.set()
        self.reset_thread.join(30)
        self.log.info("VM %s: %d resets while it migrated", vm.name, self.resets)
        if self.resets < 2:
            raise MigrationFailed(f"VM {vm.name}: only {self.resets} resets during the migration")

    def migration_scenario(self) -> None:
        src, dst = self.hosts[0], self.hosts[1]
        params = {"paused_after_start_vm": "yes", "start_migration_timeout": 1, "mig_speed": "4M"}
        data = self.migrate_wait(
            "vm1", src, dst, check_work=self.check_memory_pattern, params_append=params
        )
        if self.host == dst and data.results["vm1"]["arrived"] != "running":
            raise MigrationFailed(f"vm1 arrived {data.results['vm1']['arrived']}")
