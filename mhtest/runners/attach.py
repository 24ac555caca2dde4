"""The follower: streams a detached run's journal to the SSH channel attached to it.

    python -m mhtest.runners.attach --cache DIR --run ID --from OFFSET

The executor follows its own run from byte 0 once it has handed the tests to the runner
(see mhtest.runners.journal for the run's directory); a controller whose connection
dropped starts this program on the host to go on from the byte it got to. The journal
is sent as it grows: the runner rings the follower's bell after each line (no polling
delay on an event; see mhtest.runners.journal.Bell).

Input, one JSON line each, is the controller's word: {"op": "ping"} (still here),
{"op": "stop"} (stop the tests: SIGTERM to the runner, which reports them), {"op":
"done"} (it has it all: the directory may go). End of input means the connection
dropped or the controller left: the follower leaves and the runner goes on, unless the
controller does not come back after a drop (its reconnect timeout, the run's `wait`, is
0): then the tests are stopped.

Exit status: 0 after "done" (once the runner is gone) or the end of input; NO_RUN (and
NO_RUN_MARK on stderr) when there is no such run, or it never got its tests: the
controller may start it again. A runner that ends before its journal does is reported
with the last line of its log on stderr and its exit status, or its signal raised here
when it is this process's child (the executor's case).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

from mhtest.runners import journal

#: Exit status when there is no run to follow.
NO_RUN = 3
NO_RUN_MARK = "MHTEST-NO-RUN"
#: Printed on stderr at the start: the runner's pid (its process group), for a kill.
RUNNER_MARK = "MHTEST-RUNNER:"
#: Bytes of the journal read and written at a time.
CHUNK = 1 << 20
#: Without a pidfd, how often the runner's life is checked (seconds).
CHECK = 1.0
#: After "done", how long the follower waits for the runner to have left the host.
EXIT_WAIT = 10.0


def _write_all(fd: int, data: bytes) -> bool:
    """All of `data` to `fd`; False when the reader is gone."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        return False
    return True


class _Control(threading.Thread):
    """Reads the controller's messages on stdin and acts on them at once."""

    def __init__(self, directory: str, runner: int, stop_on_eof: bool, pending: bytes) -> None:
        super().__init__(name="control", daemon=True)
        self.pending = pending  # what came before this thread reads
        self.directory = directory
        self.runner = runner
        self.stop_on_eof = stop_on_eof
        self.done = threading.Event()
        self.gone = threading.Event()  # the controller: end of input
        self.wake_r, self.wake_w = os.pipe()

    def run(self) -> None:
        pending, self.pending = self.pending, b""
        *lines, pending = pending.split(b"\n")
        for line in lines:
            self._message(line)
        while True:
            try:
                data = os.read(0, 65536)
            except OSError:
                data = b""
            if not data:
                self.left()
                return
            *lines, pending = (pending + data).split(b"\n")
            if len(pending) > 65536:
                pending = b""  # not a message of ours
            for line in lines:
                self._message(line)

    def _message(self, line: bytes) -> None:
        try:
            op = json.loads(line).get("op")
        except (ValueError, AttributeError):
            return
        journal.touch(self.directory)
        if op == "stop":
            self.signal(signal.SIGTERM)
        elif op == "done":
            try:
                journal.write(self.directory, journal.COLLECTED, "")
            except OSError:
                pass  # gone already: the runner removed it
            ringer = journal.Ringer(os.path.basename(self.directory), journal.RUNNER_BELL)
            ringer.ring()
            ringer.close()
            self.done.set()
            os.write(self.wake_w, b"x")

    def left(self) -> None:
        """The controller is gone (end of input, or it stopped reading)."""
        if self.stop_on_eof:  # for good: the run need not wait for it
            try:
                journal.write(self.directory, journal.LEFT, "")
            except OSError:
                pass  # gone already
            self.signal(signal.SIGTERM)
        self.gone.set()
        os.write(self.wake_w, b"x")

    def signal(self, sig: int) -> None:
        try:
            os.kill(self.runner, sig)
        except OSError:
            pass  # it has ended


class _Runner:
    """The runner's life as the follower sees it: a pidfd when it can, else /proc."""

    def __init__(self, pid: int, run_id: str, child: bool) -> None:
        self.pid = pid
        self.run_id = run_id
        self.child = child
        self.status: int | None = None  # its wait status, when it was our child
        self.ended = False
        self.fd = -1
        try:
            self.fd = os.pidfd_open(pid)  # type: ignore[attr-defined]
        except (AttributeError, OSError):
            self.fd = -1

    def alive(self) -> bool:
        if self.ended:
            return False
        if self.child:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0
            if pid:
                self.status, self.ended = status, True
        elif not journal.process_of(self.pid, self.run_id):
            self.ended = True
        return not self.ended

    def fds(self) -> list[int]:
        return [self.fd] if self.fd >= 0 and not self.ended else []

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def follow(
    directory: str,
    offset: int,
    runner_pid: int,
    *,
    child: bool = False,
    wait: float = 1.0,
    pending: bytes = b"",
) -> int:
    """Stream the journal from `offset` to stdout until the controller is done or gone.

    `pending` is what the controller sent that was read already (its first messages).
    """
    run_id = os.path.basename(directory)
    bell = journal.Bell(run_id, journal.FOLLOWER_BELL)
    control = _Control(directory, runner_pid, wait <= 0, pending)
    runner = _Runner(runner_pid, run_id, child)
    control.start()
    out = sys.stdout.fileno()
    try:
        with open(journal.path(directory, journal.JOURNAL), "rb") as source:
            source.seek(offset)
            while True:
                bell.drain()
                data = source.read(CHUNK)
                if data:
                    if not _write_all(out, data):
                        control.left()
                        return 0
                    continue
                if control.done.is_set():
                    _wait_gone(runner)
                    return 0
                if control.gone.is_set():
                    return 0
                if not runner.ended and not runner.alive():
                    continue  # read what it wrote last
                if runner.ended and not journal.has(directory, journal.FINISHED):
                    return _runner_ended(directory, runner, source.tell())
                timeout = CHECK if runner.fd < 0 and not runner.ended else 60.0
                ready = bell.wait(timeout, [control.wake_r, *runner.fds()])
                if control.wake_r in ready:
                    os.read(control.wake_r, 64)
    finally:
        bell.close()
        runner.close()


def _wait_gone(runner: _Runner) -> None:
    """After "done": the runner removes the directory and exits; wait for that (bounded)."""
    import select

    deadline = time.monotonic() + EXIT_WAIT
    while runner.alive() and time.monotonic() < deadline:
        if runner.fd >= 0:
            select.select([runner.fd], [], [], max(0.0, deadline - time.monotonic()))
        else:
            time.sleep(0.02)


def _runner_ended(directory: str, runner: _Runner, size: int) -> int:
    """The runner ended without finishing its journal: say so the controller's way."""
    if not runner.child and not journal.has(directory, journal.STARTED) and size == 0:
        print(f"{NO_RUN_MARK} the run never got its tests", file=sys.stderr, flush=True)
        return NO_RUN
    why = _last_line(journal.path(directory, journal.RUNNER_LOG))
    journal.remove(directory)  # nobody else will read it
    if why:
        print(why, file=sys.stderr, flush=True)
    status = runner.status
    if status is None:
        if not why:
            print(f"its runner (pid {runner.pid}) ended", file=sys.stderr, flush=True)
        return 1
    if os.WIFSIGNALED(status):  # mirror it: the controller reports the signal
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        return 128 + sig
    return os.WEXITSTATUS(status) or 1


def _last_line(log: str) -> str:
    """The last meaningful line of the runner's log (a traceback's last line)."""
    try:
        with open(log, "rb") as source:
            source.seek(max(0, os.fstat(source.fileno()).st_size - 4096))
            text = source.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _end_previous(directory: str, run_id: str) -> None:
    """A follower still attached (its connection may be a dead one): end it, wait a moment."""
    pid = journal.read_pid(directory, journal.FOLLOWER)
    if not journal.process_of(pid, run_id) or pid == os.getpid():
        return
    try:
        os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
    except OSError:
        return
    deadline = time.monotonic() + 2
    while journal.process_of(pid, run_id) and time.monotonic() < deadline:
        time.sleep(0.01)


def attach(cache: str, run_id: str, offset: int) -> int:
    """Follow run `run_id` of `cache` from byte `offset` (a controller that came back)."""
    try:
        directory = journal.run_dir(cache, run_id)
    except ValueError as exc:
        print(f"mhtest attach: {exc}", file=sys.stderr)
        return 2
    if not os.path.isdir(directory):
        print(f"{NO_RUN_MARK} no run {run_id} on this host", file=sys.stderr, flush=True)
        return NO_RUN
    _end_previous(directory, run_id)  # (the executor itself, the first time)
    try:
        journal.write(directory, journal.FOLLOWER, str(os.getpid()))
    except OSError:
        pass  # the run is being removed: the checks below say so
    runner = journal.read_pid(directory, journal.RUNNER)
    if runner is None:
        print(f"{NO_RUN_MARK} run {run_id} has no runner", file=sys.stderr, flush=True)
        return NO_RUN
    print(f"{RUNNER_MARK}{runner}", file=sys.stderr, flush=True)
    journal.touch(directory)
    wait = journal.read_number(directory, journal.WAIT)
    try:
        return follow(directory, offset, runner, wait=1.0 if wait is None else wait)
    except FileNotFoundError:
        print(f"{NO_RUN_MARK} run {run_id} is gone", file=sys.stderr, flush=True)
        return NO_RUN


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    options = {key[2:]: value for key, value in zip(args[::2], args[1::2])}
    cache = os.path.expanduser(options.get("cache") or "~/.cache/mhtest")
    try:
        offset = int(options.get("from", "0"))
    except ValueError:
        print("mhtest attach: --from takes a byte offset", file=sys.stderr)
        return 2
    return attach(cache, options.get("run", ""), offset)


if __name__ == "__main__":
    sys.exit(main())
