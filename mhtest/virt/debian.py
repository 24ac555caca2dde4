"""A small Debian guest to reboot, re-kernel and hard-reset: built from Debian's packages only.

``debian_guest()`` returns a `DebianGuest`: a raw disk image (one ext4 partition, GRUB in the
MBR) holding a minbase Debian with sysvinit, sshd (no PAM), python3 (to run mhtest's tests),
dpkg, GRUB and Debian's ``-amd64`` kernel (with a small initrd: virtio and ext4 only), plus
what tests need around it: root's SSH key, the guest's SSH host key, Debian's ``-cloud-amd64``
kernel package of the same release (not installed) and an initrd for it. Built with mmdebstrap
(root only: the files must be owned by root in the image), then booted once with QEMU's
``-kernel`` to run grub-install and update-grub on the guest's own disk; no loop devices, no
mounts on this machine.

Everything is cached in ``~/.cache/mhtest/debian-<suite>-<key>/``, the key a hash of what
goes in (suite, mirror, packages, every file and script written into the image); a builder
holds a lock, so concurrent sessions build it once. ``MHTEST_DEBIAN_MIRROR`` picks the mirror.
Boot with ``guest.qemu_options()`` (snapshot=on: the image itself never changes).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import struct
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mhtest.virt.guest import GuestBuildError
from mhtest.virt.qemu import VM, VMConfig

log = logging.getLogger(__name__)

BUILDER_VERSION = 1
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "linux-image-amd64",
    "grub-pc",
    "openssh-server",
    "sysvinit-core",
    "iproute2",
    "python3",  # mhtest's executor, for tests and client control files run in the guest
)
#: Kernel flavours fetched next to the image (not installed): {flavour: initrd wanted}.
EXTRA_KERNELS = ("cloud-amd64",)
DISK_SIZE_MB = 2048
PART_START = 2048  # sectors: the partition starts at 1 MiB, GRUB's core.img goes before it
ROOT_LABEL = "mhtest-root"
PROVISIONED = "MHTEST-PROVISIONED"
#: Seconds the one-off provisioning boot may take (grub-install + update-grub under TCG).
PROVISION_TIMEOUT = 900.0
BUILD_TIMEOUT = 1800.0

#: Not unpacked by dpkg, in the image and later in the guest: documentation and the kernel
#: modules of hardware a QEMU guest does not have (less to download-unpack, copy and boot).
PATH_EXCLUDES = (
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
    "/lib/modules/*/kernel/sound/*",
    "/lib/modules/*/kernel/drivers/gpu/*",
    "/lib/modules/*/kernel/drivers/media/*",
    "/lib/modules/*/kernel/drivers/net/wireless/*",
    "/lib/modules/*/kernel/drivers/net/ethernet/*",
    "/lib/modules/*/kernel/drivers/infiniband/*",
    "/lib/modules/*/kernel/drivers/staging/*",
    "/lib/modules/*/kernel/drivers/iio/*",
    "/lib/modules/*/kernel/drivers/isdn/*",
    "/lib/modules/*/kernel/drivers/comedi/*",
    "/lib/modules/*/kernel/drivers/usb/*",
    "/lib/modules/*/kernel/drivers/bluetooth/*",
    "/lib/modules/*/kernel/net/wireless/*",
    "/lib/modules/*/kernel/net/mac80211/*",
    "/lib/modules/*/kernel/net/bluetooth/*",
    "/lib/modules/*/kernel/fs/xfs/*",
    "/lib/modules/*/kernel/fs/btrfs/*",
    "/lib/modules/*/kernel/fs/ocfs2/*",
    "/lib/modules/*/kernel/fs/gfs2/*",
    "/lib/modules/*/kernel/fs/smb/*",
)

# Runs before the listed packages are installed: the initramfs and GRUB settings must be in
# place when the kernel's and GRUB's maintainer scripts run.
_ESSENTIAL_HOOK = r"""
set -eu
root=$1
mkdir -p "$root/etc/initramfs-tools/conf.d" "$root/etc/initramfs-tools/hooks" \
  "$root/etc/default/grub.d"
# Only the modules a QEMU guest boots with: a small initrd, quick to build and to load.
printf 'MODULES=list\nCOMPRESS=gzip\n' > "$root/etc/initramfs-tools/conf.d/mhtest"
cat > "$root/etc/initramfs-tools/hooks/mhtest" <<'EOF'
#!/bin/sh
[ "$1" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
for m in virtio_pci virtio_blk virtio_net ext4 crc32c_generic; do manual_add_modules "$m"; done
EOF
chmod 755 "$root/etc/initramfs-tools/hooks/mhtest"
cat > "$root/etc/default/grub.d/mhtest.cfg" <<'EOF'
GRUB_DEFAULT=saved
GRUB_TIMEOUT=0
GRUB_TIMEOUT_STYLE=hidden
GRUB_DISABLE_RECOVERY=true
GRUB_DISABLE_OS_PROBER=true
GRUB_TERMINAL=serial
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_CMDLINE_LINUX="console=ttyS0,115200 net.ifnames=0"
GRUB_CMDLINE_LINUX_DEFAULT="quiet mitigations=off"
GRUB_GFXPAYLOAD_LINUX=text
EOF
"""

# Runs once everything is installed: login, network, console; the extra kernel packages.
_CUSTOMIZE_HOOK = r"""
set -eu
root=$1
echo mhtest-guest > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 mhtest-guest\n' > "$root/etc/hosts"
printf 'LABEL=%s / ext4 errors=remount-ro 0 0\n' "$MHTEST_ROOT_LABEL" > "$root/etc/fstab"
# sysvinit with two scripts of its own instead of Debian's rc scripts: under TCG each script
# costs a second or more, and a test guest needs sshd and a network, nothing else.
cat > "$root/etc/inittab" <<'EOF'
id:2:initdefault:
si::sysinit:/etc/mhtest/rc.boot
ss:2345:respawn:/usr/sbin/sshd -D
T0:2345:respawn:/sbin/getty -L ttyS0 115200 vt100
l0:0:wait:/etc/mhtest/rc.down poweroff
l6:6:wait:/etc/mhtest/rc.down reboot
ca:12345:ctrlaltdel:/sbin/shutdown -t1 -r now
EOF
mkdir -p "$root/etc/mhtest"
cat > "$root/etc/mhtest/rc.boot" <<'EOF'
#!/bin/sh
# Boot: file systems, host name, QEMU's user-mode network (the guest is 10.0.2.15).
PATH=/usr/sbin:/usr/bin:/sbin:/bin
mountpoint -q /proc || mount -t proc -o nosuid,nodev,noexec proc /proc
mountpoint -q /sys || mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mountpoint -q /run || mount -t tmpfs -o nosuid,nodev,mode=755 tmpfs /run
mount -o remount,rw /
mkdir -p /dev/pts /dev/shm /run/sshd /run/lock
mount -t devpts -o noexec,nosuid,gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o nosuid,nodev tmpfs /dev/shm
hostname -F /etc/hostname
: > /run/utmp
ip -batch - <<EOT
link set lo up
link set eth0 up
address add 10.0.2.15/24 dev eth0
route add default via 10.0.2.2
EOT
echo "mhtest-guest: up after $(cut -d' ' -f1 /proc/uptime) s"
EOF
cat > "$root/etc/mhtest/rc.down" <<'EOF'
#!/bin/sh
# Shut down ($1: reboot or poweroff): end every process, put the disk away, go.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
echo "mhtest-guest: going down ($1)"
killall5 -15
sleep 0.5
killall5 -9
sync
mount -o remount,ro /
if [ "$1" = reboot ]; then reboot -d -f -i; else poweroff -d -f -i; fi
EOF
chmod 755 "$root/etc/mhtest/rc.boot" "$root/etc/mhtest/rc.down"
# No PAM: a key login then opens no PAM session (slow under TCG); root by key needs none.
printf 'UseDNS no\nUsePAM no\nPermitRootLogin prohibit-password\n' \
  > "$root/etc/ssh/sshd_config.d/mhtest.conf"
install -d -m 700 "$root/root/.ssh"
printf '%s\n' "$MHTEST_AUTHORIZED_KEY" > "$root/root/.ssh/authorized_keys"
chmod 600 "$root/root/.ssh/authorized_keys"
cat > "$root/usr/local/sbin/mhtest-provision" <<'EOF'
#!/bin/sh
# First boot of the image (init=): put GRUB on the disk, pick the default entry, power off.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -o remount,rw /
if grub-install --target=i386-pc /dev/vda && update-grub; then
    uuid=$(grub-probe --target=fs_uuid /)
    grub-set-default "gnulinux-advanced-$uuid>gnulinux-$(uname -r)-advanced-$uuid" &&
        echo MHTEST-PROVISIONED
fi
sync
mount -o remount,ro /
echo o > /proc/sysrq-trigger
sleep 60
EOF
chmod 755 "$root/usr/local/sbin/mhtest-provision"
# Kernel packages of other flavours, same release, fetched for the tests: not installed.
release=$(basename "$(ls "$root"/boot/vmlinuz-* | head -n 1)" | sed 's/^vmlinuz-//')
abi=${release%-amd64}
mkdir -p "$root/var/cache/mhtest"
for flavour in $MHTEST_EXTRA_KERNELS; do
    pkg=linux-image-$abi-$flavour
    chroot "$root" sh -c "cd /var/cache/mhtest && apt-get download -q=2 $pkg"
    deb=$(ls "$root"/var/cache/mhtest/"$pkg"_*.deb)
    # An initrd for booting it with QEMU's -kernel ("the QEMU way"), made with its modules
    # in place for the moment.
    chroot "$root" sh -c "dpkg-deb -x /var/cache/mhtest/$(basename "$deb") /tmp/x &&
        cp -a /tmp/x/lib/modules/$abi-$flavour /lib/modules/ && depmod $abi-$flavour &&
        cp /tmp/x/boot/config-$abi-$flavour /boot/ &&
        mkinitramfs -o /var/cache/mhtest/initrd.img-$abi-$flavour $abi-$flavour &&
        rm -rf /tmp/x /lib/modules/$abi-$flavour /boot/config-$abi-$flavour"
    mv "$deb" "$root/var/cache/mhtest/initrd.img-$abi-$flavour" "$MHTEST_OUT/"
done
rmdir "$root/var/cache/mhtest"
"""


@dataclass
class DebianGuest:
    """A built guest image and what it takes to boot it and log in."""

    dir: str
    disk: str
    kernel_release: str  # `uname -r` of the kernel the image boots
    kernel: str  # copies of its /boot/vmlinuz-* and initrd, for QEMU's -kernel
    initrd: str
    key_file: str  # root's SSH private key
    host_key: str  # the guest sshd's "ssh-ed25519 AAAA..." public key
    #: Kernel packages fetched with the image, by flavour ("cloud-amd64"): (deb, initrd).
    kernels: dict[str, tuple[str, str]] = field(default_factory=dict)
    accel: str = "tcg"
    build_seconds: float = 0.0

    def qemu_options(self, memory_mb: int = 384) -> list[str]:
        """QEMU options booting the image from its disk; writes go to a throwaway overlay."""
        return [
            "-m",
            str(memory_mb),
            "-drive",
            f"file={self.disk},format=raw,if=virtio,snapshot=on",
        ]

    @classmethod
    def load(cls, directory: Path) -> DebianGuest:
        data = json.loads((directory / "guest.json").read_text())
        data["kernels"] = {k: tuple(v) for k, v in data.get("kernels", {}).items()}
        return cls(**data)


def mirror() -> str:
    return os.environ.get("MHTEST_DEBIAN_MIRROR") or DEFAULT_MIRROR


def recipe_key() -> str:
    """A hash of everything that goes into the image."""
    text = json.dumps(
        [
            BUILDER_VERSION,
            SUITE,
            mirror(),
            PACKAGES,
            EXTRA_KERNELS,
            PATH_EXCLUDES,
            DISK_SIZE_MB,
            _ESSENTIAL_HOOK,
            _CUSTOMIZE_HOOK,
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_base() -> Path:
    return Path.home() / ".cache" / "mhtest"


def debian_guest(cache_dir: str | Path | None = None, probe_kvm: bool = True) -> DebianGuest:
    """The cached guest image, built first if needed (minutes: see the module docstring)."""
    base = Path(cache_dir or cache_base())
    target = base / f"debian-{SUITE}-{recipe_key()}"
    if (target / "guest.json").exists():
        return DebianGuest.load(target)
    _check_tools()
    base.mkdir(parents=True, exist_ok=True)
    with open(base / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building it: wait
        if not (target / "guest.json").exists():
            _build_into(base, target, probe_kvm)
    return DebianGuest.load(target)


def _check_tools() -> None:
    if os.geteuid() != 0:
        raise GuestBuildError(
            "building the Debian guest image needs root (its files must belong to root); "
            "run as root once to fill the cache"
        )
    for tool, package in (
        ("mmdebstrap", "mmdebstrap"),
        ("mkfs.ext4", "e2fsprogs"),
        ("ssh-keygen", "openssh-client"),
        ("qemu-system-x86_64", "qemu-system-x86"),
    ):
        if shutil.which(tool) is None:
            raise GuestBuildError(f"{tool} not found: install it (apt-get install {package})")


def _build_into(base: Path, target: Path, probe_kvm: bool) -> None:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f"{target.name}-", dir=base))
    log.info("building the Debian guest image in %s (takes minutes)", work)
    try:
        guest = _build(work, target)
        if probe_kvm:
            from mhtest.hosts.local import LocalHost
            from mhtest.virt.hostqemu import probe_accel

            guest.accel = probe_accel(LocalHost(), kernel=str(work / "vmlinuz"))
        _provision(work, guest)
        guest.build_seconds = round(time.monotonic() - started, 1)
        (work / "guest.json").write_text(json.dumps(asdict(guest), indent=1))
        os.rename(work, target)
    except BaseException:
        failed = base / f"{target.name}.failed"
        shutil.rmtree(failed, ignore_errors=True)
        shutil.rmtree(work / "root", ignore_errors=True)
        os.rename(work, failed)  # its build.log and console logs tell what happened
        raise
    log.info("built the Debian guest image %s in %.0f s", target, guest.build_seconds)


def _run(args: list[str], logfile: Path, what: str, env: dict[str, str] | None = None) -> None:
    with open(logfile, "ab") as out:
        out.write(f"\n$ {' '.join(args)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                timeout=BUILD_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            why = f"{what} took over {BUILD_TIMEOUT:.0f} s; see {logfile}"
            raise GuestBuildError(why) from None
    if proc.returncode != 0:
        tail = logfile.read_text(errors="replace").strip().splitlines()[-3:]
        raise GuestBuildError(
            f"{what} failed (exit status {proc.returncode}): {' | '.join(tail)} [log: {logfile}]"
        )


def _build(work: Path, target: Path) -> DebianGuest:
    """mmdebstrap into work/root, then the disk image; the guest as it will be once renamed."""
    logfile = work / "build.log"
    key = work / "id_ed25519"
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mhtest-guest-root", "-f",
          str(key)], logfile, "ssh-keygen")  # fmt: skip
    hooks = work / "hooks"
    hooks.mkdir()
    (hooks / "essential.sh").write_text(_ESSENTIAL_HOOK)
    (hooks / "customize.sh").write_text(_CUSTOMIZE_HOOK)
    root = work / "root"
    args = [
        "mmdebstrap",
        "--variant=minbase",
        "--format=directory",
        "--include=" + ",".join(PACKAGES),
        '--aptopt=APT::Install-Recommends "false"',
        *(f"--dpkgopt=path-exclude={p}" for p in PATH_EXCLUDES),
        f'--essential-hook=sh {hooks / "essential.sh"} "$1"',
        f'--customize-hook=sh {hooks / "customize.sh"} "$1"',
        SUITE,
        str(root),
        mirror(),
    ]
    env = {
        "MHTEST_AUTHORIZED_KEY": Path(f"{key}.pub").read_text().strip(),
        "MHTEST_EXTRA_KERNELS": " ".join(EXTRA_KERNELS),
        "MHTEST_ROOT_LABEL": ROOT_LABEL,
        "MHTEST_OUT": str(work),
    }
    _run(args, logfile, f"mmdebstrap {SUITE} from {mirror()}", env)
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise GuestBuildError(f"expected one kernel in {root}/boot, found {kernels}")
    release = kernels[0].name[len("vmlinuz-") :]
    shutil.copyfile(kernels[0], work / "vmlinuz")
    shutil.copyfile(root / "boot" / f"initrd.img-{release}", work / "initrd.img")
    host_key = (root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
    extra = {}
    abi = release[: -len("-amd64")]
    for flavour in EXTRA_KERNELS:
        debs = sorted(work.glob(f"linux-image-{abi}-{flavour}_*.deb"))
        initrd = work / f"initrd.img-{abi}-{flavour}"
        if len(debs) != 1 or not initrd.exists():
            raise GuestBuildError(f"the {flavour} kernel was not fetched; see {logfile}")
        extra[flavour] = (str(target / debs[0].name), str(target / initrd.name))
    disk = work / "disk.raw"
    _make_disk(root, disk, logfile)
    shutil.rmtree(root)
    return DebianGuest(
        dir=str(target),
        disk=str(target / disk.name),
        kernel_release=release,
        kernel=str(target / "vmlinuz"),
        initrd=str(target / "initrd.img"),
        key_file=str(target / key.name),
        host_key=" ".join(host_key),
        kernels=extra,
    )


def _make_disk(root: Path, disk: Path, logfile: Path) -> None:
    """A raw disk: an MBR with one bootable Linux partition at 1 MiB, ext4 filled from `root`."""
    size = DISK_SIZE_MB << 20
    fs_bytes = size - PART_START * 512
    with open(disk, "wb") as out:
        out.truncate(size)
    _run(
        ["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-d", str(root),
         "-E", f"offset={PART_START * 512}", str(disk), f"{fs_bytes // 1024}k"],
        logfile,
        "mkfs.ext4",
    )  # fmt: skip
    with open(disk, "r+b") as out:
        out.seek(0)
        out.write(mbr(PART_START, fs_bytes // 512))


def mbr(start: int, sectors: int, disk_id: int = 0x6D687465) -> bytes:
    """A master boot record with one bootable Linux (0x83) partition, LBA addressed."""
    entry = struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", start, sectors)
    record = bytearray(512)
    record[440:444] = struct.pack("<I", disk_id)
    record[446:462] = entry
    record[510:512] = b"\x55\xaa"
    return bytes(record)


def _provision(work: Path, guest: DebianGuest) -> None:
    """Boot the image once with -kernel and init=mhtest-provision: GRUB onto its disk."""
    config = VMConfig(
        "mhtest-provision",
        memory_mb=384,
        accel=guest.accel,
        kernel=str(work / "vmlinuz"),
        initrd=str(work / "initrd.img"),
        append=f"root=LABEL={ROOT_LABEL} rw console=ttyS0 init=/usr/local/sbin/mhtest-provision",
        extra_args=["-drive", f"file={work / 'disk.raw'},format=raw,if=virtio", "-no-reboot"],
    )
    vm = VM(config, work / "provision")
    with vm.start():
        deadline = time.monotonic() + PROVISION_TIMEOUT
        while vm.is_alive() and time.monotonic() < deadline:
            time.sleep(0.5)
        alive = vm.is_alive()
    console = vm.console_log_path.read_text(errors="replace")
    if alive or PROVISIONED not in console:
        tail = " | ".join(console.strip().splitlines()[-5:])
        why = f"not done after {PROVISION_TIMEOUT:.0f} s" if alive else "failed"
        raise GuestBuildError(
            f"the guest's first boot (grub-install, update-grub) {why}: {tail} "
            f"[console: {vm.console_log_path}]"
        )
