"""The mirror's package path for real: a kernel .deb dropped into the mirror's directory
becomes a queued file that installs it on a real Debian guest, reboots the guest into it and
then runs a client control file there.

The guest runs under QEMU as a KVMGuest on a loopback sshd host (tests/conftest.py). That
host is this machine, so the port QEMU forwards to the guest's sshd (on its 127.0.0.1) is
reachable from here too: the queue names the guest through an ssh_config alias, with the
image's root key and the guest's host key, as a lab names any machine.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mhtest.autoserv.deb_kernel import DEBKernel
from mhtest.hosts.kvm_guest import KVMGuest
from mhtest.virt.testing import guest_ssh_config, wait_no_qemu

from .conftest import wait_gone
from .queueing import Watching, job_results, wait_done

#: Seconds for the guest to boot under TCG; the queued file installs, reboots, then sets
#: mhtest up in the guest (its wheels sent and installed) before the client test runs.
BOOT = 600
RUN = 1500

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs QEMU"),
]

KERNEL_RELEASE_PY = '''\
"""Says which kernel it runs under (the client test the mirror's file runs after the boot)."""
import platform

from mhtest import Test


class KernelRelease(Test):
    def test(self):
        self.whiteboard = platform.release()
'''
CLIENT_CONTROL = 'job.run_test("kernel_release")\n'
ALIAS = "mirror-guest"


def boot_guest(kvm, image, disk: Path) -> KVMGuest:
    """The image booted from `disk` (a name of the test's own, to find its QEMU by)."""
    options = [o.replace(image.disk, str(disk)) for o in image.qemu_options()]
    guest = KVMGuest(kvm, options, name=ALIAS, key_file=image.key_file, host_key=image.host_key)
    if not guest.wait_up(BOOT):
        guest.close()
        pytest.fail(f"the guest did not come up: {guest.qemu.console_tail()}")
    return guest


@pytest.mark.timeout(BOOT + RUN + 300)
def test_a_kernel_deb_dropped_into_the_mirror_boots_on_the_guest_then_its_tests_run(
    kvm_host, debian_image, tmp_path: Path
) -> None:
    deb = Path(debian_image.kernels["cloud-amd64"][0])
    kernel = DEBKernel()
    kernel.get(str(deb))
    release = kernel.get_version()  # what `uname -r` says once it runs: *-cloud-amd64
    assert release.endswith("-cloud-amd64") and release != debian_image.kernel_release

    top, mirror, controls = tmp_path / "testing", tmp_path / "mirror", tmp_path / "controls"
    spool, results = top / "queue" / "lab", top / "results"
    for directory in (spool, top / "tests", mirror, controls):
        directory.mkdir(parents=True)
    (top / "tests" / "kernel_release.py").write_text(KERNEL_RELEASE_PY)
    (controls / "kernel-smoke").write_text(CLIENT_CONTROL)
    clients = tmp_path / "mirror_clients"
    clients.write_text(f"lab {controls / 'kernel-smoke'}\n")
    (spool / ".machines").write_text(f"{ALIAS}\n")

    disk = tmp_path / "guest.raw"
    disk.symlink_to(debian_image.disk)
    guest = boot_guest(kvm_host, debian_image, disk)
    try:
        assert guest.run("uname -r").stdout.strip() == debian_image.kernel_release
        ssh_config = guest_ssh_config(guest, debian_image, ALIAS, tmp_path)
        watch = ["start-all", str(top), "--ssh-config", str(ssh_config)]
        watch += ["--tests-path", str(top / "tests")]
        mirroring = ["mirror", "--clients", str(clients), str(mirror), str(top / "queue")]
        with (
            Watching(watch, tmp_path / "watcher.console", tmp_path) as watcher,
            Watching(mirroring, tmp_path / "mirror.console", tmp_path) as mirror_proc,
        ):
            watcher.wait_line("lab: watching")
            mirror_proc.wait_line("mirror: watching")
            # Dropped as a mirror sync writes it: aside under a dot name, then renamed in.
            shutil.copyfile(deb, mirror / f".{deb.name}.part")
            os.replace(mirror / f".{deb.name}.part", mirror / deb.name)
            queued = f"{release}-kernel-smoke.srv"
            mirror_proc.wait_line(f"mirror: {deb.name}: queued lab/{queued}")
            done = wait_done(results, [queued], timeout=RUN)[queued]
            assert watcher.stop() == 0, watcher.console()
            assert mirror_proc.stop() == 0, mirror_proc.console()
        # What the guest runs now, asked over SSH apart from the job (checked below).
        assert guest.wait_up(BOOT)
        running = guest.run("uname -r").stdout.strip()
    finally:
        guest.close()
    assert wait_no_qemu(disk, timeout=30) == []
    assert wait_gone([job["pid"] for job in done["jobs"]], timeout=30) == []

    # The queue's record: the mirror's file, run once on the queue's machine.
    assert done["status"] == "PASS", (done, watcher.console())
    assert done["file"] == queued and done["kind"] == "server"
    assert done["machines"] == [ALIAS]
    assert f"lab: {queued}: ended in " in watcher.console()
    # Autotest's layout: <results>/<file>/ holds the file as queued, queue.json and the job.
    here = results / queued
    [job] = done["jobs"]
    assert sorted(p.name for p in here.iterdir()) == sorted(
        [queued, "queue.json", "latest", job["job"]]
    )
    wrapped = (here / queued).read_text()
    assert f"kernel_path = {str(mirror / deb.name)!r}\n" in wrapped
    assert f"control = {str(controls / 'kernel-smoke')!r}\n" in wrapped
    found = job_results(here)
    boot, client, test = (
        f"{queued}/{ALIAS}/{n}" for n in ("boot", "kernel-smoke", "kernel_release")
    )
    assert {ref: r["status"] for ref, r in found.items()} == dict.fromkeys(
        [queued, boot, client, test], "PASS"
    ), found
    # The boot, recorded GOOD once `uname -r` said the cloud kernel ran; then the client
    # control file, whose test saw the cloud kernel too.
    assert found[boot]["fail_reason"] == f"booted {release}", found[boot]
    assert found[test]["whiteboard"] == release and found[test]["host"] == ALIAS, found[test]
    assert found[boot]["start"] < found[client]["start"] <= found[test]["start"]
    logs = here / "latest" / "test-results" / f"1-{queued}" / ALIAS
    assert (logs / "kernel-smoke" / "kernel_release" / "debug.log").is_file()
    # And the guest still runs it.
    assert running == release
