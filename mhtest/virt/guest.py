"""Guests for migration tests: a known memory pattern in an idle VM, or a small booted Linux.

The memory pattern guest needs nothing but QEMU: ``-device loader`` puts a file of
pseudo-random bytes into guest RAM at a fixed address before the CPU runs. An incoming VM is
started *without* the loader, so the pattern can only reach its RAM through the migration.

The Linux guest is Debian's kernel (/boot/vmlinuz-*) with a busybox initramfs built here and
cached under ~/.cache/mhtest/guest-<key>/; its init gives a root shell on ttyS0 with the
prompt ``mhtest-guest# ``.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import random
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from mhtest.virt.qemu import VM, VMConfig, VMError, kvm_usable

log = logging.getLogger(__name__)

GUEST_PROMPT = "mhtest-guest# "

_INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
export PS1='{GUEST_PROMPT}' PATH=/bin HOME=/root
cd /root
echo MHTEST-GUEST-READY
# init must never exit (the kernel would panic): respawn the console shell.
while true; do setsid cttyhack sh; done
"""

PATTERN_ADDR = 0x2000000  # 32 MiB: above what SeaBIOS touches, below its high-memory zone


@dataclass
class MemoryPattern:
    """A file of pseudo-random bytes loaded into guest RAM at ``addr``."""

    path: str
    addr: int
    size: int
    sha256: str

    @classmethod
    def create(
        cls, path: str | Path, seed: int = 1, size: int = 8 << 20, addr: int = PATTERN_ADDR
    ) -> MemoryPattern:
        data = random.Random(seed).randbytes(size)
        Path(path).write_bytes(data)
        return cls(str(Path(path).absolute()), addr, size, hashlib.sha256(data).hexdigest())

    def config(self, config: VMConfig) -> VMConfig:
        """``config`` with the pattern loaded into RAM at start."""
        return replace(config, loaders=[*config.loaders, (self.path, self.addr)])

    def dump_sha256(self, vm: VM, dump_path: str | Path) -> str:
        """Dump the pattern's region from ``vm``'s RAM and return its SHA-256."""
        vm.pmemsave(self.addr, self.size, dump_path)
        return sha256_file(dump_path)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def incoming_config(config: VMConfig) -> VMConfig:
    """The config a migration destination starts with: the same, minus RAM loaders.

    Loaders carry no device state, so leaving them out is invisible to the migration; it only
    makes sure the destination's RAM content can come from nowhere but the source.
    """
    return replace(config, loaders=[])


class GuestBuildError(VMError):
    """The Linux guest could not be built (no kernel, no busybox, cpio failed...)."""


@dataclass
class LinuxGuest:
    """A kernel and an initramfs that boot to a shell on the serial console."""

    kernel: str
    initrd: str
    accel: str = "tcg"  # what linux_guest() found to boot this kernel: "kvm" or "tcg"
    append: str = "console=ttyS0 quiet panic=-1"

    def config(self, name: str, memory_mb: int = 256, **kwargs: object) -> VMConfig:
        kwargs.setdefault("accel", self.accel)
        return VMConfig(
            name,
            memory_mb=memory_mb,
            kernel=self.kernel,
            initrd=self.initrd,
            append=self.append,
            # busybox ash asks the terminal for the cursor position (ESC[6n) after the prompt
            prompt=GUEST_PROMPT + r"(?:\x1b\[6n)?$",
            **kwargs,  # type: ignore[arg-type]
        )


def find_kernel() -> str:
    """The newest Debian kernel in /boot."""
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    if not kernels:
        raise GuestBuildError(
            "no kernel in /boot/vmlinuz-*: install one (apt-get install linux-image-amd64)"
        )
    return kernels[-1]


def find_busybox() -> str:
    for candidate in (shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise GuestBuildError(
        "busybox not found: install busybox-static (apt-get install busybox-static)"
    )


def linux_guest(cache_dir: str | Path | None = None, probe_kvm: bool = True) -> LinuxGuest:
    """Build (or reuse from the cache) the kernel + busybox initramfs guest.

    With ``probe_kvm`` the first call boots the guest once under KVM to learn whether KVM
    works for it here (cached next to the guest); without, the guest uses TCG.
    """
    kernel = find_kernel()
    busybox = find_busybox()
    if shutil.which("cpio") is None:
        raise GuestBuildError("cpio not found: install it (apt-get install cpio)")
    st = os.stat(kernel)
    key = hashlib.sha256(
        f"{kernel}:{st.st_size}:{st.st_mtime_ns}:{sha256_file(busybox)}:{_INIT}".encode()
    ).hexdigest()[:16]
    base = Path(cache_dir or Path.home() / ".cache" / "mhtest")
    target = base / f"guest-{key}"
    guest = LinuxGuest(str(target / "vmlinuz"), str(target / "initrd.cpio"))
    if not ((target / "initrd.cpio").exists() and (target / "vmlinuz").exists()):
        _build_cached(base, target, key, kernel, busybox)
    if probe_kvm:
        guest.accel = _boot_accel(guest, target)
    return guest


def _build_cached(base: Path, target: Path, key: str, kernel: str, busybox: str) -> None:
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"guest-{key}-", dir=base))
    try:
        _build(work, kernel, busybox)
        try:
            os.rename(work, target)  # atomic: a concurrent builder loses harmlessly
        except OSError:
            if not (target / "initrd.cpio").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("built Linux guest in %s", target)


def _boot_accel(guest: LinuxGuest, target: Path, timeout: float = 15.0) -> str:
    """KVM if this kernel really boots under KVM here, else TCG; the answer is cached.

    Some hosts (nested or sandboxed KVM) open /dev/kvm and run firmware but hang in the
    kernel's early boot, so a usable /dev/kvm alone does not decide it.
    """
    if not kvm_usable():
        return "tcg"
    marker = target / "accel"
    if marker.exists():
        return marker.read_text().strip()
    accel = "tcg"
    probe_dir = Path(tempfile.mkdtemp(prefix="kvm-probe-", dir=target))
    try:
        with VM(guest.config("kvm-probe", memory_mb=256, accel="kvm"), probe_dir).start() as vm:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and vm.is_alive():
                if b"MHTEST-GUEST-READY" in vm.console_log_path.read_bytes():
                    accel = "kvm"
                    break
                time.sleep(0.2)
    except VMError as exc:
        log.info("KVM probe failed: %s", exc)
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    if accel == "tcg":
        log.warning("the guest kernel does not boot under KVM on this host; using TCG")
    marker.write_text(accel)
    return accel


def _build(work: Path, kernel: str, busybox: str) -> None:
    try:
        shutil.copyfile(kernel, work / "vmlinuz")  # /boot may be root-only: keep our copy
    except OSError as exc:
        raise GuestBuildError(
            f"cannot read kernel {kernel}: {exc} (run as root or chmod it)"
        ) from None
    root = work / "root"
    for d in ("bin", "dev", "proc", "sys", "tmp", "root"):
        (root / d).mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    (root / "init").write_text(_INIT)
    os.chmod(root / "init", 0o755)
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    with open(work / "initrd.cpio", "wb") as out:
        proc = subprocess.run(
            ["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0"],
            input="\n".join(names).encode(),
            stdout=out,
            stderr=subprocess.PIPE,
            cwd=root,
            timeout=60,
        )
    if proc.returncode != 0:
        raise GuestBuildError(f"cpio failed building the initramfs: {proc.stderr.decode().strip()}")
    shutil.rmtree(root)
