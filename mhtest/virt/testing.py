"""Helpers for testing and benchmarking migrations: worker processes and leftover QEMUs.

``run_workers()`` runs one MultihostMigration worker per "host" in its own process against a
fresh sync server, the way the multi-host runner starts workers (params ``host``, ``hosts``,
``host_address``; a SyncClient named after the host) but without SSH or a job, so a
migration scenario can be exercised and timed on its own. ``qemu_pids()`` finds the QEMU
processes whose command line names a directory (a test's own tmp or results dir), so a test
can check that it left none behind without looking at anybody else's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_HOSTS = {"h1": "127.0.0.2", "h2": "127.0.0.3"}

# The child loads the scenario file by path and runs one worker; its result is one JSON line.
_CHILD = r"""
import importlib.util, json, sys
from mhtest.virt.testing import worker_main
spec = importlib.util.spec_from_file_location("mhtest_scenarios", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
result = worker_main(getattr(mod, sys.argv[2]), json.loads(sys.argv[3]))
print("RESULT " + json.dumps(result))
"""


def worker_main(cls: type, cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one worker of ``cls`` (in the child process) and report how it ended."""
    from mhtest.sync import SyncClient

    test = cls(params=cfg["params"], logdir=cfg["workdir"], workdir=cfg["workdir"])
    test._sync = SyncClient(cfg["sync"], cfg["params"]["host"], count=len(cfg["params"]["hosts"]))
    started = time.monotonic()
    result = {"status": "PASS", "error": ""}
    try:
        test.test()
    except Exception as exc:  # reported to the parent, like a runner would
        result = {"status": "FAIL", "error": f"{type(exc).__name__}: {exc}"}
    finally:
        test._sync.close()
    result.update(whiteboard=test.whiteboard, elapsed=time.monotonic() - started)
    return result


def run_workers(
    workdir: str | Path,
    source_file: str | Path,
    cls_name: str,
    params: dict[str, Any],
    hosts: dict[str, str] | None = None,
    timeout: float = 120,
) -> dict[str, dict]:
    """Run ``cls_name`` from ``source_file`` as one worker process per host; their results.

    Each result is ``{"status": PASS|FAIL|KILLED, "error", "whiteboard", "elapsed"}``.
    """
    from mhtest.sync import SyncServer

    hosts = hosts or DEFAULT_HOSTS
    procs: dict[str, subprocess.Popen] = {}
    results: dict[str, dict] = {}
    with SyncServer() as server:
        try:
            for host, address in hosts.items():
                cfg = {
                    "sync": server.address,
                    "workdir": str(Path(workdir) / host),
                    "params": {
                        "host": host,
                        "hosts": list(hosts),
                        "host_address": address,
                        **params,
                    },
                }
                args = [sys.executable, "-c", _CHILD, str(source_file), cls_name, json.dumps(cfg)]
                procs[host] = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
            deadline = time.monotonic() + timeout
            for host, proc in procs.items():
                out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
                lines = [x for x in out.splitlines() if x.startswith("RESULT ")]
                results[host] = json.loads(lines[-1][7:]) if lines else {"status": "KILLED"}
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    return results


def qemu_pids(under: str | Path) -> list[int]:
    """Live (not zombie) QEMU processes whose command line contains the path ``under``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if "qemu-system" in cmdline and str(under) in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def wait_no_qemu(under: str | Path, timeout: float = 10.0) -> list[int]:
    """Wait until no QEMU names ``under``; returns the PIDs still alive at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = qemu_pids(under)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)
