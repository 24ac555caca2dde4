"""The timeline of a multi-host test: one lane per worker, what each did and when.

Built from the test's result (its workers, their hosts, statuses, reasons and phases:
setUp, test, tearDown) and the sync server's record beside the worker results
(sync.jsonl, mhtest.sync.record): barriers and exchanges from each arrival to the release
(and who came last), waits, posts, locks held, aborts and who caused them, workers gone.

Times are milliseconds from the first thing that happened, as integers, and the record's
rows are short lists (the page of a run of 32 workers and 1,000 barriers stays small):

    {"span": MS, "lanes": [{"name", "host", "status", "reason", "phases": [[NAME, S, E]],
                            "runs": [[S, E]]}],      (runs: the worker's process, start to end)
     "rendezvous": [[KIND, NAME, GENERATION, RELEASE, OUTCOME, [[LANE, ARRIVAL], ...],
                     LAST_LANE, BY, REASON]],
     "waits": [[LANE, S, E, NAME, OUTCOME]], "locks": [[LANE, S, E, NAME]],
     "marks": [[LANE, T, KIND, TEXT]], "migrations": [[LANE, S, E, TEXT, STATUS]],
     "dropped": N}

Migrations come from the workers' whiteboards (mhtest.virt.migration.MultihostMigration:
{"migrations": [{start, end, vm, src, dst, status, downtime, total-time, ...}]}). Reboots
and reconnects are not recorded anywhere yet, so they are not drawn.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mhtest.sync.record import read

LOG = logging.getLogger(__name__)

RECORD_NAME = "sync.jsonl"


def _phases(child: Any) -> list[list[Any]]:
    phases = [p for p in getattr(child, "phases", None) or [] if len(p) == 3]
    if phases:
        return [[str(n), float(s), float(e)] for n, s, e in phases]
    return [["test", float(child.start), float(child.end)]]  # a simple test: one phase


def build(result: Any) -> dict[str, Any] | None:
    """The timeline data of a multi-host test's result, or None if it has no workers."""
    children = list(getattr(result, "children", None) or [])
    if not children:
        return None
    lanes: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for child in children:  # several run_workers() calls: a worker keeps its lane
        at = index.setdefault(child.name, len(lanes))
        if at == len(lanes):
            lanes.append(
                {
                    "name": child.name,
                    "host": child.host,
                    "status": child.status,
                    "reason": child.fail_reason or "",
                    "phases": [],
                    "runs": [],
                }
            )
        elif child.status != "PASS":
            lanes[at].update(status=child.status, reason=child.fail_reason or "")
        lanes[at]["phases"] += _phases(child)
        lanes[at]["runs"].append([float(child.start), float(child.end)])
    events = _events(result)
    moves = [(index[child.name], m) for child in children for m in _migrations(child)]
    times = [t for lane in lanes for run in lane["runs"] for t in run]
    times += [e["t"] for e in events]
    times += [t for _, m in moves for t in (m["start"], m["end"])]
    t0, t1 = min(times), max(times)

    def ms(t: Any) -> int:
        return round((float(t) - t0) * 1000)

    migrations = [
        [lane, ms(m["start"]), ms(m["end"]), _migration_text(m), str(m.get("status"))]
        for lane, m in moves
    ]
    for lane in lanes:
        lane["phases"] = [[n, ms(s), ms(e)] for n, s, e in lane["phases"]]
        lane["runs"] = [[ms(s), ms(e)] for s, e in lane["runs"]]
    data: dict[str, Any] = {"span": max(ms(t1), 1), "lanes": lanes, "migrations": migrations}
    data.update(_sync(events, index, ms, ms(t1)))
    return data


def _migrations(child: Any) -> list[dict[str, Any]]:
    """The migrations a worker's whiteboard tells of, with their times."""
    board = getattr(child, "whiteboard", "") or ""
    if '"migrations"' not in board:
        return []
    try:
        found = json.loads(board).get("migrations")
    except (ValueError, AttributeError):
        return []
    return [
        m
        for m in found or []
        if isinstance(m, dict)
        and isinstance(m.get("start"), (int, float))
        and isinstance(m.get("end"), (int, float))
    ]


def _migration_text(m: dict[str, Any]) -> str:
    return (
        f"migration {m.get('id', '')} of {m.get('vm', '?')}: {m.get('src', '?')} to "
        f"{m.get('dst', '?')}, {m.get('status', '?')}, downtime {m.get('downtime', '?')} ms, "
        f"total {m.get('total-time', '?')} ms"
    )


def _events(result: Any) -> list[dict[str, Any]]:
    path = Path(result.logdir or ".") / RECORD_NAME
    if not result.logdir or not path.is_file():
        return []
    try:
        return read(path)
    except OSError as exc:
        LOG.warning("cannot read %s: %s", path, exc)
        return []


def _sync(events: list[dict[str, Any]], index: dict[str, int], ms: Any, end: int) -> dict:
    """The record's events as the timeline's rows (see module docstring)."""
    rendezvous, waits, locks, marks = [], [], [], []
    held: dict[tuple[str, str], int] = {}  # (lock, who) -> when taken
    dropped = 0
    lane = index.get
    for e in events:
        kind = e.get("event")
        if kind in ("barrier", "exchange"):
            arrivals = [
                [lane(who), ms(t)] for who, t in (e.get("arrivals") or {}).items() if who in index
            ]
            last = max(arrivals, key=lambda a: a[1])[0] if arrivals else -1
            rendezvous.append(
                [
                    kind,
                    e.get("name", ""),
                    e.get("generation", 0),
                    ms(e["t"]),
                    e.get("outcome", "done"),
                    arrivals,
                    last,
                    e.get("by") or "",
                    e.get("reason") or "",
                ]
            )
        elif kind == "wait" and e.get("who") in index:
            waits.append(
                [
                    lane(e["who"]),
                    ms(e.get("start", e["t"])),
                    ms(e["t"]),
                    e.get("name", ""),
                    e.get("outcome", ""),
                ]
            )
        elif kind == "lock":
            held[(e.get("name", ""), e.get("who", ""))] = ms(e["t"])
        elif kind == "unlock":
            key = (e.get("name", ""), e.get("who", ""))
            if key in held and key[1] in index:
                locks.append([lane(key[1]), held.pop(key), ms(e["t"]), key[0]])
        elif kind == "post" and e.get("who") in index:
            marks.append([lane(e["who"]), ms(e["t"]), "post", f"post {e.get('name', '')}"])
        elif kind == "abort":
            by = e.get("by", "")
            marks.append(
                [lane(by, -1), ms(e["t"]), "abort", f"abort by {by}: {e.get('reason', '')}"]
            )
        elif kind == "gone" and e.get("who") in index:
            marks.append([lane(e["who"]), ms(e["t"]), "gone", e.get("why", "")])
        elif kind == "end":
            dropped = int(e.get("dropped") or 0)
    for (name, who), start in held.items():  # still held when the server stopped
        if who in index:
            locks.append([lane(who), start, end, name])
    return {
        "rendezvous": rendezvous,
        "waits": waits,
        "locks": locks,
        "marks": marks,
        "dropped": dropped,
    }
