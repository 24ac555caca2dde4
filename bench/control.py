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

Both sides are whole commands as a user types them (a CLI process: its start, the job, the
results written). Prints the median of each, the ratios and whether each target is met.
Every sshd is stopped (by PID) at the end.

    python3 bench/control.py [--fanout 8,32] [--autotest 8] [--rounds 5]
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


def mhtest(args: list[str], infos: list[HostInfo], results: Path, expect: int) -> float:
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
    started = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL
    )
    elapsed = time.perf_counter() - started
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
    rows: list[tuple[str, int, float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="mhtest-bench-") as tmp:
        work = Path(tmp)
        (work / "fanout.srv").write_text(FANOUT_SRV)
        (work / "autotest.srv").write_text(AUTOTEST_SRV)
        (work / "passtest.py").write_text(PASSTEST)
        with SshdPool(work / "sshd") as pool:
            infos = pool.hosts(max(fanout + autotest))
            started = time.perf_counter()
            mhtest([str(work / "passtest.py")], infos, work / "warm", len(infos))
            print(f"warm-up run on {len(infos)} hosts: {time.perf_counter() - started:.2f} s")
            for n in fanout:
                base, ours = [], []
                for r in range(opts.rounds):
                    base.append(paramiko_fanout(infos[:n]))
                    ours.append(
                        mhtest([str(work / "fanout.srv")], infos[:n], work / f"f{n}-{r}", 1)
                    )
                rows.append(("fan-out: paramiko true", n, *_medians(base, ours), FANOUT_TARGET))
            for n in autotest:
                base, ours = [], []
                for r in range(opts.rounds):
                    run = str(work / "passtest.py")
                    base.append(mhtest([run], infos[:n], work / f"p{n}-{r}", n))
                    srv = str(work / "autotest.srv")
                    ours.append(mhtest([srv], infos[:n], work / f"a{n}-{r}", n + 1))
                rows.append(
                    ("Autotest: mhtest run passtest.py", n, *_medians(base, ours), AUTOTEST_TARGET)
                )
    print(f"\n{'control file against':<34} {'hosts':>5} {'theirs':>8} {'control':>8} {'ratio':>6}")
    for what, n, base, ours, target in rows:
        ratio = ours / base
        verdict = "met" if ratio <= target else "NOT met"
        print(
            f"{what:<34} {n:>5} {base:>6.2f} s {ours:>6.2f} s {ratio:>5.2f}x"
            f"  (target {target}x: {verdict})"
        )
    print(f"(medians of {opts.rounds} rounds; load average {os.getloadavg()[0]:.1f})")
    return 0


def _medians(base: list[float], ours: list[float]) -> tuple[float, float]:
    return statistics.median(base), statistics.median(ours)


if __name__ == "__main__":
    sys.exit(main())
