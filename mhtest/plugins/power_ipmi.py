"""The `ipmi` power plugin: `ipmitool chassis power ...` against the host's BMC, run here.

    power: {type: ipmi, address: 10.0.1.5, user: admin, password: secret,
            interface: lanplus, port: 623, timeout: 60}

The password goes to ipmitool in its environment (-E, IPMI_PASSWORD), never on its command
line, where any local user could read it. hardreset is `chassis power reset`.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from mhtest.hosts.power import PowerControl, PowerError

DEFAULT_TIMEOUT = 60.0


class IPMIPower(PowerControl):
    """Power control through a BMC with ipmitool."""

    def __init__(self, host: Any, **options: Any) -> None:
        super().__init__(host, **options)
        if not options.get("address"):
            raise PowerError(f"{host}: ipmi power control needs the BMC's address", str(host))
        self.address = str(options["address"])
        self.user = str(options.get("user", ""))
        self.password = str(options.get("password", ""))
        self.interface = str(options.get("interface", "lanplus"))
        self.port = int(options.get("port", 623))
        self.timeout = float(options.get("timeout", DEFAULT_TIMEOUT))
        self.ipmitool = str(options.get("ipmitool", "ipmitool"))

    def command(self, action: str) -> list[str]:
        """The ipmitool command line for `chassis power ACTION` (no password in it)."""
        cmd = [self.ipmitool, "-I", self.interface, "-H", self.address, "-p", str(self.port)]
        if self.user:
            cmd += ["-U", self.user]
        if self.password:
            cmd += ["-E"]
        return [*cmd, "chassis", "power", action]

    def _run(self, action: str) -> None:
        if shutil.which(self.ipmitool) is None:
            raise PowerError(
                f"{self.host}: {self.ipmitool} not found here (apt-get install ipmitool)",
                str(self.host),
            )
        env = dict(os.environ)
        if self.password:
            env["IPMI_PASSWORD"] = self.password
        what = f"ipmi power {action} via BMC {self.address}"
        self.run_here(self.command(action), what, self.timeout, tool="ipmitool", env=env)

    def power_on(self) -> None:
        self._run("on")

    def power_off(self) -> None:
        self._run("off")

    def power_cycle(self) -> None:
        self._run("cycle")

    def hardreset(self) -> None:
        self._run("reset")
