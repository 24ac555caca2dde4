"""Host: the operations every kind of host offers, built on `run()`.

Concrete hosts (SSHHost, LocalHost) provide `run`, `send_file`, `get_file`, `is_up` and
`close`; this class adds the Autoserv conveniences on top of them.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable, Sequence
from typing import Any

from mhtest.hosts.errors import CmdError, HostError, RebootError
from mhtest.hosts.result import CmdResult

log = logging.getLogger(__name__)

BOOT_ID = "/proc/sys/kernel/random/boot_id"
#: Seconds between checks while waiting for a host to come up, and to go down.
UP_POLL = 0.1
DOWN_POLL = 0.2
#: Seconds a detached reboot waits, so that the command starting it returns first.
REBOOT_DELAY = 0.2
#: Seconds a reboot waits for the host's own word that it goes down (an SSH host: the end of
#: the session that started the reboot) before it asks the host whether it is down.
GOING_WAIT = 20.0
#: Autotest's cascade: each harsher step runs only if the host is still there.
REBOOT_CASCADE = "reboot & sleep 60; reboot -f & sleep 10; reboot -nf & sleep 10; telinit 6 &"


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
        return self._wait_for(timeout, self.is_up) is not None

    def _wait_for(self, timeout: float, check: Callable[[], Any]) -> Any:
        """Call `check` until it returns something true (returned) or `timeout` (None)."""
        deadline = time.monotonic() + timeout
        while True:
            answer = check()
            if answer:
                return answer
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(UP_POLL, max(0.0, deadline - time.monotonic())))

    def _answered_boot_id(self) -> str | None:
        """The boot id if the host answers now, else None (for polling)."""
        try:
            return self.get_boot_id(timeout=10) or None
        except HostError as exc:
            log.debug("%s: boot id not readable: %s", self, exc)
            self._forget_connection()
            return None

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
            time.sleep(min(DOWN_POLL, max(0.0, deadline - time.monotonic())))

    def reboot(
        self,
        timeout: float = 600,
        wait: bool = True,
        reboot_cmd: str | None = None,
        down_timeout: float | None = None,
        fastsync: bool = False,
    ) -> None:
        """Reboot the host and wait until it is back with a new boot id.

        Starts, detached from our connection, a sync of the disks (unless `fastsync`) and
        then `reboot_cmd`, by default Autotest's cascade (reboot, then reboot -f, reboot -nf
        and telinit 6 for a host that does not go down). The sync runs in the same command as
        the reboot: one round trip less (0.2-0.4 s in an emulated guest, bench/reboot.py).
        With `wait`, waits until the host has gone down (stopped answering, or answers with a
        new boot id) and is back up with a new boot id; RebootError names the phase that ran
        out of time.
        """
        deadline = time.monotonic() + timeout
        what = reboot_cmd or "reboot"
        # A sync that fails does not stop the reboot.
        sync = "" if fastsync else "sync; "
        old_boot_id, going = self._start_reboot(f"{sync}{reboot_cmd or REBOOT_CASCADE}", what)
        if wait:
            self.wait_for_restart(timeout, old_boot_id, what, down_timeout, deadline, going)
        elif going is not None:
            going(0.0)  # (lets go of what it watches)

    def _start_reboot(self, steps: str, what: str) -> tuple[str, Callable[[float], bool] | None]:
        """Read the boot id, then start `steps` detached, after a moment (our command's
        answer gets back before sshd goes): (boot id, None).

        A host may return, instead of None, a call that waits up to the seconds given for
        the host to go down and says whether it did (SSHHost: its session ends).
        """
        old_boot_id = self.get_boot_id()
        log.info("%s: rebooting with %r (boot id %s)", self, what, old_boot_id)
        cmd = f"( (sleep {REBOOT_DELAY}; {steps}) </dev/null >/dev/null 2>&1 & )"
        try:
            self.run(cmd, timeout=10, ignore_status=True)
        except HostError as exc:
            log.debug("%s: reboot command ended with %s (expected while going down)", self, exc)
        return old_boot_id, None

    def wait_for_restart(
        self,
        timeout: float,
        old_boot_id: str | None,
        what: str = "reboot",
        down_timeout: float | None = None,
        deadline: float | None = None,
        going: Callable[[float], bool] | None = None,
    ) -> None:
        """Wait until the host goes down and is back with a boot id other than `old_boot_id`.

        `deadline` (time.monotonic()) ends the wait if earlier than `timeout` from now.
        `going` (see _start_reboot) tells when the host goes down without asking it; when
        it does not say so within GOING_WAIT (or half the time to go down), wait_down()
        asks. RebootError names the phase (going down, coming up) that ran out of time.
        """
        deadline = min(deadline or float("inf"), time.monotonic() + timeout)
        down_for = min(down_timeout or timeout, deadline - time.monotonic())
        went = going is not None and going(max(0.0, min(GOING_WAIT, down_for / 2)))
        self._forget_connection()
        if old_boot_id is not None and not went:
            down_for = min(down_timeout or timeout, deadline - time.monotonic())
            down = self.wait_down(max(0.0, down_for), old_boot_id=old_boot_id)
            if not down:
                raise RebootError(
                    f"{self}: did not go down within {timeout:g} s after {what!r}{self._why()}",
                    str(self),
                )
        seen_old_id = False
        while True:
            remaining = deadline - time.monotonic()
            new_boot_id = None
            if remaining > 0:
                new_boot_id = self._wait_for(remaining, self._answered_boot_id)
            if new_boot_id is None:
                if seen_old_id:
                    raise RebootError(
                        f"{self}: answers again but its boot id is still {old_boot_id}: "
                        f"{what!r} did not reboot it (waited {timeout:g} s)",
                        str(self),
                    )
                raise RebootError(
                    f"{self}: did not come back within {timeout:g} s of {what!r}{self._why()}",
                    str(self),
                )
            if new_boot_id != old_boot_id:
                log.info("%s: back up (boot id %s)", self, new_boot_id)
                return
            seen_old_id = True
            self._forget_connection()
            time.sleep(DOWN_POLL)

    def _why(self) -> str:
        """More about a host that does not answer, for error messages (a VM's console)."""
        return ""

    # -- power ---------------------------------------------------------------------------------

    @property
    def power(self) -> Any:
        """The host's power control (a `mhtest.power` plugin): hardreset, power_on/off/cycle.

        Chosen by the host's `power` param (an inventory's `power: {type: ipmi, ...}`);
        VM guests have their own.
        """
        if getattr(self, "_power", None) is None:
            from mhtest.hosts.power import power_for

            self._power = power_for(self)
        return self._power

    def hardreset(self, timeout: float = 600, wait: bool = True) -> None:
        """Reset the machine through its power control, then wait until it is back up.

        For a host that no longer answers (hung, sshd gone): its boot id is read when it
        can be, and must then change.
        """
        power = self.power  # no power control: say so before touching anything
        old_boot_id = self._answered_boot_id()
        if old_boot_id is None:
            log.info("%s: boot id not readable before the reset", self)
        log.info("%s: hard reset through %s", self, power)
        self._forget_connection()
        power.hardreset()
        if wait:
            self.wait_for_restart(timeout, old_boot_id, "hardreset")

    # -- bootloader ----------------------------------------------------------------------------

    @property
    def bootloader(self) -> Any:
        """The host's boot loader (mhtest.autoserv.bootloader): entries, default, add_kernel."""
        if getattr(self, "_bootloader", None) is None:
            from mhtest.autoserv.bootloader import Bootloader

            self._bootloader = Bootloader(self)
        return self._bootloader

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


def run_tool(
    host: Host,
    command: str,
    what: str,
    error: Callable[[str], Exception],
    timeout: float = 600,
    **kwargs: Any,
) -> str:
    """Run a tool on `host` and return its stdout; when it fails, raise `error(message)`,
    the message one line: "HOST: WHAT failed (exit status N): the tool's last line"."""
    try:
        return host.run(command, timeout=timeout, **kwargs).stdout
    except CmdError as exc:
        tail = (exc.result.stderr or exc.result.stdout).strip().splitlines()[-1:]
        raise error(
            f"{host}: {what} failed (exit status {exc.result.exit_status})"
            f"{': ' + tail[0] if tail else ''}"
        ) from None
