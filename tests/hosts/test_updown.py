"""is_up / wait_down / wait_up / reboot against a real sshd that the test stops and restarts."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from mhtest.hosts import RebootError
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
