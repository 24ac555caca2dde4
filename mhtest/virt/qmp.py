"""A synchronous QMP monitor: qemu.qmp's asyncio client driven from an event loop thread.

qemu.qmp is asyncio-only. Tests and migration workers are plain threads, so each monitor owns
one event loop running in a daemon thread and every call is submitted to it with a timeout.
Events are kept in an append-only history so a caller can wait for an event that may already
have arrived (take a mark before acting, then wait from that mark).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
import time
from typing import Any, Callable, Coroutine

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0


class QMPError(Exception):
    """A QMP operation failed; the message names the VM and carries QEMU's own words."""


class QMPCommandError(QMPError):
    """QEMU answered a command with an error."""

    def __init__(self, vm: str, command: str, desc: str, error_class: str = "") -> None:
        self.vm = vm
        self.command = command
        self.desc = desc
        self.error_class = error_class
        super().__init__(f"VM {vm}: QMP command {command!r} failed: {desc}")


class QMPTimeoutError(QMPError):
    """A QMP call or an event wait ran out of time."""


EventPredicate = Callable[[dict], bool]


class QMPMonitor:
    """One QMP connection to one QEMU, usable from any thread.

    We listen on a unix socket and QEMU connects to it (``-chardev socket,path=...`` without
    ``server``), so there is no race between QEMU creating a socket and us polling for it.
    """

    def __init__(self, vm_name: str, socket_path: str) -> None:
        qmp_log = logging.getLogger("qemu.qmp")
        if qmp_log.level == logging.NOTSET:
            # qemu.qmp logs every message as pretty JSON at DEBUG: it would drown a test's
            # debug.log. Our own log says what was sent and what failed.
            qmp_log.setLevel(logging.INFO)
        self.vm_name = vm_name
        self.socket_path = socket_path
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"qmp-{vm_name}", daemon=True
        )
        self._thread.start()
        self._client: Any = None
        self._events: list[dict] = []
        self._cond = threading.Condition()
        self._pump: asyncio.Task | None = None
        self._closed = False

    # -- plumbing -----------------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float | None, what: str) -> Any:
        """Run a coroutine on the monitor's loop and wait for it at most ``timeout`` seconds."""
        if self._closed:
            coro.close()
            raise QMPError(f"VM {self.vm_name}: QMP monitor is closed ({what})")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise QMPTimeoutError(
                f"VM {self.vm_name}: no answer to {what} within {timeout:.0f}s"
            ) from None

    def call_in_loop(self, func: Callable[[], Any], timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Run a plain function in the monitor's thread (used to spawn QEMU from it)."""

        async def _call() -> Any:
            return func()

        return self.run(_call(), timeout, "a call in the monitor thread")

    # -- connection ---------------------------------------------------------------------------

    def listen(self) -> None:
        """Start listening on the socket; QEMU connects when it starts."""
        from qemu.qmp import QMPClient

        async def _listen() -> None:
            self._client = QMPClient(self.vm_name)
            await self._client.start_server(self.socket_path)

        self.run(_listen(), DEFAULT_TIMEOUT, "listen")

    def accept(self, timeout: float, alive: Callable[[], bool]) -> None:
        """Wait for QEMU to connect and negotiate; give up early when ``alive()`` turns False."""
        from qemu.qmp import EventListener

        async def _accept() -> None:
            await self._client.accept()
            listener = EventListener()
            self._client.register_listener(listener)
            self._pump = asyncio.ensure_future(self._pump_events(listener))

        fut = asyncio.run_coroutine_threadsafe(_accept(), self._loop)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fut.result(0.05)
                return
            except concurrent.futures.TimeoutError:
                pass
            except Exception as exc:  # QEMU connected, then died during negotiation
                raise QMPError(f"VM {self.vm_name}: QMP negotiation failed: {exc}") from None
            if not alive():
                fut.cancel()
                raise QMPError(f"VM {self.vm_name}: QEMU exited before connecting to QMP")
            if time.monotonic() > deadline:
                fut.cancel()
                raise QMPTimeoutError(
                    f"VM {self.vm_name}: QEMU did not connect to QMP within {timeout:.0f}s"
                )

    async def _pump_events(self, listener: Any) -> None:
        async for event in listener:
            event = dict(event)
            log.debug("VM %s: event %s %s", self.vm_name, event.get("event"), event.get("data"))
            with self._cond:
                self._events.append(event)
                self._cond.notify_all()

    def close(self) -> None:
        """Disconnect and stop the loop thread; safe to call twice."""
        if self._closed:
            return

        async def _disconnect() -> None:
            if self._pump is not None:
                self._pump.cancel()
            if self._client is not None:
                await self._client.disconnect()

        try:
            self.run(_disconnect(), 5.0, "disconnect")
        except Exception as exc:  # the peer may be gone already; the loop must still stop
            log.debug("VM %s: QMP disconnect: %s", self.vm_name, exc)
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self._loop.close()

    # -- commands and events ------------------------------------------------------------------

    def cmd(self, command: str, args: dict | None = None, timeout: float = DEFAULT_TIMEOUT):
        """Execute one QMP command and return its result; errors carry QEMU's description."""
        from qemu.qmp import ExecuteError

        if self._client is None:
            raise QMPError(f"VM {self.vm_name}: QMP not connected ({command})")

        async def _exec() -> Any:
            return await self._client.execute(command, args or {})

        log.debug("VM %s: QMP %s %s", self.vm_name, command, json.dumps(args or {}))
        try:
            return self.run(_exec(), timeout, f"QMP command {command!r}")
        except ExecuteError as exc:
            err = exc.error.error
            raise QMPCommandError(self.vm_name, command, err.desc, err.class_) from None
        except QMPError:
            raise
        except Exception as exc:
            raise QMPError(f"VM {self.vm_name}: QMP command {command!r}: {exc}") from exc

    def event_mark(self) -> int:
        """A position in the event history; pass it to wait_event to see only later events."""
        with self._cond:
            return len(self._events)

    def events(self, since: int = 0) -> list[dict]:
        """Events received so far (from position ``since``)."""
        with self._cond:
            return list(self._events[since:])

    def wait_event(
        self,
        names: str | tuple[str, ...],
        timeout: float,
        match: EventPredicate | None = None,
        since: int = 0,
    ) -> dict:
        """Wait for an event named in ``names`` whose data satisfies ``match``."""
        if isinstance(names, str):
            names = (names,)
        deadline = time.monotonic() + timeout
        pos = since
        with self._cond:
            while True:
                for event in self._events[pos:]:
                    if event.get("event") in names and (
                        match is None or match(event.get("data") or {})
                    ):
                        return event
                pos = len(self._events)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise QMPTimeoutError(
                        f"VM {self.vm_name}: no {'/'.join(names)} event within {timeout:.0f}s"
                    )
                self._cond.wait(left)
