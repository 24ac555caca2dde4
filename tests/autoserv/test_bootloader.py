"""host.bootloader: reading grub.cfg, grubby and bootctl listings; a host with no boot loader
mhtest knows. Adding, choosing and removing entries on a real GRUB is in
tests/autoserv/test_kernel.py (a Debian guest)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from mhtest.autoserv.bootloader import BootEntry, Bootloader, BootloaderError, first_kernel_args
from mhtest.autoserv.bootloader_other import parse_bootctl_list, parse_grubby_info
from mhtest.autoserv.grub2 import parse_grub_cfg
from mhtest.hosts.local import LocalHost

UUID = "24420e60-2947-49e2-a6fe-1e38ff926ff3"

# What Debian 12's grub-mkconfig writes (trimmed), with an entry of mhtest's after 10_linux.
GRUB_CFG = (Path(__file__).parents[1] / "data" / "grub-debian12.cfg").read_text()


def test_grub_cfg_entries_with_grub_numbering_and_submenu_paths() -> None:
    entries = parse_grub_cfg(GRUB_CFG)
    assert [(e.index, e.name, e.mhtest) for e in entries] == [
        ("0", "Debian GNU/Linux", False),
        ("1>0", "Debian GNU/Linux, with Linux 6.1.0-50-cloud-amd64", False),
        ("1>1", "Debian GNU/Linux, with Linux 6.1.0-50-amd64", False),
        ("2", "it's mine", True),
    ]
    amd64 = entries[2]
    assert amd64.title == (
        "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-50-amd64"
    )
    assert amd64.id == f"gnulinux-advanced-{UUID}>gnulinux-6.1.0-50-amd64-advanced-{UUID}"
    assert amd64.kernel == "/boot/vmlinuz-6.1.0-50-amd64"
    assert amd64.initrd == "/boot/initrd.img-6.1.0-50-amd64"
    assert amd64.args == f"root=UUID={UUID} ro console=ttyS0,115200 quiet"
    assert entries[3].initrd is None
    # A new entry takes the first entry's command line, as boottool did.
    assert first_kernel_args(entries) == f"root=UUID={UUID} ro console=ttyS0,115200 quiet"
    assert first_kernel_args([BootEntry("0", "t", "/k", "BOOT_IMAGE=/k a=b c")]) == "a=b c"


def test_grubby_and_bootctl_listings() -> None:
    info = textwrap.dedent(
        """\
        index=0
        kernel="/boot/vmlinuz-5.14.0-362.8.1.el9_3.x86_64"
        args="ro crashkernel=1G-4G:192M rhgb quiet"
        root="/dev/mapper/rhel-root"
        initrd="/boot/initramfs-5.14.0-362.8.1.el9_3.x86_64.img"
        title="Red Hat Enterprise Linux (5.14.0-362.8.1.el9_3.x86_64) 9.3 (Plow)"
        id="ffffffff-5.14.0-362.8.1.el9_3.x86_64"
        index=1
        kernel=/boot/vmlinuz-0-rescue-ffffffff
        args=ro
        title=Rescue
        """
    )
    first, rescue = parse_grubby_info(info)
    assert (first.index, first.kernel, first.id) == (
        "0",
        "/boot/vmlinuz-5.14.0-362.8.1.el9_3.x86_64",
        "ffffffff-5.14.0-362.8.1.el9_3.x86_64",
    )
    assert first.args == "ro crashkernel=1G-4G:192M rhgb quiet"
    assert (rescue.title, rescue.args, rescue.initrd, rescue.id) == ("Rescue", "ro", None, "1")
    listing = json.dumps(
        [
            {"id": "debian.conf", "showTitle": "Debian", "linux": "/vmlinuz",
             "initrd": ["/initrd.img"], "options": "root=/dev/vda2 ro", "isDefault": True},
            {"id": "mhtest-test.conf", "title": "test", "linux": "/mhtest-test/linux"},
        ]
    )  # fmt: skip
    debian, mine = parse_bootctl_list(listing)
    assert (debian.title, debian.initrd, debian.args, debian.mhtest) == (
        "Debian",
        "/initrd.img",
        "root=/dev/vda2 ro",
        False,
    )
    assert (mine.index, mine.title, mine.mhtest) == ("1", "test", True)


class NoBootLoaderHost(LocalHost):
    """This machine, its commands run with /boot hidden and no /sbin tools on PATH."""

    def run(self, command: str, *rest, args: Sequence[str] = (), **kwargs):  # type: ignore[override]
        if args:
            command += " " + " ".join(shlex.quote(str(a)) for a in args)
        wrapped = (
            "unshare -m sh -c 'mount -t tmpfs none /boot && PATH=/usr/bin:/bin exec sh -c \"$0\"' "
            + shlex.quote(command)
        )
        return super().run(wrapped, *rest, **kwargs)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare"
)
def test_a_host_without_a_known_boot_loader_is_one_line() -> None:
    host = NoBootLoaderHost(name="bare")
    assert host.run("ls -A /boot").stdout == ""
    with pytest.raises(BootloaderError) as err:
        host.bootloader.get_entries()
    message = str(err.value)
    assert message.startswith("bare: no known boot loader: found neither grub2")
    assert "grubby" in message and "systemd-boot" in message and "\n" not in message
    with pytest.raises(BootloaderError, match="bare: no known boot loader"):
        Bootloader(host).add_kernel("/boot/vmlinuz-x")
