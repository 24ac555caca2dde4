"""KVM: QEMU/KVM on a host, the hypervisor of KVMGuest hosts (Autoserv's kvm.KVM).

    kvm = KVM(host)                 # bound to `host` for good
    kvm.get("/src/qemu-8.2.tar.xz") # optional: a QEMU build directory or tarball; without
                                    # get(), the host's packaged qemu-system-x86_64
    kvm.install(addresses=None, build=False, insert_modules=False)
    guest = KVMGuest(kvm, "-m 512 -drive file=/var/lib/img/guest.raw,snapshot=on")

install() checks QEMU there (and builds it from the source with `build`), loads the kvm
modules with `insert_modules` (never unloads any: other VMs may be using them), and picks
the accelerator: KVM when a Linux kernel really boots under it there (probed once per host,
QEMU and kernel, and remembered in ~/.cache/mhtest on that host), TCG otherwise. With
`addresses` ([{"mac": ..., "ip": ..., "port": 22}]), guests take one each (see KVMGuest).
close() ends every guest still running.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
from typing import TYPE_CHECKING, Any

from mhtest.autoserv.installable import InstallableObject, InstallError
from mhtest.hosts.base import Host
from mhtest.hosts.errors import CmdError, HostError
from mhtest.virt.hostqemu import probe_accel

if TYPE_CHECKING:
    from mhtest.hosts.kvm_guest import KVMGuest

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
#: Where a QEMU build tree keeps the binary, newest layout first.
BUILT_BINARIES = (f"build/{QEMU}", f"x86_64-softmmu/{QEMU}", QEMU, f"bin/{QEMU}")
BUILD_TIMEOUT = 3 * 3600.0


class KVMError(InstallError):
    """QEMU/KVM cannot be used on the host; the message names it and says why."""


class KVM(InstallableObject):
    """QEMU/KVM on `host`: install() it, then start KVMGuest hosts on it."""

    def __init__(self, host: Host) -> None:
        super().__init__()
        self.host = host
        self.qemu_binary = QEMU
        self.version = ""
        self.accel = "tcg"
        self.installed = False
        self.addresses: list[dict[str, Any]] = []
        self._taken: dict[int, str] = {}  # index in addresses -> guest name
        self.guests: list[KVMGuest] = []
        self._count = 0

    def __repr__(self) -> str:
        return f"KVM({self.host})"

    def get(self, location: Any = None) -> None:
        """A QEMU build directory or tarball to use; nothing: the host's packaged QEMU."""
        if location is not None:
            super().get(location)

    def install(
        self,
        addresses: list[dict[str, Any]] | None = None,
        build: bool = False,
        insert_modules: bool = False,
        accel: str = "auto",
    ) -> None:
        """Make QEMU ready on the host (see the module docstring); KVMError when it is not."""
        for address in addresses or []:
            if not isinstance(address, dict) or not {"mac", "ip"} <= set(address):
                raise KVMError(f"{self.host}: each address needs 'mac' and 'ip': {address!r}")
        if self.source_material:
            self.qemu_binary = self._install_source(build)
        else:
            found = self.host.run(f"command -v {QEMU}", timeout=60, ignore_status=True)
            if not found.ok:
                raise KVMError(
                    f"{self.host}: {QEMU} not found there; install it (Debian: apt-get install "
                    "qemu-system-x86) or give a QEMU build to get()"
                )
            self.qemu_binary = found.stdout.strip()
        try:
            out = self.host.run(shlex.quote(self.qemu_binary) + " --version", timeout=60)
        except CmdError as exc:
            raise KVMError(f"{self.host}: {self.qemu_binary} does not run: {exc}") from None
        self.version = out.stdout.strip().splitlines()[0] if out.stdout.strip() else "?"
        if insert_modules:
            self._insert_modules()
        self.accel = self._accel() if accel == "auto" else accel
        self.addresses = [dict(a) for a in addresses or []]
        self._taken = {}
        self.installed = True
        log.info("%s: %s (%s), accelerator %s", self.host, self.qemu_binary, self.version,
                 self.accel)  # fmt: skip

    def _install_source(self, build: bool) -> str:
        source = self.source_material or ""
        remote = self.host.get_tmp_dir()
        self.host.send_file(source, remote)
        top = f"{remote}/{os.path.basename(source.rstrip('/'))}"
        if os.path.isfile(source):
            self.host.run("tar -xf", args=[top, "-C", remote], timeout=600)
            self.host.run("rm -f --", args=[top], timeout=60)
            listing = self.host.run("ls -1", args=[remote], timeout=60).stdout.split()
            if len(listing) != 1:
                raise KVMError(f"{self.host}: {source} should unpack into one directory")
            top = f"{remote}/{listing[0]}"
        if build:
            log.info("%s: building QEMU in %s", self.host, top)
            try:
                self.host.run(
                    f"cd {shlex.quote(top)} && ./configure --target-list=x86_64-softmmu "
                    "&& make -j$(nproc)",
                    timeout=BUILD_TIMEOUT,
                )
            except CmdError as exc:
                raise KVMError(f"{self.host}: building QEMU from {source} failed: {exc}") from None
        for candidate in BUILT_BINARIES:
            path = f"{top}/{candidate}"
            if self.host.run("test -x", args=[path], timeout=60, ignore_status=True).ok:
                return path
        raise KVMError(
            f"{self.host}: no {QEMU} in {source} ({', '.join(BUILT_BINARIES)}); "
            "build it there first or install(build=True)"
        )

    def _insert_modules(self) -> None:
        script = (
            "modprobe kvm || exit 1; "
            "if grep -qw vmx /proc/cpuinfo; then modprobe kvm_intel; "
            "elif grep -qw svm /proc/cpuinfo; then modprobe kvm_amd; "
            "else echo 'no vmx or svm CPU flag: the CPU offers no hardware virtualization' >&2;"
            " exit 1; fi"
        )
        try:
            self.host.run(script, timeout=120)
        except CmdError as exc:
            raise KVMError(f"{self.host}: cannot load the kvm modules: {exc}") from None

    def _accel(self) -> str:
        """ "kvm" or "tcg" for this host, probed once per QEMU and kernel (cached there)."""
        facts = self.host.run("uname -r; ls /boot/vmlinuz-* 2>/dev/null", timeout=60).stdout
        key = hashlib.sha256(f"{self.version}\n{facts}".encode()).hexdigest()[:16]
        cache = f"$HOME/.cache/mhtest/kvm-accel-{key}"
        known = self.host.run(f'cat "{cache}"', timeout=60, ignore_status=True)
        if known.ok and known.stdout.strip() in ("kvm", "tcg"):
            return known.stdout.strip()
        accel = probe_accel(self.host, self.qemu_binary)
        try:
            self.host.run(f'mkdir -p "$HOME/.cache/mhtest" && echo {accel} > "{cache}"', timeout=60)
        except HostError as exc:
            log.debug("%s: cannot remember the accelerator: %s", self.host, exc)
        return accel

    # -- guests ------------------------------------------------------------------------------------

    def next_guest_number(self) -> int:
        self._count += 1
        return self._count

    def allocate_address(self, guest: str) -> dict[str, Any]:
        """The first address no running guest has; KVMError when all are taken."""
        for index, address in enumerate(self.addresses):
            if index not in self._taken:
                self._taken[index] = guest
                return address
        raise KVMError(
            f"{self.host}: all {len(self.addresses)} addresses given to install() are in use "
            f"(by {', '.join(self._taken.values())})"
        )

    def release_address(self, address: dict[str, Any]) -> None:
        for index, known in enumerate(self.addresses):
            if known is address:
                self._taken.pop(index, None)

    def close(self) -> None:
        """End every guest still running, then forget the downloaded source."""
        for guest in list(self.guests):
            try:
                guest.close()
            except Exception as exc:
                log.warning("%s: closing %s: %s", self, guest, exc)
        super().close()
