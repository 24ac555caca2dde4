"""Benchmark: a multi-host test (pingpong) next to the plain remote fan-out of one test.

Starts its own loopback sshd hosts (mhtest.hosts.testing.SshdPool, the code of the test
fixtures), warms the hosts' caches with one fan-out run, then for 2, 8 and 16 hosts
alternates, in the same run:

- fan-out:  mhtest run examples/tests/passtest.py --hosts h1,…,hN   (N results)
- pingpong: mhtest run examples/tests/pingpong.py --hosts h1,…,hN   (one test, N workers)

and prints the median wall time of each `mhtest run` and their ratio. The difference is
what the multi-host test adds: its own process, run_workers, the sync server, the port
forwards, the ring's barriers and pings, and the folding of the results. Target: pingpong
at most 1.25x the fan-out.

    python3 bench/multihost.py [--sizes 2,8,16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mhtest.hosts.testing import SshdPool

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "tests"
TARGET = 1.25


def mhtest_run(ref: Path, hosts: list, results: Path) -> tuple[float, dict]:
    """Wall time of one `mhtest run REF --hosts …` and its results.json (must pass)."""
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
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout}")
    return elapsed, json.loads((results / "latest" / "results.json").read_text())


def workers_time(results: dict) -> float:
    """run_workers()'s own time, from the multi-host test's debug.log."""
    log = Path(results["tests"][0]["logdir"], "debug.log").read_text()
    found = re.search(r"workers ended after ([0-9.]+) s", log)
    return float(found.group(1)) if found else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2,8,16")
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    sizes = [int(s) for s in opts.sizes.split(",")]

    with tempfile.TemporaryDirectory(prefix="mhtest-bench-") as tmp:
        work = Path(tmp)
        with SshdPool(work / "sshd") as pool:
            all_hosts = pool.hosts(max(sizes))
            warm, _ = mhtest_run(EXAMPLES / "passtest.py", all_hosts, work / "warm")
            print(f"{len(all_hosts)} loopback sshd hosts; warm-up fan-out {warm:.2f} s")
            print(
                f"{'hosts':>5} {'fan-out s':>10} {'pingpong s':>11} {'run_workers s':>14} "
                f"{'ratio':>6}  target <= {TARGET:.2f}"
            )
            worst = 0.0
            for n in sizes:
                hosts = all_hosts[:n]
                fan, ping, inner = [], [], []
                for _ in range(opts.rounds):
                    elapsed, res = mhtest_run(EXAMPLES / "passtest.py", hosts, work / f"f{n}")
                    assert len(res["tests"]) == n and all(
                        t["status"] == "PASS" for t in res["tests"]
                    )
                    fan.append(elapsed)
                    elapsed, res = mhtest_run(EXAMPLES / "pingpong.py", hosts, work / f"p{n}")
                    assert len(res["tests"][0]["children"]) == n
                    ping.append(elapsed)
                    inner.append(workers_time(res))
                f, p = statistics.median(fan), statistics.median(ping)
                worst = max(worst, p / f)
                print(
                    f"{n:>5} {f:>10.2f} {p:>11.2f} {statistics.median(inner):>14.2f} "
                    f"{p / f:>6.2f}  {'ok' if p / f <= TARGET else 'OVER'}"
                )
    print(f"worst ratio {worst:.2f} (target <= {TARGET:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
