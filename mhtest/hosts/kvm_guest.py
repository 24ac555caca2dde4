"""KVMGuest: a QEMU virtual machine on a KVM host, used like any SSH host.

``KVMGuest(kvm, qemu_options)`` starts QEMU on the host `kvm` was installed on (see
mhtest.autoserv.kvm) with the given options plus its own: a serial console and firmware log,
a QMP monitor and, unless the KVM object was given addresses, QEMU's user-mode network with
the guest's port 22 forwarded to a free port on the host's loopback. The guest is then
reached over SSH *through* that host (an SSH ``direct-tcpip`` channel; a plain TCP connection
when the host is this machine), so it needs no address of its own. With addresses
(``KVM.install(addresses=[{"mac": ..., "ip": ...}])``), each guest takes the next free one:
its NIC gets the MAC, the options' own ``-netdev`` carries it, and we connect to the IP.

hardreset() and the power controls go through QMP. QEMU is ended by close(), by KVM.close(),
and, whatever happens, when this process ends (mhtest.virt.hostqemu).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mhtest.hosts.errors import HostError, HostSpecError, HostUnreachable
from mhtest.hosts.result import CmdResult
from mhtest.hosts.ssh import SSHHost
from mhtest.hosts.ssh_reach import open_through
from mhtest.virt.hostqemu import HostQEMU

if TYPE_CHECKING:
    from mhtest.autoserv.kvm import KVM

log = logging.getLogger(__name__)

NETDEV_ID = "mhtest-net0"
#: Seconds wait_up() waits by default: an emulated (TCG) guest on a busy host boots slowly.
BOOT_TIMEOUT = 300.0
_NET_OPTIONS = ("-netdev", "-net", "-nic")
_ACCEL_RE = re.compile(r"(^|,)accel=")


def _has_accel(options: Sequence[str]) -> bool:
    for i, opt in enumerate(options):
        if opt in ("-accel", "-enable-kvm", "-no-kvm"):
            return True
        if opt in ("-machine", "-M") and i + 1 < len(options) and _ACCEL_RE.search(options[i + 1]):
            return True
    return False


def _netdev_id(options: Sequence[str]) -> str | None:
    for i, opt in enumerate(options):
        if opt == "-netdev" and i + 1 < len(options):
            for part in options[i + 1].split(",")[1:]:
                if part.startswith("id="):
                    return part[3:]
    return None


class KVMGuest(SSHHost):
    """A VM on `kvm`'s host (see the module docstring); logs in as root with SSH keys.

    `host_key` (the guest sshd's public key, "ssh-ed25519 AAAA...") makes a private
    known_hosts for the guest's forwarded address; otherwise `known_hosts` and
    `accept_new_host_keys` work as for SSHHost. With `start=False`, call start_qemu() yourself.
    """

    def __init__(
        self,
        kvm: KVM,
        qemu_options: str | Sequence[str],
        name: str | None = None,
        user: str = "root",
        key_file: str | Sequence[str] | None = None,
        known_hosts: str | None = None,
        host_key: str | None = None,
        accept_new_host_keys: bool = False,
        connect_timeout: float | None = None,
        params: dict[str, Any] | None = None,
        start: bool = True,
    ) -> None:
        if not kvm.installed:
            raise HostSpecError("KVMGuest: install the KVM object on its host first (install())")
        self.kvm = kvm
        name = name or f"{kvm.host.name}-guest{kvm.next_guest_number()}"
        super().__init__(
            "127.0.0.1",
            user=user,
            port=22,
            key_file=key_file,
            known_hosts=known_hosts,
            accept_new_host_keys=accept_new_host_keys,
            connect_timeout=connect_timeout,
            name=name,
            params=params,
            ssh_config=False,
        )
        self.host_key = host_key
        self.options = (
            shlex.split(qemu_options) if isinstance(qemu_options, str) else list(qemu_options)
        )
        self.address: dict[str, Any] | None = None
        self._known_hosts_tmp: str | None = None
        self.qemu = HostQEMU(kvm.host, name, self._qemu_args())
        if start:
            self.start_qemu()

    #: The power plugin a guest gets when its params name none: its QEMU's monitor.
    default_power = "qmp"

    def __repr__(self) -> str:
        return f"KVMGuest({self.name!r} on {self.kvm.host})"

    # -- QEMU ------------------------------------------------------------------------------------

    def _qemu_args(self) -> list[str]:
        kvm = self.kvm
        args = [kvm.qemu_binary, "-name", self.name, "-nodefaults", "-display", "none"]
        if not _has_accel(self.options):
            args += ["-accel", kvm.accel]
        args += self.options
        has_net = any(opt in _NET_OPTIONS for opt in self.options)
        if kvm.addresses:
            netdev = _netdev_id(self.options)
            if netdev is None:
                raise HostSpecError(
                    f"{self.name}: the KVM object has addresses, so qemu_options must bring the "
                    "network they are on: add e.g. '-netdev bridge,id=net0,br=br0'"
                )
            self.address = kvm.allocate_address(self.name)
            args += ["-device", f"virtio-net-pci,netdev={netdev},mac={self.address['mac']}"]
        elif has_net:
            raise HostSpecError(
                f"{self.name}: qemu_options set up a network ({' '.join(self.options)}): say how "
                "the guest is reached with KVM.install(addresses=[{'mac': ..., 'ip': ...}])"
            )
        else:
            args += [
                "-netdev",
                f"user,id={NETDEV_ID},hostfwd=tcp:127.0.0.1:0-:22",
                "-device",
                f"virtio-net-pci,netdev={NETDEV_ID}",
            ]
        return args

    def start_qemu(self, timeout: float = 30.0) -> None:
        """Start the guest's QEMU (it then boots: wait_up() waits for its sshd)."""
        try:
            self.qemu.start(timeout)
        except BaseException:
            self._release_address()
            raise
        self.kvm.guests.append(self)
        if self.address is not None:
            self.hostname = str(self.address["ip"])
            self.port = int(self.address.get("port", 22))
        else:
            self.hostname, self.port = self.qemu.forwarded_port(22)
        if self.host_key:
            fd, self._known_hosts_tmp = tempfile.mkstemp(prefix="mhtest-guest-known_hosts-")
            with os.fdopen(fd, "w") as out:
                out.write(f"{self.known_hosts_name} {self.host_key}\n")
            self.known_hosts = self._known_hosts_tmp
        log.info("%s: QEMU pid %s on %s; SSH at %s:%s there", self, self.qemu.pid,
                 self.kvm.host, self.hostname, self.port)  # fmt: skip

    def close(self) -> None:
        """Remove temporary directories on the guest, end its QEMU, forget its files."""
        try:
            super().close()
        finally:
            self.qemu.stop()
            self._release_address()
            if self in self.kvm.guests:
                self.kvm.guests.remove(self)
            if self._known_hosts_tmp:
                os.unlink(self._known_hosts_tmp)
                self._known_hosts_tmp = None

    def _release_address(self) -> None:
        if self.address is not None:
            self.kvm.release_address(self.address)
            self.address = None

    # -- reaching it -----------------------------------------------------------------------------

    def _open_socket(self, timeout: float | None = None) -> Any:
        gone = self._gone()
        if gone:
            raise HostUnreachable(f"{self.name}: {gone}", self.name)
        hypervisor = self.kvm.host
        if not isinstance(hypervisor, SSHHost):
            return super()._open_socket(timeout)
        timeout = timeout or self.connect_timeout
        return open_through(hypervisor, self.name, self.hostname, self.port, timeout)

    def _gone(self) -> str | None:
        if self.qemu.is_alive():
            return None
        status = self.qemu.exit_status()
        tail = self.qemu.log_tail("qemu.log")
        return f"its QEMU is not running (exit status {status}){': ' + tail if tail else ''}"

    def _why(self) -> str:
        return f" (QEMU's last console lines: {self.qemu.console_tail() or 'none'})"

    def run(
        self,
        command: str,
        timeout: float | None = None,
        ignore_status: bool = False,
        stdin: str | bytes | None = None,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> CmdResult:
        """As SSHHost.run(); an unreachable guest's error quotes its console's last lines."""
        try:
            return super().run(command, timeout, ignore_status, stdin, env, args)
        except HostUnreachable as exc:
            raise HostUnreachable(f"{exc}{self._why()}", self.name) from None

    def is_up(self) -> bool:
        try:
            return SSHHost.run(self, "true", timeout=self.connect_timeout).ok
        except HostError as exc:
            log.debug("%s: not up: %s", self.name, exc)
            self._forget_connection()
            return False

    def wait_up(self, timeout: float = BOOT_TIMEOUT) -> bool:
        """As SSHHost.wait_up() (a booting guest gets longer by default); when it gives up,
        the console's last lines go to the log."""
        if super().wait_up(timeout):
            return True
        log.warning(
            "%s: not up after %g s%s%s",
            self.name,
            timeout,
            f"; {self._gone()}" if self._gone() else "",
            self._why(),
        )
        return False

    def ssh_command(self, extra: Sequence[str] = ()) -> list[str]:
        """OpenSSH's `ssh` reaching the guest, through its KVM host when that is remote."""
        cmd = super().ssh_command(extra)
        hypervisor = self.kvm.host
        if isinstance(hypervisor, SSHHost):
            proxy = shlex.join(hypervisor.ssh_command(["-W", "%h:%p"]))
            cmd[1:1] = ["-o", f"ProxyCommand={proxy}"]
        return cmd
