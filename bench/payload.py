"""Benchmark: a test with 300 MB beside it, run on a loopback sshd host, against a file copy.

Starts its own loopback sshd (mhtest.hosts.testing.SshdPool) and gives it a host cache of
its own (the warm environment linked in), then for a few rounds, alternating:

- send_file / scp: `SSHHost.send_file` and OpenSSH `scp` of the same bytes;
- mhtest cold: `mhtest run pass.py --hosts H` with `pass.py.data/image.bin` (300 MB) and
  the host's payload cache emptied first: the files are sent;
- mhtest cached: the same run again: the host holds them;
- mhtest trivial: the same run of a test with nothing beside it (the run's own cost).

Prints the medians, the transfer rate mhtest logged, the ratios, and the controller's peak
RSS (its process and children, as the kernel counts them).

    python3 bench/payload.py [--size-mb 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mhtest.hosts import bootstrap
from mhtest.hosts.testing import SshdPool

PASS_PY = "from mhtest import Test\n\n\nclass Pass(Test):\n    def test(self):\n        pass\n"
#: Runs `mhtest ARGS` and prints its peak RSS (KiB) last on stderr.
RSS_WRAPPER = (
    "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
    "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(p.returncode)"
)


def host_cache(work: Path) -> Path:
    """A host cache of its own, with the warm environment and sources linked in."""
    cache = work / "host-cache"
    cache.mkdir()
    real = Path(bootstrap.REMOTE_CACHE).expanduser()
    for entry in [*real.glob(f"env-{bootstrap.deps_key()}-*"), *real.glob("src-*")]:
        if entry.is_dir() and ".tmp" not in entry.name and ".wheels" not in entry.name:
            (cache / entry.name).symlink_to(entry)
    return cache


def mhtest_run(test: Path, info, cache: Path, results: Path) -> tuple[float, int, str]:
    """(seconds, peak RSS in KiB, job.log) of one `mhtest run`."""
    command = [
        sys.executable,
        "-c",
        RSS_WRAPPER,
        sys.executable,
        "-m",
        "mhtest",
        "run",
        str(test),
        "--hosts",
        info.alias,
        "--ssh-config",
        info.ssh_config,
        "--job-results-dir",
        str(results),
    ]
    env = {**os.environ, "MHTEST_REMOTE_CACHE": str(cache)}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"mhtest run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    rss = int(done.stderr.rsplit("MAXRSS", 1)[1].split()[0])
    return took, rss, (results / "latest" / "job.log").read_text()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mhtest-bench-") as tmp:
        work = Path(tmp)
        big = work / "big"
        (big / "pass.py.data").mkdir(parents=True)
        (big / "pass.py").write_text(PASS_PY)
        image = big / "pass.py.data" / "image.bin"
        with open(image, "wb") as out:
            for _ in range(opts.size_mb):
                out.write(os.urandom(1 << 20))
        small = work / "small"
        small.mkdir()
        (small / "pass.py").write_text(PASS_PY)
        size_mb = image.stat().st_size / 1e6
        cache = host_cache(work)
        times: dict[str, list[float]] = {
            k: [] for k in ("send_file", "scp", "cold", "cached", "trivial")
        }
        rss: dict[str, list[int]] = {"cold": [], "cached": []}
        rates: list[float] = []
        with SshdPool(work / "sshd") as pool:
            info = pool.hosts(1)[0]
            scp = ["scp", "-q", *info.ssh_args(), str(image), f"{info.address}:{work}/scp.bin"]
            mhtest_run(small / "pass.py", info, cache, work / "results")  # warm-up
            with info.make_host() as host:
                host.run("true")
                for _ in range(opts.rounds):
                    started = time.perf_counter()
                    host.send_file(str(image), str(work / "sent.bin"))
                    times["send_file"].append(time.perf_counter() - started)
                    started = time.perf_counter()
                    subprocess.run(scp, check=True, timeout=600)
                    times["scp"].append(time.perf_counter() - started)
                    for payload in cache.glob("payload-*"):
                        shutil.rmtree(payload)
                    took, peak, log = mhtest_run(big / "pass.py", info, cache, work / "results")
                    times["cold"].append(took)
                    rss["cold"].append(peak)
                    found = re.search(r"of test files in [\d.]+ s \((\d+) MB/s\)", log)
                    rates.append(float(found.group(1)) if found else float("nan"))
                    took, peak, log = mhtest_run(big / "pass.py", info, cache, work / "results")
                    assert "of test files in" not in log, "the cached run sent the files again"
                    times["cached"].append(took)
                    rss["cached"].append(peak)
                    times["trivial"].append(
                        mhtest_run(small / "pass.py", info, cache, work / "results")[0]
                    )
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"a test with {size_mb:.0f} MB beside it, one loopback sshd host, "
        f"median of {opts.rounds} rounds"
    )
    print(f"  send_file          {med['send_file']:6.2f} s  {size_mb / med['send_file']:6.0f} MB/s")
    print(f"  scp                {med['scp']:6.2f} s  {size_mb / med['scp']:6.0f} MB/s")
    print(
        f"  mhtest run, sent   {med['cold']:6.2f} s  (its transfer: "
        f"{statistics.median(rates):.0f} MB/s logged; the run less a trivial run: "
        f"{med['cold'] - med['trivial']:.2f} s = "
        f"{(med['cold'] - med['trivial']) / med['send_file']:.2f}x send_file)"
    )
    print(f"  mhtest run, cached {med['cached']:6.2f} s  (a trivial run: {med['trivial']:.2f} s)")
    print(
        f"  controller peak RSS: sent {max(rss['cold']) / 1024:.0f} MiB, "
        f"cached {max(rss['cached']) / 1024:.0f} MiB (the payload: {size_mb:.0f} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
