"""The grub2 backend of host.bootloader: grub.cfg, grub-mkconfig, grub-set-default, grub-reboot.

Entries come from parsing grub.cfg (menu entries and submenus, GRUB's own numbering: "1>2"
is the third entry of the submenu at 1). mhtest's entries live in /etc/grub.d/11_mhtest, a
script grub-mkconfig runs right after 10_linux: each entry is one JSON comment line there,
which the script turns into a menuentry with GRUB's own helpers (the device and the paths
as GRUB sees them come from grub-probe each time grub.cfg is made).
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from typing import Any

from mhtest.autoserv.bootloader import BootEntry, BootloaderError, run_or_fail

log = logging.getLogger(__name__)

SCRIPT = "/etc/grub.d/11_mhtest"
ID_PREFIX = "mhtest-"
ENTRY_MARK = "# mhtest-entry "

_SCRIPT_HEAD = """#!/bin/sh
# Boot entries added by mhtest (host.bootloader.add_kernel); mhtest rewrites this file.
set -e
. "${pkgdatadir:-/usr/share/grub}/grub-mkconfig_lib"
mhtest_entry() {  # title id kernel initrd args
    device=$(${grub_probe} --target=device "$3")
    echo "menuentry '$(echo "$1" | grub_quote)' \\$menuentry_id_option '$2' {"
    prepare_grub_to_access_device "$device" | sed -e 's/^/\\t/'
    echo "\\tlinux\\t$(make_system_path_relative_to_its_root "$3") $5"
    if [ -n "$4" ]; then
        echo "\\tinitrd\\t$(make_system_path_relative_to_its_root "$4")"
    fi
    echo "}"
}
"""

_EFFECTIVE_DEFAULT = """
GRUB_DEFAULT=0
[ -r /etc/default/grub ] && . /etc/default/grub
for f in /etc/default/grub.d/*.cfg; do [ -r "$f" ] && . "$f"; done
echo "$GRUB_DEFAULT"
"""


def parse_grub_cfg(text: str) -> list[BootEntry]:
    """The menu entries of a grub.cfg, with GRUB's indexes, title paths and id paths."""
    entries: list[BootEntry] = []
    # One frame per open block: (kind, index path, title path, id path, counter, entry)
    stack: list[dict[str, Any]] = [{"kind": "top", "index": [], "title": [], "id": [], "n": 0}]
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word = line.split(None, 1)[0]
        if word in ("menuentry", "submenu") and line.endswith("{"):
            try:
                tokens = shlex.split(line[:-1], posix=True)
            except ValueError:
                tokens = line[:-1].split()
            title = tokens[1] if len(tokens) > 1 else ""
            ident = None
            for i, tok in enumerate(tokens):
                if tok in ("$menuentry_id_option", "--id") and i + 1 < len(tokens):
                    ident = tokens[i + 1]
            parent = stack[-1]
            frame = {
                "kind": word,
                "index": parent["index"] + [str(parent["n"])],
                "title": parent["title"] + [title],
                "id": parent["id"] + [ident],
                "n": 0,
            }
            parent["n"] += 1
            if word == "menuentry":
                entry = BootEntry(
                    index=">".join(frame["index"]),
                    title=">".join(frame["title"]),
                    kernel="",
                    id=">".join(frame["id"]) if all(frame["id"]) else None,
                    mhtest=bool(ident and ident.startswith(ID_PREFIX)),
                )
                entries.append(entry)
                frame["entry"] = entry
            stack.append(frame)
        elif line == "}" and len(stack) > 1:
            stack.pop()
        elif word in ("linux", "linux16", "linuxefi") and stack[-1].get("entry"):
            parts = line.split(None, 2)
            entry = stack[-1]["entry"]
            entry.kernel = parts[1] if len(parts) > 1 else ""
            entry.args = parts[2] if len(parts) > 2 else ""
        elif word in ("initrd", "initrd16", "initrdefi") and stack[-1].get("entry"):
            parts = line.split()
            stack[-1]["entry"].initrd = " ".join(parts[1:]) or None
    return entries


def _slug(title: str) -> str:
    return ID_PREFIX + (re.sub(r"[^A-Za-z0-9._-]+", "-", title).strip("-") or "entry")


class Grub2:
    """grub2 on `host`: `tools` maps tool names to paths there, `cfg` is grub.cfg's path."""

    name = "grub2"

    def __init__(self, host: Any, tools: dict[str, str], cfg: str) -> None:
        self.host = host
        self.tools = tools
        self.cfg = cfg

    def _tool(self, *names: str) -> str:
        for name in names:
            if name in self.tools:
                return self.tools[name]
        raise BootloaderError(
            f"{self.host}: grub2 without {' or '.join(names)}: cannot do that here",
            str(self.host),
        )

    def get_entries(self) -> list[BootEntry]:
        text = run_or_fail(self.host, "cat", f"reading {self.cfg}", args=[self.cfg], timeout=60)
        return parse_grub_cfg(text)

    def _env(self) -> dict[str, str]:
        editenv = self._tool("grub-editenv", "grub2-editenv")
        out = self.host.run(f"{editenv} - list", timeout=60, ignore_status=True).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def _grub_default(self) -> str:
        return self.host.run(_EFFECTIVE_DEFAULT, timeout=60).stdout.strip() or "0"

    def get_default(self) -> BootEntry | None:
        target = self._grub_default()
        if target == "saved":
            target = self._env().get("saved_entry") or "0"
        for entry in self.get_entries():
            if target in (entry.index, entry.title, entry.id):
                return entry
        return None

    # -- changing ------------------------------------------------------------------------------

    def _ref(self, entry: BootEntry) -> str:
        """How grub-set-default and grub-reboot name `entry`: its id path, else its title."""
        return entry.id or entry.title

    def _ensure_saved(self) -> None:
        """GRUB_DEFAULT=saved, which grub-set-default and grub-reboot need."""
        if self._grub_default() == "saved":
            return
        log.info("%s: setting GRUB_DEFAULT=saved", self.host)
        mkconfig = self.tools.get("grub-mkconfig") or self.tools.get("grub2-mkconfig") or ""
        sources_dir = (
            mkconfig
            and self.host.run(
                "grep -q 'default/grub.d' " + shlex.quote(mkconfig), timeout=60, ignore_status=True
            ).ok
        )
        if sources_dir:
            command = "echo GRUB_DEFAULT=saved > /etc/default/grub.d/zz-mhtest-default.cfg"
        else:
            command = (
                "sed -i -e '/^GRUB_DEFAULT=/d' /etc/default/grub && "
                "echo GRUB_DEFAULT=saved >> /etc/default/grub"
            )
        run_or_fail(self.host, f"mkdir -p /etc/default/grub.d && {command}", "GRUB_DEFAULT")
        self.regenerate()

    def set_default(self, entry: BootEntry) -> None:
        self._ensure_saved()
        tool = self._tool("grub-set-default", "grub2-set-default")
        run_or_fail(self.host, tool, f"setting the default to {entry.title!r}",
                    args=[self._ref(entry)])  # fmt: skip

    def boot_once(self, entry: BootEntry) -> None:
        self._ensure_saved()
        tool = self._tool("grub-reboot", "grub2-reboot")
        run_or_fail(self.host, tool, f"booting {entry.title!r} once", args=[self._ref(entry)])

    def regenerate(self) -> None:
        """Make grub.cfg anew (update-grub, or grub-mkconfig -o grub.cfg)."""
        if "update-grub" in self.tools:
            run_or_fail(self.host, self.tools["update-grub"], "update-grub")
        else:
            tool = self._tool("grub-mkconfig", "grub2-mkconfig")
            run_or_fail(self.host, tool, "grub-mkconfig", args=["-o", self.cfg])

    def _our_entries(self) -> list[dict[str, str]]:
        result = self.host.run("cat", args=[SCRIPT], timeout=60, ignore_status=True)
        found = []
        for line in result.stdout.splitlines() if result.ok else []:
            if line.startswith(ENTRY_MARK):
                try:
                    found.append(json.loads(line[len(ENTRY_MARK) :]))
                except ValueError:
                    log.warning("%s: %s: unreadable line %r", self.host, SCRIPT, line)
        return found

    def _write(self, entries: list[dict[str, str]]) -> None:
        lines = [_SCRIPT_HEAD]
        for e in entries:
            lines.append(ENTRY_MARK + json.dumps(e, sort_keys=True))
            fields = (e["title"], e["id"], e["kernel"], e.get("initrd") or "", e["args"])
            lines.append("mhtest_entry " + " ".join(shlex.quote(f) for f in fields))
        text = "\n".join(lines) + "\n"
        run_or_fail(self.host, f"cat > {SCRIPT} && chmod 755 {SCRIPT}", f"writing {SCRIPT}",
                    stdin=text)  # fmt: skip
        self.regenerate()

    def add_kernel(self, path: str, title: str, initrd: str | None, args: str) -> BootEntry:
        ident = _slug(title)
        ours = [e for e in self._our_entries() if e["title"] != title and e["id"] != ident]
        ours.append({"title": title, "id": ident, "kernel": path, "initrd": initrd or "",
                     "args": args})  # fmt: skip
        self._write(ours)
        for entry in self.get_entries():
            if entry.id == ident:
                return entry
        raise BootloaderError(
            f"{self.host}: {SCRIPT} did not add {title!r} to {self.cfg}: is grub-mkconfig "
            "running the scripts of /etc/grub.d?",
            str(self.host),
        )

    def remove_kernel(self, entry: BootEntry) -> None:
        ours = self._our_entries()
        left = [e for e in ours if e["id"] != entry.id]
        if len(left) == len(ours):
            raise BootloaderError(
                f"{self.host}: {entry.title!r} is not in {SCRIPT}", str(self.host)
            )
        self._write(left)
