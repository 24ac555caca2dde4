"""The facts about a machine that a failure report needs, gathered cheaply (no commands run).

`collect()` runs here for the controller and in every host's executor (which sends them
as a `host.info` event): kernel, distribution, CPUs, memory, Python and mhtest's version.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

#: Bounds on what a host may send as its facts (they are data from a host).
MAX_FACTS = 40
MAX_VALUE = 512


def collect() -> dict[str, Any]:
    """This machine's facts, as plain JSON-able data."""
    from mhtest import __version__

    uname = platform.uname()
    return {
        "hostname": uname.node,
        "kernel": uname.release,
        "machine": uname.machine,
        "distribution": _os_release().get("PRETTY_NAME", uname.system),
        "cpus": os.cpu_count(),
        "memory_mb": _memory_mb(),
        "python": f"{platform.python_version()} ({sys.executable})",
        "mhtest": __version__,
    }


def bounded(facts: Any) -> dict[str, Any]:
    """Facts received from a host, kept to plain short values (anything else dropped)."""
    if not isinstance(facts, dict):
        return {}
    kept: dict[str, Any] = {}
    for key, value in list(facts.items())[:MAX_FACTS]:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            kept[str(key)[:64]] = value
        elif isinstance(value, str):
            kept[str(key)[:64]] = value[:MAX_VALUE]
    return kept


def write(directory: str | os.PathLike[str], host: str, facts: dict[str, Any]) -> None:
    """Keep a host's facts as <directory>/<host>.json (OSError if the disk refuses)."""
    import json

    from mhtest.spec import dir_name

    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, dir_name(host) + ".json")
    with open(path, "w", encoding="utf-8") as out:
        json.dump(facts, out, indent=1)


def summary(facts: dict[str, Any]) -> str:
    """One line for job.log: distribution, kernel, CPUs, memory, Python."""
    return (
        f"{facts.get('distribution')}, kernel {facts.get('kernel')} ({facts.get('machine')}), "
        f"{facts.get('cpus')} CPUs, {facts.get('memory_mb')} MB, Python {facts.get('python')}, "
        f"mhtest {facts.get('mhtest')}"
    )


def _os_release() -> dict[str, str]:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path, encoding="utf-8") as source:
                lines = source.read().splitlines()
        except OSError:
            continue
        pairs = (line.split("=", 1) for line in lines if "=" in line)
        return {k: v.strip().strip('"') for k, v in pairs}
    return {}


def _memory_mb() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as source:
            for line in source:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
