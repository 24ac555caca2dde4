"""Power control of hosts: the `mhtest.power` plugins behind host.power and host.hardreset().

A host's `power` param chooses the plugin and its options, e.g. in an inventory::

    all:
      hosts:
        lab1: {ansible_host: 10.0.0.5,
               power: {type: ipmi, address: 10.0.1.5, user: admin, password: ...}}
        lab2: {ansible_host: 10.0.0.6,
               power: {type: command, hardreset: "pdu-ctl --outlet 6 reboot"}}

Built-ins: ``qmp`` (a KVMGuest's QEMU: the default for guests), ``ipmi`` (ipmitool against a
BMC) and ``command`` (shell commands run here: a PDU, a console server; conmux's successor).
Others come from the `mhtest.power` entry point. A plugin is a class built with
``(host, **options)`` that has ``hardreset()``, ``power_on()``, ``power_off()`` and
``power_cycle()`` (PowerControl gives the usual fallbacks). Whatever goes wrong in one comes
out as a one-line PowerError naming the host, the plugin and its file.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import time
from typing import Any

from mhtest.hosts.errors import HostError

log = logging.getLogger(__name__)

#: The power plugins that come with mhtest (loaded without scanning entry points).
BUILTIN_POWER = {
    "qmp": ("mhtest.plugins.power_qmp", "QMPPower"),
    "ipmi": ("mhtest.plugins.power_ipmi", "IPMIPower"),
    "command": ("mhtest.plugins.power_command", "CommandPower"),
}
ACTIONS = ("hardreset", "power_on", "power_off", "power_cycle")


class PowerError(HostError):
    """Power control of a host failed or is not configured; one line, naming the host."""


class PowerControl:
    """Base of power plugins: a power cycle is off, a pause, on; a hard reset is a cycle."""

    #: Seconds between power_off and power_on in a power cycle.
    cycle_delay = 2.0

    def __init__(self, host: Any, **options: Any) -> None:
        self.host = host
        self.options = options

    def __str__(self) -> str:
        return f"{type(self).__name__} of {self.host}"

    def power_on(self) -> None:
        raise PowerError(f"{self.host}: {self} cannot power on", str(self.host))

    def power_off(self) -> None:
        raise PowerError(f"{self.host}: {self} cannot power off", str(self.host))

    def power_cycle(self) -> None:
        self.power_off()
        time.sleep(float(self.options.get("cycle_delay", self.cycle_delay)))
        self.power_on()

    def hardreset(self) -> None:
        self.power_cycle()

    def run_here(
        self,
        argv: list[str],
        what: str,
        timeout: float,
        tool: str = "",
        env: dict[str, str] | None = None,
    ) -> None:
        """Run a power command on this machine; PowerError naming the host and `what` when
        it does not answer within `timeout` seconds or fails (its exit status, as `tool`'s,
        and its last line of output)."""
        import subprocess

        try:
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise PowerError(
                f"{self.host}: {what}: no answer within {timeout:g} s", str(self.host)
            ) from None
        if proc.returncode != 0:
            out = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
            status = f"{tool + ' ' if tool else ''}exit status {proc.returncode}"
            raise PowerError(
                f"{self.host}: {what} failed ({status}){': ' + out[-1] if out else ''}",
                str(self.host),
            )


def load_power_plugin(kind: str, host: str = "") -> type:
    """The plugin class for power `kind`: a built-in one, else the entry point of that name."""
    if kind in BUILTIN_POWER:
        module, name = BUILTIN_POWER[kind]
        return getattr(importlib.import_module(module), name)
    from mhtest.plugins import load_plugins

    for name, cls in load_plugins("mhtest.power"):
        if name == kind:
            return cls
    raise PowerError(
        f"{host}: no power plugin {kind!r} (built in: {', '.join(BUILTIN_POWER)}; others are "
        "installed packages with a mhtest.power entry point)",
        host,
    )


class Power:
    """A host's power plugin, with every failure turned into a one-line PowerError."""

    def __init__(self, host: Any, kind: str, plugin: Any) -> None:
        self.host = host
        self.kind = kind
        self.plugin = plugin

    def __str__(self) -> str:
        return f"{self.kind} power control"

    def _call(self, action: str) -> None:
        log.info("%s: %s through %s", self.host, action, self)
        try:
            getattr(self.plugin, action)()
        except PowerError:
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin's failure, reported in one line
            code = getattr(getattr(type(self.plugin), action, None), "__code__", None)
            where = code.co_filename if code is not None else _source_file(self.plugin)
            raise PowerError(
                f"{self.host}: power plugin {self.kind!r} ({where}) failed to {action}: "
                f"{type(exc).__name__}: {exc}",
                str(self.host),
            ) from None

    def hardreset(self) -> None:
        self._call("hardreset")

    def power_on(self) -> None:
        self._call("power_on")

    def power_off(self) -> None:
        self._call("power_off")

    def power_cycle(self) -> None:
        self._call("power_cycle")


def _source_file(obj: Any) -> str:
    try:
        return inspect.getsourcefile(type(obj)) or "?"
    except TypeError:
        return "?"


def power_for(host: Any) -> Power:
    """The power control `host`'s params choose (see the module docstring)."""
    name = str(host)
    config = (getattr(host, "params", None) or {}).get("power")
    if config is None:
        default = getattr(host, "default_power", None)
        if default is None:
            raise PowerError(
                f"{name}: no power control: give the host a `power` param, e.g. in the "
                "inventory `power: {type: ipmi, address: BMC, user: USER, password: ...}` "
                "or `power: {type: command, hardreset: COMMAND}`",
                name,
            )
        config = {"type": default}
    if isinstance(config, str):
        config = {"type": config}
    if not isinstance(config, dict) or not config.get("type"):
        raise PowerError(f"{name}: the power param needs a type (qmp, ipmi, command)", name)
    kind = str(config["type"])
    options = {k: v for k, v in config.items() if k != "type"}
    cls = load_power_plugin(kind, name)
    try:
        plugin = cls(host, **options)
    except PowerError:
        raise
    except Exception as exc:  # noqa: BLE001 - bad options or a broken plugin: one line
        raise PowerError(
            f"{name}: power plugin {kind!r} cannot be set up: {type(exc).__name__}: {exc}", name
        ) from None
    return Power(host, kind, plugin)
