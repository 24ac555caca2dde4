"""Helpers for testing and benchmarking migrations: worker processes and leftover QEMUs.

``run_workers()`` runs one MultihostMigration worker per "host" as a multi-host test runs
its workers (mhtest.runners.fanout.WorkerRun, through the dispatcher): each a real test in
its own process, with the params ``host``, ``hosts``, ``host_address`` and a sync client
named after its host, but without a job around it, so a migration scenario can be
exercised and timed on its own. ``qemu_pids()`` finds the QEMU processes whose command line
names a directory (a test's own tmp or results dir), so a test can check that it left none
behind without looking at anybody else's.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

DEFAULT_HOSTS = {"h1": "127.0.0.2", "h2": "127.0.0.3"}


def run_workers(
    workdir: str | Path,
    source_file: str | Path,
    cls_name: str,
    params: dict[str, Any],
    hosts: dict[str, str] | None = None,
    timeout: float = 120,
) -> dict[str, dict]:
    """Run ``cls_name`` from ``source_file`` as one local worker per host; their results.

    Each result is ``{"status", "error" (the fail reason), "whiteboard", "elapsed"}``; each
    worker's results directory is ``workdir/<host>``.
    """
    from mhtest.dispatch import Options, local_place
    from mhtest.resolver import builtin_resolvers, resolve
    from mhtest.runners.fanout import WorkerRun
    from mhtest.runners.multihost import ENV_WORKER

    hosts = hosts or DEFAULT_HOSTS
    found = resolve(str(source_file), builtin_resolvers())
    base = next(s for s in found if s.class_name == cls_name and s.method == "test")
    specs = [
        replace(
            base,
            uid=index,
            params={"host": name, "hosts": list(hosts), "host_address": address, **params},
            logdir=str(Path(workdir) / name),
            env={ENV_WORKER: name},
        )
        for index, (name, address) in enumerate(hosts.items(), 1)
    ]
    with WorkerRun([local_place()] * len(specs), Options()) as run:
        results = run.run(specs, timeout)
    return {
        r.name: {
            "status": r.status,
            "error": r.fail_reason or "",
            "whiteboard": r.whiteboard,
            "elapsed": r.time,
        }
        for r in results
    }


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


def guest_ssh_config(guest: Any, image: Any, alias: str, where: str | Path) -> Path:
    """An ssh_config file in `where` naming a KVMGuest forwarded on this machine `alias`
    (root, the image's key, its host key checked): the guest as `--hosts` or a queue
    machine names it."""
    assert guest.hostname == "127.0.0.1", guest.hostname  # forwarded on this machine
    where = Path(where)
    known_hosts = where / "known_hosts"
    known_hosts.write_text(f"{guest.known_hosts_name} {image.host_key}\n")
    config = where / "ssh_config"
    config.write_text(
        f"Host {alias}\n    HostName {guest.hostname}\n    Port {guest.port}\n    User root\n"
        f"    IdentityFile {image.key_file}\n    UserKnownHostsFile {known_hosts}\n"
    )
    return config
