"""The plain records of a sync server's state: participants, waiters, rendezvous, locks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from mhtest.sync.namespace import Namespace

Expected = Union[list, int, None]


@dataclass
class Participant:
    """A connected client, known by the name it said hello with, in its namespace."""

    name: str
    identity: bytes
    liveness: float  # seconds of silence after which it is declared dead
    last_seen: float
    ns: Namespace
    count: int | None = None  # its default count for count=None
    transient: bool = False  # a short-lived connection speaking for `name` (hello transient)


@dataclass
class Waiter:
    """One pending request that gets its reply later."""

    participant: str
    identity: bytes
    request_id: int
    deadline: float
    timeout: float
    data: bytes | None = None  # an exchange's data, encoded
    count: int = 1
    senders: list[str] | None = None  # a wait's: whose posts count (None: anybody's)

    @property
    def since(self) -> float:
        """When the request came (time.monotonic())."""
        return self.deadline - self.timeout


@dataclass
class Rendezvous:
    """A barrier or exchange in progress (one generation of its name)."""

    kind: str
    name: str
    count: int
    generation: int
    waiters: dict[str, Waiter] = field(default_factory=dict)
    deadline: float = float("inf")  # the earliest waiter deadline
    size: int = 2  # bytes of its reply's {name: data, ...}: braces, then each waiter's data

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name!r}"


@dataclass
class LockState:
    """Who holds a lock and who queues for it."""

    holder: str | None = None
    holder_identity: bytes = b""  # the connection holding it
    queue: list[Waiter] = field(default_factory=list)


@dataclass
class Budget:
    """The bytes of posted and exchanged data a whole server holds, and the most it may."""

    limit: int
    used: int = 0


def names(names: Any) -> str:
    return ", ".join(names) if names else "none"


def enough(w: Waiter, posted: dict[str, bytes]) -> bool:
    """Whether the posts of a name answer the wait `w`."""
    if w.senders is None:
        return len(posted) >= w.count
    return sum(1 for n in w.senders if n in posted) >= w.count
