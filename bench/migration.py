"""Benchmark: live migration of an idle 256 MB VM between two local QEMUs, ten times.

Three ways, side by side, each migrating the VM back and forth over loopback TCP:

- raw: a hand-written script on qemu.qmp's legacy client (what a user writes without
  mhtest): start the destination, migrate-incoming on port 0, migrate, poll query-migrate;
- mhtest VM: the same steps through mhtest.virt.qemu.VM (QMP event loop thread, events);
- mhtest workers: MultihostMigration in two worker processes meeting on a real sync
  server (ports exchanged through sync, both sides finishing their flow), no SSH;
- mhtest run: the same test through ``mhtest run --hosts`` on two loopback sshd hosts
  (127.0.0.2, 127.0.0.3), the full multi-host path (bootstrap, SSH, forwarded sync).

Per migration it prints QEMU's total-time and downtime and the wall time; mhtest's overhead
is wall minus QEMU's total-time (target: under 0.5 s per migration).

Then the ping-pong example (examples/tests/migration/pingpong.py: four hops, an exchange the
master drives before each, the memory pattern dumped and checked after each) as a user runs
it: its wall time (the workers' test, and the whole run) against the sum of QEMU's
total-times of its four migrations.

    python3 bench/migration.py [--count 10] [--mem 256] [--no-ssh]
"""

from __future__ import annotations

import argparse
import json
import os
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
        if self.proc.poll() is None:
            self.qmp.close()
            self.proc.kill()
            self.proc.wait()


def raw_round(workdir: Path, count: int, mem: int) -> list[dict]:
    rows = []
    vms = [RawVM(workdir / "raw-0", "raw", mem, incoming=False)]
    try:
        for n in range(count):
            started = time.perf_counter()
            src = vms[-1]
            dst = RawVM(workdir / f"raw-{n + 1}", "raw", mem, incoming=True)
            vms.append(dst)
            dst.cmd("migrate-incoming", uri="tcp:127.0.0.1:0")
            port = dst.cmd("query-migrate")["socket-address"][0]["port"]
            src.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
            while True:
                info = src.cmd("query-migrate")
                if info["status"] in ("completed", "failed", "cancelled"):
                    break
                time.sleep(0.01)
            while dst.cmd("query-status")["status"] != "running":
                time.sleep(0.005)
            src.close()
            rows.append(row(info, time.perf_counter() - started))
    finally:
        for vm in vms:  # whatever happened, no QEMU outlives the benchmark
            vm.close()
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


SCENARIO = """
from mhtest.virt.migration import MultihostMigration


class BenchPingPong(MultihostMigration):
    def migration_scenario(self):
        h1, h2 = self.hosts
        for n in range(int(self.params.get("bench_count", default=10))):
            a, b = (h1, h2) if n % 2 == 0 else (h2, h1)
            self.migrate_wait(["vm1"], a, b)
"""


PINGPONG = Path(__file__).resolve().parent.parent / "examples" / "tests" / "migration"
PINGPONG = PINGPONG / "pingpong.py"
OVERHEAD_TARGET = 0.5  # seconds per migration


def source_records(boards: dict[str, str]) -> list[dict]:
    """The source's record of each migration, from the workers' whiteboards, in order."""
    records: dict[str, dict] = {}
    for name, board in boards.items():
        for rec in json.loads(board)["migrations"]:
            if rec["id"] not in records or rec["src"] == name:
                records[rec["id"]] = rec
    return sorted(records.values(), key=lambda r: int(r["id"][3:]))


def source_rows(boards: dict[str, str]) -> list[dict]:
    """One row per migration from the workers' whiteboards, the source's record of each."""
    return [
        {
            "total": r["total-time"],
            "downtime": r["downtime"],
            "mb": r["transferred"] / 1e6,
            "wall": r["flow-wall"],  # the source's flow: migrate() to the destination's answer
        }
        for r in source_records(boards)
    ]


def workers_round(workdir: Path, scenario: Path, count: int, mem: int) -> list[dict]:
    from mhtest.virt.testing import run_workers

    params = {"vms": "vm1", "mem": mem, "guest": "idle", "bench_count": count}
    results = run_workers(workdir, scenario, "BenchPingPong", params, timeout=600)
    for host, res in results.items():
        if res["status"] != "PASS":
            raise RuntimeError(f"bench worker {host}: {res}")
    return source_rows({host: res["whiteboard"] for host, res in results.items()})


def cli_round(workdir: Path, scenario: Path, count: int, mem: int) -> tuple[list[dict], float]:
    """`mhtest run` of the scenario on two sshd hosts (127.0.0.2, 127.0.0.3): rows, job wall."""
    from mhtest.hosts.testing import SshdPool

    with SshdPool(workdir / "sshd") as pool:
        hosts = pool.hosts(2)
        args = [sys.executable, "-m", "mhtest", "run", f"{scenario}:BenchPingPong.test"]
        args += ["--hosts", ",".join(h.alias for h in hosts), "--ssh-config", hosts[0].ssh_config]
        args += ["--job-results-dir", str(workdir / "results")]
        for key, value in (("vms", "vm1"), ("guest", "idle"), ("mem", mem), ("bench_count", count)):
            args += ["-p", f"{key}={value}"]
        started = time.perf_counter()
        proc = subprocess.run(args, capture_output=True, text=True, timeout=900)
        wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"mhtest run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    results = json.loads((workdir / "results" / "latest" / "results.json").read_text())
    workers = results["tests"][0]["children"]
    return source_rows({w["name"]: w["whiteboard"] for w in workers}), wall


def pingpong_workers(workdir: Path, mem: int) -> dict:
    """The ping-pong example in two worker processes: its records and wall times."""
    from mhtest.virt.testing import run_workers

    started = time.perf_counter()
    results = run_workers(workdir, PINGPONG, "PingPong", {"vms": "vm1", "mem": mem}, timeout=600)
    wall = time.perf_counter() - started
    for host, res in results.items():
        if res["status"] != "PASS":
            raise RuntimeError(f"ping-pong worker {host}: {res}")
    boards = {host: res["whiteboard"] for host, res in results.items()}
    test = max(res["elapsed"] for res in results.values())
    return {"records": source_records(boards), "test": test, "run": wall}


def pingpong_cli(workdir: Path, mem: int) -> dict:
    """The ping-pong example through `mhtest run --hosts` on two sshd hosts."""
    from mhtest.hosts.testing import SshdPool

    with SshdPool(workdir / "sshd") as pool:
        hosts = pool.hosts(2)
        args = [sys.executable, "-m", "mhtest", "run", str(PINGPONG), "-p", f"mem={mem}"]
        args += ["--hosts", ",".join(h.alias for h in hosts), "--ssh-config", hosts[0].ssh_config]
        args += ["--job-results-dir", str(workdir / "results")]
        started = time.perf_counter()
        proc = subprocess.run(args, capture_output=True, text=True, timeout=900)
        wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"mhtest run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result = json.loads((workdir / "results" / "latest" / "results.json").read_text())["tests"][0]
    boards = {w["name"]: w["whiteboard"] for w in result["children"]}
    test = max(w["time"] for w in result["children"])
    return {"records": source_records(boards), "test": test, "run": wall}


def report_pingpong(title: str, got: dict) -> None:
    hops = len(got["records"])
    qemu = sum(r["total-time"] for r in got["records"]) / 1000
    print(f"\n{title}")
    print(
        f"  {hops} hops; QEMU's total-times: "
        + " + ".join(f"{r['total-time']}" for r in got["records"])
        + f" ms = {qemu:.3f} s"
    )
    for what in ("test", "run"):
        wall = got[what]
        label = "workers' test" if what == "test" else "whole run    "
        print(
            f"  {label}: wall {wall:.2f} s = {wall / qemu:.1f}x QEMU's sum; "
            f"{(wall - qemu) / hops:.3f} s per hop beyond QEMU's migration time"
        )


def row(info: dict, wall: float) -> dict:
    return {
        "total": info.get("total-time", 0),
        "downtime": info.get("downtime", 0),
        "mb": info.get("ram", {}).get("transferred", 0) / 1e6,
        "wall": wall,
    }


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
    parser.add_argument("--no-ssh", action="store_true", help="skip the mhtest run on sshd hosts")
    opts = parser.parse_args()
    accel = "kvm" if "kvm" in VMConfig("x").accel_args() else "tcg"
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} on {os.cpu_count()} CPUs (other work inflates the worst cases)")
    print(
        f"idle {opts.mem} MB VM, {opts.count} migrations each way of running, "
        f"loopback TCP, accel {accel} (first choice)"
    )
    with tempfile.TemporaryDirectory(prefix="mhtest-bench-") as tmp:
        work = Path(tmp)
        scenario = work / "bench_migration_scenario.py"
        scenario.write_text(SCENARIO)
        raw = report("raw qemu.qmp legacy script", raw_round(work / "raw", opts.count, opts.mem))
        vm = report("mhtest VM (QMP-level)", vm_round(work / "vm", opts.count, opts.mem))
        mh = report(
            "mhtest MultihostMigration workers (2 processes + sync server, no SSH)",
            workers_round(work / "mh", scenario, opts.count, opts.mem),
        )
        cli = None
        if opts.no_ssh:
            print("\n(mhtest run on sshd hosts skipped: --no-ssh)")
        else:
            rows, job_wall = cli_round(work / "cli", scenario, opts.count, opts.mem)
            cli = report("mhtest run --hosts (two loopback sshd hosts, full multi-host path)", rows)
            print(f"whole job, bootstrap of both hosts included: {job_wall:.2f} s")
        report_pingpong(
            "ping-pong example (pingpong.py), two worker processes (no SSH)",
            pingpong_workers(work / "pingpong", opts.mem),
        )
        if not opts.no_ssh:
            report_pingpong(
                "ping-pong example, mhtest run --hosts on two sshd hosts (whole run: the job)",
                pingpong_cli(work / "pingpong-cli", opts.mem),
            )
    print("\nsummary (medians)")
    line = (
        f"  wall per migration: raw {raw['wall']:.3f} s, mhtest VM {vm['wall']:.3f} s "
        f"({vm['wall'] / raw['wall']:.2f}x raw), workers {mh['wall']:.3f} s "
        f"({mh['wall'] / raw['wall']:.2f}x raw)"
    )
    if cli:
        line += f", mhtest run {cli['wall']:.3f} s ({cli['wall'] / raw['wall']:.2f}x raw)"
    print(line)
    measured = {"mhtest VM": vm, "workers": mh, **({"mhtest run": cli} if cli else {})}
    ok = all(m["overhead"] < OVERHEAD_TARGET for m in measured.values())
    print(
        "  mhtest overhead per migration (wall - QEMU total-time), median (worst): "
        + ", ".join(
            f"{k} {m['overhead']:.3f} s ({m['overhead_max']:.3f} s)" for k, m in measured.items()
        )
    )
    print(
        f"  target: median overhead < {OVERHEAD_TARGET} s per migration: "
        f"{'met' if ok else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
