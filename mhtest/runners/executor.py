"""The executor: runs TestSpecs sent on stdin, reports their events on stdout.

This is what a remote host runs (`python -m mhtest.runners.executor`), started over
SSH by the RemoteTestRunner: the very same LocalRunner as `mhtest run` uses here, with
the event stream going back over the SSH channel.

Input: one JSON line ``{"max_parallel": N or null, "archive": SIZE, "specs": [...]}``,
then SIZE bytes of an uncompressed tar holding the test files. A spec's `path` and
`logdir` relative to the archive's root are placed under a private temporary directory,
which is removed when the executor ends. The controller keeps stdin open while it
listens: end of input before the job is done means it went away (or asks to stop), and
the running tests are stopped. SIGTERM, SIGHUP and SIGINT stop them too.

Output: the LocalRunner's events, one JSON line each. Before a test's `test.end`, the
test's results directory goes back as `test.files` events (uid, data: base64 of a piece
of an uncompressed tar, last: true on the final piece), so the controller has the
results on disk by the time it records the end, without another round trip.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import shutil
import signal
import sys
import tarfile
import tempfile
import threading
from typing import Any, BinaryIO

from mhtest import events
from mhtest.spec import TestSpec

LOG = logging.getLogger(__name__)
#: Raw bytes per `test.files` event (base64 makes it 4/3 larger; events.MAX_LINE is 16 MiB).
FILES_CHUNK = 3 << 20
#: Directories never sent with the test files.
SKIP_DIRS = ("__pycache__", ".git")


def pack(directories: dict[str, str]) -> bytes:
    """An uncompressed tar holding each local directory under its arcname.

    Symlinks stay links; caches (SKIP_DIRS) are left out.
    """

    def skip(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if os.path.basename(member.name) in SKIP_DIRS else member

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for local, arcname in directories.items():
            tar.add(local, arcname=arcname, filter=skip)
    return buf.getvalue()


def pack_results(logdir: str, out: Any) -> None:
    """Stream a test's results directory to `out` as an uncompressed tar.

    Only regular files and directories go (the controller refuses anything else); a
    file that cannot be read is left out and logged, the rest still goes.
    """
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for top, dirs, files in os.walk(logdir):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            rel = os.path.relpath(top, logdir)
            for name in (*dirs, *sorted(files)):
                path = os.path.join(top, name)
                arcname = os.path.normpath(os.path.join(rel, name))
                try:
                    info = tar.gettarinfo(path, arcname)
                    if info.isreg():
                        with open(path, "rb") as data:
                            tar.addfile(info, data)
                    elif info.isdir():
                        tar.addfile(info)
                    else:
                        LOG.warning("%s: not a file or directory: left out of the results", path)
                except OSError as exc:
                    LOG.warning("%s: left out of the results: %s", path, exc)


class _Pieces:
    """A write-only file that hands base64 pieces of FILES_CHUNK raw bytes to `emit`."""

    def __init__(self, emit: Any) -> None:
        self.emit = emit
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        while len(self.buffer) >= FILES_CHUNK:
            self._flush(FILES_CHUNK, last=False)
        return len(data)

    def close(self) -> None:
        """Send what is left as the last piece."""
        self._flush(len(self.buffer), last=True)

    def _flush(self, size: int, last: bool) -> None:
        piece = base64.b64encode(bytes(self.buffer[:size])).decode("ascii")
        del self.buffer[:size]
        self.emit(piece, last)


def unpack(data: bytes | BinaryIO, target: str) -> list[str]:
    """Extract a tar into `target`, refusing anything that would land outside it.

    Returns the names of the members left out (absolute paths, `..`, links leading out,
    devices), which are logged rather than fatal.
    """
    os.makedirs(target, exist_ok=True)
    fileobj = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    refused: list[str] = []
    with tarfile.open(fileobj=fileobj, mode="r:") as tar:
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


class _Output:
    """Event lines to stdout (a test's results go first); a broken pipe stops the job."""

    def __init__(self, stop: threading.Event, logdirs: dict[int, str]) -> None:
        self.stop = stop
        self.logdirs = logdirs
        self.lock = threading.Lock()
        self.fd = sys.stdout.fileno()

    def __call__(self, event: dict[str, Any]) -> None:
        fields = {k: v for k, v in event.items() if k not in ("v", "type")}
        with self.lock:
            if event["type"] == events.TEST_END:
                self._send_files(event.get("uid"))
            self._write(events.encode(event["type"], **fields))

    def _send_files(self, uid: Any) -> None:
        logdir = self.logdirs.get(uid)
        if not logdir or not os.path.isdir(logdir):
            return
        pieces = _Pieces(
            lambda piece, last: self._write(
                events.encode(events.TEST_FILES, uid=uid, data=piece, last=last)
            )
        )
        try:
            pack_results(logdir, pieces)
        except OSError as exc:
            LOG.warning("cannot pack the results of test %s: %s", uid, exc)
        pieces.close()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError:
            self.stop.set()


def read_input(stream: BinaryIO, root: str) -> tuple[int | None, list[TestSpec]]:
    """Read the header and the test archive from `stream`; specs placed under `root`."""
    line = stream.readline(events.MAX_LINE)
    if not line:
        raise EOFError("no input: the controller sent nothing")
    header = json.loads(line)
    size = int(header.get("archive") or 0)
    if size:
        data = stream.read(size)
        if len(data) != size:
            raise EOFError(f"the test archive ended after {len(data)} of {size} bytes")
        unpack(data, root)
    specs = []
    for item in header.get("specs", []):
        spec = TestSpec.from_dict(item)
        spec.path = os.path.join(root, spec.path) if spec.path else spec.path
        spec.logdir = os.path.join(root, spec.logdir or f"results/{spec.uid}")
        spec.tests_path = [os.path.join(root, d) for d in spec.tests_path]
        specs.append(spec)
    max_parallel = header.get("max_parallel")
    return (int(max_parallel) if max_parallel else None), specs


def main() -> int:
    from mhtest.runners.local import ForkServer, LocalRunner

    # The fork server starts first (a fork of this process, still single-threaded), so
    # that its --preload imports run while this process reads the tests.
    preload = sys.argv[2].split(",") if sys.argv[1:2] == ["--preload"] else []
    server = ForkServer(preload=[name for name in preload if name], fork=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stdin = sys.stdin.buffer
    root = tempfile.mkdtemp(prefix="mhtest.")
    try:
        max_parallel, specs = read_input(stdin, root)

        def watch_controller() -> None:
            # Nothing more is expected; end of input means the controller is gone or asks
            # to stop. (Raw reads: a buffered reader blocked here breaks the interpreter's exit.)
            while os.read(0, 65536):
                pass
            stop.set()

        threading.Thread(target=watch_controller, daemon=True).start()
        output = _Output(stop, {s.uid: s.logdir for s in specs})
        from mhtest import sysinfo

        output({"type": events.HOST_INFO, "facts": sysinfo.collect()})
        LocalRunner(max_parallel or os.cpu_count() or 1, output, stop, server).run(specs)
    finally:
        server.close()  # a no-op once the runner has closed it
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
