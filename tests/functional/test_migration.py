"""Live migration through the real CLI: `mhtest run` of MultihostMigration tests.

On two local workers, and on two real sshd hosts on loopback (127.0.0.2, 127.0.0.3...): the
destination QEMU listens on its own host's address, the port travels through mhtest's sync,
and no QEMU is left behind (checked by the command lines naming this test's results dir).
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from mhtest.virt.testing import qemu_pids, wait_no_qemu

from .conftest import running_mhtest, wait_for
from .test_multihost import host_args

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "tests" / "migration.py")

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None,
    reason="qemu-system-x86_64 not installed (apt-get install qemu-system-x86)",
)

SCENARIOS = """
import time
from mhtest.virt.migration import MultihostMigration


class ThreeRoundTrips(MultihostMigration):
    def migration_scenario(self):
        h1, h2 = self.hosts
        for _ in range(3):
            self.migrate_wait("vm1", h1, h2, check_work=self.check_memory_pattern)
            self.migrate_wait("vm1", h2, h1, check_work=self.check_memory_pattern)


class CancelMidway(MultihostMigration):
    def migrate_vms_src(self, mig_data):
        if not mig_data.params.get("cancel"):
            return super().migrate_vms_src(mig_data)
        vm = mig_data.vm("vm1")
        vm.migrate(f"tcp:{mig_data.dst_address}:{mig_data.ports['vm1']}")
        deadline = time.monotonic() + 10
        while vm.query_migrate().get("ram", {}).get("transferred", 0) < 100_000:
            assert time.monotonic() < deadline, "the migration did not start"
            time.sleep(0.05)
        vm.migrate_cancel()
        mig_data.results["vm1"] = {"status": vm.wait_migration(10)["status"]}

    def migration_scenario(self):
        h1, h2 = self.hosts
        slow = {"cancel": True, "migrate_parameters": "max-bandwidth=1048576"}
        data = self.migrate_wait("vm1", h1, h2, params_append=slow)
        assert data.results["vm1"]["status"] == "cancelled", data.results
        if self.host == h1:
            assert self.get_vm("vm1").status() == "running"
        # and it still migrates afterwards, at full speed again
        fast = {"migrate_parameters": "max-bandwidth=100000000000"}
        self.migrate_wait("vm1", h1, h2, check_work=self.check_memory_pattern, params_append=fast)


class SlowMigration(MultihostMigration):
    # capped at 1 MiB/s: the 8 MiB pattern keeps it busy for a while

    def migration_scenario(self):
        cap = {"migrate_parameters": "max-bandwidth=1048576"}
        self.migrate_wait("vm1", self.hosts[0], self.hosts[1], params_append=cap)


class DestinationCannotStart(MultihostMigration):
    def vm_config(self, name):
        config = super().vm_config(name)
        if self.host == self.hosts[1]:
            config.extra_args.append("-no-such-option")
        return config

    def migration_scenario(self):
        self.migrate_wait("vm1", self.hosts[0], self.hosts[1])
"""


def assert_no_qemu_left(path: Path) -> None:
    assert wait_no_qemu(path) == []


def migrations(result: dict) -> list[dict]:
    return json.loads(result["whiteboard"])["migrations"]


@pytest.mark.timeout(120)
def test_example_on_local_workers(mhtest, tmp_path) -> None:
    run = mhtest("run", EXAMPLE, "-p", "vms=vm1,vm2", timeout=100)
    assert run.code == 0, run
    result = run.result("migration.py:PingPongMigration.test")
    assert [c["name"] for c in result["children"]] == ["local-1", "local-2"]
    records = migrations(result)
    assert [(r["vm"], r["src"], r["dst"]) for r in records] == [
        ("vm1", "local-1", "local-2"),
        ("vm2", "local-1", "local-2"),
        ("vm1", "local-2", "local-1"),
        ("vm2", "local-2", "local-1"),
    ]
    for r in records:
        assert r["status"] == "completed" and r["total-time"] > 0 and r["transferred"] > 0
    assert_no_qemu_left(tmp_path)


@pytest.mark.timeout(200)
def test_example_on_two_sshd_hosts(mhtest, sshd_hosts, tmp_path) -> None:
    hosts = sshd_hosts(2)
    run = mhtest("run", EXAMPLE, *host_args(hosts), timeout=180)
    assert run.code == 0, run
    result = run.result("migration.py:PingPongMigration.test")
    names = [h.alias for h in hosts]
    assert [(c["name"], c["host"]) for c in result["children"]] == list(zip(names, names))
    records = migrations(result)
    assert [(r["src"], r["dst"], r["status"]) for r in records] == [
        (names[0], names[1], "completed"),
        (names[1], names[0], "completed"),
    ]
    # Each destination listened on its own host's address, on a port QEMU picked.
    test_dir = Path(result["logdir"])
    for host, worker_dir in zip(hosts, sorted((test_dir / "workers").iterdir())):
        log = (worker_dir / "debug.log").read_text()
        assert f'migrate-incoming {{"uri": "tcp:{host.address}:0"}}' in log
    assert_no_qemu_left(tmp_path)


@pytest.mark.timeout(300)
def test_round_trips_cancel_and_failure_on_sshd_hosts(
    mhtest, sshd_hosts, write_tests, tmp_path
) -> None:
    hosts = sshd_hosts(2)
    names = [h.alias for h in hosts]
    base = write_tests({"scenarios.py": SCENARIOS})
    run = mhtest("run", str(base / "scenarios.py"), *host_args(hosts), timeout=280)
    assert run.code == 1, run  # DestinationCannotStart fails, the others pass
    trips = run.result("scenarios.py:ThreeRoundTrips.test")
    assert trips["status"] == "PASS", run
    assert [(r["src"], r["dst"]) for r in migrations(trips)] == [
        tuple(names),
        tuple(names[::-1]),
    ] * 3
    cancel = run.result("scenarios.py:CancelMidway.test")
    assert cancel["status"] == "PASS", run
    assert [r["status"] for r in migrations(cancel)] == ["cancelled", "completed"]

    failed = run.result("scenarios.py:DestinationCannotStart.test")
    assert failed["status"] == "FAIL"
    reason = failed["fail_reason"]
    # Which host, which VM, QEMU's own words; both workers stopped at once.
    assert f"failed on {names[1]}" in reason and "VM vm1" in reason, reason
    assert "-no-such-option: invalid option" in reason, reason
    for child in failed["children"]:
        assert child["status"] == "FAIL", child
        assert child["end"] - child["start"] < 15, child
    assert_no_qemu_left(tmp_path)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_during_migration_leaves_no_qemu(write_tests, tmp_path, signum) -> None:
    base = write_tests({"scenarios.py": SCENARIOS})
    args = ["run", f"{base / 'scenarios.py'}:SlowMigration.test"]
    with running_mhtest(args, tmp_path, tmp_path / "results") as proc:
        # both QEMUs are up (source and destination): the migration is under way
        wait_for(lambda: len(qemu_pids(tmp_path)) == 2, timeout=60, what="two QEMUs")
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, (out, err)
    assert_no_qemu_left(tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_example_work_survives_on_two_sshd_hosts(mhtest, sshd_hosts, tmp_path) -> None:
    """The busybox guest: a dd started over the serial console survives both migrations."""
    from mhtest.virt.guest import linux_guest

    linux_guest()  # build and probe once here, not in both workers at the same time
    hosts = sshd_hosts(2)
    params = ["-p", "guest=linux", "-p", "login_timeout=180"]
    run = mhtest("run", EXAMPLE, *params, *host_args(hosts), timeout=560)
    assert run.code == 0, run
    result = run.result("migration.py:PingPongMigration.test")
    assert [r["status"] for r in migrations(result)] == ["completed", "completed"]
    assert_no_qemu_left(tmp_path)
