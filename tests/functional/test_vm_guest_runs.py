"""VM guests through the real CLI: the seed's KVM control file on a real Debian guest run by a
loopback sshd host; a test whose guest never comes up: ERROR naming the guest, QEMU's last
console lines in its log. Neither closes its guest: the end of the job is what stops QEMU."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mhtest.virt.testing import wait_no_qemu

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs QEMU"),
]

BAD_GUEST_PY = """
from mhtest import Test
from mhtest.autoserv.kvm import KVM
from mhtest.hosts.kvm_guest import KVMGuest
from mhtest.hosts.local import LocalHost


class BadGuest(Test):
    def test(self):
        kvm = KVM(LocalHost())
        kvm.install(accel="tcg")
        image = self.params.get("image")
        g = KVMGuest(kvm, f"-m 64 -drive file={image},format=raw,snapshot=on", name="badguest",
                     connect_timeout=5)
        if not g.wait_up(timeout=10):
            self.log.info("wait_up gave up, as expected")
        g.run("uname -a")
"""


@pytest.mark.timeout(180)
def test_guest_that_never_comes_up_is_an_error_naming_it(mhtest, write_tests, tmp_path) -> None:
    image = tmp_path / "blank.img"
    with open(image, "wb") as out:
        out.truncate(32 << 20)  # no boot sector: the firmware finds nothing to boot
    base = write_tests({"bad_guest.py": BAD_GUEST_PY})
    run = mhtest("run", str(base / "bad_guest.py"), "-p", f"image={image}", timeout=150)
    assert run.code == 1, run
    result = run.result("bad_guest.py")
    assert result["status"] == "ERROR", result
    reason = result["fail_reason"]
    assert "badguest" in reason and "No bootable device" in reason, reason
    debug = (run.job_dir / "test-results").glob("*/debug.log")
    log = next(debug).read_text()
    assert "badguest: not up after 10 s" in log and "QEMU's last console lines" in log
    assert wait_no_qemu(image, timeout=20) == []


SEED_KVM_SRV = """
# The seed's KVM control file (Autoserv's docs), with the image and its keys filled in.
remote_host = hosts.create_host(machines[0])
kvm_on_remote_host = kvm.KVM(remote_host)
kvm_on_remote_host.install(build=False, insert_modules=False)
qemu_options = "-m 384 -drive file={disk},format=raw,if=virtio,snapshot=on"
g = hosts.KVMGuest(kvm_on_remote_host, qemu_options, name="seedguest",
                   key_file={key_file!r}, host_key={host_key!r})
if not g.wait_up(600):
    raise error.AutoservError("seedguest did not come up")
print(g.run("uname -a").stdout)
from autotest_lib.server import deb_kernel as imported
assert imported.DEBKernel is deb_kernel.DEBKernel and rpm_kernel.RPMKernel
"""


@pytest.mark.timeout(720)
def test_seed_kvm_control_file_runs_a_guest_through_its_hypervisor(
    mhtest, write_tests, tmp_path, sshd_host, debian_image
) -> None:
    disk = tmp_path / "guest.raw"  # this test's own name for the image, to find its QEMU by
    disk.symlink_to(debian_image.disk)
    source = SEED_KVM_SRV.format(
        disk=disk, key_file=str(debian_image.key_file), host_key=debian_image.host_key
    )
    base = write_tests({"kvm.srv": source})
    machines = ["-m", sshd_host.alias, "--ssh-config", sshd_host.ssh_config]
    run = mhtest("run", str(base / "kvm.srv"), *machines, timeout=700)
    assert run.code == 0, run
    control = run.result("kvm.srv")
    assert control["status"] == "PASS", control
    stdout = Path(control["logdir"], "stdout").read_text()
    assert "Linux mhtest-guest " in stdout and "x86_64" in stdout, stdout
    assert wait_no_qemu(disk, timeout=20) == []
