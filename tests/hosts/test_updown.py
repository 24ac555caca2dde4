"""is_up / wait_down / wait_up / reboot against a real sshd that the test stops and restarts."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from mhtest.hosts import RebootError
from mhtest.hosts.base import UP_POLL
from mhtest.hosts.ssh import SSHHost
from mhtest.hosts.ssh_reach import PROBE_STAGGER, PROBES, STALE_AFTER
from mhtest.hosts.testing import SshdPool, find_sshd

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(find_sshd() is None, reason="sshd not found: install openssh-server"),
]


@pytest.fixture
def own_pool(tmp_path: Path):
    """A private sshd host this test may take down (the session's hosts stay untouched)."""
    with SshdPool(tmp_path / "sshd") as pool:
        yield pool


def test_host_goes_down_and_comes_back(own_pool: SshdPool) -> None:
    info = own_pool.hosts(1)[0]
    with info.make_host(connect_timeout=2) as host:
        assert host.is_up()
        own_pool.stop_host(info)
        started = time.monotonic()
        assert host.wait_down(timeout=10) is True
        assert time.monotonic() - started < 5
        assert host.is_up() is False
        restarter = threading.Timer(1.0, own_pool.start_host, args=[info])
        restarter.start()
        try:
            assert host.wait_up(timeout=15) is True
        finally:
            restarter.join()
        assert host.run("echo back").stdout == "back\n"


def test_reboot_that_never_goes_down_is_an_error(own_pool: SshdPool) -> None:
    info = own_pool.hosts(1)[0]
    with info.make_host(connect_timeout=2) as host:
        started = time.monotonic()
        with pytest.raises(RebootError, match="did not go down within 1 s"):
            host.reboot(timeout=1, reboot_cmd="true")
        assert time.monotonic() - started < 10


def test_reboot_judged_by_boot_id_not_by_reconnecting(own_pool: SshdPool) -> None:
    """sshd restarts, but the kernel did not: same boot id, so this was no reboot."""
    info = own_pool.hosts(1)[0]
    with info.make_host(connect_timeout=2) as host:
        seen_down = threading.Event()
        real_is_up = host.is_up

        def watched_is_up() -> bool:
            up = real_is_up()
            if not up:
                seen_down.set()
            return up

        host.is_up = watched_is_up  # instrumentation only: the real check still runs

        def restart_once_seen_down() -> None:
            if seen_down.wait(timeout=20):
                own_pool.start_host(info)

        restarter = threading.Thread(target=restart_once_seen_down)
        restarter.start()
        try:
            with pytest.raises(RebootError, match="boot id is still"):
                host.reboot(timeout=6, reboot_cmd=f"kill {info.pid}")
        finally:
            seen_down.set()
            restarter.join()


def wait_threads_end(timeout: float = STALE_AFTER + 2) -> None:
    """Wait for the greeting probes' and the proxy's threads to end."""
    deadline = time.monotonic() + timeout
    mine = ("greeting-", "Thread-")
    while time.monotonic() < deadline:
        alive = [t for t in threading.enumerate() if t.name.startswith(mine) and t.is_alive()]
        if not alive:
            return
        time.sleep(0.05)


class HeldProxy:
    """A TCP proxy in front of a real sshd, standing for a host that boots. Its `mode` says
    what becomes of a new connection: "hold" (the host is down: the connection stays silent,
    as one whose SYN waits for a retransmission does, in the kernel or in QEMU's user-mode
    network that accepts our side at once), "refuse" (the network is up, sshd not yet: closed
    at once) or "forward" (to sshd). A held connection stays held."""

    def __init__(self, target: tuple[str, int] | None) -> None:
        self.target = target
        self.mode = "hold"
        self.accepted = 0
        self.held, self.most_held = 0, 0  # held connections open now, and at most
        self.listener = socket.create_server((target[0] if target else "127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self.sockets.append(conn)
            if self.mode == "hold":
                threading.Thread(target=self._hold, args=(conn,), daemon=True).start()
            elif self.mode == "refuse":
                conn.close()
            elif self.mode == "forward" and self.target is not None:
                upstream = socket.create_connection(self.target)
                self.sockets.append(upstream)
                for a, b in ((conn, upstream), (upstream, conn)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        self.held += 1
        self.most_held = max(self.most_held, self.held)
        try:
            while conn.recv(1024):
                pass
        except OSError:
            pass
        self.held -= 1

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:  # wakes the other direction's read (a close() from here would not)
                dst.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def then(self, *steps: tuple[float, str]) -> None:
        """Switch to each mode after its delay (seconds from now)."""
        for delay, mode in steps:
            threading.Timer(delay, setattr, args=(self, "mode", mode)).start()

    def close(self) -> None:
        """Stop accepting and end every connection: no thread of ours outlives the test
        (a fork server forks only a process with one thread)."""
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        self.listener.close()
        self.thread.join(5)
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


@pytest.mark.parametrize(
    "steps,within",
    [
        # Down, network up (refused), sshd up: noticed as soon as the next try goes through.
        (((1.0, "refuse"), (1.5, "forward")), UP_POLL + 0.5),
        # Down, then sshd up at once: the next try goes through.
        (((1.0, "forward"),), PROBE_STAGGER),
    ],
    ids=["refused-first", "held-until-up"],
)
def test_wait_up_notices_sshd_soon_though_earlier_connections_are_held(
    sshd_host, tmp_path: Path, steps, within
) -> None:
    proxy = HeldProxy((sshd_host.address, sshd_host.port))
    host = sshd_host.make_host(
        port=proxy.port, known_hosts=str(tmp_path / "known_hosts"), accept_new_host_keys=True
    )
    try:
        started = time.monotonic()
        proxy.then(*steps)
        assert host.wait_up(timeout=15) is True
        # With one connection at a time, it waited for its greeting up to BANNER_WAIT (5 s).
        up_at = steps[-1][0]
        assert time.monotonic() - started < up_at + within + 0.5  # + the login
        assert host.run("echo up").stdout == "up\n"
    finally:
        host.close()
        proxy.close()
        wait_threads_end()


def test_an_sshd_that_never_greets_is_asked_a_few_times_at_once() -> None:
    proxy = HeldProxy(None)
    try:
        host = SSHHost("127.0.0.1", port=proxy.port, name="mute", ssh_config=False)
        started = time.monotonic()
        assert host.ssh_banner(timeout=STALE_AFTER - 0.1) is False
        assert STALE_AFTER - 0.1 <= time.monotonic() - started < STALE_AFTER + 1
        assert proxy.accepted == PROBES
        assert host.ssh_banner(timeout=2 * STALE_AFTER - 0.1) is False
        assert proxy.accepted == 3 * PROBES  # the stale ones closed, new ones tried
        assert proxy.most_held == PROBES
    finally:
        proxy.close()
        wait_threads_end()
