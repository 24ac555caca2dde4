"""ZeroMQ sync for multi-host tests: barriers, data exchange, post/wait and locks.

    from mhtest.sync import SyncClient, SyncServer, SyncTimeout

The errors import without ZeroMQ; the client and server load it when first used.
"""

from __future__ import annotations

from mhtest.sync.errors import SyncAborted, SyncError, SyncTimeout, SyncUnavailable

# Not `from typing import TYPE_CHECKING`: typing costs a shell worker's `mhtest sync`
# more than its call (mhtest.sync.shell); annotations are not evaluated here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "SyncAborted",
    "SyncClient",
    "SyncError",
    "SyncServer",
    "SyncTimeout",
    "SyncUnavailable",
]


def __getattr__(name: str) -> Any:
    if name == "SyncClient":
        from mhtest.sync.client import SyncClient

        return SyncClient
    if name == "SyncServer":
        from mhtest.sync.server import SyncServer

        return SyncServer
    raise AttributeError(f"module 'mhtest.sync' has no attribute {name!r}")
