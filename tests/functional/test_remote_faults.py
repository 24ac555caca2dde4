"""`mhtest run --hosts` when hosts fail: each failing host's tests are ERROR with the reason,
the others go on, every finished result is on disk, and the exit code says so."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from .conftest import wait_gone
from .test_remote import WHERE_PY, write_ssh_config

pytestmark = pytest.mark.timeout(90)


def by_host(run) -> dict[str, dict]:
    return {r["host"]: r for r in run.results()["tests"]}


def assert_passed_on_disk(result: dict) -> None:
    assert result["status"] == "PASS", result
    assert "running on" in (Path(result["logdir"]) / "debug.log").read_text()


def test_each_broken_host_is_error_with_its_reason_and_the_others_go_on(
    mhtest, write_tests, warm_hosts, broken_host, tmp_path
) -> None:
    good, other = warm_hosts(2)
    tests = write_tests({"where.py": WHERE_PY, "data.txt": "d"})
    refused = broken_host("refused")
    bad_key = broken_host("bad-key")
    changed = broken_host("changed-host-key")
    unknown = broken_host("unknown-host-key")
    with socket.socket() as silent:  # accepts connections, never speaks SSH (a hung host)
        silent.bind((good.address, 0))
        silent.listen(8)
        hung = type(good)(**{**good.__dict__, "port": silent.getsockname()[1]})
        config = write_ssh_config(
            tmp_path / "ssh_config",
            {
                "good": good,
                "other": other,
                "refused": refused,
                "badkey": bad_key,
                "changed": changed,
                "unknownkey": unknown,
                "hung": hung,
            },
            extra="ConnectTimeout 2",
        )
        hosts = "good,refused,badkey,changed,unknownkey,hung,no-such-host.invalid,other"
        run = mhtest("run", str(tests / "where.py"), "--hosts", hosts, "--ssh-config", str(config))
    assert run.code == 1, run
    results = by_host(run)
    assert len(results) == 8
    assert_passed_on_disk(results["good"])
    assert_passed_on_disk(results["other"])
    expected = {
        "refused": ["refused:", "connection refused", str(refused.port), "sshd running"],
        "badkey": ["authentication as", bad_key.key_file, "authorized_keys", "IdentityFile"],
        "changed": ["host key CHANGED", changed.known_hosts, "ssh-keygen"],
        "unknownkey": ["unknown host key", unknown.known_hosts, "--ssh-accept-new-host-keys"],
        "hung": ["hung:", "no SSH answer within 2 s"],
        "no-such-host.invalid": ["unknown host name 'no-such-host.invalid'"],
    }
    for host, parts in expected.items():
        result = results[host]
        assert result["status"] == "ERROR", result
        reason = result["fail_reason"]
        assert "\n" not in reason
        for part in parts:
            assert part in reason, (host, reason)
        assert re.search(rf"where.py:Where.test \[{re.escape(host)}\]: ERROR", run.stdout), run
    # One line per host in the results; no library traceback on the console (a silent host
    # made paramiko print 25 lines), which goes to job.log instead.
    assert "Traceback" not in run.stderr and "paramiko" not in run.stderr, run.stderr
    assert "paramiko.transport" in (run.job_dir / "job.log").read_text()
    # a changed key is never accepted, even when asked to accept new ones
    run = mhtest(
        "run",
        str(tests / "where.py"),
        "--hosts",
        "changed",
        "--ssh-config",
        str(config),
        "--ssh-accept-new-host-keys",
    )
    assert run.code == 1 and "host key CHANGED" in by_host(run)["changed"]["fail_reason"], run


def test_accept_new_host_keys_records_an_unknown_key(
    mhtest, write_tests, warm_hosts, broken_host, tmp_path
) -> None:
    warm_hosts(1)
    tests = write_tests({"where.py": WHERE_PY, "data.txt": "d"})
    unknown = broken_host("unknown-host-key")
    config = write_ssh_config(tmp_path / "ssh_config", {"newhost": unknown})
    run = mhtest(
        "run",
        str(tests / "where.py"),
        "--hosts",
        "newhost",
        "--ssh-config",
        str(config),
        "--ssh-accept-new-host-keys",
    )
    assert run.code == 0, run
    assert_passed_on_disk(by_host(run)["newhost"])
    host_key = Path(unknown.host_key_file + ".pub").read_text().split()[1]
    assert (
        f"[{unknown.address}]:{unknown.port} ssh-ed25519 {host_key}"
        in Path(unknown.known_hosts).read_text()
    )


@pytest.mark.parametrize(
    ("python", "expected"),
    [
        ("/nonexistent/python3", "/nonexistent/python3 not found on the host"),
        ("python3-not-on-path", "python3-not-on-path not found on the host"),
    ],
)
def test_host_without_that_python_is_error_and_local_goes_on(
    mhtest, write_tests, sshd_hosts, python, expected
) -> None:
    (info,) = sshd_hosts(1)
    tests = write_tests({"plain.sh": "#!/bin/sh\ntrue\n"}, executable=("plain.sh",))
    run = mhtest(
        "run",
        str(tests / "plain.sh"),
        "--hosts",
        f"local,{info.alias}",
        "--ssh-config",
        info.ssh_config,
        "--remote-python",
        python,
    )
    assert run.code == 1, run
    results = by_host(run)
    assert results["local"]["status"] == "PASS"
    assert Path(results["local"]["logdir"]).is_dir()
    remote = results[info.alias]
    assert remote["status"] == "ERROR"
    assert expected in remote["fail_reason"] and "--remote-python" in remote["fail_reason"]
    assert remote["fail_reason"].startswith(info.alias)


@pytest.mark.skipif(os.geteuid() != 0, reason="a small tmpfs for the full-disk case needs root")
def test_full_remote_disk_is_error_and_local_goes_on(
    mhtest, write_tests, sshd_hosts, tmp_path
) -> None:
    """Simulated: the host cache (MHTEST_REMOTE_CACHE) lives on a 256 KiB tmpfs."""
    (info,) = sshd_hosts(1)
    tests = write_tests({"plain.sh": "#!/bin/sh\ntrue\n"}, executable=("plain.sh",))
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        run = mhtest(
            "run",
            str(tests / "plain.sh"),
            "--hosts",
            f"local,{info.alias}",
            "--ssh-config",
            info.ssh_config,
            env={"MHTEST_REMOTE_CACHE": str(small / "cache")},
        )
    finally:
        subprocess.run(["umount", str(small)], check=False)
    assert run.code == 1, run
    results = by_host(run)
    assert results["local"]["status"] == "PASS"
    reason = results[info.alias]["fail_reason"]
    assert results[info.alias]["status"] == "ERROR"
    assert "disk full" in reason and str(small / "cache") in reason and "\n" not in reason


KILLER_PY = '''
import os
import signal
import time

from mhtest import Test


def parent(pid):
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


class KillsItsRunner(Test):
    """Kills the executor on its host (the parent of the fork server that forked it)."""

    def test(self):
        with open(os.path.join(self.params.get("marks"), "pid"), "w") as out:
            out.write(str(os.getpid()))
        os.kill(parent(os.getppid()), signal.SIGKILL)
        time.sleep(30)
'''


def test_executor_dying_is_error_with_reason(mhtest, write_tests, warm_hosts, tmp_path) -> None:
    (info,) = warm_hosts(1)
    tests = write_tests({"killer.py": KILLER_PY})
    run = mhtest(
        "run",
        str(tests / "killer.py"),
        "--hosts",
        info.alias,
        "--ssh-config",
        info.ssh_config,
        "-p",
        f"marks={tmp_path}",
    )
    assert run.code == 1, run
    result = by_host(run)[info.alias]
    assert result["status"] == "ERROR"
    assert "the remote runner ended before the test did (killed by SIGKILL" in result["fail_reason"]
    # the fork server left behind stops the orphaned test
    assert wait_gone([int((tmp_path / "pid").read_text())], 10) == []
