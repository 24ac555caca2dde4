"""The `command` power plugin: shell commands run on this machine (a PDU, a console server).

    power: {type: command, hardreset: "pdu-ctl --outlet {outlet} reboot",
            power_on: "...", power_off: "...", outlet: 6, timeout: 120}

Each action's command is formatted with the host's `name` and `address` and the plugin's own
options (``{outlet}`` above), and run with /bin/sh; a non-zero exit is a PowerError quoting
the command and its last output line. hardreset falls back to power_cycle, power_cycle to
power_off then power_on. conmux's hardreset was such a command.
"""

from __future__ import annotations

from typing import Any

from mhtest.hosts.power import ACTIONS, PowerControl, PowerError

DEFAULT_TIMEOUT = 120.0


class CommandPower(PowerControl):
    """Power control through configured shell commands."""

    def __init__(self, host: Any, **options: Any) -> None:
        super().__init__(host, **options)
        self.commands = {a: str(options[a]) for a in ACTIONS if options.get(a)}
        if not self.commands:
            raise PowerError(
                f"{host}: command power control needs at least one of {', '.join(ACTIONS)}",
                str(host),
            )
        self.timeout = float(options.get("timeout", DEFAULT_TIMEOUT))
        self.fields = {
            **{k: v for k, v in options.items() if k not in ACTIONS},
            "name": getattr(host, "name", str(host)),
            "address": getattr(host, "hostname", ""),
        }

    def _run(self, action: str) -> None:
        try:
            command = self.commands[action].format(**self.fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise PowerError(
                f"{self.host}: power {action} command {self.commands[action]!r}: "
                f"unknown field {exc}",
                str(self.host),
            ) from None
        what = f"power {action} command {command!r}"
        self.run_here(["/bin/sh", "-c", command], what, self.timeout)

    def power_on(self) -> None:
        if "power_on" not in self.commands:
            super().power_on()
        self._run("power_on")

    def power_off(self) -> None:
        if "power_off" not in self.commands:
            super().power_off()
        self._run("power_off")

    def power_cycle(self) -> None:
        if "power_cycle" in self.commands:
            self._run("power_cycle")
        else:
            super().power_cycle()

    def hardreset(self) -> None:
        if "hardreset" in self.commands:
            self._run("hardreset")
        else:
            self.power_cycle()
