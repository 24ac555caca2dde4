"""The guests migration tests use: the busybox initramfs build, and a booted Linux migrating."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from mhtest.virt.guest import GUEST_PROMPT, linux_guest
from mhtest.virt.qemu import VM

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None or shutil.which("cpio") is None,
    reason="needs qemu-system-x86_64 and cpio (apt-get install qemu-system-x86 cpio)",
)


@pytest.mark.timeout(60)
def test_initramfs_is_built_once_and_has_our_init(tmp_path: Path) -> None:
    guest = linux_guest(tmp_path, probe_kvm=False)
    listing = (
        subprocess.run(
            ["cpio", "-t", "--quiet"],
            input=Path(guest.initrd).read_bytes(),
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split()
    )
    assert {"init", "bin/busybox"} <= set(listing)
    assert Path(guest.kernel).stat().st_size > 1_000_000
    mtime = Path(guest.initrd).stat().st_mtime_ns
    again = linux_guest(tmp_path, probe_kvm=False)
    assert again.initrd == guest.initrd and Path(again.initrd).stat().st_mtime_ns == mtime
    assert len(list(tmp_path.glob("guest-*"))) == 1


def _rchar(session, pid: str) -> int:
    out = session.cmd_output(f"grep rchar /proc/{pid}/io", timeout=20)
    return int(re.search(r"rchar:\s*(\d+)", out).group(1))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_work_survives_migration(tmp_path: Path) -> None:
    """A dd started on the source's serial console is still running on the destination."""
    guest = linux_guest()
    config = guest.config("work", memory_mb=256)
    with VM(config, tmp_path / "src").start() as src:
        console = src.console(timeout=120)
        out = console.cmd_output("dd if=/dev/zero of=/dev/null bs=4k & echo DDPID=$!")
        pid = re.search(r"DDPID=(\d+)", out).group(1)
        console.cmd(f"kill -0 {pid}")
        with VM(config, tmp_path / "dst").start(incoming=True) as dst:
            _, port = dst.migrate_incoming("tcp:127.0.0.1:0")
            src.migrate(f"tcp:127.0.0.1:{port}")
            info = src.wait_migration(120)
            assert info["status"] == "completed", info
            assert src.status() == "postmigrate"
            assert dst.status() == "running"
            session = dst.console(timeout=30)
            session.cmd(f"kill -0 {pid}")  # raises if dd is gone
            before = _rchar(session, pid)
            time.sleep(1)
            assert _rchar(session, pid) > before  # and still making progress
            assert GUEST_PROMPT in dst.console_log_path.read_text(errors="replace")
