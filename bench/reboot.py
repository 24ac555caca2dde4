"""Benchmark: rebooting a VM guest with host.reboot(), against the same reboot seen by QEMU.

One Debian guest (mhtest.virt.debian, built or taken from the cache) runs under QEMU on a
loopback sshd "hypervisor" host that the script starts, and is rebooted --rounds times with
KVMGuest.reboot(). While each reboot runs, the script follows the guest's serial console
(QEMU writes it to a file on this machine) and QEMU's forwarded SSH port, and notes, on this
machine's clock:

- issued: the command that reads the boot id and starts the detached reboot (a sync, then
  `reboot`) answered;
- switching: init's "Switching to runlevel: 6", the guest's first console line of the
  reboot (its init got the request; it then stops the guest's services);
- down: the guest's own "going down" line (init runs the shutdown script);
- up: the new boot's "up after" line (file systems and network ready, sshd starting);
- login: the getty's "login:" prompt of the new boot (started with sshd);
- greeting: the new sshd's first greeting, from a probe of the script's own that connects to
  QEMU's forwarded port every 20 ms from "up" on (the moment sshd accepts connections);
- noticed: when wait_up's greeting probe first got an answer from the new sshd.

Per round it prints the wall time of reboot(), the guest's reboot as QEMU sees it (from its
first console line of the reboot, "switching", to sshd's greeting), mhtest's overhead (wall
minus that: the boot id and reboot command before, and the guest's `reboot` command getting
to init; noticing and logging in after), and how long after the greeting wait_up noticed
sshd. Targets: overhead at most 1 s; noticed within 0.5 s of sshd accepting. The same
overhead counted from "going down" instead (the measure of the first version of this
script, which counts init stopping the guest's services as mhtest's) is printed too.

    python3 bench/reboot.py [--rounds 5] [--memory 384] [--log debug.log]
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mhtest.autoserv.kvm import KVM  # noqa: E402
from mhtest.hosts.kvm_guest import KVMGuest  # noqa: E402
from mhtest.hosts.testing import SshdPool  # noqa: E402
from mhtest.virt.debian import debian_guest  # noqa: E402

log = logging.getLogger("bench.reboot")


class ConsoleWatch:
    """Follows a console log file; notes when words appear, each after the one before."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.seen: dict[str, float] = {}
        self.wanted: tuple[str, ...] = ()
        self._text = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.seen_event: dict[str, threading.Event] = {}
        self._offset = self.path.stat().st_size if self.path.exists() else 0
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def expect(self, *words: str) -> None:
        """Look for `words` in what the console writes from now on, in this order."""
        with self._lock:
            self.seen, self.wanted, self._text = {}, words, ""
            self.seen_event = {word: threading.Event() for word in words}

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                with open(self.path, "rb") as console:
                    console.seek(self._offset)
                    data = console.read()
            except OSError:
                data = b""
            now = time.monotonic()
            self._offset += len(data)
            with self._lock:
                self._text += data.decode(errors="replace")
                start = 0
                for word in self.wanted:
                    found = self._text.find(word, start)
                    if found < 0:
                        break
                    if word not in self.seen:
                        log.info("console: %r", word)
                    self.seen.setdefault(word, now)
                    self.seen_event[word].set()
                    start = found + len(word)
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def first_greeting(
    address: tuple[str, int], start: threading.Event, stop: threading.Event
) -> float:
    """When sshd at `address` first greeted a connection, polled every 20 ms once `start` is
    set (0.0 if it did not before `stop`). Each try that finds no sshd costs the guest one
    refused connection; the probe stops at the first greeting."""
    while not start.wait(0.05):
        if stop.is_set():
            return 0.0
    while not stop.is_set():
        try:
            with socket.create_connection(address, timeout=2) as sock:
                sock.settimeout(5)
                if sock.recv(4) == b"SSH-":
                    log.info("the bench's probe: greeted")
                    return time.monotonic()
        except OSError:
            pass
        time.sleep(0.02)
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memory", type=int, default=384)
    parser.add_argument("--log", help="write mhtest's debug log here (for a slow round)")
    opts = parser.parse_args()
    if opts.log:
        logging.basicConfig(
            filename=opts.log,
            level=logging.DEBUG,
            format="%(relativeCreated)9.0f %(threadName)s %(name)s: %(message)s",
        )
        logging.getLogger("paramiko").setLevel(logging.INFO)

    started = time.monotonic()
    image = debian_guest()
    print(f"image: {image.dir} (built in {image.build_seconds:.0f} s; ready in "
          f"{time.monotonic() - started:.1f} s)")  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="mhtest-bench-reboot-") as tmp,
        SshdPool(Path(tmp) / "sshd") as pool,
    ):
        hypervisor = pool.hosts(1)[0].make_host()
        kvm = KVM(hypervisor)
        kvm.install()
        guest = KVMGuest(kvm, image.qemu_options(opts.memory), key_file=image.key_file,
                         host_key=image.host_key)  # fmt: skip
        noticed: list[float] = []
        rows: list[tuple[float, ...]] = []
        probe = guest.ssh_banner

        def watched_banner(timeout: float = 1.0) -> bool:  # instrumentation only
            answered = probe(timeout)
            if answered and not noticed:
                noticed.append(time.monotonic())
            return answered

        guest.ssh_banner = watched_banner  # type: ignore[method-assign]
        issued: list[float] = []
        real_start = guest._start_reboot

        def watched_start(*args: object, **kwargs: object) -> object:
            try:
                return real_start(*args, **kwargs)  # the boot id, and the detached command
            finally:
                issued.append(time.monotonic())

        guest._start_reboot = watched_start  # type: ignore[method-assign]
        try:
            t0 = time.monotonic()
            if not guest.wait_up(600):
                print(f"guest did not come up: {guest.qemu.console_tail()}")
                return 1
            first = time.monotonic() - t0
            print(f"QEMU {kvm.version}, accelerator {kvm.accel}; first boot {first:.1f} s")
            watch = ConsoleWatch(guest.qemu.path("console.log"))
            for round_ in range(1, opts.rounds + 1):
                watch.expect("Switching to runlevel: 6", "going down", "up after", "login:")
                noticed.clear()
                issued.clear()
                stop = threading.Event()
                with ThreadPoolExecutor(1) as prober:
                    probe_at = (guest.hostname, guest.port)
                    greeting = prober.submit(
                        first_greeting, probe_at, watch.seen_event["up after"], stop
                    )
                    try:
                        begin = time.monotonic()
                        guest.reboot(timeout=900)
                        end = time.monotonic()
                        greeted = greeting.result(10)
                    finally:
                        stop.set()
                down, login = watch.seen.get("going down"), watch.seen.get("login:")
                switching = watch.seen.get("Switching to runlevel: 6")
                if None in (switching, down, login) or not noticed or not greeted or not issued:
                    print(f"round {round_}: console lines or greeting missing ({watch.seen}, "
                          f"{greeted}); skipped")  # fmt: skip
                    continue
                qemu_side = greeted - switching
                row = (end - begin, qemu_side, end - begin - qemu_side, noticed[0] - greeted,
                       end - noticed[0], switching - begin, login - greeted, issued[0] - begin,
                       switching - issued[0], end - begin - (greeted - down),
                       down - switching)  # fmt: skip
                rows.append(row)
                print(
                    f"round {round_}: reboot() {row[0]:6.2f} s | guest reboot->sshd greeting "
                    f"{row[1]:6.2f} s | overhead {row[2]:5.2f} s (before the guest's reboot "
                    f"{row[5]:.2f}: boot id + command {row[7]:.2f}, then to init {row[8]:.2f}; "
                    f"after the greeting: noticed {row[3]:+.2f}, logged in + boot id "
                    f"{row[4]:.2f}) | login prompt {row[6]:+.2f} s from the greeting"
                )
            watch.close()
        finally:
            kvm.close()
            hypervisor.close()
    if rows:
        cols = list(zip(*rows))

        def p(col: int, q: int) -> float:
            ordered = sorted(cols[col])
            return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]

        names = [
            ("reboot() wall", 0),
            ("guest's own reboot (runlevel 6 -> sshd greeting)", 1),
            ("mhtest overhead (target <= 1 s)", 2),
            ("  of which before the guest's reboot starts", 5),
            ("    mhtest: boot id + reboot command (one round trip)", 7),
            ("    the guest: from the command to init", 8),
            ("  of which after noticing: login + boot id", 4),
            ("sshd noticed after its greeting (target <= 0.5 s)", 3),
            ("login prompt after the greeting", 6),
            ("(the guest's init stopping its services)", 10),
            ("(overhead counted from going down, as first measured)", 9),
        ]
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"over {len(rows)} rounds (s), load average {load}:      p50     p90     max")
        for name, col in names:
            print(f"  {name:<52}{p(col, 50):7.2f} {p(col, 90):7.2f} {max(cols[col]):7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
