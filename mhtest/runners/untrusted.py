"""What a host sends back, taken as data: its results archives and its events, checked and bounded.

The controller does not trust its hosts (DESIGN.md, "Trust"). A test's results come back
as an uncompressed tar in `test.files` pieces; here they are spooled to an unnamed file
(bounded: never more than the limit, whatever the host sends) and then written by our own
extractor, not tarfile's: only regular files and directories, with plain relative names,
each opened through directory descriptors with O_NOFOLLOW below the test's own directory,
which the controller chose. Links, devices, FIFOs, absolute names and `..` are never
written, so no chain of links can lead a write outside (CVE-2025-4517 showed that
tarfile's `data` filter can be led outside by one).

Anything refused, an archive over the size limit or one that breaks off makes the test
ERROR with a one-line reason: our own executor sends none of these.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass, field
from typing import IO, Any

from mhtest import events

LOG = logging.getLogger(__name__)
#: Default bound on one test's results from a host (bytes of file data).
MAX_RESULTS = 1 << 30
#: A test's results keep it waited for (its deadline, a stop's kill) while they arrive: for
#: RESULTS_RATE_GRACE seconds from their first piece, then only while they average at least
#: MIN_RESULTS_RATE bytes a second, so that a host dribbling tiny pieces cannot hold a test,
#: or a stopped job, for ever.
MIN_RESULTS_RATE = 64 << 10
RESULTS_RATE_GRACE = 20.0
#: Bounds on the shape of one archive.
MAX_MEMBERS = 100_000
MAX_DEPTH = 64
MAX_COMPONENT = 255
MAX_PATH = 1024  # bytes of a relative name: the whole path must stay under PATH_MAX
#: Headroom the spool allows beyond the data limit, for tar headers.
HEADER_ROOM = 64 << 20
#: Phases (setUp, test, tearDown) a test.end from a host may carry.
MAX_PHASES = 16
#: Bounds on the text fields of an event from a host (characters).
MAX_REASON = 8192
MAX_WHITEBOARD = 1 << 20
MAX_SHORT = 512
MAX_CHILDREN = 10_000
#: Results one test may make while it runs (test.nested: a control file's run_test).
MAX_NESTED = 100_000
_BLOCK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
#: errnos that mean "a path component is not a plain directory / file of ours".
_NOT_OURS = {errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENXIO}


@dataclass
class Unpacked:
    """What an extraction wrote, and what it refused (names as the host gave them)."""

    files: int = 0
    size: int = 0
    refused: list[str] = field(default_factory=list)
    over_limit: bool = False
    broken: str | None = None  # why the archive could not be read to its end

    def problem(self, limit: int) -> str | None:
        """One line saying what was wrong with the archive, or None."""
        if self.over_limit:
            return (
                f"its results are over the {human_size(limit)} limit (--max-results-size); "
                f"kept the first {self.files} file(s), {human_size(self.size)}"
            )
        if self.refused:
            count = len(self.refused)
            shown = ", ".join(repr(name[:80]) for name in self.refused[:3])
            more = f" and {count - 3} more" if count > 3 else ""
            return (
                f"its results held {count} entr{'y' if count == 1 else 'ies'}"
                f" that are not plain files inside the test's directory (links, devices, "
                f"absolute or '..' names): {shown}{more}; not written"
            )
        if self.broken:
            return f"its results archive is broken ({self.broken}); kept {self.files} file(s)"
        return None


def human_size(size: int) -> str:
    """`size` bytes as a short figure: 1 GiB, 300 MiB, 12 KiB, 5 B."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            value = size / (1 << shift)
            return f"{value:.3g} {unit}"
    return f"{size} B"


def parse_size(text: str) -> int:
    """'1G', '500M', '64k', '1024' → bytes; ValueError with the reason otherwise."""
    text = str(text).strip()
    units = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    number = text.rstrip("bBiI")
    suffix = number[-1:].lower() if number[-1:].isalpha() else ""
    digits = number[:-1] if suffix else number
    try:
        value = float(digits) * units[suffix]
    except (ValueError, KeyError):
        raise ValueError(f"{text!r} is not a size (examples: 500M, 2G, 65536)") from None
    if value < 1:
        raise ValueError(f"{text!r}: a size must be at least 1 byte")
    return int(value)


class ResultsSpool:
    """One test's results archive as it arrives in pieces, kept in an unnamed file.

    At most `limit` + HEADER_ROOM bytes are kept; beyond that the rest is dropped and the
    extraction reports the test over its limit.
    """

    def __init__(self, directory: str, limit: int = MAX_RESULTS) -> None:
        self.limit = limit
        self.received = 0
        self.over = False
        os.makedirs(directory, mode=0o700, exist_ok=True)
        # Unnamed (O_TMPFILE): nothing in the results tree to clean up after a crash.
        self._file: IO[bytes] = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115

    def add(self, data: bytes) -> None:
        self.received += len(data)
        room = self.limit + HEADER_ROOM - self._file.tell()
        if len(data) > room:
            self.over = True
            data = data[: max(room, 0)]
        if data:
            self._file.write(data)

    def extract(self, target: str) -> Unpacked:
        """Write what arrived into `target` (see `extract`), then drop the spool."""
        try:
            self._file.seek(0)
            unpacked = extract(self._file, target, self.limit)
        finally:
            self._file.close()
        unpacked.over_limit = unpacked.over_limit or self.over
        return unpacked

    def close(self) -> None:
        self._file.close()


def extract(fileobj: IO[bytes], target: str, limit: int = MAX_RESULTS) -> Unpacked:
    """Write the regular files and directories of the tar in `fileobj` below `target`.

    Never follows a link, never writes outside `target`, never more than `limit` bytes of
    file data; files are created 0600 (0700 when executable), directories 0700. Refused
    members and the reason an archive stopped early are in the returned Unpacked; only
    local write errors (a full disk, …) raise OSError.
    """
    os.makedirs(target, mode=0o700, exist_ok=True)
    root = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    out = Unpacked()
    try:
        with tarfile.open(fileobj=fileobj, mode="r|") as tar:
            for count, member in enumerate(tar, 1):
                if count > MAX_MEMBERS:
                    out.broken = f"more than {MAX_MEMBERS} entries"
                    break
                if not _take(tar, member, root, limit, out):
                    break
    except (tarfile.TarError, EOFError) as exc:
        out.broken = str(exc) or type(exc).__name__
    finally:
        os.close(root)
    return out


def _take(
    tar: tarfile.TarFile, member: tarfile.TarInfo, root: int, limit: int, out: Unpacked
) -> bool:
    """Write one member (or refuse it); False once the size limit stops the extraction."""
    parts = relative_parts(member.name)
    if parts is None or not (member.isreg() or member.isdir()):
        out.refused.append(member.name)
        return True
    if not parts:
        return True  # the archive's root: `target` itself
    if member.isreg() and out.size + member.size > limit:
        out.over_limit = True
        return False
    try:
        if member.isdir():
            os.close(_open_dirs(root, parts))
            return True
        parent = _open_dirs(root, parts[:-1])
        try:
            _write_file(tar, member, parent, parts[-1])
        finally:
            os.close(parent)
    except OSError as exc:
        if exc.errno not in _NOT_OURS:
            raise
        out.refused.append(member.name)
        return True
    out.files += 1
    out.size += member.size
    return True


def relative_parts(name: str) -> list[str] | None:
    """A relative name as plain path components, or None when it is not a safe one."""
    if not name or "\0" in name or name.startswith("/") or "\\" in name:
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if len(parts) > MAX_DEPTH or any(p == ".." for p in parts):
        return None
    sizes = [len(p.encode("utf-8", "surrogateescape")) for p in parts]
    if any(size > MAX_COMPONENT for size in sizes) or sum(sizes) + len(sizes) > MAX_PATH:
        return None
    return parts


def _open_dirs(root: int, parts: list[str]) -> int:
    """A descriptor of root/parts…, each made (0700) when missing; never through a link."""
    fd = os.dup(root)
    try:
        for part in parts:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(part, 0o700, dir_fd=fd)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, parent: int, name: str) -> None:
    mode = 0o700 if member.mode & 0o100 else 0o600
    fd = os.open(name, _FILE_FLAGS, mode, dir_fd=parent)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.ENXIO, "not a regular file")
        source = tar.extractfile(member)
        if source is not None:
            while True:
                block = source.read(_BLOCK)
                if not block:
                    break
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view) :]
        if member.mtime:
            try:
                os.utime(fd, (member.mtime, member.mtime))
            except (OSError, OverflowError, ValueError):
                pass  # a time the filesystem cannot hold is not worth failing for
    finally:
        os.close(fd)


def bound_end(event: dict[str, Any], host: str) -> dict[str, Any]:
    """A test.end (or test.start) from a host with its fields checked and cut to size."""
    status = event.get("status")
    ends = (events.TEST_END, events.TEST_NESTED)
    if event.get("type") in ends and status not in events.STATUSES:
        event["status"] = events.ERROR
        event["fail_reason"] = f"{host}: the host reported the unknown status {str(status)[:40]!r}"
    for key, limit in (
        ("fail_reason", MAX_REASON),
        ("reason", MAX_REASON),
        ("whiteboard", MAX_WHITEBOARD),
    ):
        value = event.get(key)
        if value is not None and not isinstance(value, str):
            value = str(value)
        if value is not None and len(value) > limit:
            value = value[:limit] + f"… [cut at {limit} characters]"
        if value is not None:
            event[key] = value
    for key in ("fail_class", "name"):
        value = event.get(key)
        if value is not None:
            event[key] = str(value)[:MAX_SHORT]
    for key in ("start", "end", "time", "timeout"):
        if key in event and not isinstance(event[key], (int, float)):
            event.pop(key)
    if "phases" in event:  # setUp/test/tearDown times: a few short lists
        from mhtest.results import phases_of

        phases = event["phases"] if isinstance(event["phases"], list) else []
        event["phases"] = [[n[:MAX_SHORT], s, e] for n, s, e in phases_of(phases[:MAX_PHASES])]
    children = event.get("children")
    if children is not None:
        if not isinstance(children, list) or not all(isinstance(c, dict) for c in children):
            children = []
        event["children"] = [_bound_child(c, host) for c in children[:MAX_CHILDREN]]
    return event


def bound_nested(event: dict[str, Any], host: str) -> dict[str, Any]:
    """A test.nested from a host: bound as an end, its name cut, its directory a plain
    relative name inside the test's own (else the test's own)."""
    event = bound_end(event, host)
    event["name"] = str(event.get("name") or "")[:MAX_SHORT]
    parts = relative_parts(str(event.get("logdir") or ""))
    event["logdir"] = "/".join(parts) if parts else ""
    return event


def _bound_child(child: dict[str, Any], host: str) -> dict[str, Any]:
    from mhtest.results import TestResult

    known = set(TestResult.__dataclass_fields__) - {"children", "uid", "logdir", "tags"}
    child = {k: v for k, v in child.items() if k in known}
    child = bound_end({"type": events.TEST_END, **child}, host)
    child.pop("type", None)
    child["uid"] = 0
    child["name"] = str(child.get("name", ""))[:MAX_SHORT]
    child["ref"] = str(child.get("ref", ""))[:MAX_SHORT]
    child["host"] = str(child.get("host", host))[:MAX_SHORT]
    return child
