"""The grubby and systemd-boot backends of host.bootloader (grub2's is mhtest.autoserv.grub2).

grubby (Fedora, RHEL) lists and edits entries itself: `grubby --info=ALL`, --add-kernel,
--set-default-index, --remove-kernel; a boot-once goes through grub2-reboot. systemd-boot
entries are files: `bootctl list --json=short` lists them, mhtest's entries are
loader/entries/mhtest-*.conf on the boot partition with their kernel and initrd copied
next to them, and `bootctl set-default` / `set-oneshot` pick them (EFI variables).
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from mhtest.autoserv.bootloader import BootEntry, BootloaderError, run_or_fail

_INFO_LINE = re.compile(r'^(\w+)=(?:"(.*)"|(.*))$')


def parse_grubby_info(text: str) -> list[BootEntry]:
    """`grubby --info=ALL` output: one block of key=value lines per entry, from index=."""
    entries: list[BootEntry] = []
    fields: dict[str, str] = {}

    def flush() -> None:
        if "index" in fields:
            entries.append(
                BootEntry(
                    index=fields["index"],
                    title=fields.get("title", ""),
                    kernel=fields.get("kernel", ""),
                    args=fields.get("args", ""),
                    initrd=fields.get("initrd") or None,
                    id=fields.get("id") or fields["index"],
                )
            )

    for line in text.splitlines():
        match = _INFO_LINE.match(line.strip())
        if not match:
            continue
        key, value = (
            match.group(1),
            match.group(2) if match.group(2) is not None else match.group(3),
        )
        if key == "index":
            flush()
            fields = {}
        fields[key] = value
    flush()
    return entries


class Grubby:
    """grubby on `host`."""

    name = "grubby"

    def __init__(self, host: Any, tools: dict[str, str]) -> None:
        self.host = host
        self.tools = tools

    def get_entries(self) -> list[BootEntry]:
        out = run_or_fail(self.host, "grubby --info=ALL", "grubby --info", timeout=60)
        return parse_grubby_info(out)

    def get_default(self) -> BootEntry | None:
        index = self.host.run("grubby --default-index", timeout=60, ignore_status=True)
        for entry in self.get_entries():
            if entry.index == index.stdout.strip():
                return entry
        return None

    def set_default(self, entry: BootEntry) -> None:
        run_or_fail(self.host, f"grubby --set-default-index={int(entry.index)}", "grubby")

    def boot_once(self, entry: BootEntry) -> None:
        tool = self.tools.get("grub2-reboot") or self.tools.get("grub-reboot")
        if not tool:
            raise BootloaderError(f"{self.host}: grubby without grub2-reboot: no boot-once here")
        run_or_fail(self.host, tool, "grub2-reboot", args=[entry.index])

    def add_kernel(self, path: str, title: str, initrd: str | None, args: str) -> BootEntry:
        for old in self.get_entries():
            if old.title == title:
                self.remove_kernel(old)
        command = ["grubby", f"--add-kernel={path}", f"--title={title}", f"--args={args}"]
        if initrd:
            command.append(f"--initrd={initrd}")
        run_or_fail(self.host, shlex.join(command), "grubby --add-kernel")
        for entry in self.get_entries():
            if entry.title == title:
                entry.mhtest = True
                return entry
        raise BootloaderError(f"{self.host}: grubby did not add {title!r}", str(self.host))

    def remove_kernel(self, entry: BootEntry) -> None:
        run_or_fail(self.host, shlex.join(["grubby", f"--remove-kernel=TITLE={entry.title}"]),
                    "grubby --remove-kernel")  # fmt: skip


def parse_bootctl_list(text: str) -> list[BootEntry]:
    """`bootctl list --json=short` output."""
    entries = []
    for index, item in enumerate(json.loads(text or "[]")):
        initrd = item.get("initrd") or []
        options = item.get("options") or ""
        entries.append(
            BootEntry(
                index=str(index),
                title=item.get("showTitle") or item.get("title") or item.get("id", ""),
                kernel=item.get("linux") or "",
                args=" ".join(options) if isinstance(options, list) else options,
                initrd=" ".join(initrd) if isinstance(initrd, list) else initrd or None,
                id=item.get("id"),
                mhtest=str(item.get("id", "")).startswith("mhtest-"),
            )
        )
    return entries


class SystemdBoot:
    """systemd-boot on `host` (entries on its boot partition, defaults in EFI variables)."""

    name = "systemd-boot"

    def __init__(self, host: Any, tools: dict[str, str]) -> None:
        self.host = host
        self.tools = tools

    def get_entries(self) -> list[BootEntry]:
        out = run_or_fail(self.host, "bootctl list --json=short --no-pager", "bootctl list")
        return parse_bootctl_list(out)

    def get_default(self) -> BootEntry | None:
        out = run_or_fail(self.host, "bootctl list --json=short --no-pager", "bootctl list")
        for item, entry in zip(json.loads(out or "[]"), parse_bootctl_list(out)):
            if item.get("isDefault"):
                return entry
        return None

    def set_default(self, entry: BootEntry) -> None:
        run_or_fail(self.host, "bootctl set-default", "bootctl set-default", args=[entry.id])

    def boot_once(self, entry: BootEntry) -> None:
        run_or_fail(self.host, "bootctl set-oneshot", "bootctl set-oneshot", args=[entry.id])

    def add_kernel(self, path: str, title: str, initrd: str | None, args: str) -> BootEntry:
        slug = "mhtest-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", title).strip("-") or "entry")
        boot = run_or_fail(self.host, "bootctl --print-boot-path", "bootctl").strip()
        lines = [f"title {title}", f"linux /{slug}/linux"]
        q = shlex.quote
        copy = (
            f"mkdir -p {q(f'{boot}/{slug}')} {q(f'{boot}/loader/entries')} && "
            f"cp {q(path)} {q(f'{boot}/{slug}/linux')}"
        )
        if initrd:
            lines.append(f"initrd /{slug}/initrd")
            copy += f" && cp {q(initrd)} {q(f'{boot}/{slug}/initrd')}"
        lines.append(f"options {args}")
        run_or_fail(self.host, copy, f"copying the kernel to {boot}")
        entry_file = shlex.quote(f"{boot}/loader/entries/{slug}.conf")
        run_or_fail(self.host, f"cat > {entry_file}", "writing the entry",
                    stdin="\n".join(lines) + "\n")  # fmt: skip
        for entry in self.get_entries():
            if entry.id in (slug, f"{slug}.conf"):
                return entry
        raise BootloaderError(f"{self.host}: bootctl does not list {slug}", str(self.host))

    def remove_kernel(self, entry: BootEntry) -> None:
        if not entry.mhtest:
            raise BootloaderError(
                f"{self.host}: {entry.title!r} was not added by mhtest: remove its kernel package",
                str(self.host),
            )
        slug = str(entry.id).removesuffix(".conf")
        if not re.fullmatch(r"mhtest-[A-Za-z0-9._-]+", slug) or ".." in slug:
            raise BootloaderError(
                f"{self.host}: not an entry mhtest made: {slug!r}", str(self.host)
            )
        boot = run_or_fail(self.host, "bootctl --print-boot-path", "bootctl").strip()
        paths = [f"{boot}/{slug}", f"{boot}/loader/entries/{slug}.conf"]
        run_or_fail(self.host, shlex.join(["rm", "-rf", "--", *paths]), "removing the entry")
