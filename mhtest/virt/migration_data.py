"""The plain parts of a migration: its data, its settings, its background handle, its figures.

Kept apart from MultihostMigration (mhtest.virt.migration), which holds the test's API, and
from mhtest.virt.migration_flow, which drives one migration on its two ends.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import mhtest
from mhtest.virt.qemu import VM

PROTOCOLS = ("tcp", "exec")


class MigrationFailed(mhtest.TestFail):
    """A migration did not complete; the message names the hosts, the VM and QEMU's reason."""


@dataclass
class MigrationData:
    """What one migration's hooks see (avocado-vt's mig_data, same names).

    ``vms`` are this end's VM objects (filled by prepare_for_migration; after a migration
    completed, the source's have quit), ``vms_name`` their names, ``hosts`` the two ends,
    ``vm_ports`` the destination's ports (tcp) or ``fifos`` its pipes (exec), ``uris`` what
    the source migrates each VM to, ``results`` QEMU's figures per VM once the source knows
    them (the destination adds ``arrived``: running or paused), ``settings`` what the params
    ask for.
    """

    mig_id: str
    vms_name: list[str]
    src: str
    dst: str
    host: str
    params: dict[str, Any]
    vms: list[VM] = field(default_factory=list, repr=False)
    dst_address: str = ""
    vm_ports: dict[str, int] = field(default_factory=dict)
    fifos: dict[str, str] = field(default_factory=dict)  # exec: the destination's pipes
    uris: dict[str, str] = field(default_factory=dict)
    results: dict[str, dict] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    settings: MigrationSettings = field(default_factory=lambda: MigrationSettings())

    @property
    def hosts(self) -> list[str]:
        return [self.src, self.dst]

    @property
    def role(self) -> str:
        return "src" if self.host == self.src else "dst" if self.host == self.dst else "none"

    def is_src(self) -> bool:
        return self.role == "src"

    def is_dst(self) -> bool:
        return self.role == "dst"

    def vm(self, name: str) -> VM:
        """This end's VM ``name``."""
        for vm in self.vms:
            if vm.name == name:
                return vm
        raise KeyError(f"{self.mig_id}: no VM {name} on {self.host} (it has {self.vms_name})")


@dataclass
class MigrationSettings:
    """How a migration runs, read from its params (avocado-vt's names where it has them)."""

    protocol: str = "tcp"
    cancel_delay: float | None = None
    not_wait_for_migration: bool = False
    offline: bool = False
    paused_after_start_vm: bool = False
    start_migration_timeout: float = 0.0
    timeout: float = 300.0
    postcopy: bool = False
    resume_after_migration: bool = False
    capabilities: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    ssh_options: list[str] = field(default_factory=list)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> MigrationSettings:
        """Read the settings; a malformed value is a TestError naming the param."""
        try:
            return cls._from_params(params)
        except ValueError as exc:
            raise mhtest.TestError(f"migration params: {exc}") from None

    @classmethod
    def _from_params(cls, params: dict[str, Any]) -> MigrationSettings:
        import shlex

        protocol = str(params.get("migration_protocol") or params.get("mig_protocol") or "tcp")
        if protocol not in PROTOCOLS:
            raise ValueError(f"migration_protocol={protocol!r}: use one of {', '.join(PROTOCOLS)}")
        timeout = _number(params, "migration_timeout")
        if timeout is None:
            timeout = _number(params, "mig_timeout")
        parameters: dict[str, Any] = {}
        speed = params.get("mig_speed")
        if speed not in (None, ""):
            parameters["max-bandwidth"] = parse_size(speed, "mig_speed")
        downtime = _number(params, "max_downtime")  # seconds, as avocado-vt
        if downtime is not None:
            parameters["downtime-limit"] = int(downtime * 1000)
        limit = _number(params, "downtime-limit")  # milliseconds, QEMU's own name
        if limit is not None:
            parameters["downtime-limit"] = int(limit)
        parameters.update(parse_settings(params.get("migrate_parameters")))
        ssh = params.get("migration_ssh_options") or ""
        return cls(
            protocol=protocol,
            cancel_delay=_number(params, "cancel_delay"),
            not_wait_for_migration=flag(params.get("not_wait_for_migration")),
            offline=flag(params.get("mig_offline")),
            paused_after_start_vm=flag(params.get("paused_after_start_vm")),
            start_migration_timeout=_number(params, "start_migration_timeout") or 0.0,
            timeout=300.0 if timeout is None else timeout,
            postcopy=flag(params.get("postcopy")),
            resume_after_migration=flag(params.get("resume_after_migration")),
            capabilities=parse_settings(params.get("migrate_capabilities")),
            parameters=parameters,
            ssh_options=shlex.split(ssh) if isinstance(ssh, str) else [str(x) for x in ssh],
        )


class MigrationHandle:
    """A migration running in the background; ``join()`` waits and re-raises its error."""

    def __init__(self, data: MigrationData, target: Callable[[], None] | None) -> None:
        self.data = data
        self.error: BaseException | None = None
        self.joined = False
        self._thread: threading.Thread | None = None
        if target is not None:
            self._thread = threading.Thread(
                target=self._run, args=(target,), name=f"migrate-{data.mig_id}", daemon=True
            )
            self._thread.start()

    def _run(self, target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:  # handed to join() in the scenario's thread
            self.error = exc

    def join(self, timeout: float | None = None) -> MigrationData:
        self.joined = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise MigrationFailed(
                    f"{self.data.mig_id} on {self.data.host}: still running after {timeout}s"
                )
        if self.error is not None:
            raise self.error
        return self.data


def as_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [x.strip() for x in value.replace(" ", ",").split(",") if x.strip()]
    return [str(x) for x in value]


def flag(value: Any) -> bool:
    """A yes/no param: True, "yes", "on", "true", "1" are yes."""
    return value is True or str(value).strip().lower() in ("yes", "on", "true", "1")


def _number(params: dict[str, Any], key: str) -> float | None:
    value = params.get(key)
    if value is None or value == "" or value is False:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key}={value!r} is not a number") from None


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.I)


def parse_size(value: Any, what: str = "size") -> int:
    """Bytes from ``1048576``, ``"512K"``, ``"100M"``, ``"1G"`` (binary units, as avocado-vt)."""
    found = _SIZE.match(str(value))
    if not found:
        raise ValueError(f"{what}={value!r}: write bytes, or a number with K, M or G")
    scale = 1024 ** "bkmgt".index(found.group(2).lower() or "b")
    return int(float(found.group(1)) * scale)


def _scalar(text: str) -> Any:
    low = text.strip().lower()
    if low in ("on", "true", "yes"):
        return True
    if low in ("off", "false", "no"):
        return False
    try:
        return int(text)
    except ValueError:
        return text.strip()


def parse_settings(value: Any, flag_default: Any = True) -> dict[str, Any]:
    """``{"a": 1}``, ``"a=1,b=on"`` or ``"xbzrle auto-converge"`` -> dict (flags become True)."""
    if not value:
        return {}
    if isinstance(value, dict):
        return dict(value)
    out: dict[str, Any] = {}
    for item in as_list(value):
        key, sep, val = item.partition("=")
        out[key.strip()] = _scalar(val) if sep else flag_default
    return out


def migration_figures(info: dict, wall: float) -> dict[str, Any]:
    """QEMU's own figures of a finished migration, plus our wall time (seconds)."""
    ram = info.get("ram", {})
    figures = {
        "status": info.get("status"),
        "total-time": info.get("total-time"),
        "downtime": info.get("downtime"),
        "setup-time": info.get("setup-time"),
        "transferred": ram.get("transferred"),
        "wall": round(wall, 3),
    }
    if info.get("error-desc"):
        figures["error-desc"] = info["error-desc"]
    return figures
