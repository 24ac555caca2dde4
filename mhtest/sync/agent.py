"""A worker's sync agent: one process that holds the worker's connection to the sync server.

Most of what a `mhtest sync` command would cost is importing pyzmq and the CurveZMQ
handshake, not the call. So the first command of a worker starts an agent (this module,
in a session of its own) that connects once; that command and every later one of the
worker send their call to it over a Unix socket, which needs nothing but the interpreter.

The socket is in Linux's abstract namespace, named by MHTEST_SYNC_AGENT ("@mhtest-sync-"
and 32 random hex digits, set for each worker by mhtest.runners.workerbin): no file to
clean up. The agent answers only processes of its own user (SO_PEERCRED). It speaks for
the worker as a transient participant (mhtest.sync.namespace), like the commands would;
a command's connection that ends while holding a lock gives it back. The agent leaves
after IDLE_EXIT seconds with nothing to do, or when the server is gone; the next command
starts another.

Requests and replies are frames: a 4-byte big-endian length, then a marshal of {"op":
"barrier", "args": {...}}, and of {"ok": True, "result": ...} or {"ok": False, "error":
{"type": "timeout"|"aborted"|"error", "message": ...}}. Marshal, not JSON: both ends are
the same interpreter, and a command then imports neither json nor socket (only the C
modules _socket and marshal, which cost it nothing). A lock is taken and given back on one
connection ("lock", then "unlock").
"""

from __future__ import annotations

import _socket
import marshal
import os
import sys
import time

from mhtest.sync.errors import SyncAborted, SyncError, SyncTimeout, error_from_reply

# Not `from typing import TYPE_CHECKING`: typing costs a shell worker's `mhtest sync`
# more than its call (mhtest.sync.shell); annotations are not evaluated here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ENV_AGENT = "MHTEST_SYNC_AGENT"
#: The agent leaves after this many seconds without a command in flight
#: (MHTEST_SYNC_AGENT_IDLE sets another, for tests).
IDLE_EXIT = 10.0
#: How long a command waits for an agent it started to listen.
START_TIMEOUT = 15.0
OPS = ("barrier", "exchange", "post", "wait", "abort", "lock", "unlock")


def _address(name: str) -> str:
    return "\0" + name.lstrip("@")


# -- the commands' side ------------------------------------------------------------------


class AgentClient:
    """What a command calls: SyncClient's methods, carried out by the worker's agent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._started = False

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def barrier(self, name: str, count: int | None = None, timeout: float | None = None) -> None:
        self._request("barrier", name=name, count=count, timeout=timeout)

    def exchange(
        self, name: str, data: Any, count: int | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        return self._request("exchange", name=name, data=data, count=count, timeout=timeout)

    def post(self, name: str, data: Any = None) -> None:
        self._request("post", name=name, data=data)

    def wait(
        self,
        name: str,
        count: int | None = None,
        timeout: float | None = None,
        senders: list[str] | None = None,
    ) -> dict[str, Any]:
        return self._request("wait", name=name, count=count, timeout=timeout, senders=senders)

    def abort(self, reason: str) -> None:
        self._request("abort", reason=reason)

    def lock(self, name: str, timeout: float | None = None) -> Any:
        return _Held(self, name, timeout)

    def _request(self, op: str, **args: Any) -> Any:
        conn = self.connect()
        try:
            return call(conn, op, args)
        finally:
            conn.close()

    def connect(self) -> Any:
        """A connection to the worker's agent (a _socket.socket), started first if need be."""
        deadline = None
        while True:
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            try:
                sock.connect(_address(self.name))
                return sock
            except OSError:
                sock.close()
            if not self._started:
                _start_agent()
                self._started = True
                deadline = time.monotonic() + START_TIMEOUT
            elif deadline is not None and time.monotonic() > deadline:
                raise SyncError(f"the worker's sync agent did not start within {START_TIMEOUT:g} s")
            time.sleep(0.002)


class _Held:
    """A lock taken through the agent, on a connection of its own, for a `with` block."""

    def __init__(self, client: AgentClient, name: str, timeout: float | None) -> None:
        self.client, self.name, self.timeout = client, name, timeout
        self.conn: Any = None

    def __enter__(self) -> None:
        self.conn = self.client.connect()
        try:
            call(self.conn, "lock", {"name": self.name, "timeout": self.timeout})
        except BaseException:
            self.conn.close()
            raise

    def __exit__(self, *exc: Any) -> None:
        try:
            call(self.conn, "unlock", {"name": self.name})
        finally:
            self.conn.close()


def call(conn: Any, op: str, args: dict[str, Any]) -> Any:
    """Send one request on `conn`, return its result or raise the error it carries."""
    send_frame(conn, {"op": op, "args": args})
    reply = read_frame(conn)
    if reply is None:
        raise SyncError("the worker's sync agent ended before answering")
    if reply.get("ok"):
        return reply.get("result")
    raise error_from_reply(reply.get("error") or {})


def send_frame(conn: Any, message: dict[str, Any]) -> None:
    data = marshal.dumps(message)
    conn.sendall(len(data).to_bytes(4, "big") + data)


def read_frame(conn: Any) -> dict[str, Any] | None:
    """The next frame's message; None at the end of the connection."""
    head = _read_exactly(conn, 4)
    if head is None:
        return None
    body = _read_exactly(conn, int.from_bytes(head, "big"))
    if body is None:
        return None
    message = marshal.loads(body)
    if not isinstance(message, dict):
        raise ValueError("a sync agent frame is not a dict")
    return message


def _read_exactly(conn: Any, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = conn.recv(min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _start_agent() -> None:
    """Start the agent in a session of its own (it outlives the command that started it)."""
    import subprocess

    code = f"import sys; sys.path[:0] = {sys.path!r}; from mhtest.sync.agent import main; main()"
    subprocess.Popen(
        [sys.executable, "-SE", "-c", code],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


# -- the agent -----------------------------------------------------------------------------


class Agent:
    """Serves the worker's commands with one transient SyncClient (see module docstring)."""

    def __init__(self, sock: Any, idle: float = IDLE_EXIT) -> None:
        import threading

        self.sock = sock
        self.idle = idle
        self.client: Any = None
        self.busy = 0
        self.last = time.monotonic()
        self.gone = threading.Event()  # the server is gone: leave
        self._lock = threading.Lock()
        self._thread = threading.Thread

    def serve(self) -> None:
        import socket  # the agent's side may: only the commands' side keeps to C modules

        self.sock.settimeout(min(0.5, self.idle / 2))
        while not self.gone.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                with self._lock:
                    if not self.busy and time.monotonic() - self.last > self.idle:
                        return
                continue
            self._thread(target=self._serve_one, args=(conn,), daemon=True).start()

    def _sync(self) -> Any:
        with self._lock:
            if self.client is None:
                from mhtest.sync.client import SyncClient

                self.client = SyncClient.from_environment(transient=True)
                if self.client is None:
                    raise SyncError(
                        "not a worker of a multi-host test: MHTEST_SYNC_ADDRESS is not set"
                    )
            return self.client

    def _serve_one(self, conn: Any) -> None:
        held: list[Any] = []
        import struct

        with conn, self._counted():
            pid, uid, gid = struct.unpack(
                "3i", conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
            )
            if uid != os.getuid():  # SO_PEERCRED: only this user's processes
                return
            try:
                while True:
                    request = read_frame(conn)
                    if request is None:
                        break
                    send_frame(conn, self._answer(request, held))
            except (OSError, ValueError, EOFError, TypeError):
                pass  # a command gone, or one that does not speak the protocol
            finally:
                for lock in held:  # the command ended without giving it back
                    try:
                        lock.__exit__(None, None, None)
                    except SyncError:
                        pass

    def _counted(self) -> Any:
        agent = self

        class Counted:
            def __enter__(self) -> None:
                with agent._lock:
                    agent.busy += 1

            def __exit__(self, *exc: Any) -> None:
                with agent._lock:
                    agent.busy -= 1
                    agent.last = time.monotonic()

        return Counted()

    def _answer(self, request: dict[str, Any], held: list[Any]) -> dict[str, Any]:
        from mhtest.sync.errors import SyncUnavailable

        try:
            op, args = request["op"], dict(request.get("args") or {})
            if op not in OPS:
                raise SyncError(f"the sync agent does not know {op!r}")
            client = self._sync()
            if op == "lock":
                cm = client.lock(args["name"], args.get("timeout"))
                cm.__enter__()
                held.append(cm)
                return {"ok": True, "result": None}
            if op == "unlock":
                cm = held.pop()
                cm.__exit__(None, None, None)
                return {"ok": True, "result": None}
            return {"ok": True, "result": getattr(client, op)(**args)}
        except SyncTimeout as exc:
            return {"ok": False, "error": {"type": "timeout", "message": str(exc)}}
        except SyncAborted as exc:
            return {"ok": False, "error": {"type": "aborted", "message": str(exc)}}
        except SyncUnavailable as exc:
            self.gone.set()
            return {"ok": False, "error": {"type": "error", "message": str(exc)}}
        except (SyncError, ValueError, KeyError, TypeError, IndexError) as exc:
            return {"ok": False, "error": {"type": "error", "message": str(exc)}}


def main() -> int:
    """The agent process: listen on MHTEST_SYNC_AGENT's socket and serve until idle."""
    name = os.environ.get(ENV_AGENT, "")
    if not name:
        return 2
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(_address(name))
    except OSError:
        return 0  # another command started the agent first
    sock.listen(64)
    agent = Agent(sock, float(os.environ.get("MHTEST_SYNC_AGENT_IDLE") or IDLE_EXIT))
    try:
        agent.serve()
    finally:
        sock.close()
        if agent.client is not None:
            agent.client.close()
    return 0
