"""The fork server: a pre-imported, single-threaded process that forks one child per test.

Starting a Python interpreter and importing mhtest costs tens of milliseconds; a fork
costs well under one. The job starts this server once and sends it, over a
SOCK_SEQPACKET socket, one message per test: the spec file's path plus the write end
of the test's event pipe (SCM_RIGHTS). The server answers `started` with the child's
pid and `exited` with its wait status. Each child calls setsid(), so the job can kill
a test's whole process group. A simple test gets no Python child at all: the server
starts it with vfork+exec in a session of its own (mhtest.runners.child.start_simple).

The job's side is the ForkServer handle at the end of this module (the server imports
nothing for it: subprocess, which only the handle uses, is imported where it is needed).

Messages are JSON: {"op": "spawn", "key": K, "spec": PATH, "simple": BOOL, "then_import":
[MODULE, …]} (modules to import once this test started, for the next ones), {"op":
"started", "key": K, "pid": P}, {"op": "exited", "key": K, "pid": P, "status": S} where
S is the exit code, or minus the signal number, and {"op": "failed", "key": K, "error":
TEXT} when the test cannot be forked. The server never blocks on the job: replies wait in
a queue until the socket has room.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Sequence

LOG = logging.getLogger(__name__)
MAX_MESSAGE = 64 * 1024


def _child(spec_path: str, event_fd: int) -> None:
    """In the forked child: become a process group, run the test, leave without cleanup."""
    code = 1
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        from mhtest.runners.child import child_main

        code = child_main(spec_path, event_fd)
    except BaseException:  # noqa: BLE001 - report anything, then leave
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


class _Server:
    """The serving loop: spawn requests in, replies out, children reaped.

    Replies queue up rather than block: a job that starts many tests before it reads
    the replies would otherwise wait on a full socket while we wait on it (the hang at
    ~500 tests at once). A request that cannot be forked gets a `failed` reply.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.children: dict[int, str] = {}
        self.outbox: deque[bytes] = deque()
        self.open = True
        self.sel = selectors.DefaultSelector()
        sock.setblocking(False)
        self.sel.register(sock, selectors.EVENT_READ, "sock")

    def serve(self) -> None:
        rfd, wfd = os.pipe()
        os.set_blocking(wfd, False)
        signal.set_wakeup_fd(wfd)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the job decides what Ctrl-C does
        self.sel.register(rfd, selectors.EVENT_READ, "sigchld")
        while self.open or self.children:
            for key, mask in self.sel.select(timeout=1.0):
                if key.data == "sigchld":
                    os.read(rfd, 4096)
                    continue
                if mask & selectors.EVENT_WRITE:
                    self.flush()
                if self.open and mask & selectors.EVENT_READ:
                    self.handle_request()
            self.reap()
        self.sel.close()

    def send(self, **message: object) -> None:
        if self.open:
            self.outbox.append(json.dumps(message).encode())
            self.flush()

    def flush(self) -> None:
        """Send queued replies until the socket is full; wait for room if it is."""
        while self.outbox:
            try:
                self.sock.send(self.outbox[0])
            except BlockingIOError:
                break
            except OSError:
                # The job is gone; the children it started still get reaped.
                self.outbox.clear()
                break
            self.outbox.popleft()
        if self.open:
            wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outbox else 0)
            if self.sel.get_key(self.sock).events != wanted:
                self.sel.modify(self.sock, wanted, "sock")

    def handle_request(self) -> None:
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_MESSAGE, 4)
        except BlockingIOError:
            return
        except OSError:
            data, fds = b"", []
        if not data:
            # The job is done with us, or died: no test outlives it.
            self.open = False
            self.outbox.clear()
            self.sel.unregister(self.sock)
            _kill_all(self.children)
            return
        request = json.loads(data)
        try:
            pid = self.start(request, fds[0] if fds else -1)
        finally:
            for fd in fds:
                os.close(fd)
        if pid is not None:
            self.children[pid] = request["key"]
            self.send(op="started", key=request["key"], pid=pid)
        # Imports for the children forked after this one (while this one runs).
        preload(request.get("then_import") or [])

    def start(self, request: dict, event_fd: int) -> int | None:
        """Start the requested test: its PID, or None (and a `failed` reply) if it cannot."""
        from mhtest.runners.child import start_simple

        pid = start_simple(request["spec"], event_fd) if request.get("simple") else None
        if pid is not None:
            return pid
        try:
            pid = os.fork()
        except OSError as exc:  # out of processes or memory
            self.send(op="failed", key=request["key"], error=f"cannot fork: {exc}")
            return None
        if pid == 0:
            self.sock.close()
            _child(request["spec"], event_fd)
        return pid

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            key = self.children.pop(pid, None)
            if key is None:
                continue
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            self.send(op="exited", key=key, pid=pid, status=code)


def serve(sock: socket.socket) -> None:
    """Serve spawn requests on `sock` until the job closes it."""
    _Server(sock).serve()


def _kill_all(children: dict[int, str]) -> None:
    for pid in children:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


def preload(names: list[str]) -> None:
    """Import `names` ahead of the forks; "module:function" also calls that function.

    One that fails is left alone: the child imports it again and says why.
    """
    import importlib

    for name in names:
        module_name, _, function = name.partition(":")
        try:
            module = importlib.import_module(module_name)
            if function:
                getattr(module, function)()
        except Exception:  # noqa: BLE001 - see above
            pass


def run(sock: socket.socket, names: list[str]) -> None:
    """Be the fork server: import what every child needs, then `names`, then serve.

    The imports make each fork start warm; `names` are what the job asked for (a
    multi-host test's SSH modules, a worker's sync client).
    """
    import mhtest.runners.child  # noqa: F401

    preload(names)
    serve(sock)


# -- the job's side --------------------------------------------------------------------

#: What a multi-host test's process needs before it can connect to its hosts: a job
#: with such a test starts its fork server early, importing these while the job itself
#: starts up. zmq and the remote runner are left out: the test imports them while its
#: SSH connections open (measured faster than waiting for them here).
MULTIHOST_PRELOAD = (
    "mhtest.hosts._paramiko:load",  # paramiko, as mhtest imports it
    "mhtest.hosts.ssh",
    "mhtest.hosts.inventory",
    "mhtest.resolver",
    "mhtest.places",
    "mhtest.dispatch",
    "mhtest.runners.multihost",
    "mhtest.runners.fanout",
)
#: What a server control file's process needs (mhtest.autoserv): the hosts' modules, the
#: remote runner (imported here once, not again in each task the control file forks), and
#: the control file's own machinery.
CONTROL_PRELOAD = (
    *MULTIHOST_PRELOAD[:6],  # up to mhtest.dispatch
    "mhtest.plugins.spawner_ssh",
    "mhtest.runners.remote",
    "mhtest.runners.executor",
    "mhtest.hosts.bootstrap",
    "mhtest.sysinfo",
    "mhtest.autoserv.control",
    "mhtest.autoserv.namespace",
)


class _ForkedProcess:
    """The few Popen methods ForkServer uses, for a process made with os.fork()."""

    def __init__(self, pid: int, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        import subprocess

        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.005)
        return self.returncode  # type: ignore[return-value]

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)


def _serve_forked(sock: socket.socket, preload: Sequence[str]) -> None:
    """The body of a fork server made by os.fork(): as `python -m mhtest.runners.forkserver`."""
    code = 1
    try:
        os.setsid()  # Ctrl-C reaches the job, which decides
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        run(sock, list(preload))
        code = 0
    except BaseException:  # noqa: BLE001 - say why, then leave
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


class ForkServer:
    """The job's handle on a fork server process.

    With `fork=True` (only while this process has a single thread) the server is a fork
    of this process rather than a new interpreter: it starts without Python's start-up
    and imports. The CLI starts a job's server that way at its very start (see
    fork_server_ahead), and each remote executor its own.
    """

    def __init__(self, preload: Sequence[str] = (), fork: bool = False) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = parent
        self.spawned = False
        #: Modules for the server to import after the next spawn (see local.LATER_IMPORTS).
        self.then_import: Sequence[str] = ()
        if fork and threading.active_count() == 1:
            pid = os.fork()
            if pid == 0:
                parent.close()
                _serve_forked(child, preload)
            child.close()
            self.proc: Any = _ForkedProcess(pid, ["mhtest fork server", *preload])
            return
        import subprocess

        env = dict(os.environ)
        # The fork server must import this very mhtest, wherever it was imported from.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        command = [sys.executable, "-m", "mhtest.runners.forkserver", str(child.fileno())]
        if preload:
            command += ["--preload", ",".join(preload)]
        self.proc = subprocess.Popen(
            command,
            pass_fds=[child.fileno()],
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the job, which decides
        )
        child.close()

    def spawn(self, key: str, spec_path: str, event_fd: int, simple: bool = False) -> None:
        """Start the test in `spec_path`; `simple` for a simple test (no Python in its process)."""
        request = {"op": "spawn", "key": key, "spec": spec_path, "simple": simple}
        if self.then_import:  # imported by the server once this test started
            request["then_import"], self.then_import = list(self.then_import), ()
        message = json.dumps(request).encode()
        self.spawned = True
        socket.send_fds(self.sock, [message], [event_fd])

    def receive(self) -> tuple[list[dict], bool]:
        """The replies waiting on the socket, and whether the server is gone."""
        replies = []
        while True:
            try:
                data = self.sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return replies, False
            except OSError:
                data = b""
            if not data:
                return replies, True
            replies.append(json.loads(data))

    def close(self, timeout: float = 10.0) -> None:
        """Close the socket (the server then kills its children and exits); wait for it.

        Safe to call again: a job closes a fork server it started early even if its
        runner already did. One that never spawned has no children: it is killed at once
        rather than waited for (it may still be importing its preload).
        """
        import subprocess

        try:
            self.sock.close()
            if not self.spawned and self.proc.poll() is None:
                self.proc.kill()
        finally:
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                LOG.warning("fork server %d did not exit; killing it", self.proc.pid)
                self.proc.kill()
                self.proc.wait(timeout=timeout)


def fork_server_ahead(argv: Sequence[str]) -> ForkServer | None:
    """For `mhtest run ARGV`: a fork server started before the job loads its plugins.

    When a test file named in ARGV mentions a multi-host base class (a text search: the
    resolver decides later, and this server serves any local test as well), it starts
    now and imports MULTIHOST_PRELOAD on the other CPU while the job starts up (for a
    server control file, `*.srv` or --control, CONTROL_PRELOAD). Else, when the tests
    run here (no --hosts, no --inventory), a plain one starts now. None for a job that
    sends its tests to hosts.
    """
    from mhtest.resolver import MULTIHOST_BASES

    if any(arg.endswith(".srv") or arg.startswith("--control") for arg in argv):
        return ForkServer(preload=CONTROL_PRELOAD, fork=True)  # a server control file
    needles = [name.encode() for name in MULTIHOST_BASES]
    for arg in argv:
        path = arg.split(":", 1)[0]  # file.py:Filter
        if not path.endswith(".py") or not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as source:
                text = source.read(1 << 20)
        except OSError:
            continue
        if any(needle in text for needle in needles):
            return ForkServer(preload=MULTIHOST_PRELOAD, fork=True)
    if any(arg.split("=", 1)[0] in ("--hosts", "--inventory") for arg in argv):
        return None
    return ForkServer(fork=True)


def main() -> int:
    """`python -m mhtest.runners.forkserver FD [--preload a,b]`."""
    sock = socket.socket(fileno=int(sys.argv[1]))
    names = sys.argv[3].split(",") if sys.argv[2:3] == ["--preload"] else []
    run(sock, [n for n in names if n])
    return 0


if __name__ == "__main__":
    code = main()
    # Every child is reaped and the job waits for this exit: skip the interpreter's
    # teardown, which takes ~0.1 s once paramiko and zmq are loaded.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
