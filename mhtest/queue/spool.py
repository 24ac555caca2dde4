"""A queue's spool directory: waiting files, atomic claims, failed files, stale claims.

    <spool>/
      .machines             the queue's machines, one a line (else the spool's name is one)
      .log                  what its watchers did, a line each
      <file>                waiting: a control file (`*.srv`: server; any other: client)
      claimed/<id>/<file>   the file watcher <id> runs now (renamed there: the claim)
      claimed/<id>.owner    who watcher <id> is (host, pid); its mtime is its heartbeat
      claimed/<id>.run      that file's job once it started: results directory, child pids
      failed/<file>         bad input, beside <file>.reason (one line: why)

Several watchers, on several controllers sharing the spool over NFS, may watch one spool:
a file is claimed by renaming it into the watcher's own `claimed/<id>/`, which one of them
wins, so a file runs once. A watcher that dies leaves its claim; the next one to look
(`Claims.stale()`) takes the file over: it goes back to the spool when its job had not
started, else its job is recorded as interrupted (see mhtest.queue.watcher).
Names starting with a dot are never queued files (write `.name.tmp`, then rename it in).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from mhtest import pids

LOG = logging.getLogger(__name__)
SERVER_SUFFIX = ".srv"
CLAIMED = "claimed"
FAILED = "failed"
MACHINES_FILE = ".machines"
LOG_FILE = ".log"
#: How often a watcher refreshes its heartbeat (claimed/<id>.owner's mtime).
HEARTBEAT = 2.0
#: A watcher on another host whose heartbeat is this old is gone (its claims are stale).
STALE_AFTER = 30.0
#: A claim directory without an owner file this old is a leftover.
ORPHAN_AFTER = 10.0


def is_server_file(name: str) -> bool:
    """True for a server control file (`*.srv`); any other queued file is a client one."""
    return name.endswith(SERVER_SUFFIX) and len(name) > len(SERVER_SUFFIX)


@dataclass
class Waiting:
    """A file waiting in the spool."""

    name: str
    path: Path
    mtime_ns: int
    size: int

    @property
    def mtime(self) -> float:
        return self.mtime_ns / 1e9


class Spool:
    """The paths of one spool directory, and its waiting and failed files."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(os.path.abspath(path))

    @property
    def name(self) -> str:
        """The queue's name: the spool directory's."""
        return self.path.name

    @property
    def claimed(self) -> Path:
        return self.path / CLAIMED

    @property
    def failed(self) -> Path:
        return self.path / FAILED

    @property
    def log_path(self) -> Path:
        return self.path / LOG_FILE

    @property
    def machines_path(self) -> Path:
        return self.path / MACHINES_FILE

    def exists(self) -> bool:
        return self.path.is_dir()

    def waiting(self) -> list[Waiting]:
        """The files waiting, oldest first (by mtime, then name): FileNotFoundError when
        the spool is gone."""
        found = []
        with os.scandir(self.path) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if not entry.is_file():
                        continue
                    info = entry.stat()
                except OSError:
                    continue  # gone meanwhile (claimed by another watcher)
                found.append(Waiting(entry.name, Path(entry.path), info.st_mtime_ns, info.st_size))
        found.sort(key=lambda w: (w.mtime_ns, w.name))
        return found

    def fail(self, path: Path, reason: str) -> Path:
        """Move `path` (a claimed file) to failed/, beside a `.reason` file; the new path."""
        self.failed.mkdir(exist_ok=True)
        target = move_free(path, self.failed, path.name)
        reason_path = target.with_name(target.name + ".reason")
        reason_path.write_text(reason.strip().replace("\n", " ") + "\n", encoding="utf-8")
        return target


@dataclass
class Owner:
    """A watcher, as its claim area names it."""

    id: str
    host: str
    pid: int
    pid_start: str | None  # the process's start time (/proc), against pid reuse
    started: float
    spool: str

    @classmethod
    def me(cls, spool: Spool) -> Owner:
        host = socket.gethostname()
        pid = os.getpid()
        token = secrets.token_hex(3)
        return cls(f"{host}-{pid}-{token}", host, pid, pid_start(pid), time.time(), str(spool.path))

    def alive(self, heartbeat: float, now: float) -> bool:
        """Whether this watcher still runs: by its pid on this host, else by its heartbeat."""
        if self.host == socket.gethostname():
            return pid_start(self.pid) == self.pid_start and pids.exists(self.pid)
        return now - heartbeat < STALE_AFTER


def pid_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


class Claims:
    """One watcher's claims in a spool: `claimed/<id>/` and its owner and run records."""

    def __init__(self, spool: Spool, owner: Owner | None = None) -> None:
        self.spool = spool
        self.owner = owner or Owner.me(spool)

    @property
    def dir(self) -> Path:
        return self.spool.claimed / self.owner.id

    @property
    def owner_path(self) -> Path:
        return self.spool.claimed / f"{self.owner.id}.owner"

    @property
    def run_path(self) -> Path:
        return self.spool.claimed / f"{self.owner.id}.run"

    def open(self) -> None:
        """Make this watcher's claim area (OSError when the spool cannot hold it)."""
        self.spool.claimed.mkdir(exist_ok=True)
        self.dir.mkdir(exist_ok=True)
        _write_json(self.owner_path, asdict(self.owner))

    def beat(self) -> None:
        """Refresh the heartbeat (the owner file, rewritten if it went missing)."""
        try:
            os.utime(self.owner_path)
        except FileNotFoundError:
            if self.spool.exists():
                self.open()

    def claim(self, name: str) -> Path | None:
        """Take waiting file `name` for this watcher: its new path, or None if another took it."""
        return self.claim_from(self.spool.path / name)

    def put_back(self, path: Path) -> Path:
        """Give a claimed file back to the spool (under a free name); its path there."""
        return move_free(path, self.spool.path, path.name)

    def done(self, path: Path) -> None:
        """The claimed file's job is over (its copy is in its results): forget the claim."""
        for item in (path, self.run_path):
            try:
                os.unlink(item)
            except FileNotFoundError:
                pass

    def write_run(self, record: dict[str, Any]) -> None:
        """Record the claimed file's job (read back if this watcher dies: see take_stale)."""
        _write_json(self.run_path, record)

    def close(self) -> None:
        """Remove this watcher's claim area (what it still holds goes back: see Watcher)."""
        for item in (self.run_path, self.owner_path):
            try:
                os.unlink(item)
            except OSError:
                pass
        try:
            self.dir.rmdir()
        except OSError:
            pass

    # -- other watchers' claims ---------------------------------------------------------------
    def owners(self) -> list[tuple[Owner | None, str, float]]:
        """Every watcher with a claim area here (see claim_areas)."""
        return claim_areas(self.spool)

    def stale(self, now: float | None = None) -> list[str]:
        """The ids of the watchers that are gone but left a claim area (not this one)."""
        now = time.time() if now is None else now
        gone = []
        for owner, ident, beat in self.owners():
            if ident == self.owner.id:
                continue
            if owner is None:
                if now - beat > ORPHAN_AFTER:
                    gone.append(ident)
            elif not owner.alive(beat, now):
                gone.append(ident)
        return gone

    def take_stale(self, ident: str) -> Iterator[tuple[Path, dict[str, Any] | None, Owner | None]]:
        """Take over the files a gone watcher claimed, one at a time: (its path here, the
        run record of its job if it had started, the gone owner). Each file is taken by a
        rename, so two watchers recovering at once take each file once."""
        other = self.spool.claimed / ident
        owner = _read_owner(self.spool.claimed / f"{ident}.owner")
        record = read_run(self.spool, ident)
        for name in claimed_files(self.spool, ident):
            mine = self.claim_from(other / name)
            if mine is None:
                continue
            started = record if record and record.get("file") == name else None
            yield mine, started, owner

    def claim_from(self, path: Path) -> Path | None:
        """Take `path` (waiting in the spool, or in another claim area) into this one by a
        rename; None if another watcher took it first."""
        target = self.dir / path.name
        if target.exists():
            return None  # never replace a file of ours (we run one file at a time)
        try:
            os.rename(path, target)
        except FileNotFoundError:
            # Taken by another watcher, or (NFS) our own rename retransmitted after it
            # succeeded: the file is ours if it is here.
            return target if target.exists() else None
        return target

    def forget(self, ident: str) -> None:
        """Remove a gone watcher's claim area once its files are taken over."""
        for suffix in (".run", ".owner"):
            try:
                os.unlink(self.spool.claimed / f"{ident}{suffix}")
            except OSError:
                pass
        try:
            (self.spool.claimed / ident).rmdir()
        except OSError:
            pass


def claim_areas(spool: Spool) -> list[tuple[Owner | None, str, float]]:
    """Every watcher with a claim area in `spool`: (owner, or None when its owner file is
    gone or unreadable; its id; its heartbeat, the owner file's mtime)."""
    found: dict[str, tuple[Owner | None, float]] = {}
    try:
        entries = list(os.scandir(spool.claimed))
    except OSError:
        return []
    for entry in entries:
        try:
            mtime = entry.stat().st_mtime
        except OSError:
            continue
        if entry.name.endswith(".owner"):
            found[entry.name[: -len(".owner")]] = (_read_owner(Path(entry.path)), mtime)
        elif entry.is_dir():
            found.setdefault(entry.name, (None, mtime))
    return [(owner, ident, beat) for ident, (owner, beat) in sorted(found.items())]


def read_run(spool: Spool, ident: str) -> dict[str, Any] | None:
    """The run record of watcher `ident`'s claimed file, if its job started."""
    return _read_json(spool.claimed / f"{ident}.run")


def claimed_files(spool: Spool, ident: str) -> list[str]:
    """The files watcher `ident` holds."""
    try:
        return sorted(n for n in os.listdir(spool.claimed / ident) if not n.startswith("."))
    except OSError:
        return []


def move_free(path: Path, directory: Path, name: str) -> Path:
    """Move `path` into `directory` under `name`, or `name.2`, `name.3`… (the first free
    one: a file there is never replaced); the new path."""
    for n in range(1, 10_000):
        target = directory / (name if n == 1 else f"{name}.{n}")
        try:
            os.link(path, target)  # fails if the name is taken, unlike rename
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            if target.exists():  # no hard links here: a rename to a name seen free
                continue
            os.rename(path, target)
            return target
        os.unlink(path)
        return target
    raise FileExistsError(f"no free name for {name} in {directory}")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_owner(path: Path) -> Owner | None:
    data = _read_json(path)
    if data is None:
        return None
    try:
        return Owner(**{k: data[k] for k in Owner.__dataclass_fields__})
    except (KeyError, TypeError):
        return None
