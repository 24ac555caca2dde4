"""A queue's machines: its `.machines` file, else the spool directory's own name.

`.machines` holds one host a line, written as anywhere in mhtest: `[user@]name[:port]`, an
ssh_config alias, an inventory host or group name, or `local`; blank lines and `# comments`
are skipped. A name that is none of these and does not resolve is an unknown host: the
file that would have run is failed with that reason (see mhtest.queue.watcher); a name
service that does not answer (EAI_AGAIN) fails nothing: the watcher waits for it.
The file is read each time a file is taken from the queue, so edits apply to the next one.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Callable

from mhtest.hosts.errors import HostSpecError
from mhtest.hosts.inventory import LOCAL, HostConfig, resolve_hosts
from mhtest.queue.spool import Spool

#: Looks a name up: socket.getaddrinfo's shape (a parameter for tests of the unknown case).
Lookup = Callable[..., list]


class MachinesError(Exception):
    """A queue's machines cannot be known: one line naming the file and the host."""


class MachinesUnavailable(MachinesError):
    """A queue's machines cannot be known now (the name service does not answer): wait."""


@dataclass
class Machine:
    """A queue's machine: the place its jobs run at, and the key that makes two names of
    one machine (an alias and its address) the same machine across queues."""

    config: HostConfig
    key: str

    @property
    def name(self) -> str:
        return self.config.name


def queue_machines(
    spool: Spool,
    inventory: str | None = None,
    ssh_config: str | None = None,
    lookup: Lookup = socket.getaddrinfo,
) -> list[Machine]:
    """The machines of the queue at `spool`; MachinesError when one is unknown or none is."""
    path = spool.machines_path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        where = f"{spool.path} (no {path.name}: the queue's name is its machine)"
        return _resolve([(where, spool.name)], inventory, ssh_config, lookup)
    except (OSError, UnicodeDecodeError) as exc:
        raise MachinesError(f"{path}: cannot read: {exc}") from None
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        item = line.split("#", 1)[0].strip()
        if item:
            items.append((f"{path}:{number}", item))
    if not items:
        raise MachinesError(f"{path}: names no machines (one host a line)")
    return _resolve(items, inventory, ssh_config, lookup)


def _resolve(
    items: list[tuple[str, str]], inventory: str | None, ssh_config: str | None, lookup: Lookup
) -> list[Machine]:
    machines: dict[str, Machine] = {}
    for where, item in items:
        try:
            configs = resolve_hosts([item], inventory_path=inventory, ssh_config_path=ssh_config)
        except HostSpecError as exc:
            raise MachinesError(f"{where}: {exc}") from None
        for config in configs:
            machines.setdefault(config.name, Machine(config, _key(config, where, item, lookup)))
    return list(machines.values())


def _key(config: HostConfig, where: str, item: str, lookup: Lookup) -> str:
    """address:port with the address resolved (an unknown name is a MachinesError)."""
    if config.is_local:
        return LOCAL
    try:
        found = lookup(config.address, config.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        if getattr(exc, "errno", None) == socket.EAI_AGAIN:
            raise MachinesUnavailable(f"{where}: cannot look {item!r} up now ({reason})") from None
        raise MachinesError(
            f"{where}: unknown host {item!r}: not an inventory name, an ssh_config alias nor "
            f"a host name that resolves ({reason})"
        ) from None
    address = found[0][4][0] if found else config.address
    return f"{address}:{config.port}"
