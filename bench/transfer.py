"""Benchmark: SSHHost.send_file / get_file of a 100 MB file against OpenSSH scp.

Starts its own loopback sshd (mhtest.hosts.testing, the same code as the test fixtures),
then alternates mhtest and scp in each direction for a few rounds and prints the median MB/s
of each and the ratios. Target: mhtest >= 0.9x scp both ways.

    python3 bench/transfer.py [--size-mb 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mhtest.hosts.testing import SshdPool


def timed(func) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mhtest-bench-") as tmp:
        work = Path(tmp)
        src = work / "payload.bin"
        with open(src, "wb") as out:
            for _ in range(opts.size_mb):
                out.write(os.urandom(1 << 20))
        size_mb = src.stat().st_size / 1e6
        with SshdPool(work / "sshd") as pool:
            info = pool.hosts(1)[0]
            scp = ["scp", "-q", *info.ssh_args()]
            scp_gcm = [*scp, "-c", "aes128-gcm@openssh.com"]
            remote = str(work / "remote.bin")
            remote_scp = str(work / "remote-scp.bin")
            with info.make_host() as host:
                host.run("true")  # connect outside the timings (scp pays its own handshake)
                results: dict[str, list[float]] = {
                    k: [] for k in ("send", "scp_up", "gcm_up", "get", "scp_down", "gcm_down")
                }
                up = [str(src), f"{info.address}:{remote_scp}"]
                down = [f"{info.address}:{remote_scp}", str(work / "back-scp.bin")]
                back = str(work / "back.bin")
                for _ in range(opts.rounds):
                    results["send"].append(timed(lambda: host.send_file(str(src), remote)))
                    results["scp_up"].append(timed(lambda: subprocess.run([*scp, *up], check=True)))
                    results["gcm_up"].append(
                        timed(lambda: subprocess.run([*scp_gcm, *up], check=True))
                    )
                    results["get"].append(timed(lambda: host.get_file(remote, back)))
                    results["scp_down"].append(
                        timed(lambda: subprocess.run([*scp, *down], check=True))
                    )
                    results["gcm_down"].append(
                        timed(lambda: subprocess.run([*scp_gcm, *down], check=True))
                    )
                original = src.read_bytes()
                if Path(remote).read_bytes() != original:
                    print("ERROR: send_file wrote different bytes", file=sys.stderr)
                    return 1
                if (work / "back.bin").read_bytes() != original:
                    print("ERROR: get_file returned different bytes", file=sys.stderr)
                    return 1
                cipher = host.transport().remote_cipher

    rate = {k: size_mb / statistics.median(v) for k, v in results.items()}
    print(
        f"transfer of {size_mb:.0f} MB ({opts.size_mb} MiB) over loopback sshd, "
        f"median of {opts.rounds} rounds"
    )
    print(f"  mhtest cipher: {cipher}; scp: OpenSSH defaults, and with -c aes128-gcm")
    for name, ours, ref, gcm in (
        ("send_file", "send", "scp_up", "gcm_up"),
        ("get_file", "get", "scp_down", "gcm_down"),
    ):
        print(
            f"  {name:9} {rate[ours]:6.1f} MB/s | scp {rate[ref]:6.1f} MB/s "
            f"ratio {rate[ours] / rate[ref]:.2f}x | scp aes128-gcm {rate[gcm]:6.1f} MB/s "
            f"ratio {rate[ours] / rate[gcm]:.2f}x"
        )
    worst = min(rate["send"] / rate["scp_up"], rate["get"] / rate["scp_down"])
    print(f"  target >= 0.90x scp both ways: {'met' if worst >= 0.9 else 'NOT met'} ({worst:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
