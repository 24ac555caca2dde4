"""The plain parts of a migration: its data, its background handle, its settings and figures.

Kept apart from MultihostMigration (mhtest.virt.migration), which drives the flow.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import mhtest
from mhtest.virt.qemu import VM


class MigrationFailed(mhtest.TestFail):
    """A migration did not complete; the message names the hosts, the VM and QEMU's reason."""


@dataclass
class MigrationData:
    """What one migration's hooks (start_work, check_work, the two halves) get to see."""

    mig_id: str
    vms: list[str]
    src: str
    dst: str
    host: str
    params: dict[str, Any]
    dst_address: str = ""
    ports: dict[str, int] = field(default_factory=dict)
    results: dict[str, dict] = field(default_factory=dict)  # vm -> QEMU's figures
    vm_objects: dict[str, VM] = field(default_factory=dict, repr=False)
    started: float = field(default_factory=time.monotonic)

    @property
    def role(self) -> str:
        return "src" if self.host == self.src else "dst" if self.host == self.dst else "none"

    def is_src(self) -> bool:
        return self.role == "src"

    def is_dst(self) -> bool:
        return self.role == "dst"

    def vm(self, name: str) -> VM:
        return self.vm_objects[name]


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
    return {
        "status": info.get("status"),
        "total-time": info.get("total-time"),
        "downtime": info.get("downtime"),
        "setup-time": info.get("setup-time"),
        "transferred": ram.get("transferred"),
        "wall": round(wall, 3),
    }
