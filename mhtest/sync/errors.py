"""The errors a sync call raises: each says which barrier, who arrived and who did not."""

from __future__ import annotations

# Not `from typing import TYPE_CHECKING`: typing costs a shell worker's `mhtest sync`
# more than its call (mhtest.sync.shell); annotations are not evaluated here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Sequence


class SyncError(Exception):
    """A sync call failed: bad request, refused name, protocol error."""


class SyncOptionError(SyncError):
    """The sync options of a run are wrong (one line naming the option); the CLI exits 2."""


class SyncUnavailable(SyncError):
    """The sync server cannot be reached or stopped answering."""


class _WaitError(SyncError):
    """A wait (barrier, exchange, wait, lock) that ended without completing."""

    def __init__(
        self,
        message: str,
        *,
        name: str = "",
        arrived: Sequence[str] = (),
        missing: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.name = name
        self.arrived = list(arrived)
        self.missing = list(missing)


class SyncTimeout(_WaitError):
    """A wait ran out of time; `arrived` and `missing` name the participants."""


class SyncAborted(_WaitError):
    """A wait was aborted: a participant died, left, or called abort().

    `by` names the participant that caused it, `reason` says why.
    """

    def __init__(self, message: str, *, by: str = "", reason: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.by = by
        self.reason = reason


def error_from_reply(error: dict[str, Any]) -> SyncError:
    """Turn the `error` object of a server reply into the exception to raise."""
    kind = error.get("type")
    message = str(error.get("message", "sync server error"))
    fields = {
        "name": str(error.get("name", "")),
        "arrived": [str(p) for p in error.get("arrived", ()) or ()],
        "missing": [str(p) for p in error.get("missing", ()) or ()],
    }
    if kind == "timeout":
        return SyncTimeout(message, **fields)
    if kind == "aborted":
        return SyncAborted(
            message, by=str(error.get("by", "")), reason=str(error.get("reason", "")), **fields
        )
    return SyncError(message)
