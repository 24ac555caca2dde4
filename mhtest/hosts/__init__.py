"""Autoserv's Host API: SSHHost (paramiko), LocalHost, KVMGuest, CmdResult and host errors.

Names load lazily so that importing mhtest.hosts does not import paramiko.
"""

from __future__ import annotations

from typing import Any

from mhtest.hosts.errors import (
    AuthenticationError,
    CmdError,
    CmdTimeout,
    HostError,
    HostKeyError,
    HostSpecError,
    HostUnreachable,
    RebootError,
    TransferError,
)
from mhtest.hosts.result import CmdResult

_LAZY = {
    "Host": ("mhtest.hosts.base", "Host"),
    "SSHHost": ("mhtest.hosts.ssh", "SSHHost"),
    "LocalHost": ("mhtest.hosts.local", "LocalHost"),
    "KVMGuest": ("mhtest.hosts.kvm_guest", "KVMGuest"),
    "RemoteProcess": ("mhtest.hosts.process", "RemoteProcess"),
    "HostConfig": ("mhtest.hosts.inventory", "HostConfig"),
    "resolve_hosts": ("mhtest.hosts.inventory", "resolve_hosts"),
    "make_host": ("mhtest.hosts.inventory", "make_host"),
}

__all__ = [
    "AuthenticationError",
    "CmdError",
    "CmdResult",
    "CmdTimeout",
    "HostError",
    "HostKeyError",
    "HostSpecError",
    "HostUnreachable",
    "RebootError",
    "TransferError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'mhtest.hosts' has no attribute {name!r}")
