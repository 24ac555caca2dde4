"""The `qmp` power plugin: a KVMGuest's QEMU, through its QMP monitor (the guests' default).

hardreset is QMP's system_reset. power_off stops the guest's CPUs: the machine no longer
answers, its disk and QEMU stay (like a machine whose power is cut keeps its disk, and unlike
ending QEMU, which would drop the guest's snapshot overlay); power_on resets and resumes it,
so it boots afresh.
"""

from __future__ import annotations

from typing import Any

from mhtest.hosts.power import PowerControl, PowerError


class QMPPower(PowerControl):
    """Power control of a KVMGuest through QEMU's monitor."""

    def __init__(self, host: Any, **options: Any) -> None:
        super().__init__(host, **options)
        if getattr(host, "qemu", None) is None:
            raise PowerError(
                f"{host}: qmp power control is for VM guests (KVMGuest); give this host "
                "another power type (ipmi, command)",
                str(host),
            )
        self.qemu = host.qemu

    def hardreset(self) -> None:
        self.qemu.qmp("system_reset")
        if self.qemu.qmp("query-status").get("status") == "paused":
            self.qemu.qmp("cont")

    def power_off(self) -> None:
        self.qemu.qmp("stop")

    def power_on(self) -> None:
        self.qemu.qmp("system_reset")
        self.qemu.qmp("cont")

    def power_cycle(self) -> None:
        self.power_off()
        self.power_on()
