"""Errors raised by hosts: each says which host, what happened and what to do."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mhtest.hosts.result import CmdResult


class HostError(Exception):
    """Something went wrong on, or while reaching, a host."""

    def __init__(self, message: str, host: str = "") -> None:
        super().__init__(message)
        self.host = host


class HostSpecError(HostError, ValueError):
    """A malformed host string, ssh_config entry or inventory file."""


class HostUnreachable(HostError):
    """The host could not be reached: unknown name, refused connection, network timeout."""


class AuthenticationError(HostError):
    """The host refused every key we offered."""

    def __init__(self, message: str, host: str = "", keys: tuple[str, ...] = ()) -> None:
        super().__init__(message, host)
        self.keys = keys


class HostKeyError(HostError):
    """The host's key is unknown or differs from the one in known_hosts."""

    def __init__(self, message: str, host: str = "", known_hosts: str = "") -> None:
        super().__init__(message, host)
        self.known_hosts = known_hosts


class CmdError(HostError):
    """A command exited non-zero (or was killed); `.result` holds everything about it."""

    def __init__(self, result: CmdResult, host: str = "", message: str = "") -> None:
        self.result = result
        if not message:
            message = f"command {result.command!r} failed on {host or 'host'}"
            if result.aborted:
                message += f": killed by signal {result.aborted}"
            else:
                message += f" with exit status {result.exit_status}"
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            if tail:
                message += ": " + " | ".join(tail)
        super().__init__(message, host)


class CmdTimeout(CmdError):
    """A command ran past its timeout; its whole process group was killed."""

    def __init__(self, result: CmdResult, host: str = "", timeout: float = 0.0) -> None:
        self.timeout = timeout
        message = (
            f"command {result.command!r} on {host or 'host'} timed out after {timeout:g} s "
            "and was killed (its whole process group)"
        )
        super().__init__(result, host, message)


class TransferError(HostError):
    """A file transfer to or from a host failed."""


class RebootError(HostError):
    """A host did not go down, or did not come back, within the reboot timeout."""
