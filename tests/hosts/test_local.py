"""LocalHost: the Host API on this machine, without SSH."""

from __future__ import annotations

import os
import time

import pytest

from mhtest.hosts import CmdError, CmdTimeout, HostError, LocalHost

pytestmark = pytest.mark.timeout(30)


def test_run_like_sshhost() -> None:
    with LocalHost() as host:
        assert host.name == "local" and host.is_up()
        result = host.run("echo out; echo err >&2; exit 4", ignore_status=True)
        assert (result.exit_status, result.stdout, result.stderr, result.aborted) == (
            4,
            "out\n",
            "err\n",
            0,
        )
        with pytest.raises(CmdError):
            host.run("false")
        assert host.run("printf '%s|'", args=["a b", "$X"], env={"X": "1"}).stdout == "a b|$X|"
        assert host.run("cat", stdin="piped").stdout == "piped"
        assert host.get_num_cpu() == os.cpu_count()
        tmp = host.get_tmp_dir()
        assert os.path.isdir(tmp)
    assert not os.path.exists(tmp)


def test_timeout_kills_the_process_group() -> None:
    marker = f"mhtest-local-{time.time_ns()}"
    host = LocalHost()
    started = time.monotonic()
    with pytest.raises(CmdTimeout) as info:
        host.run(f"(exec -a {marker}-a sleep 300) & exec -a {marker}-b sleep 301", timeout=0.5)
    assert time.monotonic() - started < 5
    assert info.value.result.aborted in (9, 15)
    left = host.run(f"ps -eo stat=,args= | grep -v '^Z' | grep [m]{marker[1:]}", ignore_status=True)
    assert left.stdout == ""


def test_signal_death_and_reboot_refused() -> None:
    host = LocalHost()
    result = host.run("kill -TERM $$", ignore_status=True)
    assert result.aborted == 15 and result.exit_status == -1
    with pytest.raises(HostError, match="does not reboot"):
        host.reboot()
