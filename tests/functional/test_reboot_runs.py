"""Tests that reboot the host they run on, through the real CLI, on a real Debian guest (QEMU,
run by a loopback sshd host, reached as an ordinary SSH host of --hosts): an instrumented
test that reboots twice, a simple one that runs tmt-reboot, the test after them started only
after the boot; a multi-host worker whose host reboots between two barriers; a server
control file's host.reboot() between two client tests."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest

from mhtest.hosts.kvm_guest import KVMGuest
from mhtest.virt.testing import guest_ssh_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs QEMU"),
]

BOOT = 600
ALIAS = "rebooting-guest"


@pytest.fixture(scope="module")
def guest(kvm_host, debian_image, tmp_path_factory):
    """A guest booted, with an ssh_config naming it ALIAS (host key checked)."""
    g = KVMGuest(
        kvm_host,
        shlex.join(debian_image.qemu_options(memory_mb=512)),
        name="rebootguest",
        key_file=debian_image.key_file,
        host_key=debian_image.host_key,
    )
    try:
        assert g.wait_up(BOOT), f"guest did not come up: {g.qemu.console_tail()}"
        where = tmp_path_factory.mktemp("guest-ssh")
        g.ssh_config = str(guest_ssh_config(g, debian_image, ALIAS, where))
        yield g
    finally:
        g.close()


def boot_id(guest: KVMGuest) -> str:
    return guest.run("cat /proc/sys/kernel/random/boot_id").stdout.strip()


def runs_left(guest: KVMGuest) -> str:
    """What mhtest runs the guest still holds (none once a job is over): run directories,
    and the tests' directories of a run (/tmp/mhtest.*), the one before a reboot too."""
    listing = "ls -A ~/.cache/mhtest/runs 2>/dev/null; ls -d /tmp/mhtest.* 2>/dev/null; true"
    return guest.run(listing).stdout.strip()


TWICE_PY = """
import os

from mhtest import Test


class Twice(Test):
    timeout = 120

    def test(self):
        with open("/proc/sys/kernel/random/boot_id") as source:
            boot = source.read().strip()
        with open(os.path.join(self.outputdir, "boots"), "a") as out:
            out.write(f"{self.reboot_count} {os.environ['TMT_REBOOT_COUNT']} {boot}\\n")
        self.log.info("run %d on boot %s", self.reboot_count, boot)
        if self.reboot_count < 2:
            self.reboot()
        self.whiteboard = f"done after {self.reboot_count} reboots"
"""

REBOOT_SH = """\
#!/bin/sh
echo "$MHTEST_REBOOT_COUNT $(cat /proc/sys/kernel/random/boot_id)" >> "$MHTEST_TEST_OUTPUTDIR/boots"
if [ "$MHTEST_REBOOT_COUNT" = 0 ]; then
    echo "asking for a reboot"
    tmt-reboot
    echo "tmt-reboot returned: $?"
    exit 1
fi
echo "back after the reboot"
"""

AFTER_SH = """\
#!/bin/sh
cat /proc/sys/kernel/random/boot_id > "$MHTEST_TEST_OUTPUTDIR/boot"
"""


@pytest.mark.timeout(BOOT + 300)
def test_tests_reboot_their_host_and_go_on_after_the_boot(guest, mhtest, write_tests) -> None:
    first_boot = boot_id(guest)
    base = write_tests(
        {"twice.py": TWICE_PY, "reboot.sh": REBOOT_SH, "after.sh": AFTER_SH},
        executable=("reboot.sh", "after.sh"),
    )
    refs = [str(base / name) for name in ("twice.py", "reboot.sh", "after.sh")]
    hosts = ["--hosts", ALIAS, "--ssh-config", guest.ssh_config, "--max-parallel", "1"]
    run = mhtest("run", *refs, *hosts, timeout=BOOT + 240)
    assert run.code == 0, run
    twice = run.result("twice.py:Twice.test")
    assert twice["status"] == "PASS" and twice["reboots"] == 2, twice
    assert twice["whiteboard"] == "done after 2 reboots"
    lines = [
        line.split() for line in Path(twice["logdir"], "data", "boots").read_text().splitlines()
    ]
    assert [(line[0], line[1]) for line in lines] == [("0", "0"), ("1", "1"), ("2", "2")], lines
    boots = [line[2] for line in lines]
    assert len(set(boots)) == 3 and boots[0] == first_boot, boots
    log = Path(twice["logdir"], "debug.log").read_text()
    assert "asking for reboot 1 of the host" in log and "asking for reboot 2 of the host" in log
    assert log.count("START ") == 3 and "running again after reboot 2 of its host" in log, log

    simple = run.result("reboot.sh")
    assert simple["status"] == "PASS" and simple["reboots"] == 1, simple
    marks = Path(simple["logdir"], "data", "boots").read_text().split()
    assert marks[0] == "0" and marks[2] == "1" and marks[1] == boots[2] and marks[3] != marks[1]
    assert "back after the reboot" in Path(simple["logdir"], "stdout").read_text()
    assert "tmt-reboot returned" not in Path(simple["logdir"], "stdout").read_text()

    after = run.result("after.sh")
    assert after["status"] == "PASS", after
    assert Path(after["logdir"], "data", "boot").read_text().strip() == marks[3]
    assert boot_id(guest) == marks[3]  # no reboot after the last one asked for
    console = run.stdout
    assert f"REBOOT     : t/twice.py:Twice.test [{ALIAS}]: reboot 2," in console, console
    assert f"{ALIAS}]: PASS" in console and "after 2 reboots" in console, console
    assert runs_left(guest) == ""


PAIR_PY = """
import os

from mhtest import MultiHostTest, Test


class Pair(MultiHostTest):
    timeout = 400

    def test(self):
        self.run_workers([self.worker("pair.py:Side.test", h) for h in self.hosts])


class Side(Test):
    \"\"\":mhtest: worker\"\"\"

    timeout = 300

    def test(self):
        me = os.environ["MHTEST_WORKER"]
        if self.reboot_count == 0:
            self.sync.post("boot-before", open("/proc/sys/kernel/random/boot_id").read())
            self.sync.barrier("one", timeout=120)
            if me != "local":
                self.reboot()
        self.sync.barrier("two", timeout=240)
        seen = self.sync.exchange("after", self.reboot_count)
        self.log.info("met after the reboot: %s", seen)
        assert seen == {"local": 0, "GUEST": 1}, seen
"""


@pytest.mark.timeout(BOOT + 300)
def test_worker_whose_host_reboots_between_barriers_passes(guest, mhtest, write_tests) -> None:
    base = write_tests({"pair.py": PAIR_PY.replace("GUEST", ALIAS)})
    hosts = ["--hosts", f"{ALIAS},local", "--ssh-config", guest.ssh_config]
    run = mhtest("run", f"{base}/pair.py:Pair.test", *hosts, timeout=BOOT + 240)
    assert run.code == 0, run
    pair = run.result("pair.py:Pair.test")
    assert pair["status"] == "PASS", pair
    children = {c["name"]: c for c in pair["children"]}
    assert {n: c["status"] for n, c in children.items()} == {ALIAS: "PASS", "local": "PASS"}
    rebooted = Path(children[ALIAS]["logdir"], "debug.log").read_text()
    assert "running again after reboot 1 of its host" in rebooted
    assert rebooted.count("met after the reboot") == 1
    assert runs_left(guest) == ""


CONTROL_SRV = """
host = hosts.create_host(machines[0])
at = autotest.Autotest(host)
before = host.get_boot_id()
at.run_test("boot_id", tag="before")
host.reboot()
after = host.get_boot_id()
assert after != before, (before, after)
job.record("GOOD", machines[0], "reboot", f"boot {before} -> {after}")
at.run_test("boot_id", tag="after")
"""

BOOT_ID_TEST = """
from mhtest import Test


class BootId(Test):
    def test(self):
        with open("/proc/sys/kernel/random/boot_id") as source:
            self.whiteboard = source.read().strip()
"""


@pytest.mark.timeout(BOOT + 300)
def test_control_file_reboots_between_client_tests(guest, mhtest, write_tests) -> None:
    base = write_tests({"reboot.srv": CONTROL_SRV, "boot_id/boot_id.py": BOOT_ID_TEST})
    machines = ["-m", ALIAS, "--ssh-config", guest.ssh_config]
    run = mhtest("run", str(base / "reboot.srv"), *machines, timeout=BOOT + 240)
    assert run.code == 0, run
    results = json.loads((run.job_dir / "results.json").read_text())["tests"]
    by_name = {r["name"].split("/", 1)[-1]: r for r in results}
    before = next(r for n, r in by_name.items() if n.endswith("boot_id.before"))
    after = next(r for n, r in by_name.items() if n.endswith("boot_id.after"))
    assert before["status"] == after["status"] == "PASS", results
    assert before["whiteboard"] and after["whiteboard"]
    assert before["whiteboard"] != after["whiteboard"]
    reboot = next(r for n, r in by_name.items() if n.endswith("reboot"))
    assert reboot["status"] == "PASS", reboot
    assert f"boot {before['whiteboard']} -> {after['whiteboard']}" in json.dumps(reboot), reboot


ONCE_PY = """
import os

from mhtest import Test


class Once(Test):
    def test(self):
        with open(os.path.join(self.outputdir, "run-%d" % self.reboot_count), "w") as out:
            out.write("made before the reboot")
        self.reboot()
"""


@pytest.mark.timeout(BOOT + 300)
def test_ctrl_c_while_the_host_reboots_keeps_the_results_so_far(guest, write_tests, tmp_path):
    import signal
    import subprocess
    import time

    from .conftest import mhtest_command

    base = write_tests({"once.py": ONCE_PY})
    results = tmp_path / "results"
    args = ["run", str(base / "once.py"), "--hosts", ALIAS, "--ssh-config", guest.ssh_config]
    proc = subprocess.Popen(
        mhtest_command(args, results),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = []
        for line in proc.stdout:  # (the test's own timeout bounds this)
            seen.append(line)
            if line.startswith("REBOOT     :"):
                break
        assert seen and seen[-1].startswith("REBOOT"), seen
        time.sleep(1)  # the host is going down now
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 9, (out, err)  # exitcodes.INTERRUPTED | TESTS_FAIL
    assert "ERROR" not in err, err
    job = json.loads((results / "latest" / "results.json").read_text())
    (result,) = job["tests"]
    assert result["status"] == "INTERRUPT", result
    logdir = Path(result["logdir"])
    assert (logdir / "data" / "run-0").read_text() == "made before the reboot"
    assert "asking for reboot 1 of the host" in (logdir / "debug.log").read_text()
    assert guest.wait_up(BOOT)  # (rebooted or not, the guest is there for what follows)
