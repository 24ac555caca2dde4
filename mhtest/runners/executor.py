"""The executor: runs TestSpecs sent on stdin, reports their events on stdout.

This is what a remote host runs (`python -m mhtest.runners.executor`), started over
SSH by the RemoteTestRunner: the very same LocalRunner as `mhtest run` uses here, with
the event stream going back over the SSH channel.

Input: one JSON line ``{"max_parallel": N or null, "payload": {"key": K, "size": SIZE},
"specs": [...]}``, then SIZE bytes of an uncompressed tar holding the test files (none when
the host's cache, `--cache DIR`, already holds payload K: see mhtest.runners.payload). A
spec's `path` is relative to the payload's root, its `logdir` to a private temporary
directory; the tests run in a private tree of links to the cached payload. Both are
removed when the executor ends. The controller keeps stdin open while it
listens: end of input before the job is done means it went away (or asks to stop), and
the running tests are stopped. SIGTERM, SIGHUP and SIGINT stop them too.

Output: the LocalRunner's events, one JSON line each. Before a test's `test.end`, the
test's results directory goes back as `test.files` events (uid, data: base64 of a piece
of an uncompressed tar, last: true on the final piece), so the controller has the
results on disk by the time it records the end, without another round trip.
"""

from __future__ import annotations

import base64
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

from mhtest import environment, events
from mhtest.runners import payload
from mhtest.spec import TestSpec

LOG = logging.getLogger(__name__)
#: Raw bytes per `test.files` event (base64 makes it 4/3 larger; events.MAX_LINE is 16 MiB).
FILES_CHUNK = 3 << 20
#: After a stop, how long a test gets between SIGTERM and SIGKILL here: well within
#: what the controller waits for this executor (mhtest.runners.remote.STOP_GRACE), so
#: that the results of a test that ignores SIGTERM still get there.
STOP_GRACE = 4.0
#: Directories never sent back with a test's results.
SKIP_DIRS = ("__pycache__", ".git")


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


def read_input(
    stream: BinaryIO, root: str, cache: str
) -> tuple[int | None, list[TestSpec], str | None]:
    """Read the header and the test files from `stream`: (max_parallel, specs, tree).

    Logdirs go under `root`; test paths under `tree`, a private tree of the payload
    (received into `cache` first when it is not there), or None when there are no files.
    """
    line = stream.readline(events.MAX_LINE)
    if not line:
        raise EOFError("no input: the controller sent nothing")
    header = json.loads(line)
    payload_info = header.get("payload") or {}
    key = str(payload_info.get("key") or "")
    if key and not key.isalnum():
        raise ValueError(f"not a payload key: {key[:40]!r}")
    size = int(payload_info.get("size") or 0)
    tree = None
    if key:
        if size:
            payload.receive(stream, size, cache, key)
        tree = payload.checkout(cache, key)
    specs = []
    # The job's shared temporary directory (Test.teststmpdir) is one of this host's.
    shared = os.path.join(root, "tmp")
    os.makedirs(shared, exist_ok=True)
    for item in header.get("specs", []):
        spec = TestSpec.from_dict(item)
        if spec.path and tree:
            spec.path = os.path.join(tree, spec.path)
        spec.logdir = os.path.join(root, spec.logdir or f"results/{spec.uid}")
        spec.env.update(environment.common_tmpdir_variables(shared))
        spec.tests_path = [os.path.join(tree, d) for d in spec.tests_path] if tree else []
        specs.append(spec)
    max_parallel = header.get("max_parallel")
    return (int(max_parallel) if max_parallel else None), specs, tree


def _options(argv: list[str]) -> dict[str, str]:
    """`--preload A,B --cache DIR` as {"preload": "A,B", "cache": "DIR"}."""
    return {key[2:]: value for key, value in zip(argv[::2], argv[1::2]) if key.startswith("--")}


def _mark_sources_used() -> None:
    """Touch the ready mark of the sources this executor runs from (see bootstrap.STALE_DAYS)."""
    ready = ".mhtest-ready"  # mhtest.hosts.bootstrap.READY (not imported: start-up time)
    mark = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", ready)
    try:
        os.utime(os.path.normpath(mark))
    except OSError:
        pass  # an installed mhtest, not the cached sources: nothing to mark


def main() -> int:
    from mhtest.runners.forkserver import ForkServer
    from mhtest.runners.local import LocalRunner

    # The fork server starts first (a fork of this process, still single-threaded), so
    # that its --preload imports run while this process reads the tests.
    options = _options(sys.argv[1:])
    preload = options.get("preload", "").split(",")
    server = ForkServer(preload=[name for name in preload if name], fork=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    _mark_sources_used()
    stdin = sys.stdin.buffer
    cache = os.path.expanduser(options.get("cache") or "~/.cache/mhtest")
    root = tempfile.mkdtemp(prefix="mhtest.")
    tree = None
    try:
        try:
            max_parallel, specs, tree = read_input(stdin, root, cache)
        except (EOFError, OSError, ValueError, tarfile.TarError) as exc:
            print(f"mhtest executor: cannot take the tests: {exc}", file=sys.stderr)
            return 1

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
        runner = LocalRunner(
            max_parallel or os.cpu_count() or 1, output, stop, server, stop_grace=STOP_GRACE
        )
        runner.run(specs)
    finally:
        server.close()  # a no-op once the runner has closed it
        shutil.rmtree(root, ignore_errors=True)
        if tree:
            shutil.rmtree(tree, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
