"""What happened on a sync server, kept for the results: the lines of sync.jsonl.

The server's bookkeeping (mhtest.sync.namespace) calls a SyncRecord as things end: a
barrier released (with everyone's arrival time), a post, a wait answered, a lock taken
and given back, an abort and who caused it, a participant gone. Each call appends one
tuple (no formatting on the server's hot path); `write()` turns them into JSON lines with
wall-clock times once the server has stopped. The report (results.html) draws its
timeline from them.

Lines (times are seconds since the epoch; `start` is when a wait or lock request came):

    {"event": "start", "t": T, "participants": [...]}
    {"event": "join", "t": T, "who": W}
    {"event": "leave", "t": T, "who": W, "why": TEXT}
    {"event": "barrier"|"exchange", "t": T, "name": N, "generation": G, "count": C,
     "outcome": "done"|"timeout"|"aborted", "arrivals": {W: T, ...}, ["by": W, "reason": R]}
    {"event": "post", "t": T, "who": W, "name": N}
    {"event": "wait", "t": T, "start": T0, "who": W, "name": N, "outcome": O}
    {"event": "lock", "t": T, "start": T0, "who": W, "name": N}
    {"event": "unlock", "t": T, "who": W, "name": N}
    {"event": "abort", "t": T, "by": W, "reason": R}
    {"event": "gone", "t": T, "who": W, "why": TEXT}
    {"event": "end", "t": T, "dropped": N}
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

#: Events kept at most (a run of 32 workers and 100,000 barriers is well inside).
MAX_EVENTS = 1_000_000
_RENDEZVOUS = ("name", "generation", "count", "outcome", "arrivals", "by", "reason")
#: The field names of each kind's tuple, after its time.
FIELDS: dict[str, tuple[str, ...]] = {
    "join": ("who",),
    "leave": ("who", "why"),
    "barrier": _RENDEZVOUS,
    "exchange": _RENDEZVOUS,
    "post": ("who", "name"),
    "wait": ("start", "who", "name", "outcome"),
    "lock": ("start", "who", "name"),
    "unlock": ("who", "name"),
    "abort": ("by", "reason"),
    "gone": ("who", "why"),
}
_TIMES = frozenset({"start"})


class SyncRecord:
    """The events of one sync server, in the order they happened (see module docstring).

    `record(kind, *fields)` takes the fields of FIELDS[kind] in order; times given in
    fields (a wait's start, a barrier's arrivals) are time.monotonic() values.
    """

    def __init__(self, participants: list[str] | None = None, limit: int = MAX_EVENTS) -> None:
        self.participants = list(participants or [])
        self.events: list[tuple[str, float, tuple[Any, ...]]] = []
        self.limit = limit
        self.dropped = 0
        self._mono0 = time.monotonic()
        self._wall0 = time.time()

    def __call__(self, kind: str, *fields: Any) -> None:
        if len(self.events) < self.limit:
            self.events.append((kind, time.monotonic(), fields))
        else:
            self.dropped += 1

    def wall(self, mono: float) -> float:
        """A time.monotonic() value of this process as seconds since the epoch."""
        return round(self._wall0 + (mono - self._mono0), 6)

    def lines(self) -> Iterator[dict[str, Any]]:
        """The events as the dicts of sync.jsonl, first `start` and last `end`."""
        wall = self.wall
        yield {"event": "start", "t": wall(self._mono0), "participants": self.participants}
        for kind, when, fields in self.events:
            line: dict[str, Any] = {"event": kind, "t": wall(when)}
            for key, value in zip(FIELDS[kind], fields):
                if value is None:
                    continue
                if key in _TIMES:
                    value = wall(value)
                elif key == "arrivals":
                    value = {who: wall(at) for who, at in value}
                line[key] = value
            yield line
        yield {"event": "end", "t": wall(time.monotonic()), "dropped": self.dropped}

    def write(self, path: str | os.PathLike) -> None:
        """Append the events to `path` (sync.jsonl: several runs of one test append)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        encode = json.JSONEncoder(separators=(",", ":"), default=str).encode
        with open(target, "a", encoding="utf-8") as out:
            out.writelines(encode(line) + "\n" for line in self.lines())


def read(path: str | os.PathLike, limit: int = MAX_EVENTS) -> list[dict[str, Any]]:
    """The events of a sync.jsonl (bad lines skipped; at most `limit`)."""
    events: list[dict[str, Any]] = []
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if len(events) >= limit:
                break
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and isinstance(event.get("t"), (int, float)):
                events.append(event)
    return events
