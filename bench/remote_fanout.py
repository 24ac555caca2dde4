"""Benchmark: one trivial test on 1, 8 and 32 hosts against a paramiko `true` fan-out.

Starts its own loopback sshd hosts (mhtest.hosts.testing.SshdPool, the code the test
fixtures use), warms the host cache with one untimed `mhtest run` on every host, then for
each host count alternates, for a few rounds:

- paramiko: one thread per host, each connecting (TCP, key exchange, public key login) and
  running `true`; the time until every thread is done;
- mhtest: `mhtest run passtest.py --hosts H1,...,Hn` as a user types it (a CLI process: its
  start, the SSH fan-out, the test on every host, results written).

Prints the median of each and the ratio. Target: the 32-host mhtest run at most 2x the
32-host paramiko fan-out. Every sshd is stopped (by PID) at the end.

    python3 bench/remote_fanout.py [--hosts 1,8,32] [--rounds 3] [--remote-cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mhtest.hosts.testing import HostInfo, SshdPool

PASSTEST = """\
from mhtest import Test


class PassTest(Test):
    def test(self):
        self.log.info("nothing to see here")
"""


def paramiko_fanout(infos: list[HostInfo]) -> float:
    """Seconds for connect + exec `true` on every host, one thread per host."""
    import paramiko

    errors: list[str] = []
    key = paramiko.Ed25519Key.from_private_key_file(infos[0].key_file)

    def one(info: HostInfo) -> None:
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(info.known_hosts)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect(
                info.address,
                port=info.port,
                username=info.user,
                pkey=key,
                allow_agent=False,
                look_for_keys=False,
                timeout=30,
            )
            _, out, _ = client.exec_command("true", timeout=60)
            status = out.channel.recv_exit_status()
            if status != 0:
                errors.append(f"{info.address}: exit status {status}")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(f"{info.address}: {exc}")
        finally:
            client.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(info,)) for info in infos]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit("paramiko fan-out failed: " + "; ".join(errors[:3]))
    return elapsed


def mhtest_run(infos: list[HostInfo], test: Path, results: Path, env: dict[str, str]) -> float:
    """Seconds for `mhtest run TEST --hosts ...` on `infos`; checks every result passed."""
    command = [
        sys.executable,
        "-m",
        "mhtest",
        "run",
        str(test),
        "--hosts",
        ",".join(i.alias for i in infos),
        "--ssh-config",
        infos[0].ssh_config,
        "--job-results-dir",
        str(results),
    ]
    started = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL
    )
    elapsed = time.perf_counter() - started
    tests = json.loads((results / "latest" / "results.json").read_text())["tests"]
    passed = [t for t in tests if t["status"] == "PASS"]
    if done.returncode != 0 or len(passed) != len(infos):
        raise SystemExit(
            f"mhtest run on {len(infos)} hosts: exit {done.returncode}, "
            f"{len(passed)} PASS\n{done.stdout}{done.stderr}"
        )
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,8,32", help="host counts (comma-separated)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--remote-cache",
        default=None,
        help="host-side cache directory (default: the hosts' ~/.cache/mhtest)",
    )
    opts = parser.parse_args()
    counts = [int(n) for n in opts.hosts.split(",")]

    env = dict(os.environ)
    if opts.remote_cache:
        env["MHTEST_REMOTE_CACHE"] = opts.remote_cache
    with tempfile.TemporaryDirectory(prefix="mhtest-bench-") as tmp:
        work = Path(tmp)
        test = work / "tests" / "passtest.py"
        test.parent.mkdir()
        test.write_text(PASSTEST)
        with SshdPool(work / "sshd") as pool:
            infos = pool.hosts(max(counts))
            started = time.perf_counter()
            mhtest_run(infos, test, work / "warmup", env)
            print(f"warm-up run on {len(infos)} hosts: {time.perf_counter() - started:.2f} s")
            rows = []
            for n in counts:
                fan, run = [], []
                for r in range(opts.rounds):
                    fan.append(paramiko_fanout(infos[:n]))
                    run.append(mhtest_run(infos[:n], test, work / f"r-{n}-{r}", env))
                rows.append((n, statistics.median(fan), statistics.median(run)))

    print(f"{'hosts':>5}  {'paramiko true':>13}  {'mhtest run':>10}  {'ratio':>5}")
    for n, fan, run in rows:
        print(f"{n:>5}  {fan:>11.2f} s  {run:>8.2f} s  {run / fan:>5.2f}")
    n, fan, run = rows[-1]
    verdict = "met" if run <= 2 * fan else "NOT met"
    print(f"target (mhtest <= 2x paramiko on {n} hosts): {verdict} ({run / fan:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
