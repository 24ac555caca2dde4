"""Live migration between two hosts, there and back, with the work inside the VM surviving.

    mhtest run examples/tests/migration/basic.py --hosts 127.0.0.2:2222,127.0.0.3:2222 -p vms=vm1

With ``-p guest=linux`` the VMs boot a small Linux (Debian's kernel, a busybox initramfs) and
a ``dd`` started on the serial console must still be running after each migration; by default
(``guest=pattern``) the VMs are idle and carry a known pattern in RAM that must arrive intact.
"""

from __future__ import annotations

import re
import time

from mhtest.virt.migration import MigrationData, MigrationFailed, MultihostMigration


class BasicMigration(MultihostMigration):
    """vm1 (and the other ``vms``) go from the first host to the second and back."""

    def migration_scenario(self) -> None:
        src, dst = self.hosts[0], self.hosts[1]
        vms = self.params.get("vms", default="vm1")
        if self.params.get("guest", default="pattern") == "linux":
            start, check = self.start_dd, self.check_dd
        else:
            start, check = None, self.check_memory_pattern
        self.migrate_wait(vms, src, dst, start_work=start, check_work=check)
        self.migrate_wait(vms, dst, src, check_work=check)

    def start_dd(self, mig_data: MigrationData) -> None:
        """On the source: start a dd in each guest, through its serial console."""
        for vm in mig_data.vms:
            console = vm.console(timeout=self.login_timeout)
            console.cmd("dd if=/dev/zero of=/dev/null bs=4k &")
            console.cmd("pidof dd")  # fails (exit status) when dd is not running

    def check_dd(self, mig_data: MigrationData) -> None:
        """On the destination (check_work runs on both ends): dd is there and still reading."""
        if not mig_data.is_dst():
            return
        for vm in self.vms_here(mig_data):
            console = vm.console(timeout=self.login_timeout)
            status, out = console.cmd_status_output("pidof dd")
            if status != 0:
                raise MigrationFailed(f"VM {vm.name}: dd is gone after migration to {self.host}")
            pid = out.split()[0]
            first = self._bytes_read(console, pid)
            time.sleep(1)
            if self._bytes_read(console, pid) <= first:
                raise MigrationFailed(f"VM {vm.name}: dd no longer makes progress on {self.host}")

    @staticmethod
    def _bytes_read(console, pid: str) -> int:
        out = console.cmd_output(f"grep rchar /proc/{pid}/io")
        found = re.search(r"rchar:\s*(\d+)", out)
        if not found:
            raise MigrationFailed(f"cannot read dd's progress: {out.strip()!r}")
        return int(found.group(1))
