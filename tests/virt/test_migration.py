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

import mhtest
from mhtest.virt import testing
from mhtest.virt.migration import MigrationData, MigrationFailed, MultihostMigration
from mhtest.virt.migration_data import MigrationSettings, parse_settings, parse_size
from mhtest.virt.qemu import VMConfig

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None,
    reason="qemu-system-x86_64 not installed (apt-get install qemu-system-x86)",
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tests" / "migration" / "basic.py"


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


def run_passing(tmp_path: Path, cls_name: str, params: dict) -> dict[str, dict]:
    """run_workers() of a scenario that must pass on both hosts and leave no QEMU."""
    results = run_workers(tmp_path, cls_name, params)
    assert [r["status"] for r in results.values()] == ["PASS", "PASS"], results
    assert_no_qemu_left(tmp_path)
    return results


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
    """A migrate_vms_src of its own that cancels: check_work sees the VM that stayed."""

    def migrate_vms_src(self, mig_data: MigrationData) -> None:
        vm = mig_data.vm("vm1")
        vm.migrate(mig_data.uris["vm1"])
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
            check_work=self.check_memory_pattern,  # the source's RAM: the VM stayed there
            params_append={"migrate_parameters": "max-bandwidth=1048576"},
        )
        assert data.results["vm1"]["status"] == "cancelled"
        if self.host == h1:  # the VM kept running where it was
            assert self.get_vm("vm1").status() == "running"
            assert self.vms_here(data) == [self.get_vm("vm1")]
        else:
            assert "vm1" not in self._state()["vms"] and self.vms_here(data) == []


class SettingsReachBothEnds(MultihostMigration):
    """Capabilities and parameters from params are set on both QEMUs; postcopy switches over."""

    def start_work(self, mig_data: MigrationData) -> None:
        self._assert_settings(mig_data.vm("vm1"))

    def check_work(self, mig_data: MigrationData) -> None:
        if mig_data.is_dst():  # on the source the VM has quit: nothing to ask it
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
        if mig_data.is_dst():
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


class HookOrder(MultihostMigration):
    """Every hook says where it ran; each end checks the order avocado-vt calls them in."""

    def _saw(self, what: str, mig_data: MigrationData) -> None:
        self.calls.append(what)
        assert mig_data.hosts == self.hosts and mig_data.mig_id == "mig1", mig_data
        assert mig_data.vms_name == ["vm1"] and mig_data.params["vms"] == "vm1"
        assert mig_data.is_src() == (self.host == self.master_id()) != mig_data.is_dst()

    def prepare_for_migration(self, mig_data, migration_mode):
        self._saw(f"prepare:{migration_mode}", mig_data)
        super().prepare_for_migration(mig_data, migration_mode)
        assert [vm.name for vm in mig_data.vms] == ["vm1"] and mig_data.vm("vm1").is_alive()
        if mig_data.is_dst():
            assert mig_data.vm_ports["vm1"] > 0

    def start(self, mig_data):
        self._saw("start_work", mig_data)
        assert mig_data.vm_ports["vm1"] > 0 and mig_data.uris["vm1"].startswith("tcp:127.0.0.3:")

    def before_migration(self, mig_data):
        self._saw("before_migration", mig_data)

    def migrate_vms_src(self, mig_data):
        self._saw("migrate_vms_src", mig_data)
        super().migrate_vms_src(mig_data)

    def post_migration(self, vm, cancel_delay, mig_offline, dsthost, vm_ports, nowait, fd, data):
        self._saw("post_migration", data)
        assert (cancel_delay, mig_offline, dsthost, nowait, fd) == (None, False, "h2", False, None)
        assert vm.query_migrate()["status"] == "completed" and vm_ports == data.vm_ports

    def migrate_vms_dest(self, mig_data):
        self._saw("migrate_vms_dest", mig_data)

    def check_vms_src(self, mig_data):
        self._saw("check_vms_src", mig_data)
        assert not mig_data.vm("vm1").is_alive() and self.vms_here(mig_data) == []

    def check_vms_dst(self, mig_data):
        self._saw("check_vms_dst", mig_data)
        super().check_vms_dst(mig_data)

    def check(self, mig_data):
        self._saw("check_work", mig_data)
        assert mig_data.results["vm1"]["status"] == "completed"

    def migration_scenario(self) -> None:
        self.calls: list[str] = []
        h1, h2 = self.hosts
        assert self.master_id() == h1
        self._hosts_barrier(self.hosts, {"src": h1, "dst": h2, "type": "hooks"}, "go", 60)
        self.migrate_wait("vm1", h1, h2, start_work=self.start, check_work=self.check)
        if self.host == h1:
            expected = ["prepare:None", "start_work", "before_migration", "migrate_vms_src"]
            expected += ["post_migration", "check_vms_src", "check_work"]
        else:
            expected = ["prepare:tcp", "before_migration", "migrate_vms_dest", "check_vms_dst"]
            expected += ["check_work"]
        assert self.calls == expected, self.calls


class StartWorkOnPausedVM(MultihostMigration):
    def migration_scenario(self) -> None:
        self.migrate_wait(
            "vm1", *self.hosts, start_work=print, params_append={"paused_after_start_vm": "yes"}
        )


class OfflineAndPausedStart(PausedStaysPaused):
    """paused_after_start_vm: the VM waits for `cont`; mig_offline: it arrives paused."""

    def before_migration(self, mig_data: MigrationData) -> None:
        if mig_data.is_src() and mig_data.mig_id == "mig1":
            assert mig_data.vm("vm1").status() == "running"  # resumed just before

    def migration_scenario(self) -> None:
        h1, h2 = self.hosts
        if self.host == h1:
            vm = self._start_vm("vm1", "mig0", incoming=False, paused=True)
            assert vm.status() == "prelaunch"
        params = {"paused_after_start_vm": "yes", "start_migration_timeout": 0.5}
        params["mig_offline"] = "yes"
        data = self.migrate_wait("vm1", h1, h2, check_work=self.check_paused, params_append=params)
        if self.host == h2:  # the destination saw it arrive
            assert data.results["vm1"]["arrived"] == "paused"


class OfflineCancelled(MultihostMigration):
    """An offline migration cancelled: the VM runs again where it was (as avocado-vt does)."""

    def migration_scenario(self) -> None:
        h1, h2 = self.hosts
        params = {"mig_offline": "yes", "cancel_delay": 0.5, "mig_speed": "1M"}
        data = self.migrate_wait("vm1", h1, h2, params_append=params)
        assert data.results["vm1"]["status"] == "cancelled"
        if self.host == h1:
            assert self.get_vm("vm1").status() == "running"


class ExecRoundTrip(MultihostMigration):
    def migration_scenario(self) -> None:
        h1, h2 = self.hosts
        for src, dst in ((h1, h2), (h2, h1)):
            data = self.migrate_wait("vm1", src, dst, check_work=self.check_memory_pattern)
            if self.host == src:
                assert data.uris["vm1"].startswith("exec:cat > "), data.uris


class DestinationBlocked(MultihostMigration):
    """The destination QEMU is stopped for good: the source gives up at migration_timeout."""

    def migrate_vms_dest(self, mig_data: MigrationData) -> None:
        vm = mig_data.vm("vm1")
        vm.wait_migration_status(("active",), timeout=30)
        os.kill(vm.pid, signal.SIGSTOP)

    def migration_scenario(self) -> None:
        h1, h2 = self.hosts
        slow = {"mig_speed": "1M", "migration_timeout": 4}
        try:
            self.migrate_wait("vm1", h1, h2, params_append=slow)
        except MigrationFailed as exc:
            self.whiteboard = json.dumps({"reason": str(exc)})
            if self.host == h1:
                assert self.get_vm("vm1").status() == "running"
            return
        raise AssertionError("the migration completed to a stopped destination")


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
    assert records[0]["arrived"] == "paused"
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
    results = run_workers(tmp_path, "BasicMigration", {"vms": "vm1"}, source_file=EXAMPLE)
    assert [r["status"] for r in results.values()] == ["PASS", "PASS"], results
    assert_no_qemu_left(tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_example_ping_pong_work_survives(tmp_path: Path) -> None:
    """The example with the busybox guest: a dd started over the console survives both ways."""
    from mhtest.virt.guest import linux_guest

    linux_guest()  # build and probe once here, not in both workers at the same time
    params = {"vms": "vm1", "guest": "linux", "login_timeout": 180}
    results = run_workers(tmp_path, "BasicMigration", params, EXAMPLE, timeout=500)
    assert [r["status"] for r in results.values()] == ["PASS", "PASS"], results
    records = json.loads(results["h1"]["whiteboard"])["migrations"]
    assert [r["status"] for r in records] == ["completed", "completed"]
    assert_no_qemu_left(tmp_path)


def test_settings_from_avocado_vt_params() -> None:
    s = MigrationSettings.from_params(
        {
            "mig_speed": "100M",
            "max_downtime": 0.5,
            "cancel_delay": "10",
            "not_wait_for_migration": "yes",
            "mig_offline": "no",
            "migration_protocol": "exec",
            "migration_timeout": "240",
            "mig_timeout": 30,
        }
    )
    assert s.parameters == {"max-bandwidth": 100 << 20, "downtime-limit": 500}
    assert (s.cancel_delay, s.not_wait_for_migration, s.offline) == (10.0, True, False)
    assert (s.protocol, s.timeout) == ("exec", 240.0)
    # QEMU's own names win over avocado-vt's; nothing set: QEMU's defaults, 300 s
    s = MigrationSettings.from_params(
        {"max_downtime": 1, "downtime-limit": 200, "migrate_parameters": "max-bandwidth=5"}
    )
    assert s.parameters == {"downtime-limit": 200, "max-bandwidth": 5}
    assert MigrationSettings.from_params({"cancel_delay": None, "mig_timeout": 7}).timeout == 7
    assert parse_size("1G") == 1 << 30 and parse_size(4096) == 4096
    assert parse_size("512KiB") == 512 << 10
    for bad in ({"migration_protocol": "rdma"}, {"mig_speed": "fast"}, {"cancel_delay": "soon"}):
        with pytest.raises(mhtest.TestError, match=next(iter(bad))):
            MigrationSettings.from_params(bad)


@pytest.mark.timeout(120)
def test_hooks_run_where_avocado_vt_runs_them(tmp_path: Path) -> None:
    run_passing(tmp_path, "HookOrder", {"vms": "vm1", "mem": 64})


@pytest.mark.timeout(60)
def test_start_work_on_a_paused_start_is_refused(tmp_path: Path) -> None:
    results = run_workers(tmp_path, "StartWorkOnPausedVM", {"vms": "vm1"})
    for r in results.values():
        assert r["status"] == "ERROR" and "paused_after_start_vm=yes" in r["error"], r
    assert_no_qemu_left(tmp_path)


@pytest.mark.timeout(120)
def test_paused_start_and_offline_migration_arrive_paused(tmp_path: Path) -> None:
    run_passing(tmp_path, "OfflineAndPausedStart", {"vms": "vm1", "mem": 64})


@pytest.mark.timeout(120)
def test_offline_migration_cancelled_runs_again_on_the_source(tmp_path: Path) -> None:
    run_passing(tmp_path, "OfflineCancelled", {"vms": "vm1", "mem": 64})


@pytest.mark.timeout(120)
def test_exec_protocol_between_local_workers(tmp_path: Path) -> None:
    params = {"vms": "vm1", "mem": 64, "migration_protocol": "exec"}
    results = run_passing(tmp_path, "ExecRoundTrip", params)
    records = json.loads(results["h1"]["whiteboard"])["migrations"]
    assert [r["status"] for r in records] == ["completed", "completed"]


@pytest.mark.timeout(120)
def test_blocked_destination_fails_at_migration_timeout(tmp_path: Path) -> None:
    started = time.monotonic()
    results = run_passing(tmp_path, "DestinationBlocked", {"vms": "vm1", "mem": 128})
    for host in ("h1", "h2"):
        reason = json.loads(results[host]["whiteboard"])["reason"]
        assert "failed on h1: VM vm1: migration not completed/failed/cancelled after 4s" in reason
        assert "(migration_timeout); cancelled it: QEMU says cancelled" in reason, reason
    assert time.monotonic() - started < 40  # and the stopped QEMU is gone too
