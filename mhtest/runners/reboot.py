"""A test that reboots the host it runs on, and goes on after the boot.

A test asks with ``self.reboot()`` (mhtest.Test) or, from a shell, ``mhtest-reboot`` (also
found as ``tmt-reboot`` and ``rstrnt-reboot``). Only a test that a remote host's executor
runs can: the executor (mhtest.runners.executor) opens a `Desk`, a Unix socket in its run's
private directory, and gives each test its path and the test's id (MHTEST_REBOOT_SOCKET,
MHTEST_REBOOT_TEST). A request is one JSON line: ``{"test": UID, "command": CMD or null}``.
The desk keeps a copy of the test's results directory in the run's directory (``kept/UID``,
under the host's mhtest cache, which a boot does not clear as it may clear /tmp), starts no
other test, and puts ``test.reboot`` in the journal. The test then waits to be rebooted.

The controller (mhtest.runners.remote) waits until the host's other running tests have
ended, reboots the host (Host.reboot: `CMD` when given), and starts a new run holding the
test, its results directory put back and its reboot count one higher, and the tests that
had not started. The count is in MHTEST_REBOOT_COUNT (and TMT_REBOOT_COUNT,
RSTRNT_REBOOTCOUNT, REBOOTCOUNT as tmt, restraint and Beaker name it), 0 on the first run:
the test picks up where it chose.

Only the standard library here: the shell commands start from a bare interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import threading
import time
from typing import Callable, NoReturn, Sequence

SOCKET_VAR = "MHTEST_REBOOT_SOCKET"
TEST_VAR = "MHTEST_REBOOT_TEST"
COUNT_VAR = "MHTEST_REBOOT_COUNT"
#: The count under the names other tools' tests read.
COUNT_ALIASES = ("TMT_REBOOT_COUNT", "RSTRNT_REBOOTCOUNT", "REBOOTCOUNT")
#: The shell commands of a test that may reboot its host.
COMMANDS = ("mhtest-reboot", "tmt-reboot", "rstrnt-reboot")
SOCKET_NAME = "reboot.sock"
KEPT = "kept"
#: How long a test that asked waits to be rebooted before it gives up (seconds).
DEFAULT_WAIT = 1800.0
#: How long a test that asked waits for the desk's answer.
ANSWER_TIMEOUT = 30.0
#: How many times one test may reboot its host: a test that asks again after every boot
#: (a missed check of its count) ends there.
MAX_REBOOTS = 100
MAX_REQUEST = 1 << 16
#: Why a test that does not run on a remote host cannot reboot.
NOT_REMOTE = (
    "this test does not run on a remote host (it runs where mhtest runs, which mhtest does "
    "not reboot): run it on a host of --hosts, or a worker placed on one"
)


class RebootError(Exception):
    """The reboot cannot be asked for, or did not happen."""


def count_variables(count: int) -> dict[str, str]:
    """The environment variables that give a test its reboot count."""
    return {name: str(count) for name in (COUNT_VAR, *COUNT_ALIASES)}


def set_variables(env: dict[str, str] | os._Environ, spec_env: dict[str, str]) -> None:
    """Give a test's environment `env` its reboot count, and the desk only when its spec
    names one (not an outer test's, inherited)."""
    env.update(count_variables(reboot_count(spec_env)))
    for name in (SOCKET_VAR, TEST_VAR):
        if name in spec_env:
            env[name] = spec_env[name]
        else:
            env.pop(name, None)


def reboot_count(env: dict[str, str] | None = None) -> int:
    """This test's reboot count (0 before its first reboot)."""
    value = (os.environ if env is None else env).get(COUNT_VAR, "0")
    try:
        return max(0, int(value))
    except ValueError:
        return 0


# -- the test's side -------------------------------------------------------------------------


def request(command: str | None = None, wait: float = DEFAULT_WAIT) -> NoReturn:
    """Ask for the reboot of this test's host, and wait for it (does not return).

    RebootError when it cannot be asked for (the test does not run on a remote host, the
    desk refuses) or when the host was not rebooted within `wait` seconds.
    """
    path, test = os.environ.get(SOCKET_VAR), os.environ.get(TEST_VAR)
    if not path or not test:
        raise RebootError(f"cannot reboot: {NOT_REMOTE}")
    line = json.dumps({"test": test, "command": command}).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(ANSWER_TIMEOUT)
            sock.connect(path)
            sock.sendall(line)
            answer = _read_line(sock)
    except OSError as exc:
        raise RebootError(f"cannot ask for a reboot at {path}: {exc}") from None
    try:
        reply = json.loads(answer)
    except ValueError:
        raise RebootError(f"cannot reboot: the executor answered {answer[:200]!r}") from None
    if not isinstance(reply, dict) or reply.get("error") or not reply.get("ok"):
        why = reply.get("error") if isinstance(reply, dict) else reply
        raise RebootError(f"cannot reboot: {why}")
    sys.stdout.flush()
    sys.stderr.flush()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:  # the reboot ends this process
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    raise RebootError(f"the host was not rebooted within {wait:g} s of asking")


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n") and len(data) < MAX_REQUEST:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def main(command: str, argv: Sequence[str]) -> int:
    """`mhtest-reboot [-c COMMAND] [-t SECONDS]`: reboot this test's host (as tmt-reboot)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog=command,
        description="Reboot the host this test runs on; the test runs again after the boot "
        f"with ${COUNT_VAR} one higher.",
    )
    parser.add_argument("-c", "--command", help="the command that reboots the host")
    parser.add_argument(
        "-t",
        "--timeout",
        type=float,
        default=DEFAULT_WAIT,
        help=f"give up when not rebooted after this many seconds (default {DEFAULT_WAIT:g})",
    )
    args = parser.parse_args(list(argv))
    try:
        request(args.command, args.timeout)
    except RebootError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
    return 2


# -- the executor's side ---------------------------------------------------------------------


def keep_results(run_dir: str, uid: int, logdir: str) -> str:
    """Copy a test's results directory to `run_dir`/kept/UID (what was there goes)."""
    target = os.path.join(run_dir, KEPT, str(uid))
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    shutil.copytree(logdir, target, symlinks=True)
    return target


def restore_results(cache: str, run_id: str, uid: int, logdir: str) -> bool:
    """Put back the results directory kept by run `run_id` for test `uid` as `logdir`;
    the old run's directory is removed, and its tests' directories. False when nothing
    was kept."""
    from mhtest.runners import journal

    old = journal.run_dir(cache, run_id)
    kept = os.path.join(old, KEPT, str(uid))
    restored = False
    if os.path.isdir(kept):
        os.makedirs(os.path.dirname(logdir), mode=0o700, exist_ok=True)
        shutil.rmtree(logdir, ignore_errors=True)
        shutil.move(kept, logdir)
        restored = True
    journal.remove(old)
    return restored


class Desk:
    """Takes the reboot requests of a run's tests (a thread serving a Unix socket).

    `handle(uid, command)` returns None when the request is taken, else why not.
    """

    def __init__(self, path: str, handle: Callable[[int, str | None], str | None]) -> None:
        self.path = path
        self.handle = handle
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)  # in the run's 0700 directory: only this user gets in
        self.sock.listen(8)
        self.closed = False
        threading.Thread(target=self._serve, name="reboot-desk", daemon=True).start()

    def _serve(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(ANSWER_TIMEOUT)
                try:
                    self._answer(conn)
                except OSError:
                    continue

    def _answer(self, conn: socket.socket) -> None:
        line = _read_line(conn)
        try:
            message = json.loads(line)
            uid = int(message["test"])
            command = message.get("command")
            if command is not None and not isinstance(command, str):
                raise ValueError("command is not a string")
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"error": f"not a reboot request: {exc}"}
        else:
            why = self.handle(uid, command)
            reply = {"error": why} if why else {"ok": True}
        conn.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
