"""The fork server: a pre-imported, single-threaded process that forks one child per test.

Starting a Python interpreter and importing mhtest costs tens of milliseconds; a fork
costs well under one. The job starts this server once and sends it, over a
SOCK_SEQPACKET socket, one message per test: the spec file's path plus the write end
of the test's event pipe (SCM_RIGHTS). The server answers `started` with the child's
pid and `exited` with its wait status. Each child calls setsid(), so the job can kill
a test's whole process group. A simple test gets no Python child at all: the server
starts it with vfork+exec in a session of its own (mhtest.runners.child.start_simple).

Messages are JSON: {"op": "spawn", "key": K, "spec": PATH, "simple": BOOL, "then_import":
[MODULE, …]} (modules to import once this test started, for the next ones), {"op":
"started", "key": K, "pid": P}, {"op": "exited", "key": K, "pid": P, "status": S} where
S is the exit code, or minus the signal number.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys

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


def _send(sock: socket.socket, **message: object) -> None:
    try:
        sock.send(json.dumps(message).encode())
    except OSError:
        # The job is gone; the children it started still get reaped below.
        pass


def serve(sock: socket.socket) -> None:
    """Serve spawn requests on `sock` until the job closes it."""
    rfd, wfd = os.pipe()
    os.set_blocking(wfd, False)
    signal.set_wakeup_fd(wfd)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the job decides what Ctrl-C does
    children: dict[int, str] = {}
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, "sock")
    sel.register(rfd, selectors.EVENT_READ, "sigchld")
    open_ = True
    while open_ or children:
        for key, _ in sel.select(timeout=1.0):
            if key.data == "sigchld":
                os.read(rfd, 4096)
            elif open_:
                open_ = _handle_request(sock, sel, children)
                if not open_:
                    # The job is done with us, or died: no test outlives it.
                    _kill_all(children)
        _reap(sock, children)
    sel.close()


def _handle_request(sock: socket.socket, sel: selectors.BaseSelector, children: dict) -> bool:
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 4)
    except OSError:
        data, fds = b"", []
    if not data:
        sel.unregister(sock)
        return False
    request = json.loads(data)
    from mhtest.runners.child import start_simple

    pid = start_simple(request["spec"], fds[0]) if fds and request.get("simple") else None
    if pid is None:
        pid = os.fork()
        if pid == 0:
            sock.close()
            _child(request["spec"], fds[0])
    for fd in fds:
        os.close(fd)
    children[pid] = request["key"]
    _send(sock, op="started", key=request["key"], pid=pid)
    # Imports for the children forked after this one (while this one runs).
    preload(request.get("then_import") or [])
    return True


def _kill_all(children: dict[int, str]) -> None:
    for pid in children:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


def _reap(sock: socket.socket, children: dict[int, str]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        key = children.pop(pid, None)
        if key is None:
            continue
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        _send(sock, op="exited", key=key, pid=pid, status=code)


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
