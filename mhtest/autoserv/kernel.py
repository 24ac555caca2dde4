"""Binary kernel packages: what DEBKernel and RPMKernel share (Autoserv's kernel objects).

    kernel = DEBKernel()
    kernel.get("/var/local/linux-image-6.1.0-x-cloud-amd64_6.1.1-1_amd64.deb")
    kernel.get_version()        # "6.1.0-x-cloud-amd64": what `uname -r` will say
    kernel.install(host)        # the package, an initrd, a boot entry made the default
    host.reboot()
    directory = kernel.extract(hypervisor)   # unpacked there, not installed ("the QEMU way")

get() reads the package here (no tool needed) and refuses, in one line naming the file, a
file that is not a package of that kind or a package that holds no kernel. install() sends
the package to a temporary directory on the host, installs it with the host's package
manager, makes sure the initrd exists, and adds a boot entry through host.bootloader; its
keyword arguments go to add_kernel() (title, args, default, ...).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

from mhtest.autoserv.installable import InstallableObject, InstallError
from mhtest.hosts.base import run_tool

log = logging.getLogger(__name__)

#: Where a package puts the kernel: /boot/vmlinuz-REL, or (Fedora) /lib/modules/REL/vmlinuz.
IMAGE_RES = (
    re.compile(r"^/?boot/(?:vmlinuz|vmlinux|bzImage)-(?P<release>[^/]+)$"),
    re.compile(r"^/?(?:usr/)?lib/modules/(?P<release>[^/]+)/vmlinuz$"),
)


class KernelError(InstallError):
    """A kernel package cannot be read or installed; one line naming the file or host."""


@dataclass
class PackageInfo:
    """What get() learnt from the package."""

    path: str
    name: str
    version: str
    arch: str
    release: str  # the kernel release (`uname -r`)
    image: str  # the kernel's path inside the package
    files: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def find_kernel_image(files: list[str]) -> tuple[str, str] | None:
    """(path, release) of the kernel image among a package's files, or None."""
    for pattern in IMAGE_RES:
        for path in files:
            match = pattern.match(path)
            if match:
                return "/" + path.lstrip("/"), match.group("release")
    return None


class BinaryKernel(InstallableObject):
    """A packaged kernel; DEBKernel and RPMKernel say how to read and install their kind."""

    kind = "kernel"

    def __init__(self) -> None:
        super().__init__()
        self.info: PackageInfo | None = None

    def get(self, location: Any) -> None:
        super().get(location)
        assert self.source_material is not None
        if os.path.isdir(self.source_material):
            raise KernelError(f"{self.source_material}: a directory, not a {self.kind} package")
        self.info = self.read_package(self.source_material)
        log.info("%s: %s %s, kernel %s", self.source_material, self.info.name,
                 self.info.version, self.info.release)  # fmt: skip

    def _info(self) -> PackageInfo:
        if self.info is None:
            raise KernelError(f"{type(self).__name__}: call get() with the package first")
        return self.info

    # -- what each kind provides -----------------------------------------------------------------

    def read_package(self, path: str) -> PackageInfo:
        raise NotImplementedError

    def install_package(self, host: Any, path: str) -> None:
        raise NotImplementedError

    def extract_package(self, host: Any, path: str, directory: str) -> None:
        raise NotImplementedError

    def make_initrd(self, host: Any) -> None:
        raise NotImplementedError

    def get_initrd_name(self) -> str:
        raise NotImplementedError

    # -- Autoserv's kernel API -------------------------------------------------------------------

    def get_version(self) -> str:
        """The kernel release, as `uname -r` shows it once booted."""
        return self._info().release

    def get_image_name(self) -> str:
        """Where the installed kernel is: /boot/vmlinuz-RELEASE."""
        return f"/boot/vmlinuz-{self._info().release}"

    def _send(self, host: Any) -> str:
        info = self._info()
        remote = host.get_tmp_dir()
        path = f"{remote}/{os.path.basename(info.path)}"
        host.send_file(info.path, path)
        return path

    def install(self, host: Any, **bootloader_args: Any) -> None:
        """Install on `host` and add a boot entry (made the default unless default=False)."""
        info = self._info()
        path = self._send(host)
        log.info("%s: installing %s", host, os.path.basename(info.path))
        self.install_package(host, path)
        image = self.get_image_name()
        if not host.run("test -f", args=[image], timeout=60, ignore_status=True).ok:
            raise KernelError(f"{host}: {os.path.basename(info.path)} installed no {image}")
        initrd = self.get_initrd_name()
        if not host.run("test -f", args=[initrd], timeout=60, ignore_status=True).ok:
            self.make_initrd(host)
        bootloader_args.setdefault("initrd", initrd)
        host.bootloader.add_kernel(image, **bootloader_args)

    def extract(self, host: Any) -> str:
        """Unpack the package into a new temporary directory on `host` (not installed)."""
        path = self._send(host)
        directory = path.rsplit("/", 1)[0] + "/content"
        host.run("mkdir", args=[directory], timeout=60)
        self.extract_package(host, path, directory)
        host.run("rm -f", args=[path], timeout=60)
        return directory


def run_on(host: Any, command: str, what: str, **kwargs: Any) -> str:
    """Run a package tool on `host`; KernelError quoting its last line when it fails."""
    return run_tool(host, command, what, KernelError, timeout=kwargs.pop("timeout", 1800), **kwargs)
