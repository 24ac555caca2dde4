"""The test files a host gets (the payload): chosen, hashed, streamed, cached there.

On the controller, `build()` lists what the tests need from their directories (see
mhtest.runners.testfiles) and names it by a hash of its content: the same files give the
same key, whoever sends them. `Payload.blocks()` is its uncompressed tar, made on the fly
in blocks of BLOCK bytes (memory stays bounded, whatever the size), deterministic (no
owners, no times: only names, modes, links and content).

On the host, the executor keeps each payload in its cache directory as
`payload-<key>/` (files read-only): the launch command tells the controller whether it is
there, so an unchanged tree is sent once per host. Each run works in a tree of hard links
to it (`run-<pid>-…/`, removed at the end), so a test's own writes stay its own. At most
KEPT payloads and BUDGET bytes stay (the least recently used go first, never one used in
the last RECENT seconds); leftovers of runs that died are removed too.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import IO, Any, BinaryIO, Iterator

from mhtest import pids
from mhtest.runners import testfiles
from mhtest.spec import TestSpec, dir_name

LOG = logging.getLogger(__name__)
BLOCK = 1 << 20
#: A payload this large is worth a warning (it is sent once per host, then cached there).
LARGE = 64 << 20
#: Host cache bounds: payloads kept, their total size, and how recent a use protects one.
KEPT = 8
BUDGET = 2 << 30
RECENT = 3600.0
READY = ".mhtest-ready"
#: The controller's memo of file hashes (by device, inode, size and times), bounded.
INDEX_FILE = "payload-index.json"
INDEX_ENTRIES = 20_000
_TAR_END = bytes(1024)


@dataclass
class Member:
    """One entry of the payload: a directory, a file (read from `path`) or a link."""

    arcname: str
    path: str
    kind: str  # "dir", "file" or "link"
    size: int = 0
    header: bytes = b""


@dataclass
class Payload:
    """What goes to each host: `key` names its content, `size` is its tar's length."""

    key: str
    size: int
    members: list[Member] = field(default_factory=list)
    roots: dict[str, str] = field(default_factory=dict)  # local directory -> arcname
    files: int = 0
    data_size: int = 0

    def blocks(self) -> Iterator[bytes]:
        """The payload's tar, a block at a time (headers and small files gathered up)."""
        buffer = bytearray()
        for member in self.members:
            buffer += member.header
            if member.kind != "file":
                continue
            with open(member.path, "rb") as data:
                left = member.size
                while left:
                    chunk = data.read(min(BLOCK, left))
                    if not chunk:  # it shrank since it was listed: keep the tar whole
                        LOG.warning("%s changed while it was sent", member.path)
                        chunk = bytes(min(BLOCK, left))
                    left -= len(chunk)
                    if len(buffer) + len(chunk) > BLOCK and buffer:
                        yield bytes(buffer)
                        buffer.clear()
                    if len(chunk) >= BLOCK:
                        yield chunk
                    else:
                        buffer += chunk
            buffer += bytes(-member.size % tarfile.BLOCKSIZE)
            if len(buffer) >= BLOCK:
                yield bytes(buffer)
                buffer.clear()
        yield bytes(buffer + _TAR_END)

    def remote_specs(self, specs: list[TestSpec]) -> list[TestSpec]:
        """The specs as the host sees them: paths relative to the payload's root there."""
        remote = []
        for spec in specs:
            path = spec.path
            local_dir = os.path.dirname(os.path.abspath(spec.path)) if spec.path else ""
            if local_dir in self.roots:
                path = f"{self.roots[local_dir]}/{os.path.basename(spec.path)}"
            # A control file's test directories went along: their names resolve there.
            where = (self.roots.get(os.path.abspath(d)) for d in spec.tests_path)
            remote.append(
                replace(
                    spec,
                    path=path,
                    logdir=f"results/{dir_name(spec.name)}",
                    tests_path=[arcname for arcname in where if arcname],
                )
            )
        return remote


def build(
    paths: list[str],
    exclude: list[str] | tuple[str, ...] = (),
    send_dir: bool = False,
    dirs: list[str] | tuple[str, ...] = (),
) -> Payload:
    """The payload for test files `paths`: what each needs from its directory (see testfiles).

    `exclude`: more patterns, as lines of a .mhtestignore; `send_dir`: whole directories;
    `dirs`: directories that go whole (a control file's tests path).
    """
    roots: dict[str, str] = {}
    chosen: dict[str, set[str]] = {}
    for directory in dirs:
        directory = os.path.abspath(directory)
        if os.path.isdir(directory):
            arcname = roots.setdefault(directory, f"t{len(roots)}")
            rules = testfiles.IgnoreRules.load(directory, list(exclude))
            chosen.setdefault(arcname, set()).update(testfiles.walk(directory, rules))
    for path in paths:
        local_dir = os.path.dirname(os.path.abspath(path)) if path else ""
        if not local_dir or not os.path.isdir(local_dir):
            continue
        arcname = roots.setdefault(local_dir, f"t{len(roots)}")
        rules = testfiles.IgnoreRules.load(local_dir, list(exclude))
        if send_dir:
            found = testfiles.walk(local_dir, rules)
            found.append(os.path.basename(path))
        else:
            found = testfiles.needed(local_dir, os.path.basename(path), rules)
        chosen.setdefault(arcname, set()).update(found)
    payload = Payload(key="", size=0, roots=roots)
    index = _Index.load()
    digest = hashlib.sha256()
    for local_dir, arcname in roots.items():
        for rel in [""] + sorted(chosen[arcname]):
            member = _member(local_dir, rel, arcname)
            if member is None:
                continue
            payload.members.append(member)
            payload.size += len(member.header) + member.size + (-member.size % tarfile.BLOCKSIZE)
            digest.update(member.header)
            if member.kind == "file":
                payload.files += 1
                payload.data_size += member.size
                digest.update(index.digest(member.path))
    index.save()
    if payload.members:
        payload.size += len(_TAR_END)
        payload.key = digest.hexdigest()[:32]
    return payload


def _member(root: str, rel: str, arcname: str) -> Member | None:
    """The tar entry for `rel` below `root` (`""`: the root itself), or None if it is gone."""
    path = os.path.join(root, rel) if rel else root
    try:
        st = os.lstat(path)
    except OSError as exc:
        LOG.warning("%s: left out of the test files: %s", path, exc)
        return None
    info = tarfile.TarInfo(f"{arcname}/{rel}" if rel else arcname)
    info.mtime = 0
    if stat.S_ISLNK(st.st_mode):
        info.type, info.linkname, info.mode, kind = (
            tarfile.SYMTYPE,
            os.readlink(path),
            0o777,
            "link",
        )
    elif stat.S_ISDIR(st.st_mode):
        info.type, info.mode, kind = tarfile.DIRTYPE, 0o755, "dir"
    elif stat.S_ISREG(st.st_mode):
        info.size, kind = st.st_size, "file"
        info.mode = 0o555 if st.st_mode & 0o111 else 0o444  # shared on the host: read-only
    else:
        LOG.warning("%s: not a file, directory or link: left out of the test files", path)
        return None
    header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    return Member(arcname=info.name, path=path, kind=kind, size=info.size, header=header)


class _Index:
    """File content hashes remembered by (device, inode, size, mtime, ctime): read once."""

    def __init__(self, path: str, entries: dict[str, list[Any]]) -> None:
        self.path = path
        self.entries = entries
        self.changed = False

    @classmethod
    def load(cls) -> _Index:
        from mhtest.hosts.bootstrap import controller_cache

        path = str(controller_cache() / INDEX_FILE)
        try:
            with open(path, encoding="utf-8") as data:
                entries = json.load(data)
            if not isinstance(entries, dict):
                entries = {}
        except (OSError, ValueError):
            entries = {}
        return cls(path, entries)

    def digest(self, path: str) -> bytes:
        st = os.stat(path)
        stamp = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        known = self.entries.get(path)
        if isinstance(known, list) and known[:5] == stamp:
            return bytes.fromhex(known[5])
        content = hashlib.sha256()
        with open(path, "rb") as data:
            while block := data.read(BLOCK):
                content.update(block)
        # A file changed within the clock's resolution may change again unseen: not kept.
        if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > 2_000_000_000:
            self.entries.pop(path, None)
            self.entries[path] = [*stamp, content.hexdigest()]
            self.changed = True
        return content.digest()

    def save(self) -> None:
        if not self.changed:
            return
        entries = dict(list(self.entries.items())[-INDEX_ENTRIES:])
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.path), prefix=".index.")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(entries, out)
            os.replace(tmp, self.path)
        except OSError as exc:
            LOG.debug("cannot keep the file hashes in %s: %s", self.path, exc)


# -- on the host ---------------------------------------------------------------------------


class _Bounded(io.RawIOBase):
    """The next `size` bytes of `stream`, as a file; EOFError if it ends sooner."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self.stream = stream
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.left:
            return 0
        view = memoryview(buffer)[: self.left]
        data = self.stream.read(len(view))
        if not data:
            raise EOFError(f"the test files ended {self.left} bytes short")
        view[: len(data)] = data
        self.left -= len(data)
        return len(data)


def receive(stream: BinaryIO, size: int, cache: str, key: str) -> None:
    """Unpack `size` bytes of payload `key` from `stream` into the cache, then tidy it."""
    target = os.path.join(cache, f"payload-{key}")
    tmp = f"{target}.tmp.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        bounded = _Bounded(stream, size)
        refused = unpack(io.BufferedReader(bounded, BLOCK), tmp)
        while bounded.read(BLOCK):
            pass  # what tarfile left of the end blocks
        for current, _dirs, files in os.walk(tmp):
            for name in files:  # shared by the runs that link to them: read-only
                path = os.path.join(current, name)
                if not os.path.islink(path):
                    os.chmod(path, os.stat(path).st_mode & ~0o222)
        with open(os.path.join(tmp, READY), "w", encoding="ascii") as ready:
            ready.write(str(size))
        try:
            os.rename(tmp, target)
        except OSError:  # another run put it there meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if refused:
        LOG.warning("left out of the test files (unsafe paths): %s", ", ".join(refused[:5]))
    cleanup(cache, key)


def checkout(cache: str, key: str) -> str:
    """A private tree of hard links to cached payload `key`, for one run; its path."""
    source = os.path.join(cache, f"payload-{key}")
    try:
        os.utime(os.path.join(source, READY))  # in use: cleanup keeps it
    except FileNotFoundError:
        raise FileNotFoundError(
            f"the test files {key} are no longer in {cache}; run again"
        ) from None
    tree = tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=cache)
    for current, dirs, files in os.walk(source):
        rel = os.path.relpath(current, source)
        into = os.path.join(tree, rel)
        for name in dirs + files:
            if rel == "." and name == READY:
                continue
            src, dst = os.path.join(current, name), os.path.join(into, name)
            if os.path.islink(src):
                os.symlink(os.readlink(src), dst)
            elif name in dirs:
                os.mkdir(dst)
            else:
                try:
                    os.link(src, dst)
                except OSError:  # a filesystem without hard links
                    shutil.copy2(src, dst)
    return tree


def cleanup(cache: str, keep: str) -> None:
    """Drop the least recently used payloads past KEPT or BUDGET, and dead runs' leftovers."""
    now = time.time()
    payloads = []
    for entry in os.scandir(cache):
        name = entry.name
        if name.startswith("run-") or (name.startswith("payload-") and ".tmp." in name):
            pid = name.split("-")[1] if name.startswith("run-") else name.rsplit(".", 1)[1]
            if pid.isdigit() and not pids.exists(int(pid)):
                shutil.rmtree(entry.path, ignore_errors=True)
        elif name.startswith("payload-"):
            try:
                ready = os.path.join(entry.path, READY)
                with open(ready, encoding="ascii") as marker:
                    size = int(marker.read() or 0)
                payloads.append((os.stat(ready).st_mtime, name, size))
            except (OSError, ValueError):
                continue
    total = 0
    for count, (used, name, size) in enumerate(sorted(payloads, reverse=True), 1):
        total += size
        if name == f"payload-{keep}" or now - used < RECENT:
            continue
        if count > KEPT or total > BUDGET:
            LOG.info("removing cached test files %s", name)
            shutil.rmtree(os.path.join(cache, name), ignore_errors=True)


def unpack(data: bytes | IO[bytes], target: str) -> list[str]:
    """Extract a tar into `target`, refusing anything that would land outside it.

    Returns the names of the members left out (absolute paths, `..`, links leading out,
    devices), which are logged rather than fatal.
    """
    os.makedirs(target, exist_ok=True)
    fileobj = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    refused: list[str] = []
    with tarfile.open(fileobj=fileobj, mode="r|", bufsize=BLOCK, copybufsize=BLOCK) as tar:
        for member in tar:
            safe = _safe_member(member, target)
            if safe is None:
                refused.append(member.name)
                continue
            tar.extract(safe, target, set_attrs=True, **_no_filter())
    if refused:
        LOG.warning("left out of %s (unsafe paths): %s", target, ", ".join(refused[:5]))
    return refused


def _no_filter() -> dict[str, Any]:
    # Members are checked by _safe_member; tell Python 3.12+ not to warn about no filter.
    return {"filter": "fully_trusted"} if hasattr(tarfile, "data_filter") else {}


def _safe_member(member: tarfile.TarInfo, target: str) -> tarfile.TarInfo | None:
    if hasattr(tarfile, "data_filter"):
        try:
            return tarfile.data_filter(member, target)
        except tarfile.FilterError:
            return None
    # Older Pythons: the same rules by hand.
    root = os.path.realpath(target)
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return None
    dest = os.path.realpath(os.path.join(root, member.name))
    if os.path.isabs(member.name) or os.path.commonpath([root, dest]) != root:
        return None
    if member.issym() or member.islnk():
        base = os.path.dirname(dest) if member.issym() else root
        link = os.path.realpath(os.path.join(base, member.linkname))
        if os.path.isabs(member.linkname) or os.path.commonpath([root, link]) != root:
            return None
    member.mode = (member.mode or 0o644) & 0o755
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    return member
