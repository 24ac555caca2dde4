"""`mhtest queue status TOP`: the queues under TOP/queue, their machines busy or free, the
files running and waiting, the watchers.

Read from the files the watchers keep (mhtest.queue.spool, mhtest.queue.scheduler): it asks
nothing of the watchers and works from any controller that sees the directories.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mhtest.queue.machines import MachinesError, queue_machines
from mhtest.queue.scheduler import busy
from mhtest.queue.spool import Spool, claim_areas, claimed_files, read_run


@dataclass
class QueueStatus:
    """One queue, as its directories show it."""

    name: str
    path: str
    machines: list[dict[str, Any]] = field(default_factory=list)  # name, busy (who) or None
    machines_error: str | None = None
    watchers: list[dict[str, Any]] = field(default_factory=list)  # id, host, pid, alive
    running: list[dict[str, Any]] = field(default_factory=list)  # file, watcher, results…
    waiting: list[str] = field(default_factory=list)
    failed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def queue_dirs(top: Path) -> list[Path]:
    """The queues of a tree: the directories in TOP/queue (not the dot ones)."""
    base = top / "queue"
    try:
        return sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def collect(
    top: Path,
    locks_dir: Path,
    inventory: str | None = None,
    ssh_config: str | None = None,
) -> list[QueueStatus]:
    """The status of every queue under TOP/queue."""
    held = busy(locks_dir)
    return [_one(Spool(path), held, inventory, ssh_config) for path in queue_dirs(top)]


def _one(
    spool: Spool, held: dict[str, dict[str, Any]], inventory: str | None, ssh_config: str | None
) -> QueueStatus:
    status = QueueStatus(spool.name, str(spool.path))
    try:
        for machine in queue_machines(spool, inventory, ssh_config):
            holder = held.get(machine.key)
            status.machines.append({"name": machine.name, "key": machine.key, "busy": holder})
    except MachinesError as exc:
        status.machines_error = str(exc)
    now = time.time()
    for owner, ident, beat in claim_areas(spool):
        alive = owner is not None and owner.alive(beat, now)
        if owner is not None:
            status.watchers.append(
                {"id": ident, "host": owner.host, "pid": owner.pid, "alive": alive}
            )
        run = read_run(spool, ident) or {}
        for name in claimed_files(spool, ident):
            entry = {"file": name, "watcher": ident, "watcher_alive": alive}
            if run.get("file") == name:
                entry["results"] = run.get("results")
            status.running.append(entry)
    try:
        status.waiting = [w.name for w in spool.waiting()]
    except OSError:
        status.waiting = []
    try:
        status.failed = sum(1 for p in spool.failed.iterdir() if not p.name.endswith(".reason"))
    except OSError:
        status.failed = 0
    return status


def render(statuses: list[QueueStatus]) -> str:
    """What `mhtest queue status` prints."""
    if not statuses:
        return "no queues (make directories in TOP/queue)\n"
    lines = []
    for queue in statuses:
        lines.append(f"queue {queue.name}  ({queue.path})")
        if queue.machines_error:
            lines.append(f"  machines: {queue.machines_error}")
        else:
            lines.append("  machines: " + ", ".join(_machine(m) for m in queue.machines))
        watchers = [f"{w['id']}{'' if w['alive'] else ' (gone)'}" for w in queue.watchers]
        lines.append("  watchers: " + (", ".join(watchers) or "none"))
        for run in queue.running:
            gone = "" if run["watcher_alive"] else " (its watcher is gone)"
            where = f" -> {run['results']}" if run.get("results") else " (starting)"
            lines.append(f"  running: {run['file']}{where}{gone}")
        waiting = queue.waiting
        shown = ", ".join(waiting[:10]) + (
            f" and {len(waiting) - 10} more" if len(waiting) > 10 else ""
        )
        lines.append(f"  waiting: {len(waiting)}" + (f": {shown}" if waiting else ""))
        if queue.failed:
            lines.append(f"  failed: {queue.failed} (see {Path(queue.path) / 'failed'})")
    return "\n".join(lines) + "\n"


def _machine(machine: dict[str, Any]) -> str:
    holder = machine.get("busy")
    if holder is None:
        return f"{machine['name']} free"
    return f"{machine['name']} busy ({holder.get('queue') or 'another queue'})"
