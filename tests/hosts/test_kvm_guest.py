"""KVMGuest: real QEMU guests (the Debian image) on a loopback sshd "hypervisor" host.

The guests boot a real Debian through GRUB and are reached over SSH through the sshd host
(a direct-tcpip channel to QEMU's forwarded port). One guest serves the module's tests in
order; each leaves it up. Under TCG on a busy machine a boot takes 20-60 s.
"""

from __future__ import annotations

import logging
import shlex
import time
from pathlib import Path

import pytest

from mhtest.autoserv.kvm import KVM
from mhtest.hosts import HostUnreachable
from mhtest.hosts.kvm_guest import KVMGuest
from mhtest.hosts.testing import free_port
from mhtest.virt.qemu import VMStartError

pytestmark = pytest.mark.slow

BOOT = 600  # seconds: generous, the machine is shared


def console_lines(guest: KVMGuest) -> list[str]:
    """The guest's serial console so far, read on its hypervisor host."""
    path = guest.qemu.path("console.log")
    return guest.kvm.host.run("cat", args=[path]).stdout.replace("\r", "").splitlines()


def pid_gone(pid: int, wait: float = 15.0) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def guest(sshd_host, debian_image):
    """The seed's KVM control file, step by step: a guest booted and logged into."""
    remote_host = sshd_host.make_host()
    kvm_on_remote_host = KVM(remote_host)
    kvm_on_remote_host.install()
    qemu_options = shlex.join(debian_image.qemu_options())
    g = KVMGuest(
        kvm_on_remote_host,
        qemu_options,
        key_file=debian_image.key_file,
        host_key=debian_image.host_key,
    )
    try:
        assert g.wait_up(BOOT), f"guest did not come up: {g.qemu.console_tail()}"
        yield g
    finally:
        pid = g.qemu.pid
        kvm_on_remote_host.close()
        remote_host.close()
        assert pid is None or pid_gone(pid), f"QEMU {pid} left running"


@pytest.mark.timeout(BOOT + 60)
def test_seed_kvm_flow_guest_runs_commands_through_its_hypervisor(guest, sshd_host) -> None:
    out = guest.run("uname -a").stdout
    assert out.startswith("Linux mhtest-guest ") and "x86_64" in out
    assert guest.run("cat /proc/cmdline").stdout.startswith("BOOT_IMAGE=/boot/vmlinuz-")  # GRUB
    # QEMU runs on the hypervisor host and the guest is reached through it.
    assert guest.kvm.host.hostname == sshd_host.address
    assert guest.hostname == "127.0.0.1" and guest.port > 0
    assert f"{guest.hostname}:{guest.port}" not in f"{sshd_host.address}:{sshd_host.port}"
    assert guest.kvm.accel in ("kvm", "tcg")
    assert guest.run("echo $((6 * 7))").stdout == "42\n"


@pytest.mark.timeout(BOOT + 60)
def test_reboot_comes_back_with_a_new_boot_id(guest) -> None:
    before = guest.get_boot_id()
    guest.run("touch /run/mhtest-before-reboot")
    seen = len(console_lines(guest))
    started = time.monotonic()
    guest.reboot(timeout=BOOT)
    took = time.monotonic() - started
    after = guest.get_boot_id()
    assert after != before
    assert not guest.run("test -e /run/mhtest-before-reboot", ignore_status=True).ok
    console = "\n".join(console_lines(guest)[seen:])
    assert "going down (reboot)" in console  # the guest's own shutdown, not a reset
    logging.getLogger(__name__).info("reboot took %.1f s", took)


@pytest.mark.timeout(BOOT + 120)
def test_wait_down_and_wait_up_time_out_then_power_on(guest) -> None:
    started = time.monotonic()
    # It is up. Each try logs in anew within the timeout (at most 5 s): an emulated guest on
    # a loaded machine took more than 2 s to log in and run `true` once.
    assert guest.wait_down(timeout=5) is False
    assert time.monotonic() - started < 20
    before = guest.get_boot_id()
    guest.power.power_off()  # QMP stop: the machine no longer answers
    started = time.monotonic()
    assert guest.wait_down(timeout=60) is True
    assert time.monotonic() - started < 30
    started = time.monotonic()
    assert guest.wait_up(timeout=3) is False
    assert time.monotonic() - started < 20
    guest.power.power_on()  # reset and run: it boots afresh
    assert guest.wait_up(BOOT)
    assert guest.get_boot_id() != before


@pytest.mark.timeout(BOOT + 120)
def test_hardreset_of_a_guest_whose_sshd_is_stopped(guest) -> None:
    before = guest.get_boot_id()
    guest.run("kill -STOP $(cat /run/sshd.pid 2>/dev/null || pgrep -o -x sshd)")
    guest.drop_connection()
    assert guest.wait_up(timeout=3) is False  # sshd takes connections but never answers
    seen = len(console_lines(guest))
    started = time.monotonic()
    guest.hardreset(timeout=BOOT)
    after = guest.get_boot_id()
    assert after != before
    console = "\n".join(console_lines(guest)[seen:])
    assert "going down" not in console and "mhtest-guest: up after" in console  # a reset
    logging.getLogger(__name__).info("hardreset took %.1f s", time.monotonic() - started)


@pytest.mark.timeout(BOOT + 60)
def test_insert_modules_loads_the_kvm_modules_for_real(guest) -> None:
    """KVM.install(insert_modules=True) on a real Linux host, the guest: kvm and the module
    of its CPU's virtualization (kvm_intel for vmx, kvm_amd for svm) are loaded for real; a
    CPU with neither gets the error naming it. (Its QEMU is a stand-in printing a version:
    the guest has none, and the modules are loaded before QEMU is ever run.)"""
    from mhtest.autoserv.kvm import KVMError

    assert "kvm" not in guest.run("lsmod").stdout.split()  # not loaded yet
    flags = guest.run("grep -m1 '^flags' /proc/cpuinfo").stdout.split()
    module = "kvm_intel" if "vmx" in flags else "kvm_amd" if "svm" in flags else None
    guest.run(
        "printf '#!/bin/sh\\necho QEMU emulator version 7.2.0\\n' "
        "> /usr/local/bin/qemu-system-x86_64 && chmod 755 /usr/local/bin/qemu-system-x86_64"
    )
    try:
        if module is None:
            with pytest.raises(KVMError) as caught:
                KVM(guest).install(insert_modules=True)
            assert str(caught.value).startswith(f"{guest}: cannot load the kvm modules")
            assert "no vmx or svm CPU flag" in str(caught.value)
        else:
            KVM(guest).install(insert_modules=True)
        loaded = [line.split()[0] for line in guest.run("lsmod").stdout.splitlines()[1:]]
        assert "kvm" in loaded, loaded
        assert module is None or module in loaded, (module, loaded)
    finally:
        guest.run("rm -f /usr/local/bin/qemu-system-x86_64")


@pytest.mark.timeout(BOOT + 60)
def test_guest_on_addresses_given_to_install(sshd_host, debian_image) -> None:
    """The MAC->IP mapping: the options bring the network, the guest gets the MAC."""
    port = free_port("127.0.0.1")
    mac = "52:54:00:6d:68:01"
    with sshd_host.make_host() as host:
        kvm = KVM(host)
        kvm.install(addresses=[{"mac": mac, "ip": "127.0.0.1", "port": port}])
        options = [
            *debian_image.qemu_options(),
            "-netdev",
            f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
        ]
        guest = KVMGuest(kvm, options, key_file=debian_image.key_file,
                         host_key=debian_image.host_key)  # fmt: skip
        try:
            with pytest.raises(Exception, match="addresses given to install"):
                KVMGuest(kvm, options, start=False)  # the only address is taken
            assert guest.wait_up(BOOT)
            assert (guest.hostname, guest.port) == ("127.0.0.1", port)
            assert guest.run("cat /sys/class/net/eth0/address").stdout.strip() == mac
        finally:
            kvm.close()


@pytest.mark.timeout(120)
def test_guest_that_never_comes_up_names_itself_and_its_console(kvm_host, tmp_path, caplog):
    bad = tmp_path / "bad.img"
    with open(bad, "wb") as out:
        out.truncate(64 << 20)  # no boot sector
    guest = KVMGuest(
        kvm_host,
        f"-m 64 -drive file={bad},format=raw,snapshot=on",
        name="badguest",
        connect_timeout=5,
    )
    pid = guest.qemu.pid
    try:
        with caplog.at_level(logging.WARNING):
            assert guest.wait_up(timeout=10) is False
        assert "badguest: not up after 10 s" in caplog.text
        assert "No bootable device" in caplog.text  # the firmware's last words
        with pytest.raises(HostUnreachable) as err:
            guest.run("true")
        assert "badguest" in str(err.value) and "No bootable device" in str(err.value)
        assert "\n" not in str(err.value)
    finally:
        guest.close()
    assert pid_gone(pid)


@pytest.mark.timeout(60)
def test_qemu_that_cannot_start_is_one_line_with_its_words(kvm_host) -> None:
    with pytest.raises(VMStartError) as err:
        KVMGuest(kvm_host, "-m 64 -no-such-option", name="broken")
    message = str(err.value)
    assert "broken" in message and "no-such-option" in message and "\n" not in message


@pytest.mark.timeout(120)
def test_qemu_ends_when_the_process_that_started_it_is_killed(sshd_host, tmp_path) -> None:
    """The supervisor on the hypervisor ends QEMU once our SSH connection is gone, and
    removes QEMU's directory."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    from mhtest.virt.testing import qemu_pids, wait_no_qemu

    marker = tmp_path / "marker.img"
    with open(marker, "wb") as out:
        out.truncate(1 << 20)
    script = textwrap.dedent(
        f"""
        import time
        from mhtest.hosts.ssh import SSHHost
        from mhtest.autoserv.kvm import KVM
        from mhtest.hosts.kvm_guest import KVMGuest
        host = SSHHost({sshd_host.address!r}, port={sshd_host.port}, user={sshd_host.user!r},
                       key_file={sshd_host.key_file!r}, known_hosts={sshd_host.known_hosts!r},
                       ssh_config=False)
        kvm = KVM(host)
        kvm.install(accel="tcg")
        g = KVMGuest(kvm, "-m 64 -drive file={marker},format=raw,snapshot=on")
        print("STARTED", g.qemu.dir, flush=True)
        time.sleep(300)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    try:
        started, qemu_dir = proc.stdout.readline().decode().split()
        assert started == "STARTED" and os.path.exists(f"{qemu_dir}/console.log")
        assert qemu_pids(marker)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert wait_no_qemu(marker, timeout=20) == []
        deadline = time.monotonic() + 10  # its directory (console, logs, QMP socket) goes too
        while os.path.exists(qemu_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not os.path.exists(qemu_dir)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
