"""Benchmark: a multi-host test (pingpong) next to the plain remote fan-out of one test.

Starts its own loopback sshd hosts (mhtest.hosts.testing.SshdPool, the code of the test
fixtures), warms the hosts' caches with one fan-out run, then for 2, 8 and 16 hosts
alternates, in the same run:

- fan-out:   mhtest run examples/tests/passtest.py --hosts h1,…,hN  (N results)
- multipass: a multi-host test whose workers are that same passtest, one per host: the
             orchestration alone (its own process, run_workers, the sync server, the port
             forwards, the folding of the results) around the fan-out's work
- pingpong:  mhtest run examples/tests/pingpong.py --hosts h1,…,hN  (one test, N workers
             that also meet at barriers, exchange ports and ping each other)

and prints the median and the best wall time of each `mhtest run`, their ratios to the
fan-out, and the CPU time the controller's processes used (the `mhtest run` process tree
on this machine; the hosts' side is not in it). Target: the multi-host test at most 1.25x
the fan-out.

The hosts are this machine: on a loaded machine the remote runner's start on each host
dominates and varies from run to run, hence the best-of figures next to the medians.
mhtest runs from a snapshot of its sources taken at the start, so that edits to the tree
during the run do not make the hosts' caches cold again, and with PYTHONDONTWRITEBYTECODE
removed from the environment (when set, Python recompiles mhtest on every start).

    python3 bench/multihost.py [--sizes 2,8,16] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mhtest
from mhtest.hosts.testing import SshdPool

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "tests"
TARGET = 1.25
MULTIPASS = f"""
from mhtest import MultiHostTest


class MultiPass(MultiHostTest):
    def test(self):
        self.run_workers([self.worker({str(EXAMPLES / "passtest.py")!r}, h) for h in self.hosts])
"""


@dataclass
class Timing:
    """One `mhtest run`: wall time, the controller's CPU time, its results.json."""

    wall: float
    cpu: float
    results: dict


def snapshot(work: Path) -> dict[str, str]:
    """A copy of the mhtest package in `work`; the environment that runs it."""
    target = work / "src"
    shutil.copytree(
        Path(mhtest.__file__).parent,
        target / "mhtest",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    # Without this variable Python caches the snapshot's compiled modules, as it does for
    # any installed tool; with it, every `mhtest run` would recompile mhtest from source.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def mhtest_run(ref: Path, hosts: list, results: Path, env: dict[str, str]) -> Timing:
    """Run `mhtest run REF --hosts …` (it must pass) and time it."""
    command = [
        sys.executable,
        "-m",
        "mhtest",
        "run",
        str(ref),
        "--hosts",
        ",".join(h.alias for h in hosts),
        "--ssh-config",
        hosts[0].ssh_config,
        "--job-results-dir",
        str(results),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    # Run from the snapshot's directory: `python -m` puts the working directory first on
    # sys.path, and a checkout there would be imported instead of the snapshot.
    cwd = Path(env["PYTHONPATH"]).parent
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=cwd)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timing(elapsed, cpu, json.loads((results / "latest" / "results.json").read_text()))


def check(name: str, done: Timing, hosts: int) -> None:
    """Every run must have done its work: N passes, or one test with N passing workers."""
    tests = done.results["tests"]
    if name == "fan-out":
        assert len(tests) == hosts and all(t["status"] == "PASS" for t in tests), tests
    else:
        children = tests[0]["children"]
        assert len(children) == hosts and all(c["status"] == "PASS" for c in children)


def workers_time(results: dict) -> float:
    """run_workers()'s own time, from the multi-host test's debug.log."""
    log = Path(results["tests"][0]["logdir"], "debug.log").read_text()
    found = re.search(r"workers ended after ([0-9.]+) s", log)
    return float(found.group(1)) if found else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2,8,16")
    parser.add_argument("--rounds", type=int, default=7)
    opts = parser.parse_args()
    sizes = [int(s) for s in opts.sizes.split(",")]

    with tempfile.TemporaryDirectory(prefix="mhtest-bench-") as tmp:
        work = Path(tmp)
        env = snapshot(work)
        with SshdPool(work / "sshd") as pool:
            all_hosts = pool.hosts(max(sizes))
            warm = mhtest_run(EXAMPLES / "passtest.py", all_hosts, work / "warm", env)
            print(
                f"{len(all_hosts)} loopback sshd hosts; warm-up fan-out {warm.wall:.2f} s; "
                f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
            )
            multipass = work / "multipass.py"
            multipass.write_text(MULTIPASS)
            refs = {
                "fan-out": EXAMPLES / "passtest.py",
                "multipass": multipass,
                "pingpong": EXAMPLES / "pingpong.py",
            }
            print(
                f"{'hosts':>5}  {'wall s: median (best)':^56}  {'/ fan-out':^18}  "
                f"{'controller cpu s':^20}"
            )
            print(
                f"{'':>5}  {'fan-out':>16}  {'multipass':>18}  {'pingpong':>18}  "
                f"{'multi':>8} {'ping':>8}  {'fan':>6} {'multi':>6} {'ping':>6}"
            )
            worst = 0.0
            for n in sizes:
                times: dict[str, list[Timing]] = {name: [] for name in refs}
                for round_no in range(opts.rounds):
                    # Each round starts with the next kind, so none always runs first.
                    names = list(refs)
                    names = names[round_no % len(names) :] + names[: round_no % len(names)]
                    for name in names:
                        ref = refs[name]
                        done = mhtest_run(ref, hosts=all_hosts[:n], results=work / name, env=env)
                        check(name, done, n)
                        times[name].append(done)
                med = {k: statistics.median(t.wall for t in v) for k, v in times.items()}
                best = {k: min(t.wall for t in v) for k, v in times.items()}
                cpu = {k: statistics.median(t.cpu for t in v) for k, v in times.items()}
                ratio = {k: med[k] / med["fan-out"] for k in refs}
                worst = max(worst, ratio["multipass"], ratio["pingpong"])
                print(
                    f"{n:>5}  {med['fan-out']:>8.2f} ({best['fan-out']:>5.2f})  "
                    f"{med['multipass']:>10.2f} ({best['multipass']:>5.2f})  "
                    f"{med['pingpong']:>10.2f} ({best['pingpong']:>5.2f})  "
                    f"{ratio['multipass']:>8.2f} {ratio['pingpong']:>8.2f}  "
                    f"{cpu['fan-out']:>6.2f} {cpu['multipass']:>6.2f} {cpu['pingpong']:>6.2f}"
                )
                print(
                    f"{'':>5}  run_workers median: multipass "
                    f"{statistics.median(workers_time(t.results) for t in times['multipass']):.2f}"
                    f" s, pingpong "
                    f"{statistics.median(workers_time(t.results) for t in times['pingpong']):.2f} s"
                )
    print(
        f"worst median ratio {worst:.2f} (target <= {TARGET:.2f}); "
        f"load average now {os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
