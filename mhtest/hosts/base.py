"""Host: the operations every kind of host offers, built on `run()`.

Concrete hosts (SSHHost, LocalHost) provide `run`, `send_file`, `get_file`, `is_up` and
`close`; this class adds the Autoserv conveniences on top of them.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Sequence
from typing import Any

from mhtest.hosts.errors import CmdError, HostError, RebootError
from mhtest.hosts.result import CmdResult

log = logging.getLogger(__name__)

BOOT_ID = "/proc/sys/kernel/random/boot_id"


class Host:
    """Base class of every host; use SSHHost or LocalHost."""

    name: str = "host"
    params: dict[str, Any]

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        self.params = dict(params or {})
        self._tmp_dirs: list[str] = []

    # -- to be provided by subclasses --------------------------------------------------------

    def run(
        self,
        command: str,
        timeout: float | None = None,
        ignore_status: bool = False,
        stdin: str | bytes | None = None,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> CmdResult:
        raise NotImplementedError

    def send_file(self, source: str | Sequence[str], dest: str) -> None:
        raise NotImplementedError

    def get_file(self, source: str | Sequence[str], dest: str) -> None:
        raise NotImplementedError

    def is_up(self) -> bool:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------

    def __str__(self) -> str:
        return self.name

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the temporary directories made by get_tmp_dir()."""
        dirs, self._tmp_dirs = self._tmp_dirs, []
        if dirs:
            try:
                self.run("rm -rf --", args=dirs, timeout=60, ignore_status=True)
            except HostError as exc:
                log.warning("%s: could not remove temporary directories %s: %s", self, dirs, exc)

    def get_tmp_dir(self, parent: str = "/tmp") -> str:
        """A new private directory on the host, removed by close()."""
        template = parent.rstrip("/") + "/mhtest.XXXXXX"
        path = self.run("mktemp -d", args=[template], timeout=60).stdout.strip()
        if not path:
            raise HostError(f"{self}: mktemp -d in {parent} printed nothing", str(self))
        self._tmp_dirs.append(path)
        return path

    def get_num_cpu(self) -> int:
        """Number of online CPUs on the host."""
        out = self.run("getconf _NPROCESSORS_ONLN || nproc", timeout=60).stdout.strip()
        try:
            return int(out.splitlines()[-1])
        except (ValueError, IndexError):
            raise HostError(f"{self}: could not count CPUs (got {out!r})", str(self)) from None

    def get_boot_id(self, timeout: float = 30) -> str:
        """The kernel's boot id: changes on every boot."""
        return self.run(f"cat {BOOT_ID}", timeout=timeout).stdout.strip()

    # -- what control files ask of a host (Autoserv's names) ---------------------------------

    @property
    def ip(self) -> str:
        """The host's IP address (its name resolved here)."""
        import socket

        address = getattr(self, "hostname", None) or self.name
        try:
            return socket.getaddrinfo(address, None)[0][4][0]
        except (OSError, UnicodeError) as exc:
            raise HostError(f"{self}: cannot resolve {address!r}: {exc}", str(self)) from None

    def get_arch(self) -> str:
        """The machine's architecture (`uname -m`)."""
        return self.run("uname -m", timeout=60).stdout.strip()

    def get_kernel_ver(self) -> str:
        """The running kernel's release (`uname -r`)."""
        return self.run("uname -r", timeout=60).stdout.strip()

    def get_cmdline(self) -> str:
        """The running kernel's command line (/proc/cmdline)."""
        return self.run("cat /proc/cmdline", timeout=60).stdout.strip()

    def get_uptime(self) -> float:
        """Seconds since the host booted (/proc/uptime)."""
        out = self.run("cat /proc/uptime", timeout=60).stdout.split()
        try:
            return float(out[0])
        except (ValueError, IndexError):
            raise HostError(f"{self}: cannot read /proc/uptime (got {out!r})", str(self)) from None

    def check_uptime(self) -> float:
        """Check that the host answers and reports an uptime; returns it (seconds)."""
        uptime = self.get_uptime()
        if uptime <= 0:
            raise HostError(f"{self}: reports an uptime of {uptime} s", str(self))
        return uptime

    def wait_up(self, timeout: float = 60) -> bool:
        """Wait until the host answers commands; True if it did within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if self.is_up():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))

    def wait_down(self, timeout: float = 60, old_boot_id: str | None = None) -> bool:
        """Wait until the host stops answering (or answers with a new boot id).

        Judged by new connections: a connection opened before may outlive the server.
        """
        deadline = time.monotonic() + timeout
        while True:
            self._forget_connection()
            if not self.is_up():
                return True
            if old_boot_id is not None:
                try:
                    if self.get_boot_id(timeout=10) != old_boot_id:
                        return True
                except HostError:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)

    def reboot(
        self,
        timeout: float = 600,
        reboot_cmd: str = "reboot",
        down_timeout: float | None = None,
    ) -> None:
        """Reboot the host and wait until it is back with a new boot id.

        Raises RebootError naming the phase (going down, coming up) that ran out of time.
        """
        old_boot_id = self.get_boot_id()
        deadline = time.monotonic() + timeout
        log.info("%s: rebooting with %r (boot id %s)", self, reboot_cmd, old_boot_id)
        # Detach the reboot so our channel is not torn down before it has started.
        cmd = f"(sleep 1; {reboot_cmd}) </dev/null >/dev/null 2>&1 &"
        try:
            self.run(cmd, timeout=30, ignore_status=True)
        except HostError as exc:
            log.debug("%s: reboot command ended with %s (expected while going down)", self, exc)
        self._forget_connection()
        down = self.wait_down(min(down_timeout or timeout, timeout), old_boot_id=old_boot_id)
        if not down:
            raise RebootError(f"{self}: did not go down within {timeout:g} s after {reboot_cmd!r}")
        seen_old_id = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.wait_up(remaining):
                if seen_old_id:
                    raise RebootError(
                        f"{self}: answers again but its boot id is still {old_boot_id}: "
                        f"{reboot_cmd!r} did not reboot it (waited {timeout:g} s)"
                    )
                raise RebootError(f"{self}: did not come back within {timeout:g} s of rebooting")
            try:
                new_boot_id = self.get_boot_id(timeout=10)
            except HostError as exc:
                log.debug("%s: boot id not readable yet: %s", self, exc)
                time.sleep(0.5)
                continue
            if new_boot_id != old_boot_id:
                log.info("%s: back up (boot id %s)", self, new_boot_id)
                return
            seen_old_id = True
            time.sleep(0.5)

    def _forget_connection(self) -> None:
        """Drop any cached connection (it will not survive a reboot)."""

    def check_result(self, result: CmdResult, ignore_status: bool) -> CmdResult:
        """Raise CmdError for a failed command unless `ignore_status`."""
        if not ignore_status and not result.ok:
            raise CmdError(result, str(self))
        return result


def build_command(
    command: str, env: dict[str, str] | None = None, args: Sequence[str] = ()
) -> tuple[str, str]:
    """Shell text for a command, as (text to run, text to show).

    `args` are shell-quoted and appended; `env` is exported first in the text to run only, so
    its values (maybe secrets) stay out of results and logs.
    """
    if args:
        command = command + " " + " ".join(shlex.quote(str(a)) for a in args)
    shown = command
    if env:
        exports = []
        for key, value in env.items():
            if not key.isidentifier():
                raise ValueError(f"environment variable name {key!r} is not valid")
            exports.append(f"{key}={shlex.quote(str(value))}")
        command = "export " + " ".join(exports) + "; " + command
    return command, shown
