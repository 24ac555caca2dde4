"""host.bootloader: a host's boot entries, its default entry, and kernels added to it.

Autoserv drove boottool (a Perl script); mhtest drives what the host has, found on first
use: grub2 (grub-mkconfig or update-grub and grub.cfg: Debian, Ubuntu, SUSE), grubby
(Fedora, RHEL) or systemd-boot (bootctl). A host with none of them is a one-line
BootloaderError naming it and what was looked for.

    entries = host.bootloader.get_entries()          # [BootEntry(index, title, kernel, ...)]
    host.bootloader.add_kernel("/boot/vmlinuz-6.1.0-x", title="test", initrd=..., args="...")
    host.bootloader.set_default("Debian GNU/Linux")  # a title, an index or an entry
    host.bootloader.boot_once("test")                # the next boot only

As boottool did, a new entry takes the first entry's kernel command line and adds `args` to
it; an entry whose title is taken replaces it. grub2 keeps mhtest's entries in
/etc/grub.d/11_mhtest, a script grub-mkconfig runs (so they survive the distribution's own
regenerations); setting a default switches GRUB_DEFAULT to "saved" when needed.
"""

from __future__ import annotations

import logging
import re
import shlex
from dataclasses import dataclass
from typing import Any

from mhtest.hosts.base import run_tool
from mhtest.hosts.errors import HostError

log = logging.getLogger(__name__)

DEFAULT_TITLE = "mhtest"


class BootloaderError(HostError):
    """The host's boot loader cannot do what was asked; one line naming the host."""


@dataclass
class BootEntry:
    """One boot entry as the boot loader lists it."""

    index: str  # GRUB's: "0", or "1>2" for the third entry of the submenu at 1
    title: str  # "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux …"
    kernel: str  # as the boot loader reads it (relative to its file system)
    args: str = ""
    initrd: str | None = None
    id: str | None = None  # GRUB's menuentry id (path), grubby's index, systemd-boot's id
    mhtest: bool = False  # added by mhtest's add_kernel()

    @property
    def name(self) -> str:
        """The entry's own title (the last part of a submenu path)."""
        return self.title.rsplit(">", 1)[-1]


_PROBE = r"""
for t in update-grub grub-mkconfig grub2-mkconfig grub-set-default grub2-set-default \
         grub-reboot grub2-reboot grub-editenv grub2-editenv grubby bootctl; do
    p=$(command -v $t 2>/dev/null) && echo "tool $t $p"
done
for f in /boot/grub/grub.cfg /boot/grub2/grub.cfg; do [ -f $f ] && echo "cfg $f"; done
command -v bootctl >/dev/null 2>&1 && [ "$(bootctl is-installed 2>/dev/null)" = yes ] && echo sdboot
true
"""


class Bootloader:
    """The host's boot loader (see the module docstring); the backend is found on first use."""

    def __init__(self, host: Any) -> None:
        self.host = host
        self._backend: Any = None

    @property
    def backend(self) -> Any:
        if self._backend is None:
            self._backend = self._detect()
        return self._backend

    def _detect(self) -> Any:
        out = self.host.run(_PROBE, timeout=60).stdout
        tools = {}
        cfgs = []
        sdboot = False
        for line in out.splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "tool":
                name, _, path = rest.partition(" ")
                tools[name] = path
            elif kind == "cfg":
                cfgs.append(rest)
            elif kind == "sdboot":
                sdboot = True
        if "grubby" in tools:
            from mhtest.autoserv.bootloader_other import Grubby

            return Grubby(self.host, tools)
        mkconfig = (
            tools.get("update-grub") or tools.get("grub-mkconfig") or tools.get("grub2-mkconfig")
        )
        if cfgs and mkconfig:
            from mhtest.autoserv.grub2 import Grub2

            return Grub2(self.host, tools, cfgs[0])
        if sdboot:
            from mhtest.autoserv.bootloader_other import SystemdBoot

            return SystemdBoot(self.host, tools)
        raise BootloaderError(
            f"{self.host}: no known boot loader: found neither grub2 (grub.cfg in /boot/grub or "
            "/boot/grub2 and grub-mkconfig), grubby, nor an installed systemd-boot (bootctl)",
            str(self.host),
        )

    def __str__(self) -> str:
        return f"{self.backend.name} on {self.host}"

    # -- reading -------------------------------------------------------------------------------

    def get_entries(self) -> list[BootEntry]:
        """Every boot entry, in the boot loader's order."""
        return self.backend.get_entries()

    def get_titles(self) -> list[str]:
        return [e.title for e in self.get_entries()]

    def get_default_entry(self) -> BootEntry | None:
        """The entry the next boots start (a boot_once aside)."""
        return self.backend.get_default()

    def get_default_title(self) -> str | None:
        entry = self.get_default_entry()
        return entry.title if entry else None

    def get_default(self) -> str | None:
        """The default entry's index (Autoserv's get_default)."""
        entry = self.get_default_entry()
        return entry.index if entry else None

    def find(self, which: BootEntry | str | int) -> BootEntry:
        """The entry `which` names: an entry, an index, a title (whole path or last part), an
        id, or a kernel path; BootloaderError listing the titles when none matches."""
        if isinstance(which, BootEntry):
            return which
        entries = self.get_entries()
        key = str(which)
        for match in (
            lambda e: e.index == key,
            lambda e: e.title == key,
            lambda e: e.id == key,
            lambda e: e.name == key,
            lambda e: e.kernel == key or e.kernel.endswith("/" + key.lstrip("/")),
        ):
            found = [e for e in entries if match(e)]
            if found:
                return found[0]
        titles = "; ".join(e.title for e in entries) or "none"
        raise BootloaderError(
            f"{self.host}: no boot entry {which!r} in {self.backend.name} (entries: {titles})",
            str(self.host),
        )

    # -- changing ------------------------------------------------------------------------------

    def set_default(self, which: BootEntry | str | int) -> None:
        """Boot `which` from now on."""
        entry = self.find(which)
        log.info("%s: default boot entry -> %s", self.host, entry.title)
        self.backend.set_default(entry)

    def boot_once(self, which: BootEntry | str | int) -> None:
        """Boot `which` at the next boot only, then the default again."""
        entry = self.find(which)
        log.info("%s: next boot only -> %s", self.host, entry.title)
        self.backend.boot_once(entry)

    def add_kernel(
        self,
        path: str,
        title: str = DEFAULT_TITLE,
        initrd: str | None = None,
        args: str | None = None,
        default: bool = True,
        **_: Any,
    ) -> BootEntry:
        """An entry booting `path` (a kernel on the host) with the first entry's command line
        plus `args`; replaces an mhtest entry of the same title; made the default unless
        `default` is False. Returns the new entry."""
        backend = self.backend  # a host without a known boot loader: say that first
        if not self.host.run("test -f", args=[path], timeout=60, ignore_status=True).ok:
            raise BootloaderError(f"{self.host}: no kernel at {path}", str(self.host))
        if initrd and not self.host.run("test -f", args=[initrd], timeout=60,
                                        ignore_status=True).ok:  # fmt: skip
            raise BootloaderError(f"{self.host}: no initrd at {initrd}", str(self.host))
        entries = self.get_entries()
        base = first_kernel_args(entries)
        full = " ".join(x for x in (base, args or "") if x)
        log.info("%s: adding boot entry %r: %s %s", self.host, title, path, full)
        entry = backend.add_kernel(path, title, initrd, full)
        if default:
            backend.set_default(entry)
        return entry

    def remove_kernel(self, which: BootEntry | str | int) -> None:
        """Remove an entry added by add_kernel() (a title, a kernel path, …)."""
        entry = self.find(which)
        if not entry.mhtest and self.backend.name == "grub2":
            raise BootloaderError(
                f"{self.host}: boot entry {entry.title!r} was made by grub-mkconfig from "
                f"{entry.kernel}, not by mhtest: remove that kernel's package instead",
                str(self.host),
            )
        self.backend.remove_kernel(entry)


def first_kernel_args(entries: list[BootEntry]) -> str:
    """The first entry's kernel command line, without what a boot loader adds itself."""
    for entry in entries:
        if entry.kernel:
            words = [w for w in shlex.split(entry.args) if not w.startswith("BOOT_IMAGE=")]
            return " ".join(shlex.quote(w) if re.search(r"\s", w) else w for w in words)
    return ""


def run_or_fail(host: Any, command: str, what: str, **kwargs: Any) -> str:
    """Run a boot loader command; BootloaderError quoting its complaint when it fails."""
    return run_tool(host, command, what, BootloaderError, **kwargs)
