"""A QEMU process on a host (this machine or one reached over SSH), for VM guests as hosts.

QEMU runs on the hypervisor host under a small shell supervisor started through the host's
own command channel; the supervisor ends QEMU when its stdin closes, that is when we close it
or when this process dies or loses its connection, whatever the reason. Everything QEMU
writes lives in a private temporary directory on the host: ``qemu.log`` (its stderr),
``console.log`` (the serial console), ``firmware.log`` (SeaBIOS's debug port: "No bootable
device" and the like), ``qmp.sock``. QMP commands are one-shots run there with python3 (a
unix socket in a 0700 directory: nobody else on the host can drive the VM).
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

from mhtest.hosts.base import Host
from mhtest.hosts.errors import HostError
from mhtest.virt.qemu import VMError, VMStartError

log = logging.getLogger(__name__)

PID_MARK = "MHTEST-QEMU-PID "
READY_MARK = "MHTEST-QEMU-READY"
EXIT_MARK = "MHTEST-QEMU-EXIT "

_SUPERVISOR = r"""
dir=$1; shift
cd "$dir" || exit 125
"$@" </dev/null >>qemu.log 2>&1 &
pid=$!
echo "MHTEST-QEMU-PID $pid"
# Our stdin stays open as long as the controller wants this QEMU. (A background job's stdin
# is /dev/null: the watcher reads ours through fd 3.) Once it is closed, nobody reads this
# directory any more: it goes with QEMU.
exec 3<&0
( cat <&3 >/dev/null; : > "$dir/.released"; kill -TERM $pid 2>/dev/null; sleep 2;
  kill -KILL $pid 2>/dev/null ) >/dev/null 2>&1 &
watcher=$!
exec 3<&-
while kill -0 $pid 2>/dev/null && [ ! -S qmp.sock ]; do sleep 0.05; done
[ -S qmp.sock ] && echo "MHTEST-QEMU-READY"
wait $pid
status=$?
[ -e "$dir/.released" ] && cd / && rm -rf "$dir"
kill $watcher 2>/dev/null
echo "MHTEST-QEMU-EXIT $status"
"""

# One QMP command over the VM's unix socket; waits (bounded) for QEMU to create it.
_QMP_CLIENT = r"""
import json, socket, sys, time
path, command, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
deadline = time.monotonic() + timeout
while True:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(max(0.1, deadline - time.monotonic()))
    try:
        s.connect(path)
        break
    except OSError as exc:
        s.close()
        if time.monotonic() > deadline:
            sys.exit("cannot connect to QMP socket %s: %s" % (path, exc))
        time.sleep(0.05)
f = s.makefile("rw")
def reply():
    while True:
        line = f.readline()
        if not line:
            sys.exit("QEMU closed its QMP socket")
        msg = json.loads(line)
        if "return" in msg or "error" in msg:
            return msg
f.readline()
f.write('{"execute": "qmp_capabilities"}\n'); f.flush(); reply()
f.write(command + "\n"); f.flush()
print(json.dumps(reply()))
"""

_FORWARD_RE = re.compile(r"TCP\[HOST_FORWARD\]\s+\d+\s+(\S+)\s+(\d+)\s+\S+\s+(\d+)")


class _Launch:
    """The supervisor as a local subprocess or a RemoteProcess: lines out, done, close."""

    def __init__(self, host: Host, args: list[str]) -> None:
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._done = False
        self._proc: Any = None
        self._remote: Any = None
        if hasattr(host, "start"):  # an SSH host: a channel whose stdin we keep open
            self._remote = host.start("sh -c " + shlex.quote(_SUPERVISOR) + " sh", args=args)
            stream = self._remote.stdout
        else:
            self._proc = subprocess.Popen(
                ["sh", "-c", _SUPERVISOR, "sh", *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            stream = self._proc.stdout
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        try:
            for raw in stream:
                line = raw.decode(errors="replace").rstrip("\n")
                with self._cond:
                    self._lines.append(line)
                    self._cond.notify_all()
        except (OSError, ValueError, EOFError) as exc:
            log.debug("QEMU supervisor output: %s", exc)
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def wait_line(self, prefix: str | tuple[str, ...], timeout: float) -> str | None:
        """The first output line starting with `prefix` (one of them), as it is; waits until
        it comes, the output ends, or `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._lines:
                    if line.startswith(prefix):
                        return line
                left = deadline - time.monotonic()
                if self._done or left <= 0:
                    return None
                self._cond.wait(left)

    @property
    def done(self) -> bool:
        return self._done

    def close(self) -> None:
        """Close the supervisor's stdin (it then ends QEMU if it still runs) and our side."""
        if self._proc is not None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
            self._proc.stdout.close()
        elif self._remote is not None:
            channel = self._remote.channel
            try:
                channel.shutdown_write()
                deadline = time.monotonic() + 10
                while not self._done and time.monotonic() < deadline:
                    time.sleep(0.05)
            except (OSError, EOFError) as exc:
                log.debug("QEMU supervisor channel: %s", exc)
            channel.close()


class HostQEMU:
    """One QEMU process on `host`, started by start() and ended by stop() (or by our end)."""

    def __init__(self, host: Host, name: str, args: Sequence[str]) -> None:
        self.host = host
        self.name = name
        self.args = list(args)
        self.dir = ""
        self.pid: int | None = None
        self._launch: _Launch | None = None

    def path(self, name: str) -> str:
        return f"{self.dir}/{name}"

    def qemu_args(self) -> list[str]:
        """The QEMU command line: ours (console, firmware log, QMP) after the given args."""
        return [
            *self.args,
            "-chardev",
            f"file,id=mhtest-console,path={self.path('console.log')}",
            "-serial",
            "chardev:mhtest-console",
            "-chardev",
            f"file,id=mhtest-firmware,path={self.path('firmware.log')}",
            "-device",
            "isa-debugcon,iobase=0x402,chardev=mhtest-firmware",
            "-qmp",
            f"unix:{self.path('qmp.sock')},server=on,wait=off",
        ]

    def start(self, timeout: float = 30.0) -> HostQEMU:
        """Start QEMU and wait until its QMP monitor answers; VMStartError with QEMU's words."""
        self.dir = self.host.get_tmp_dir()
        args = self.qemu_args()
        log.info("guest %s: starting on %s: %s", self.name, self.host, shlex.join(args))
        self._launch = _Launch(self.host, [self.dir, *args])
        pid = self._launch.wait_line(PID_MARK, timeout)
        if pid is None:
            self._fail_start("its supervisor did not start it")
        self.pid = int(pid[len(PID_MARK) :])
        if self._launch.wait_line((READY_MARK, EXIT_MARK), timeout) != READY_MARK:
            self._fail_start(f"no QMP monitor within {timeout:g} s")
        try:
            self.qmp("query-status", timeout=timeout)
        except VMError as exc:
            self._fail_start(str(exc))
        return self

    def _fail_start(self, why: str) -> None:
        status = self._launch.wait_line(EXIT_MARK, 5) if self._launch else None
        if status is not None:
            status = status[len(EXIT_MARK) :]
        tail = self.log_tail("qemu.log")
        self.stop()
        where = f"on {self.host}"
        if status is not None:
            where += f" (exit status {status})"
        raise VMStartError(f"guest {self.name}: QEMU failed to start {where}: {tail or why}")

    def is_alive(self) -> bool:
        return self._launch is not None and not self._launch.done

    def exit_status(self) -> str | None:
        """QEMU's exit status once it has ended (as the supervisor reported it)."""
        if self._launch is None or not self._launch.done:
            return None
        line = self._launch.wait_line(EXIT_MARK, 0)
        return line[len(EXIT_MARK) :] if line else None

    def qmp(self, command: str, arguments: dict | None = None, timeout: float = 30.0) -> Any:
        """Run one QMP command on the host; its "return" value. VMError with QEMU's words."""
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        try:
            result = self.host.run(
                "python3 -c " + shlex.quote(_QMP_CLIENT),
                args=[self.path("qmp.sock"), json.dumps(message), str(timeout)],
                timeout=timeout + 10,
                ignore_status=True,
            )
        except HostError as exc:
            raise VMError(f"guest {self.name}: QMP {command!r} on {self.host}: {exc}") from None
        if result.exit_status != 0:
            why = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise VMError(f"guest {self.name}: QMP {command!r} on {self.host} failed: {why}")
        reply = json.loads(result.stdout)
        if "error" in reply:
            raise VMError(
                f"guest {self.name}: QMP {command!r} failed: {reply['error'].get('desc')}"
            )
        return reply["return"]

    def forwarded_port(self, guest_port: int = 22) -> tuple[str, int]:
        """(address, port) on the host that QEMU's user network forwards to `guest_port`."""
        text = self.qmp("human-monitor-command", {"command-line": "info usernet"})
        for address, port, dest in _FORWARD_RE.findall(text):
            if int(dest) == guest_port:
                return address, int(port)
        raise VMError(f"guest {self.name}: no host port forwards to guest port {guest_port}")

    def log_tail(self, name: str = "console.log", lines: int = 5) -> str:
        """The last lines of one of QEMU's files on the host, joined on one line."""
        if not self.dir:
            return ""
        try:
            result = self.host.run(
                f"tail -n {int(lines)}", args=[self.path(name)], timeout=30, ignore_status=True
            )
        except HostError as exc:
            return f"(cannot read {name}: {exc})"
        text = result.stdout.replace("\r", "")
        return " | ".join(x.strip() for x in text.splitlines() if x.strip())

    def console_tail(self, lines: int = 5) -> str:
        """The serial console's last lines, else the firmware's (a disk that does not boot)."""
        return self.log_tail("console.log", lines) or self.log_tail("firmware.log", lines)

    def stop(self, grace: float = 5.0) -> None:
        """End QEMU: quit through QMP, then the supervisor's kill; remove its files."""
        if self._launch is None:
            return
        if self.is_alive():
            try:
                self.qmp("quit", timeout=grace)
            except VMError as exc:
                log.debug("guest %s: quit: %s", self.name, exc)
        self._launch.close()
        self._launch = None
        if self.dir:
            try:
                self.host.run("rm -rf --", args=[self.dir], timeout=60, ignore_status=True)
            except HostError as exc:
                log.warning("guest %s: could not remove %s: %s", self.name, self.dir, exc)


# Boots a kernel under KVM for a few seconds: its banner on the console means KVM works.
_KVM_PROBE = r"""
qemu=$1 kernel=$2 wait=$3
[ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] || { echo NO-DEV-KVM; exit 0; }
[ -n "$kernel" ] || kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)
[ -r "$kernel" ] || { echo NO-KERNEL; exit 0; }
dir=$(mktemp -d)
"$qemu" -accel kvm -nodefaults -display none -m 256 -kernel "$kernel" \
    -append "console=ttyS0 panic=-1" -no-reboot -serial "file:$dir/console" \
    >"$dir/log" 2>&1 </dev/null &
pid=$!
i=0 answer=KVM-HANGS
while [ $i -lt $((wait * 5)) ]; do
    if grep -q "Linux version" "$dir/console" 2>/dev/null; then answer=KVM-OK; break; fi
    kill -0 $pid 2>/dev/null || { answer="KVM-FAILS $(tail -n 1 "$dir/log")"; break; }
    sleep 0.2; i=$((i + 1))
done
kill -KILL $pid 2>/dev/null; wait $pid 2>/dev/null
rm -rf "$dir"
echo "$answer"
"""


def probe_accel(
    host: Host, qemu_binary: str = "qemu-system-x86_64", kernel: str = "", wait: int = 20
) -> str:
    """ "kvm" if a Linux kernel really runs under KVM on `host`, else "tcg".

    A /dev/kvm that opens is not enough: some nested or paravirtual KVMs run the firmware
    and then hang in the kernel's early boot, so a kernel (`kernel`, else the newest
    /boot/vmlinuz-* there) is booted under KVM for up to `wait` seconds. Without a kernel
    to try, a usable /dev/kvm is trusted.
    """
    result = host.run(
        "sh -c " + shlex.quote(_KVM_PROBE) + " sh",
        args=[qemu_binary, kernel, str(int(wait))],
        timeout=wait + 30,
    )
    answer = result.stdout.strip()
    if answer in ("KVM-OK", "NO-KERNEL"):
        return "kvm"
    if answer != "NO-DEV-KVM":
        log.warning("%s: a kernel does not boot under KVM there (%s): using TCG", host, answer)
    return "tcg"
