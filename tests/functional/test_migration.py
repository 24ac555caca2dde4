"""Live migration through the real CLI: `mhtest run` of MultihostMigration tests.

On two local workers, and on two real sshd hosts on loopback (127.0.0.2, 127.0.0.3...): the
destination QEMU listens on its own host's address, the port travels through mhtest's sync,
and no QEMU is left behind: each run tags its QEMUs with ``-p qemu_args=-uuid <fresh uuid>``
and the check looks for that tag in every process's command line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import uuid
from pathlib import Path

import pytest

from mhtest.virt.testing import qemu_pids, wait_no_qemu

from .conftest import MHTEST, Run, mhtest_command, running_mhtest, wait_for
from .test_multihost import descendants, host_args

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tests" / "migration"
EXAMPLE = str(EXAMPLES / "basic.py")

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
        vm.migrate(mig_data.uris["vm1"])
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


def tagged() -> tuple[str, list[str]]:
    """A tag for this run's QEMUs (on any host, whatever their paths) and the -p that sets it."""
    tag = str(uuid.uuid4())
    return tag, ["-p", f"qemu_args=-uuid {tag}"]


def assert_no_qemu_left(tag: str | Path) -> None:
    assert wait_no_qemu(tag) == []


def migrations(result: dict) -> list[dict]:
    return json.loads(result["whiteboard"])["migrations"]


@pytest.mark.timeout(120)
def test_example_on_local_workers(mhtest) -> None:
    tag, tag_args = tagged()
    run = mhtest("run", EXAMPLE, "-p", "vms=vm1,vm2", *tag_args, timeout=100)
    assert run.code == 0, run
    result = run.result("basic.py:BasicMigration.test")
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
    assert_no_qemu_left(tag)


@pytest.mark.timeout(200)
def test_example_on_two_sshd_hosts(mhtest, sshd_hosts) -> None:
    hosts = sshd_hosts(2)
    tag, tag_args = tagged()
    run = mhtest("run", EXAMPLE, *tag_args, *host_args(hosts), timeout=180)
    assert run.code == 0, run
    result = run.result("basic.py:BasicMigration.test")
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
    assert_no_qemu_left(tag)


@pytest.mark.slow  # ~10-30 s; tests/virt/test_migration.py runs the same scenarios unslowed
@pytest.mark.timeout(300)
def test_round_trips_cancel_and_failure_on_sshd_hosts(mhtest, sshd_hosts, write_tests) -> None:
    hosts = sshd_hosts(2)
    names = [h.alias for h in hosts]
    base = write_tests({"scenarios.py": SCENARIOS})
    tag, tag_args = tagged()
    run = mhtest("run", str(base / "scenarios.py"), *tag_args, *host_args(hosts), timeout=280)
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
    assert_no_qemu_left(tag)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_during_migration_leaves_no_qemu(write_tests, tmp_path, signum) -> None:
    base = write_tests({"scenarios.py": SCENARIOS})
    tag, tag_args = tagged()
    args = ["run", f"{base / 'scenarios.py'}:SlowMigration.test", *tag_args]
    with running_mhtest(args, tmp_path, tmp_path / "results") as proc:
        # both QEMUs are up (source and destination): the migration is under way
        wait_for(lambda: len(qemu_pids(tag)) == 2, timeout=60, what="two QEMUs")
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, (out, err)
    assert_no_qemu_left(tag)


@pytest.mark.timeout(150)
def test_destination_host_drops_mid_migration(write_tests, tmp_path) -> None:
    from mhtest.hosts.testing import SshdPool, find_sshd

    if find_sshd() is None:
        pytest.skip("sshd not found: install openssh-server to run tests against real hosts")
    base = write_tests({"scenarios.py": SCENARIOS})
    results = tmp_path / "results"
    with SshdPool(tmp_path / "sshd") as pool:
        hosts = pool.hosts(2)
        tag, tag_args = tagged()
        args = ["run", f"{base / 'scenarios.py'}:SlowMigration.test", *tag_args, *host_args(hosts)]
        with running_mhtest(args, tmp_path, results) as proc:
            wait_for(lambda: len(qemu_pids(tag)) == 2, timeout=90, what="two QEMUs")
            time.sleep(0.5)  # the migration is under way (8 MiB at 1 MiB/s)
            # The destination host drops: its sshd and everything under it, QEMU included.
            victim = hosts[1]
            sessions = descendants(victim.pid)
            pool.stop_host(victim)
            for pid in sessions:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            dropped = time.time()
            out, err = proc.communicate(timeout=90)
    run = Run(mhtest_command(args, results)[len(MHTEST) :], proc.returncode, out, err, results)
    result = run.result("scenarios.py:SlowMigration.test")
    assert result["status"] == "FAIL", run
    source = {c["name"]: c for c in result["children"]}[hosts[0].alias]
    assert source["status"] == "FAIL", source
    assert "vm1" in source["fail_reason"], source
    assert source["end"] - dropped < 15, (source["end"] - dropped, source)
    assert_no_qemu_left(tag)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_example_work_survives_on_two_sshd_hosts(mhtest, sshd_hosts) -> None:
    """The busybox guest: a dd started over the serial console survives both migrations."""
    from mhtest.virt.guest import linux_guest

    linux_guest()  # build and probe once here, not in both workers at the same time
    hosts = sshd_hosts(2)
    tag, tag_args = tagged()
    params = ["-p", "guest=linux", "-p", "login_timeout=180", *tag_args]
    run = mhtest("run", EXAMPLE, *params, *host_args(hosts), timeout=560)
    assert run.code == 0, run
    result = run.result("basic.py:BasicMigration.test")
    assert [r["status"] for r in migrations(result)] == ["completed", "completed"]
    assert_no_qemu_left(tag)


# What each example under examples/tests/migration/ leaves in its whiteboard: per migration,
# (source index, destination index, status); the hosts are numbered in --hosts order.
EXAMPLE_MIGRATIONS = {
    "basic.py:BasicMigration": [(0, 1, "completed"), (1, 0, "completed")],
    "pingpong.py:PingPong": [(0, 1, "completed"), (1, 0, "completed")] * 2,
    "cancel.py:CancelThenMigrate": [(0, 1, "cancelled"), (0, 1, "completed")],
    "speed_downtime.py:SpeedAndDowntime": [(0, 1, "completed")],
    "pause_during.py:PauseDuringMigration": [(0, 1, "completed"), (1, 0, "completed")],
    "dst_stopped.py:DestinationStopped": [(0, 1, "completed")],
    "dst_killed.py:DestinationKilled": [(0, 1, "failed"), (0, 1, "completed")],
    "reset_loop.py:ResetLoopDuringMigration": [(0, 1, "completed")],
}


@pytest.mark.slow  # every example in turn: ~1-2 min
@pytest.mark.timeout(900)
def test_migration_examples_on_two_sshd_hosts(mhtest, warm_hosts) -> None:
    """The examples as a user runs them: the whole directory, on two real sshd hosts."""
    hosts = warm_hosts(2)
    names = [h.alias for h in hosts]
    tag, tag_args = tagged()
    args = ["run", str(EXAMPLES), "--max-parallel", "1", *tag_args, *host_args(hosts)]
    run = mhtest(*args, timeout=850)
    ran = {r["ref"].split("/")[-1].rsplit(".", 1)[0] for r in run.results()["tests"]}
    assert ran == set(EXAMPLE_MIGRATIONS), ran
    for ref, expected in EXAMPLE_MIGRATIONS.items():
        result = run.result(f"{ref}.test")
        assert result["status"] == "PASS", (ref, result["fail_reason"], result["children"])
        records = migrations(result)
        got = [(names.index(r["src"]), names.index(r["dst"]), r["status"]) for r in records]
        assert got == expected, (ref, records)
        for r in records:
            if r["status"] == "completed":  # the destination saw each VM arrive
                assert r["arrived"] in ("running", "paused") and r["total-time"] > 0, (ref, r)
    assert run.code == 0, run
    pause = migrations(run.result("pause_during.py:PauseDuringMigration.test"))
    assert [r["arrived"] for r in pause] == ["paused", "paused"]
    killed = migrations(run.result("dst_killed.py:DestinationKilled.test"))[0]
    assert killed["error-desc"] and killed["wall"] < 15, killed  # QEMU's words, at once
    capped = migrations(run.result("speed_downtime.py:SpeedAndDowntime.test"))[0]
    assert capped["downtime"] <= 500, capped
    assert_no_qemu_left(tag)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_exec_migration_through_ssh_between_sshd_hosts(mhtest, warm_hosts) -> None:
    """migration_protocol=exec: each hop's stream goes through ssh to the destination host."""
    hosts = warm_hosts(2)
    tag, tag_args = tagged()
    ssh = f"migration_ssh_options=-F {hosts[0].ssh_config}"
    params = ["-p", "migration_protocol=exec", "-p", ssh, *tag_args, *host_args(hosts)]
    run = mhtest("run", str(EXAMPLES / "pingpong.py"), *params, timeout=280)
    assert run.code == 0, run
    result = run.result("pingpong.py:PingPong.test")
    assert [r["status"] for r in migrations(result)] == ["completed"] * 4
    test_dir = Path(result["logdir"])
    for host, worker_dir in zip(hosts[::-1], sorted((test_dir / "workers").iterdir())):
        # each source sent its VM through ssh to the other host's pipe
        log = (worker_dir / "debug.log").read_text()
        assert f"exec:ssh -o BatchMode=yes -o ConnectTimeout=10 -p {host.port} " in log, log[-3000:]
        assert f"{host.user}@{host.address} 'cat > " in log
    assert_no_qemu_left(tag)
