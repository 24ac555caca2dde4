"""The executor: what a host runs for the controller. Its tests outlive the SSH connection.

Started over SSH by the RemoteTestRunner (`python -m mhtest.runners.executor --cache DIR
--run ID --wait SECONDS [--preload A,B]`), it makes the run's directory (see
mhtest.runners.journal), forks the runner into a session of its own, reads the tests from
stdin, hands them to the runner, and then follows the run: it streams the run's journal
to its stdout (mhtest.runners.attach). The runner is the very same LocalRunner as
`mhtest run` uses here; its events go to the journal. A dropped connection ends only the
follower: the runner goes on, and a controller that comes back follows the journal from
the byte it got to. `--wait` is how long the controller waits for a host whose
connection dropped (0: it does not, and the tests stop when the connection ends); a
controller not heard from for longer than that (plus journal.KEEP_MARGIN) is taken for
gone for good: the runner stops the tests and removes the run.

Input: one JSON line ``{"max_parallel": N or null, "payload": {"key": K, "size": SIZE},
"specs": [...]}``, then SIZE bytes of an uncompressed tar holding the test files (none when
the host's cache, `--cache DIR`, already holds payload K: see mhtest.runners.payload), then
the controller's messages to the follower (ping, stop, done). A spec's `path` is relative
to the payload's root, its `logdir` to a private temporary directory; the tests run in a
private tree of links to the cached payload. Both are removed at the end. SIGTERM, SIGHUP and
SIGINT to the runner stop the tests (the controller's "stop" sends SIGTERM).

Output (the journal): the LocalRunner's events, one JSON line each, and `run.end` last.
Before a test's `test.end`, the test's results directory goes as `test.files` events (uid,
data: base64 of a piece of an uncompressed tar, last: true on the final piece), so the
controller has the results on disk by the time it records the end.
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
from mhtest.runners import journal, payload, reboot
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
    """Event lines to the journal (a test's results go first); a failed write stops the run."""

    def __init__(
        self, stop: threading.Event, logdirs: dict[int, str], fd: int, run_id: str
    ) -> None:
        self.stop = stop
        self.logdirs = logdirs
        self.lock = threading.Lock()
        self.fd = fd
        self.follower = journal.Ringer(run_id, journal.FOLLOWER_BELL)  # rung after each line

    def __call__(self, event: dict[str, Any]) -> None:
        fields = {k: v for k, v in event.items() if k not in ("v", "type")}
        with self.lock:
            if event["type"] == events.TEST_END:
                self._send_files(event.get("uid"))
            elif event["type"] == events.TEST_REBOOT:
                # What it has so far, not marked last: the controller keeps it if the test
                # never runs again (a stop, a failed reboot), else the final results replace it.
                self._send_files(event.get("uid"), final=False)
            self._write(events.encode(event["type"], **fields))

    def _send_files(self, uid: Any, final: bool = True) -> None:
        logdir = self.logdirs.get(uid)
        if not logdir or not os.path.isdir(logdir):
            return
        pieces = _Pieces(
            lambda piece, last: self._write(
                events.encode(events.TEST_FILES, uid=uid, data=piece, last=last and final)
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
        except OSError as exc:
            if not self.stop.is_set():
                print(f"mhtest runner: cannot write the journal: {exc}", file=sys.stderr)
            self.stop.set()
        self.follower.ring()


class _Input:
    """stdin, read raw: what comes after the header and the test files is the follower's."""

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self.buffer = bytearray()

    def readline(self, limit: int) -> bytes:
        end = self.buffer.find(b"\n")
        while end < 0 and len(self.buffer) <= limit:
            data = os.read(self.fd, 1 << 16)
            if not data:
                break
            at = data.find(b"\n")
            end = len(self.buffer) + at if at >= 0 else -1
            self.buffer += data
        end = len(self.buffer) if end < 0 else end + 1
        line = bytes(self.buffer[:end])
        del self.buffer[:end]
        return line

    def read(self, size: int) -> bytes:
        if self.buffer:
            data = bytes(self.buffer[:size])
            del self.buffer[:size]
            return data
        return os.read(self.fd, size)


def receive_input(stream: Any, cache: str) -> bytes:
    """Read the header from `stream`, and the test files into `cache` when they come."""
    line = stream.readline(events.MAX_LINE)
    if not line.endswith(b"\n"):
        raise EOFError("no input: the controller sent nothing" if not line else "cut short")
    payload_info = json.loads(line).get("payload") or {}
    key = str(payload_info.get("key") or "")
    if key and not key.isalnum():
        raise ValueError(f"not a payload key: {key[:40]!r}")
    size = int(payload_info.get("size") or 0)
    if key and size:
        payload.receive(stream, size, cache, key)
    return line


def take_input(
    header: bytes, root: str, cache: str, desk: str | None = None
) -> tuple[int | None, list[TestSpec], str | None]:
    """The tests of `header`: (max_parallel, specs, tree).

    Logdirs go under `root`; test paths under `tree`, a private tree of the payload (in
    `cache`), or None when there are no files. `desk`: the socket of the run's reboot desk
    (mhtest.runners.reboot), given to each test; a test resumed after a reboot (the
    header's `resume`: [{"run": ID, "test": UID}]) gets back the results directory that
    run kept.
    """
    info = json.loads(header)
    key = str((info.get("payload") or {}).get("key") or "")
    if key and not key.isalnum():
        raise ValueError(f"not a payload key: {key[:40]!r}")
    tree = payload.checkout(cache, key) if key else None
    specs = []
    # The job's shared temporary directory (Test.teststmpdir) is one of this host's.
    shared = os.path.join(root, "tmp")
    os.makedirs(shared, exist_ok=True)
    for item in info.get("specs", []):
        spec = TestSpec.from_dict(item)
        if spec.path and tree:
            spec.path = os.path.join(tree, spec.path)
        spec.logdir = os.path.join(root, spec.logdir or f"results/{spec.uid}")
        spec.env.update(environment.common_tmpdir_variables(shared))
        spec.tests_path = [os.path.join(tree, d) for d in spec.tests_path] if tree else []
        if desk:
            spec.env.update({reboot.SOCKET_VAR: desk, reboot.TEST_VAR: str(spec.uid)})
        specs.append(spec)
    logdirs = {spec.uid: spec.logdir for spec in specs}
    for resumed in info.get("resume") or ():
        uid = resumed.get("test")
        if uid in logdirs:
            reboot.restore_results(cache, str(resumed.get("run")), uid, logdirs[uid])
    max_parallel = info.get("max_parallel")
    return (int(max_parallel) if max_parallel else None), specs, tree


def read_input(
    stream: BinaryIO, root: str, cache: str
) -> tuple[int | None, list[TestSpec], str | None]:
    """Read the header and the test files from `stream`: (max_parallel, specs, tree)."""
    return take_input(receive_input(stream, cache), root, cache)


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


class _Signals:
    """SIGTERM, SIGHUP, SIGINT: stop the tests; counted (after the end, they end the wait)."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.count = 0
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, self.handle)

    def handle(self, *_: Any) -> None:
        self.count += 1
        self.stop.set()


def _watch_controller(directory: str, keep: float, stop: threading.Event) -> None:
    """Stop the tests once the controller was not heard from for `keep` seconds."""
    while not stop.wait(min(5.0, keep / 4)):
        if journal.quiet_for(directory) > keep:
            print(
                f"mhtest runner: no word from the controller for {keep:g} s: stopping the tests",
                file=sys.stderr,
                flush=True,
            )
            stop.set()


def _wait_collected(directory: str, keep: float, signals: _Signals, bell: journal.Bell) -> None:
    """After the end: wait until the controller has it all, gave up, or a signal came."""
    signalled = signals.count
    while signals.count == signalled and not (
        journal.has(directory, journal.COLLECTED) or journal.has(directory, journal.LEFT)
    ):
        if journal.quiet_for(directory) > keep:
            return
        bell.wait(min(5.0, keep / 4))  # the follower rings it when the controller is done
        bell.drain()


def _open_desk(
    path: str, directory: str, specs: list[TestSpec], runner: Any, output: _Output
) -> reboot.Desk | None:
    """The run's reboot desk: a test's request keeps its results, holds the other tests
    back and goes in the journal for the controller, which reboots the host."""
    by_uid = {spec.uid: spec for spec in specs}

    def handle(uid: int, command: str | None) -> str | None:
        spec = by_uid.get(uid)
        if spec is None:
            return f"no test {uid} in this run"
        if runner.rebooting not in (None, uid):
            return f"test {runner.rebooting} of this run already asked for a reboot"
        count = reboot.reboot_count(spec.env) + 1
        if count > reboot.MAX_REBOOTS:
            return f"this would be reboot {count} of the test: {reboot.MAX_REBOOTS} at most"
        try:
            reboot.keep_results(directory, uid, spec.logdir)
        except OSError as exc:
            return f"cannot keep the test's results over the reboot: {exc}"
        runner.hold_for_reboot(uid)
        output({"type": events.TEST_REBOOT, "uid": uid, "count": count, "command": command})
        return None

    try:
        return reboot.Desk(path, handle)
    except OSError as exc:
        print(f"mhtest runner: no reboots for the tests: {path}: {exc}", file=sys.stderr)
        return None


def run_detached(
    directory: str, header_fd: int, preload: list[str], cache: str, wait: float
) -> int:
    """The runner, in the forked child: its own session, its tests, the journal."""
    from mhtest.runners.forkserver import ForkServer
    from mhtest.runners.local import LocalRunner

    os.setsid()  # a dropped connection (its session's end) is not ours
    with open(journal.path(directory, journal.RUNNER_LOG), "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    with open(os.devnull, "rb") as null:
        os.dup2(null.fileno(), 0)
    journal.write(directory, journal.RUNNER, str(os.getpid()))
    # The fork server starts first (still single-threaded), so that its --preload
    # imports run while the follower reads the tests.
    server = ForkServer(preload=[name for name in preload if name], fork=True)
    stop = threading.Event()
    signals = _Signals(stop)
    run_id = os.path.basename(directory)
    bell = journal.Bell(run_id, journal.RUNNER_BELL)
    # The tests' own directories are apart from the run's, in a private temporary one as
    # ever: what they write (many small files) stays off the shared cache's filesystem
    # paths, and once packed into the journal they are not needed any more.
    root = tempfile.mkdtemp(prefix="mhtest.")
    journal.write(directory, journal.ROOT, root)
    tree = None
    finished = False
    try:
        with os.fdopen(header_fd, "rb") as pipe:
            header = pipe.read()
        if not header.endswith(b"\n"):
            return 1  # the follower could not take the tests (it said why)
        journal.write(directory, journal.STARTED, "")
        desk_path = os.path.join(directory, reboot.SOCKET_NAME)
        try:
            max_parallel, specs, tree = take_input(header, root, cache, desk_path)
        except (OSError, ValueError, AttributeError) as exc:
            print(f"mhtest executor: cannot take the tests: {exc}", file=sys.stderr)
            return 1
        fd = os.open(journal.path(directory, journal.JOURNAL), os.O_WRONLY | os.O_APPEND)
        output = _Output(stop, {s.uid: s.logdir for s in specs}, fd, run_id)
        keep = journal.keep(wait)
        threading.Thread(
            target=_watch_controller, args=(directory, keep, stop), daemon=True
        ).start()
        from mhtest import sysinfo

        output({"type": events.HOST_INFO, "facts": sysinfo.collect()})
        runner = LocalRunner(
            max_parallel or os.cpu_count() or 1, output, stop, server, stop_grace=STOP_GRACE
        )
        desk = _open_desk(desk_path, directory, specs, runner, output)
        try:
            runner.run(specs)
        finally:
            if desk is not None:
                desk.close()
        output({"type": events.RUN_END})
        journal.write(directory, journal.FINISHED, "")
        finished = True
        for done in (tree, root):
            if done:
                shutil.rmtree(done, ignore_errors=True)
        tree = root = None
        _wait_collected(directory, journal.keep(wait), signals, bell)
    finally:
        bell.close()
        server.close()  # a no-op once the runner has closed it
        if tree:
            shutil.rmtree(tree, ignore_errors=True)
        if root and (finished or not journal.has(directory, journal.STARTED)):
            shutil.rmtree(root, ignore_errors=True)  # (else the follower reports, sweep removes)
        if finished or not journal.has(directory, journal.STARTED):
            shutil.rmtree(directory, ignore_errors=True)
    return 0


def main() -> int:
    from mhtest.runners import attach

    options = _options(sys.argv[1:])
    cache = os.path.expanduser(options.get("cache") or "~/.cache/mhtest")
    try:
        wait = float(options.get("wait") or 0)
        journal.sweep(cache)
        directory = journal.create(cache, options.get("run", ""), wait)
        journal.write(directory, journal.FOLLOWER, str(os.getpid()))
    except (OSError, ValueError) as exc:
        print(f"mhtest executor: cannot start the run: {exc}", file=sys.stderr)
        return 1
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(write_fd)
        code = 1
        try:
            code = run_detached(
                directory, read_fd, options.get("preload", "").split(","), cache, wait
            )
        except BaseException:  # noqa: BLE001 - its log says what; the follower reports it
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(read_fd)
    print(f"{attach.RUNNER_MARK}{pid}", file=sys.stderr, flush=True)
    _mark_sources_used()
    stdin = _Input()
    try:
        header = receive_input(stdin, cache)
    except (EOFError, OSError, ValueError, AttributeError, tarfile.TarError) as exc:
        print(f"mhtest executor: cannot take the tests: {exc}", file=sys.stderr)
        os.close(write_fd)
        return 1
    try:
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(header)
    except BrokenPipeError:
        pass  # the runner is gone already: following it says how
    return attach.follow(directory, 0, pid, child=True, wait=wait, pending=bytes(stdin.buffer))


if __name__ == "__main__":
    sys.exit(main())
