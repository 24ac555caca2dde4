"""MultihostMigration workers, one process per "host", meeting on a real sync server.

Each worker runs as the multi-host runner runs one (mhtest.virt.testing, through the
dispatcher): a real test in its own process, setUp and tearDown included, the params
``host``/``hosts``/``host_address`` plus the user's, and a SyncClient named after the host.
The destination listens on its own loopback address (127.0.0.3), as a second host would.
tests/functional/test_migration.py runs the same through `mhtest run`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from mhtest.virt import testing
from mhtest.virt.migration import MigrationData, MultihostMigration, parse_settings
from mhtest.virt.qemu import VMConfig

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None,
    reason="qemu-system-x86_64 not installed (apt-get install qemu-system-x86)",
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tests" / "migration.py"


def userfaultfd_allowed() -> bool:
    """Whether this user may use userfaultfd, which QEMU's postcopy needs."""
    if os.geteuid() == 0 or os.access("/dev/userfaultfd", os.R_OK | os.W_OK):
        return True
    try:
        return Path("/proc/sys/vm/unprivileged_userfaultfd").read_text().strip() == "1"
    except OSError:  # a kernel older than 5.2 has no such switch: everyone may
        return True


def run_workers(
    tmp_path: Path,
    cls_name: str,
    params: dict,
    source_file: Path = Path(__file__),
    timeout: float = 120,
) -> dict[str, dict]:
    return testing.run_workers(tmp_path, source_file, cls_name, params, timeout=timeout)


def assert_no_qemu_left(tmp_path: Path) -> None:
    assert testing.wait_no_qemu(tmp_path) == []


# -- scenarios (run in the worker processes) -------------------------------------------------


class ThreeRoundTrips(MultihostMigration):
    def migration_scenario(self) -> None:
        h1, h2 = self.hosts
        for _ in range(3):
            self.migrate_wait(["vm1"], h1, h2, check_work=self.check_memory_pattern)
            self.migrate_wait(["vm1"], h2, h1, check_work=self.check_memory_pattern)
        if self.host == h1:
            assert self.get_vm("vm1").status() == "running"


class TwoAtOnce(MultihostMigration):
    def migration_scenario(self) -> None:
        h1, h2 = self.hosts
        first = self.migrate(["vm1"], h1, h2, check_work=self.check_memory_pattern)
        second = self.migrate(["vm2"], h1, h2, check_work=self.check_memory_pattern)
        second.join(60)
        first.join(60)


class CancelMidway(MultihostMigration):
    def migrate_vms_src(self, mig_data: MigrationData) -> None:
        vm = mig_data.vm("vm1")
        vm.migrate(f"tcp:{mig_data.dst_address}:{mig_data.ports['vm1']}")
        deadline = time.monotonic() + 10
        while vm.query_migrate().get("ram", {}).get("transferred", 0) < 100_000:
            assert time.monotonic() < deadline, "migration did not start"
            time.sleep(0.05)
        vm.migrate_cancel()
        mig_data.results["vm1"] = {"status": vm.wait_migration(10)["status"]}

    def migration_scenario(self) -> None:
        h1, h2 = self.hosts
        data = self.migrate_wait(
            ["vm1"],
            h1,
            h2,
            check_work=self.check_memory_pattern,  # not called: nothing arrived
            params_append={"migrate_parameters": "max-bandwidth=1048576"},
        )
        assert data.results["vm1"]["status"] == "cancelled"
        if self.host == h1:  # the VM kept running where it was, RAM intact
            vm = self.get_vm("vm1")
            assert vm.status() == "running"
            data.vm_objects = {"vm1": vm}
            self.check_memory_pattern(data)
        else:
            assert "vm1" not in self._state()["vms"]


class SettingsReachBothEnds(MultihostMigration):
    """Capabilities and parameters from params are set on both QEMUs; postcopy switches over."""

    def start_work(self, mig_data: MigrationData) -> None:
        self._assert_settings(mig_data.vm("vm1"))

    def check_work(self, mig_data: MigrationData) -> None:
        self._assert_settings(mig_data.vm("vm1"))
        self.check_memory_pattern(mig_data)

    @staticmethod
    def _assert_settings(vm) -> None:
        caps = {c["capability"]: c["state"] for c in vm.cmd("query-migrate-capabilities")}
        assert caps["xbzrle"] and caps["auto-converge"] and caps["postcopy-ram"], caps
        assert vm.cmd("query-migrate-parameters")["downtime-limit"] == 400

    def migrate_vms_src(self, mig_data: MigrationData) -> None:
        mark = mig_data.vm("vm1").event_mark()
        super().migrate_vms_src(mig_data)
        seen = [
            e["data"]["status"]
            for e in mig_data.vm("vm1").qmp.events(mark)
            if e["event"] == "MIGRATION"
        ]
        assert "postcopy-active" in seen, seen

    def migration_scenario(self) -> None:
        h1, h2 = self.hosts
        self.migrate_wait("vm1", h1, h2, start_work=self.start_work, check_work=self.check_work)


class PausedStaysPaused(MultihostMigration):
    def pause(self, mig_data: MigrationData) -> None:
        mig_data.vm("vm1").stop()

    def check_paused(self, mig_data: MigrationData) -> None:
        assert mig_data.vm("vm1").status() == "paused"
        self.check_memory_pattern(mig_data)

    def migration_scenario(self) -> None:
        h1, h2 = self.hosts
        self.migrate_wait("vm1", h1, h2, start_work=self.pause, check_work=self.check_paused)


class DestinationCannotStart(MultihostMigration):
    def vm_config(self, name: str) -> VMConfig:
        config = super().vm_config(name)
        if self.host == self.hosts[1]:
            config.extra_args.append("-no-such-option")
        return config

    def migration_scenario(self) -> None:
        self.migrate_wait(["vm1"], self.hosts[0], self.hosts[1])


class DestinationDiesBeforeThePort(MultihostMigration):
    def vm_config(self, name: str) -> VMConfig:
        if self.host == self.hosts[1]:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().vm_config(name)

    def migration_scenario(self) -> None:
        self.migrate_wait(["vm1"], self.hosts[0], self.hosts[1])


class DestinationDies(MultihostMigration):
    def migrate_vms_dest(self, mig_data: MigrationData) -> None:
        time.sleep(0.5)  # the source is sending by now (at 1 MiB/s it cannot finish)
        os.kill(os.getpid(), signal.SIGKILL)

    def migration_scenario(self) -> None:
        self.migrate_wait(
            ["vm1"],
            self.hosts[0],
            self.hosts[1],
            params_append={"migrate_parameters": {"max-bandwidth": 1 << 20}},
        )


# -- the tests -------------------------------------------------------------------------------


def test_parse_settings_forms() -> None:
    assert parse_settings("xbzrle auto-converge") == {"xbzrle": True, "auto-converge": True}
    assert parse_settings("max-bandwidth=1048576,x=off") == {"max-bandwidth": 1048576, "x": False}
    assert parse_settings({"downtime-limit": 300}) == {"downtime-limit": 300}
    assert parse_settings(None) == {}


@pytest.mark.timeout(120)
def test_ping_pong_three_round_trips_memory_survives(tmp_path: Path) -> None:
    results = run_workers(tmp_path, "ThreeRoundTrips", {"vms": "vm1", "mem": 128})
    assert results["h1"]["status"] == "PASS", results["h1"]
    assert results["h2"]["status"] == "PASS", results["h2"]
    records = json.loads(results["h1"]["whiteboard"])["migrations"]
    assert [(r["src"], r["dst"]) for r in records] == [("h1", "h2"), ("h2", "h1")] * 3
    for r in records:
        assert r["status"] == "completed" and r["vm"] == "vm1"
        assert r["total-time"] > 0 and r["downtime"] >= 0 and r["transferred"] > 4 << 20
    assert_no_qemu_left(tmp_path)


@pytest.mark.timeout(120)
def test_two_migrations_at_once(tmp_path: Path) -> None:
    results = run_workers(tmp_path, "TwoAtOnce", {"vms": "vm1,vm2", "mem": 64})
    assert [r["status"] for r in results.values()] == ["PASS", "PASS"], results
    records = json.loads(results["h2"]["whiteboard"])["migrations"]
    assert sorted(r["vm"] for r in records) == ["vm1", "vm2"]
    assert_no_qemu_left(tmp_path)


@pytest.mark.timeout(120)
@pytest.mark.skipif(
    not userfaultfd_allowed(),
    reason="postcopy needs userfaultfd: root, or sysctl vm.unprivileged_userfaultfd=1",
)
def test_capabilities_parameters_and_postcopy(tmp_path: Path) -> None:
    params = {
        "vms": "vm1",
        "mem": 128,
        "migrate_capabilities": "xbzrle auto-converge",
        "migrate_parameters": "downtime-limit=400,max-bandwidth=8388608",
        "postcopy": "yes",
    }
    results = run_workers(tmp_path, "SettingsReachBothEnds", params)
    assert [r["status"] for r in results.values()] == ["PASS", "PASS"], results
    assert_no_qemu_left(tmp_path)


@pytest.mark.timeout(120)
def test_paused_vm_arrives_paused(tmp_path: Path) -> None:
    results = run_workers(tmp_path, "PausedStaysPaused", {"vms": "vm1", "mem": 64})
    assert [r["status"] for r in results.values()] == ["PASS", "PASS"], results
    records = json.loads(results["h2"]["whiteboard"])["migrations"]
    assert records[0]["source-running"] is False
    assert_no_qemu_left(tmp_path)


@pytest.mark.timeout(120)
def test_cancel_midway_keeps_vm_on_source(tmp_path: Path) -> None:
    results = run_workers(tmp_path, "CancelMidway", {"vms": "vm1", "mem": 128})
    assert [r["status"] for r in results.values()] == ["PASS", "PASS"], results
    assert_no_qemu_left(tmp_path)


@pytest.mark.timeout(120)
def test_destination_cannot_start_both_fail_fast(tmp_path: Path) -> None:
    results = run_workers(tmp_path, "DestinationCannotStart", {"vms": "vm1", "mem": 64})
    for host in ("h1", "h2"):
        r = results[host]
        assert r["status"] == "FAIL", r
        assert "failed on h2" in r["error"] and "vm1" in r["error"], r
        assert "-no-such-option" in r["error"], r  # QEMU's own words
        assert r["elapsed"] < 15, r
    assert_no_qemu_left(tmp_path)


@pytest.mark.timeout(120)
def test_destination_dies_source_fails_fast(tmp_path: Path) -> None:
    started = time.monotonic()
    results = run_workers(tmp_path, "DestinationDies", {"vms": "vm1", "mem": 128})
    assert results["h2"]["status"] == "ERROR"
    assert "killed by signal 9" in results["h2"]["error"]
    r = results["h1"]
    assert r["status"] == "FAIL", r
    assert "vm1" in r["error"] and "h1->h2" in r["error"], r
    assert r["elapsed"] < 15 and time.monotonic() - started < 30, r
    assert_no_qemu_left(tmp_path)


@pytest.mark.timeout(120)
def test_port_never_arrives_source_fails_fast(tmp_path: Path) -> None:
    results = run_workers(tmp_path, "DestinationDiesBeforeThePort", {"vms": "vm1", "mem": 64})
    assert results["h2"]["status"] == "ERROR"
    assert "killed by signal 9" in results["h2"]["error"]
    r = results["h1"]
    assert r["status"] == "FAIL", r
    assert "lost h2 at 'ready'" in r["error"] and "vm1" in r["error"], r
    assert r["elapsed"] < 15, r
    assert_no_qemu_left(tmp_path)


@pytest.mark.timeout(120)
def test_example_ping_pong_idle_pattern(tmp_path: Path) -> None:
    results = run_workers(tmp_path, "PingPongMigration", {"vms": "vm1"}, source_file=EXAMPLE)
    assert [r["status"] for r in results.values()] == ["PASS", "PASS"], results
    assert_no_qemu_left(tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_example_ping_pong_work_survives(tmp_path: Path) -> None:
    """The example with the busybox guest: a dd started over the console survives both ways."""
    from mhtest.virt.guest import linux_guest

    linux_guest()  # build and probe once here, not in both workers at the same time
    params = {"vms": "vm1", "guest": "linux", "login_timeout": 180}
    results = run_workers(tmp_path, "PingPongMigration", params, EXAMPLE, timeout=500)
    assert [r["status"] for r in results.values()] == ["PASS", "PASS"], results
    records = json.loads(results["h1"]["whiteboard"])["migrations"]
    assert [r["status"] for r in records] == ["completed", "completed"]
    assert_no_qemu_left(tmp_path)
