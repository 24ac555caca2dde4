"""Benchmark: server control files against what a user would do without them.

Starts its own loopback sshd hosts (mhtest.hosts.testing.SshdPool, the code the test
fixtures use), warms the host cache with one untimed run, then alternates, for a few rounds:

- fan-out, on 8 and 32 hosts: `mhtest run fanout.srv -m H1,…` whose control file is
  `job.parallel_simple(lambda m: hosts.create_host(m).run("true"), machines)`, against the
  paramiko `true` fan-out of bench/remote_fanout.py (a thread per host: connect, run `true`).
  Target: at most 1.3x.
- Autotest, on 8 hosts: `mhtest run autotest.srv -m H1,…` whose control file runs
  `autotest.Autotest(host).run_test("passtest")` on every machine (parallel_simple), against
  `mhtest run passtest.py --hosts H1,…`. Target: at most 1.2x.

The mhtest sides are whole commands as a user types them (a CLI process: its start, the
job, the results written); the paramiko fan-out runs in this process. Prints the median and
the best wall time of each, their ratios and whether each target is met (by the medians),
and the CPU time the controller's processes used (the `mhtest run` process tree on this
machine; the hosts' side, sshd and the executors, is not in it). The hosts are this machine:
on a loaded machine the hosts' side dominates and varies from run to run, hence the best-of
figures and the CPU time next to the medians. Every sshd is stopped (by PID) at the end.

    python3 bench/control.py [--fanout 8,32] [--autotest 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from remote_fanout import PASSTEST, paramiko_fanout  # noqa: E402

from mhtest.hosts.testing import HostInfo, SshdPool  # noqa: E402

FANOUT_TARGET = 1.3
AUTOTEST_TARGET = 1.2
FANOUT_SRV = 'job.parallel_simple(lambda m: hosts.create_host(m).run("true"), machines)\n'
AUTOTEST_SRV = """\
def one(machine):
    assert autotest.Autotest(hosts.create_host(machine)).run_test("passtest")


job.parallel_simple(one, machines)
"""


@dataclass
class Timing:
    """One side's wall times, and the CPU seconds its processes used (mhtest only)."""

    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.walls)

    @property
    def best(self) -> float:
        return min(self.walls)

    @property
    def cpu(self) -> float | None:
        return statistics.median(self.cpus) if self.cpus else None


def mhtest(
    args: list[str], infos: list[HostInfo], results: Path, expect: int, timing: Timing | None = None
) -> float:
    """Seconds for `mhtest run ARGS -m …`; checks that `expect` results passed."""
    command = [
        sys.executable,
        "-m",
        "mhtest",
        "run",
        *args,
        "--hosts",
        ",".join(i.alias for i in infos),
        "--ssh-config",
        infos[0].ssh_config,
        "--job-results-dir",
        str(results),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL
    )
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if timing is not None:
        timing.walls.append(elapsed)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        timing.cpus.append(cpu)
    tests = json.loads((results / "latest" / "results.json").read_text())["tests"]
    passed = [t for t in tests if t["status"] == "PASS"]
    if done.returncode != 0 or len(passed) != expect:
        raise SystemExit(
            f"mhtest run {' '.join(args)} on {len(infos)} hosts: exit {done.returncode}, "
            f"{len(passed)} of {expect} PASS\n{done.stdout}{done.stderr}"
        )
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fanout", default="8,32", help="host counts of the fan-out")
    parser.add_argument("--autotest", default="8", help="host counts of the Autotest run")
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    fanout = [int(n) for n in opts.fanout.split(",") if n]
    autotest = [int(n) for n in opts.autotest.split(",") if n]
    rows: list[tuple[str, int, Timing, Timing, float]] = []
    loads = []
    with tempfile.TemporaryDirectory(prefix="mhtest-bench-") as tmp:
        work = Path(tmp)
        tests = work / "tests"  # what goes to the hosts: this directory, nothing else
        tests.mkdir()
        (tests / "fanout.srv").write_text(FANOUT_SRV)
        (tests / "autotest.srv").write_text(AUTOTEST_SRV)
        (tests / "passtest.py").write_text(PASSTEST)
        with SshdPool(work / "sshd") as pool:
            infos = pool.hosts(max(fanout + autotest))
            started = time.perf_counter()
            mhtest([str(tests / "passtest.py")], infos, work / "warm", len(infos))
            print(f"warm-up run on {len(infos)} hosts: {time.perf_counter() - started:.2f} s")
            srv = str(tests / "fanout.srv")
            for n in fanout:
                base, ours = Timing(), Timing()
                for r in range(opts.rounds):
                    base.walls.append(paramiko_fanout(infos[:n]))
                    mhtest([srv], infos[:n], work / f"f{n}-{r}", 1, ours)
                    loads.append(os.getloadavg()[0])
                rows.append(("fan-out: paramiko true", n, base, ours, FANOUT_TARGET))
            run, srv = str(tests / "passtest.py"), str(tests / "autotest.srv")
            for n in autotest:
                base, ours = Timing(), Timing()
                for r in range(opts.rounds):
                    mhtest([run], infos[:n], work / f"p{n}-{r}", n, base)
                    mhtest([srv], infos[:n], work / f"a{n}-{r}", n + 1, ours)
                    loads.append(os.getloadavg()[0])
                rows.append(("Autotest: mhtest run passtest.py", n, base, ours, AUTOTEST_TARGET))
    print(
        f"\n{'control file against':<33} {'hosts':>5}  {'theirs':>15}  {'control':>15}"
        f"  {'ratio':>11}  {'CPU theirs/control':>18}"
    )
    for what, n, base, ours, target in rows:
        ratio = ours.median / base.median
        cpu = f"{base.cpu:.2f}/{ours.cpu:.2f} s" if base.cpu is not None else "-"
        print(
            f"{what:<33} {n:>5}  {base.median:>5.2f} s ({base.best:.2f})"
            f"  {ours.median:>5.2f} s ({ours.best:.2f})"
            f"  {ratio:>4.2f}x ({ours.best / base.best:.2f})  {cpu:>18}"
            f"  target {target}x: {'met' if ratio <= target else 'NOT met'}"
        )
    print(
        f"(medians of {opts.rounds} rounds, best in brackets; the machine's load average "
        f"ran {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} CPUs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
