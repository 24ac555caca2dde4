"""The mirror (Autotest's mirror script): new kernel releases become queued control files.

    mhtest queue mirror --clients mirror_clients /srv/mirror /srv/testing/queue
    mhtest queue mirror --rsync rsync://mirror.example.org/linux/ --once … /srv/mirror …

It watches the mirror directory (inotify, and a rescan every few seconds), or fills it from
an rsync source every `--interval` seconds; each new release (mhtest.queue.wrap says what
a release is) queues, for each line of the mapping file, the control files it names into
that queue (mhtest.queue.wrap writes them), and `--email` sends one notice through SMTP.

The mapping file (`--clients`, default ~/.autotest_mirror_clients as Autotest's): a queue a
line (a directory of the queue directory, often named after its machine), then the control
files to queue there; `#` starts a comment:

    x86_64                 /srv/testing/control_files/basic-tests /srv/testing/net.srv
    lonehost.example.net   /srv/testing/control_files/advanced-tests

The config file (`--config`): `NAME PATH` lines, the kernel config a source release is built
with (a path on the machine), per queue or machine; the first line for a name counts.

The files it has seen are kept in `<mirror>/.mhtest-mirror.json`; at its first start the
files already there are recorded as seen, not queued. The mapping and config files are read
for each new release, so edits apply without a restart.
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Callable

from mhtest.queue.fsevents import Completion, DirEvents
from mhtest.queue.spool import move_free
from mhtest.queue.wrap import (
    Release,
    ReleaseError,
    client_wrapper,
    queued_name,
    release_of,
    server_control,
    tarball_version,
)

LOG = logging.getLogger(__name__)
DEFAULT_CLIENTS = "~/.autotest_mirror_clients"
STATE_FILE = ".mhtest-mirror.json"
#: How often the mirror directory is rescanned (besides inotify's wake-ups).
POLL = 2.0
SETTLE = 0.5
SMTP_TIMEOUT = 30.0
Say = Callable[[str], None]


class MirrorError(Exception):
    """The mapping or config file cannot be used: one line naming the file and line."""


@dataclass
class MirrorConfig:
    """What `mhtest queue mirror` was asked to do."""

    mirror: Path
    queues: Path
    clients: Path
    configs: Path | None = None
    email: list[str] = field(default_factory=list)
    smtp: str = "localhost:25"
    sender: str | None = None
    rsync: str | None = None
    interval: float = 600.0
    settle: float = SETTLE

    @property
    def state(self) -> Path:
        return self.mirror / STATE_FILE


def load_clients(path: Path) -> list[tuple[str, list[Path], str]]:
    """The mapping file: [(queue, control files, "file:line")]; MirrorError when unusable."""
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise MirrorError(f"mapping file {path}: cannot read: {exc.strerror or exc}") from None
    mapping = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        where = f"{path}:{number}"
        if len(words) < 2:
            raise MirrorError(f"{where}: a queue and at least one control file, not {line!r}")
        controls = [Path(os.path.expanduser(w)) for w in words[1:]]
        relative = [str(c) for c in controls if not c.is_absolute()]
        if relative:
            raise MirrorError(f"{where}: control files are absolute paths, not {relative[0]!r}")
        mapping.append((words[0], controls, where))
    return mapping


def load_configs(path: Path | None) -> dict[str, str]:
    """The config file: {queue or machine: kernel config path there}."""
    if path is None:
        return {}
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise MirrorError(f"config file {path}: cannot read: {exc.strerror or exc}") from None
    configs: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) < 2:
            raise MirrorError(f"{path}:{number}: NAME PATH, not {line!r}")
        configs.setdefault(words[0], words[1])
    return configs


class Mirror:
    """Watches a mirror directory and queues control files for its new releases."""

    def __init__(self, config: MirrorConfig, say: Say | None = None) -> None:
        self.config = config
        self.say = say
        self.known: set[str] = set()
        self._wake = threading.Event()
        self.events = DirEvents(config.mirror, self._wake, recursive=True)
        self.completion = Completion(config.settle, self.events)
        self._said: set[str] = set()  # problems said once (until they change)

    def log(self, text: str) -> None:
        LOG.info("mirror: %s", text)
        if self.say is not None:
            self.say(f"mirror: {text}")

    # -- the loop -------------------------------------------------------------------------------
    def run(self, stop: threading.Event, once: bool = False) -> list[Path]:
        """Sync, scan and queue until `stop` (or once); the files queued."""
        self.config.mirror.mkdir(parents=True, exist_ok=True)
        first = not self._load_known()
        queued: list[Path] = []
        self.sync()
        if first:
            files = self._files()
            self.known.update(self._rel(p) for p, _, _ in files)
            self._save_known()
            self.log(f"{len(files)} file(s) already in {self.config.mirror}: recorded, not queued")
        if once:
            return self.handle([Path(p) for p, _, _ in self._new_files()])
        polling = self.events.start()
        self.log(f"watching {self.config.mirror}" + (f" (polling: {polling})" if polling else ""))
        next_sync = time.monotonic() + self.config.interval
        try:
            while not stop.is_set():
                complete, wake_at = self.completion.check(self._new_files(), time.monotonic())
                if complete:
                    queued += self.handle([Path(p) for p in complete])
                if self.config.rsync and time.monotonic() >= next_sync:
                    self.sync()
                    next_sync = time.monotonic() + self.config.interval
                    continue
                timeout = POLL if wake_at is None else max(0.01, wake_at - time.monotonic())
                self._wake.wait(min(timeout, POLL))
                self._wake.clear()
        finally:
            self.events.stop()
        return queued

    def sync(self) -> None:
        """rsync the source into the mirror directory (when there is a source)."""
        source = self.config.rsync
        if not source:
            return
        command = ["rsync", "-rt", "--exclude=.*", source, f"{self.config.mirror}/"]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=max(60.0, self.config.interval),
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.log(f"rsync from {source} failed: {exc}")
            return
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            self.log(f"rsync from {source} failed (exit {done.returncode}): {last}")

    # -- new releases ---------------------------------------------------------------------------
    def handle(self, paths: list[Path]) -> list[Path]:
        """Queue the control files for the releases among `paths` (new complete files)."""
        tarballs = self._tarballs()
        releases = []
        for path in sorted(paths):
            try:
                release = release_of(path, tarballs)
            except ReleaseError as exc:
                self.log(str(exc))
                release = None
            if release is not None:
                releases.append(release)
        try:
            mapping = load_clients(self.config.clients)
            configs = load_configs(self.config.configs)
        except MirrorError as exc:
            self._say_once(f"{exc}: releases wait until it is fixed")
            return []  # not recorded as seen: they are queued once the mapping is fixed
        queued = []
        for release in releases:
            queued += self._queue(release, mapping, configs)
        self.known.update(self._rel(p) for p in paths)
        self._save_known()
        if releases:
            self.notify(releases, queued)
        return queued

    def _queue(
        self, release: Release, mapping: list[tuple[str, list[Path], str]], configs: dict
    ) -> list[Path]:
        queued = []
        for queue, controls, where in mapping:
            directory = self.config.queues / queue
            if not directory.is_dir():
                self.log(f"{where}: no queue {directory}: {release.version} not queued there")
                continue
            for control in controls:
                try:
                    if control.name.endswith(".srv"):
                        text = server_control(release, queue, configs, control)
                    else:
                        control.stat()  # the wrapper names it: it must be there
                        text = client_wrapper(release, queue, configs, control)
                    queued.append(_drop(directory, queued_name(release, control), text))
                except OSError as exc:
                    self.log(f"{where}: {control}: {exc.strerror or exc}: not queued")
                    continue
                self.log(f"{release.path.name}: queued {queue}/{queued[-1].name}")
        return queued

    def notify(self, releases: list[Release], queued: list[Path]) -> None:
        """Mail the notice of new releases to --email (one line logged if it fails)."""
        if not self.config.email:
            return
        message = EmailMessage()
        message["Subject"] = f"mhtest: {len(releases)} new kernel release(s)"
        message["From"] = self.config.sender or f"mhtest@{socket.gethostname()}"
        message["To"] = ", ".join(self.config.email)
        lines = ["Testing new kernel releases:"]
        lines += [f"  {r.version} ({r.path.name})" for r in releases]
        lines += ["", "Queued:"] + [f"  {p.parent.name}/{p.name}" for p in queued]
        message.set_content("\n".join(lines) + "\n")
        host, _, port = (
            self.config.smtp.rpartition(":") if ":" in self.config.smtp else ("", "", "")
        )
        host, port_number = (host or self.config.smtp), int(port or 25)
        try:
            with smtplib.SMTP(host, port_number, timeout=SMTP_TIMEOUT) as smtp:
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            self.log(
                f"cannot mail {', '.join(self.config.email)} through {host}:{port_number}: {exc}"
            )
            return
        self.log(f"mailed {', '.join(self.config.email)}")

    # -- the mirror directory -------------------------------------------------------------------
    def _files(self) -> list[tuple[str, int, int]]:
        """Every file of the mirror (no dot files or directories): (path, mtime_ns, size)."""
        found = []
        for root, dirs, files in os.walk(self.config.mirror):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                path = os.path.join(root, name)
                try:
                    info = os.stat(path)
                except OSError:
                    continue
                found.append((path, info.st_mtime_ns, info.st_size))
        return found

    def _new_files(self) -> list[tuple[str, int, int]]:
        return [f for f in self._files() if self._rel(f[0]) not in self.known]

    def _tarballs(self) -> dict[str, Path]:
        found = {}
        for path, _, _ in self._files():
            version = tarball_version(os.path.basename(path))
            if version is not None:
                found[version] = Path(path)
        return found

    def _rel(self, path: str | Path) -> str:
        return os.path.relpath(path, self.config.mirror)

    def _load_known(self) -> bool:
        """The files seen before; False when there is no record (a first start)."""
        try:
            data = json.loads(self.config.state.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as exc:
            self.log(f"{self.config.state}: cannot read ({exc}): starting afresh")
            return False
        self.known = set(data.get("known") or [])
        return True

    def _save_known(self) -> None:
        state = self.config.state
        tmp = state.with_name(f"{state.name}.tmp-{os.getpid()}")
        try:
            tmp.write_text(json.dumps({"known": sorted(self.known)}, indent=0), encoding="utf-8")
            os.replace(tmp, state)
        except OSError as exc:
            self.log(f"cannot record the files seen in {state}: {exc}")

    def _say_once(self, text: str) -> None:
        if text not in self._said:
            self._said.add(text)
            self.log(text)


def smtp_address(text: str) -> tuple[str, int]:
    """`HOST[:PORT]` (port 25 by default) as (host, port); ValueError for a bad port."""
    host, colon, port = text.rpartition(":")
    if not colon or "]" in port:
        return text.strip("[]"), 25
    return host.strip("[]"), int(port)


def _drop(directory: Path, name: str, text: str) -> Path:
    """Write `text` into the queue `directory` as `name` (or `name.2`…), whole at once."""
    tmp = directory / f".{name}.tmp-{os.getpid()}"
    tmp.write_text(text, encoding="utf-8")
    try:
        return move_free(tmp, directory, name)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
