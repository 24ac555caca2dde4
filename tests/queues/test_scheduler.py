"""Machines busy or free: one holder per machine, in threads and across processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mhtest.hosts.inventory import HostConfig
from mhtest.queue.machines import Machine
from mhtest.queue.scheduler import MachineLocks, busy

pytestmark = pytest.mark.timeout(60)

HOLD = """
import sys, threading, time
from mhtest.hosts.inventory import HostConfig
from mhtest.queue.machines import Machine
from mhtest.queue.scheduler import MachineLocks
machines = [Machine(HostConfig(k, k), k) for k in sys.argv[2].split(",")]
held = MachineLocks(sys.argv[1]).acquire(machines, {"queue": "other"}, threading.Event())
print("held", flush=True)
time.sleep(float(sys.argv[3]))
held.release()
"""


def machine(key: str) -> Machine:
    return Machine(HostConfig(name=key, address=key), key)


def holding(lock_dir: Path, keys: str, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock_dir), keys, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_threads_take_a_machine_one_at_a_time_first_come_first_served(tmp_path: Path) -> None:
    locks = MachineLocks(tmp_path / "busy")
    stop = threading.Event()
    order, inside, most = [], [0], [0]
    guard = threading.Lock()

    def job(name: str) -> None:
        with locks.acquire([machine("h1"), machine("h2")], {"queue": name}, stop):
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                order.append(name)
            time.sleep(0.05)
            with guard:
                inside[0] -= 1

    first = locks.acquire([machine("h2")], {"queue": "first"}, stop)
    threads = []
    for n in range(5):
        threads.append(threading.Thread(target=job, args=(f"q{n}",)))
        threads[-1].start()
        time.sleep(0.05)  # they queue up in this order behind "first"
    assert locks.holders()["h2"] == {"queue": "first"} and order == []
    first.release()
    for thread in threads:
        thread.join(10)
    assert order == [f"q{n}" for n in range(5)] and most[0] == 1
    assert locks.holders() == {}


def test_another_process_holding_a_machine_is_waited_for_and_seen_busy(tmp_path: Path) -> None:
    lock_dir = tmp_path / "busy"
    proc = holding(lock_dir, "127.0.0.2:22", 1.0)
    try:
        assert busy(lock_dir) == {
            "127.0.0.2:22": {"queue": "other", "since": pytest.approx(time.time(), abs=10)}
        }
        told = []
        started = time.monotonic()
        held = MachineLocks(lock_dir).acquire(
            [machine("127.0.0.2:22"), machine("local")],
            {"queue": "mine"},
            threading.Event(),
            on_wait=lambda key, holder: told.append((key, holder and holder["queue"])),
        )
        waited = time.monotonic() - started
        assert held is not None and 0.3 < waited < 10
        assert told == [("127.0.0.2:22", "other")]
        assert busy(lock_dir)["127.0.0.2:22"]["queue"] == "mine"
        held.release()
        assert busy(lock_dir) == {}
    finally:
        proc.wait(10)


def test_a_killed_holder_holds_nothing_and_stop_ends_a_wait(tmp_path: Path) -> None:
    lock_dir = tmp_path / "busy"
    proc = holding(lock_dir, "h1", 60)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    assert MachineLocks(lock_dir).acquire([machine("h1")], {}, stop) is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    held = MachineLocks(lock_dir).acquire([machine("h1")], {}, threading.Event())
    assert held is not None
    held.release()
