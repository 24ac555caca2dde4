"""A test whose VM guest never comes up, run with the real CLI: ERROR naming the guest, QEMU's
last console lines in its log, and no QEMU left once the job is over (the test never closes
its guest: its end is what stops QEMU)."""

from __future__ import annotations

import shutil

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
