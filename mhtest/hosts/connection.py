"""Connection: what transfer, remote processes and shell sessions need of a host.

They work on any object that has a name and opens SSH channels (SSHHost does; a VM guest
reached through its hypervisor host will), never on a concrete host class, so the host
modules import them and not the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from mhtest.hosts.result import CmdResult


class Connection(Protocol):
    """A host reached over SSH, as the transfer, process and shell modules use it."""

    name: str

    def open_channel(self, timeout: float | None = None) -> Any:
        """A new paramiko session channel on the host's transport."""
        ...

    def run(self, command: str, timeout: float | None = None, **kwargs: Any) -> CmdResult:
        """Run a shell command; CmdError when it fails (unless told to ignore the status)."""
        ...

    def ssh_command(self, extra: Sequence[str] = ()) -> list[str]:
        """The OpenSSH client command line that reaches the host (for terminal sessions)."""
        ...
