"""Benchmark: live migration of an idle 256 MB VM between two local QEMUs, ten times.

Three ways, side by side, each migrating the VM back and forth over loopback TCP:

- raw: a hand-written script on qemu.qmp's legacy client (what a user writes without
  mhtest): start the destination, migrate-incoming on port 0, migrate, poll query-migrate;
- mhtest VM: the same steps through mhtest.virt.qemu.VM (QMP event loop thread, events);
- mhtest multi-host: MultihostMigration in two worker processes meeting on a real sync
  server (ports exchanged through sync, both sides finishing their flow).

Per migration it prints QEMU's total-time and downtime and the wall time; mhtest's overhead
is wall minus QEMU's total-time (target: under 1 s per migration).

    python3 bench/migration.py [--count 10] [--mem 256]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mhtest.virt.qemu import VM, VMConfig


def qemu_args(name: str, mem: int, qmp: str, incoming: bool) -> list[str]:
    args = ["qemu-system-x86_64", "-nodefaults", "-display", "none", "-name", name]
    args += ["-machine", "pc", *VMConfig(name).accel_args(), "-m", str(mem)]
    args += ["-qmp", f"unix:{qmp},server=on,wait=off"]
    return args + (["-incoming", "defer"] if incoming else [])


class RawVM:
    """The baseline: a QEMU and a legacy QMP client, the way a short script does it."""

    def __init__(self, workdir: Path, name: str, mem: int, incoming: bool) -> None:
        from qemu.qmp.legacy import QEMUMonitorProtocol

        workdir.mkdir(parents=True, exist_ok=True)
        sock = str(workdir / "qmp.sock")
        self.proc = subprocess.Popen(
            qemu_args(name, mem, sock, incoming),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:  # QEMU creates the socket a moment before it listens on it
            try:
                self.qmp = QEMUMonitorProtocol(sock)
                self.qmp.connect()
                break
            except Exception:
                if time.monotonic() > deadline:
                    self.proc.kill()
                    raise
                time.sleep(0.005)

    def cmd(self, name: str, **args):
        return self.qmp.cmd(name, **args)

    def close(self) -> None:
        self.qmp.close()
        self.proc.kill()
        self.proc.wait()


def raw_round(workdir: Path, count: int, mem: int) -> list[dict]:
    rows = []
    src = RawVM(workdir / "raw-0", "raw", mem, incoming=False)
    try:
        for n in range(count):
            started = time.perf_counter()
            dst = RawVM(workdir / f"raw-{n + 1}", "raw", mem, incoming=True)
            old, src = src, dst  # closed in `finally` even if this round fails
            old_cmd = old.cmd
            dst.cmd("migrate-incoming", uri="tcp:127.0.0.1:0")
            port = dst.cmd("query-migrate")["socket-address"][0]["port"]
            old_cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
            while True:
                info = old_cmd("query-migrate")
                if info["status"] in ("completed", "failed", "cancelled"):
                    break
                time.sleep(0.01)
            while dst.cmd("query-status")["status"] != "running":
                time.sleep(0.005)
            old.close()
            rows.append(row(info, time.perf_counter() - started))
    finally:
        src.close()
    return rows


def vm_round(workdir: Path, count: int, mem: int) -> list[dict]:
    rows = []
    config = VMConfig("bench", memory_mb=mem)
    src = VM(config, workdir / "vm-0").start()
    try:
        for n in range(count):
            started = time.perf_counter()
            dst = VM(config, workdir / f"vm-{n + 1}").start(incoming=True)
            _, port = dst.migrate_incoming("tcp:127.0.0.1:0")
            src.set_migrate_capabilities({"events": True})
            src.migrate(f"tcp:127.0.0.1:{port}")
            info = src.wait_migration(120)
            while dst.status() != "running":
                time.sleep(0.005)
            src.cleanup()
            src = dst
            rows.append(row(info, time.perf_counter() - started))
    finally:
        src.cleanup()
    return rows


def multihost_round(workdir: Path, count: int, mem: int) -> list[dict]:
    from mhtest.virt.testing import run_workers

    params = {"vms": "vm1", "mem": mem, "guest": "idle", "bench_count": count}
    results = run_workers(workdir, Path(__file__), "BenchPingPong", params, timeout=600)
    for host, res in results.items():
        if res["status"] != "PASS":
            raise RuntimeError(f"multi-host bench worker {host}: {res}")
    records = json.loads(results["h1"]["whiteboard"])["migrations"]
    rows = []
    for rec in records:
        # the source's flow: from migrate() to the destination's answer that it runs the VM
        rows.append(
            {
                "total": rec["total-time"],
                "downtime": rec["downtime"],
                "mb": rec["transferred"] / 1e6,
                "wall": rec["flow-wall"],
                "where": f"{rec['src']}->{rec['dst']}",
            }
        )
    return rows


def row(info: dict, wall: float) -> dict:
    return {
        "total": info.get("total-time", 0),
        "downtime": info.get("downtime", 0),
        "mb": info.get("ram", {}).get("transferred", 0) / 1e6,
        "wall": wall,
    }


def _bench_scenario():
    from mhtest.virt.migration import MultihostMigration

    class BenchPingPong(MultihostMigration):
        def migration_scenario(self) -> None:
            h1, h2 = self.hosts
            for n in range(int(self.params.get("bench_count", default=10))):
                a, b = (h1, h2) if n % 2 == 0 else (h2, h1)
                self.migrate_wait(["vm1"], a, b)

    return BenchPingPong


def __getattr__(name: str):  # the worker harness loads BenchPingPong from this file
    if name == "BenchPingPong":
        return _bench_scenario()
    raise AttributeError(name)


def report(title: str, rows: list[dict]) -> dict:
    print(f"\n{title}")
    print(
        f"{'#':>3} {'QEMU total ms':>13} {'downtime ms':>11} {'MB sent':>8} {'wall s':>7} "
        f"{'overhead s':>10}"
    )
    for n, r in enumerate(rows, 1):
        over = r["wall"] - r["total"] / 1000
        print(
            f"{n:>3} {r['total']:>13} {r['downtime']:>11} {r['mb']:>8.1f} {r['wall']:>7.3f} "
            f"{over:>10.3f}"
        )
    med = {
        "total": statistics.median(r["total"] for r in rows),
        "downtime": statistics.median(r["downtime"] for r in rows),
        "wall": statistics.median(r["wall"] for r in rows),
        "overhead": statistics.median(r["wall"] - r["total"] / 1000 for r in rows),
        "overhead_max": max(r["wall"] - r["total"] / 1000 for r in rows),
    }
    print(
        f"median: QEMU total {med['total']:.0f} ms, downtime {med['downtime']:.0f} ms, "
        f"wall {med['wall']:.3f} s, overhead {med['overhead']:.3f} s "
        f"(max {med['overhead_max']:.3f} s)"
    )
    return med


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--mem", type=int, default=256)
    opts = parser.parse_args()
    accel = "kvm" if "kvm" in VMConfig("x").accel_args() else "tcg"
    print(
        f"idle {opts.mem} MB VM, {opts.count} migrations each way of running, "
        f"loopback TCP, accel {accel} (first choice)"
    )
    with tempfile.TemporaryDirectory(prefix="mhtest-bench-") as tmp:
        work = Path(tmp)
        raw = report("raw qemu.qmp legacy script", raw_round(work / "raw", opts.count, opts.mem))
        vm = report("mhtest VM (QMP-level)", vm_round(work / "vm", opts.count, opts.mem))
        mh = report(
            "mhtest MultihostMigration (2 worker processes + sync server)",
            multihost_round(work / "mh", opts.count, opts.mem),
        )
    print("\nsummary (medians)")
    print(
        f"  wall per migration: raw {raw['wall']:.3f} s, mhtest VM {vm['wall']:.3f} s "
        f"({vm['wall'] / raw['wall']:.2f}x raw), multi-host {mh['wall']:.3f} s "
        f"({mh['wall'] / raw['wall']:.2f}x raw)"
    )
    ok = vm["overhead_max"] < 1.0 and mh["overhead_max"] < 1.0
    print(
        f"  mhtest overhead (wall - QEMU total-time): VM {vm['overhead']:.3f} s, "
        f"multi-host {mh['overhead']:.3f} s; target < 1 s per migration: "
        f"{'met' if ok else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
