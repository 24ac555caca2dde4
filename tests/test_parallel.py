"""mhtest.parallel: Autoserv's subcommand / parallel / parallel_simple, on real sshd hosts."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from mhtest.hosts import CmdResult
from mhtest.parallel import ParallelError, TaskError, parallel, parallel_simple, subcommand

pytestmark = pytest.mark.timeout(60)


def sleep_on(host) -> dict:
    """Sleep 1 s on the host; report when (host clock = this clock: loopback) and where."""
    times = host.run("date +%s.%N; sleep 1; date +%s.%N").stdout.split()
    return {"host": host.name, "start": float(times[0]), "end": float(times[1]), "pid": os.getpid()}


def test_tasks_run_at_once_on_every_host(sshd_hosts) -> None:
    hosts = [info.make_host() for info in sshd_hosts(3)]
    hosts[0].run("true")  # a connection made before the fork is not reused by the children
    results = parallel_simple(sleep_on, hosts, return_results=True)
    assert [r["host"] for r in results] == [h.name for h in hosts]
    # every task was sleeping at the same moment: they overlapped, whatever the machine's load
    assert max(r["start"] for r in results) < min(r["end"] for r in results)
    assert len({r["pid"] for r in results}) == 3 and os.getpid() not in {r["pid"] for r in results}
    assert hosts[0].run("echo parent-still-works").stdout == "parent-still-works\n"
    for host in hosts:
        host.close()


def test_failures_are_listed_with_host_and_exception(sshd_hosts) -> None:
    hosts = [info.make_host() for info in sshd_hosts(3)]

    def maybe_fail(host):
        if host is not hosts[1]:
            host.run("echo broken-on-$(hostname) >&2; exit 5")
        return "fine"

    with pytest.raises(ParallelError) as err:
        parallel_simple(maybe_fail, hosts)
    message = str(err.value)
    assert message.startswith("2 of 3 parallel tasks failed:")
    assert len(err.value.failures) == 2
    for failure, host in zip(err.value.failures, [hosts[0], hosts[2]]):
        assert failure.host == host.name
        assert failure.exc_type == "CmdError"
        assert "exit status 5" in failure.message and "broken-on-" in failure.message
        assert f"on {host.name}" in message
        assert "Traceback" in failure.traceback


def test_return_results_gives_values_and_errors_in_order() -> None:
    @dataclass
    class Point:
        x: int
        y: int

    def work(n):
        if n == 2:
            raise ValueError("two is bad")
        return Point(n, n * n)

    results = parallel_simple(work, [1, 2, 3], return_results=True)
    assert results[0] == {"x": 1, "y": 1} and results[2] == {"x": 3, "y": 9}
    assert isinstance(results[1], TaskError)
    assert results[1].exc_type == "ValueError" and results[1].message == "two is bad"


def test_cmd_results_come_back_as_data(sshd_host) -> None:
    host = sshd_host.make_host()
    (result,) = parallel([subcommand(host.run, ["echo hi"])], return_results=True)
    assert CmdResult(**result).stdout == "hi\n"


def test_timeout_stops_every_task_and_its_remote_command(sshd_host, tmp_path: Path) -> None:
    host = sshd_host.make_host()
    marker = f"mhtest-par-{time.time_ns()}"
    pids_file = tmp_path / "pids"

    def slow_remote(h):
        h.run(f"exec -a {marker} sleep 300")

    def slow_local(_):
        pids_file.write_text(str(os.getpid()))
        time.sleep(300)

    def quick(_):
        return "done"

    tasks = [
        subcommand(slow_remote, [host]),
        subcommand(slow_local, ["x"]),
        subcommand(quick, ["y"]),
    ]
    started = time.monotonic()
    results = parallel(tasks, timeout=1.5, return_results=True)
    assert time.monotonic() - started < 10
    assert results[2] == "done"
    for failure in results[:2]:
        assert isinstance(failure, TaskError) and failure.timed_out
    assert failure.exc_type == "TaskTimeout"
    task_pid = int(pids_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(task_pid, 0)
    left = host.run(
        f"ps -eo stat=,args= | grep -v '^Z' | grep [{marker[0]}]{marker[1:]}", ignore_status=True
    )
    assert left.stdout == "", "remote command outlived its task"


def test_crashing_task_and_empty_list() -> None:
    with pytest.raises(ParallelError, match="exited with status 3 without a result"):
        parallel_simple(lambda _: os._exit(3), [1])
    assert parallel_simple(print, [], return_results=True) == []


def test_subdir_is_the_tasks_working_directory(tmp_path: Path) -> None:
    results = parallel_simple(
        lambda _: os.getcwd(),
        ["a", "b"],
        return_results=True,
        subdir_name_constructor=lambda arg: str(tmp_path / arg),
    )
    assert results == [str(tmp_path / "a"), str(tmp_path / "b")]
