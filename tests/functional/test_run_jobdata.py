"""What a job records of how it was run (jobdata/) and of the machines it ran on (sysinfo/)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(90)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tests"


def test_jobdata_and_sysinfo_of_a_run_on_a_host(mhtest, warm_hosts) -> None:
    (info,) = warm_hosts(1)
    args = ["--hosts", info.alias, "--ssh-config", info.ssh_config]
    run = mhtest("run", str(EXAMPLES / "passtest.py"), *args, "-p", "db_password=pw-123")
    assert run.code == 0, run
    jobdata = run.job_dir / "jobdata"
    cmdline = json.loads((jobdata / "cmdline.json").read_text())
    assert cmdline[:2] == ["mhtest", "run"] and "db_password=********" in cmdline
    assert json.loads((jobdata / "params.json").read_text()) == {"db_password": "********"}
    hosts = json.loads((jobdata / "hosts.json").read_text())
    assert [(h["name"], h["address"], h["port"]) for h in hosts] == [
        (info.alias, info.address, info.port)
    ]
    versions = json.loads((jobdata / "versions.json").read_text())
    assert versions["python"] == platform.python_version() and "mhtest" in versions
    facts = json.loads((run.job_dir / "sysinfo" / f"{info.alias}.json").read_text())
    assert facts["kernel"] == platform.release()
    assert facts["cpus"] > 0 and facts["memory_mb"] > 0 and facts["mhtest"] == versions["mhtest"]
    assert (run.job_dir / "sysinfo" / "local.json").exists()
    log = (run.job_dir / "job.log").read_text()
    assert "command line: mhtest run" in log and f"{info.alias}: " in log
    assert "pw-123" not in log


def test_a_multihost_test_keeps_its_hosts_facts(mhtest, warm_hosts) -> None:
    hosts = warm_hosts(2)
    args = ["--hosts", ",".join(h.alias for h in hosts), "--ssh-config", hosts[0].ssh_config]
    run = mhtest("run", str(EXAMPLES / "pingpong.py"), *args)
    assert run.code == 0, run
    logdir = Path(run.result("pingpong.py:PingPong.test")["logdir"])
    assert sorted(p.name for p in (logdir / "sysinfo").iterdir()) == sorted(
        f"{h.alias}.json" for h in hosts
    )
