"""Speed and downtime caps: QEMU keeps to ``mig_speed`` and reports a downtime within the limit.

    mhtest run examples/tests/migration/speed_downtime.py --hosts h1,h2

With ``not_wait_for_migration`` the source's post_migration() runs while QEMU migrates
(tp-qemu's measure_speed and set_downtime): it reads QEMU's transferred bytes twice, a
second apart, and the rate must be near the cap; once the migration completed, QEMU's own
downtime must be within ``max_downtime``.
"""

from __future__ import annotations

import time

from mhtest.virt.migration import MigrationFailed, MultihostMigration
from mhtest.virt.migration_data import parse_size


class SpeedAndDowntime(MultihostMigration):
    """vm1 at 4 MiB/s with at most 0.5 s of downtime."""

    speed = "4M"
    max_downtime = 0.5  # seconds

    def post_migration(
        self, vm, cancel_delay, mig_offline, dsthost, vm_ports, not_wait_for_migration, fd, mig_data
    ) -> None:
        wanted = mig_data.settings.parameters
        got = vm.cmd("query-migrate-parameters")
        for key in ("max-bandwidth", "downtime-limit"):
            if got[key] != wanted[key]:
                raise MigrationFailed(f"VM {vm.name}: {key} is {got[key]}, not {wanted[key]}")
        time.sleep(0.3)  # past the setup and the zero pages before the pattern
        first, since = vm.query_migrate().get("ram", {}).get("transferred", 0), time.monotonic()
        time.sleep(1.0)
        info = vm.query_migrate()
        if info.get("status") != "active":
            raise MigrationFailed(f"VM {vm.name}: migration {info.get('status')} before measured")
        rate = (info["ram"]["transferred"] - first) / (time.monotonic() - since)
        self.log.info("VM %s: %.2f MiB/s under a cap of %s", vm.name, rate / 2**20, self.speed)
        self.measured_rate = rate

    def migration_scenario(self) -> None:
        src, dst = self.hosts[0], self.hosts[1]
        caps = {
            "mig_speed": self.speed,
            "max_downtime": self.max_downtime,
            "not_wait_for_migration": "yes",
        }
        data = self.migrate_wait(
            "vm1", src, dst, check_work=self.check_memory_pattern, params_append=caps
        )
        if self.host != src:
            return
        cap = parse_size(self.speed)
        if not 0.6 * cap <= self.measured_rate <= 1.3 * cap:
            raise MigrationFailed(f"measured {self.measured_rate:.0f} B/s under a cap of {cap}")
        downtime = data.results["vm1"]["downtime"]
        if downtime > self.max_downtime * 1000:
            raise MigrationFailed(f"QEMU's downtime {downtime} ms is over {self.max_downtime} s")
