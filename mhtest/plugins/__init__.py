"""Built-in plugins and the loader every namespace goes through (stevedore)."""

from __future__ import annotations

import logging
import sys
from typing import Any

LOG = logging.getLogger(__name__)


def load_plugins(namespace: str) -> list[tuple[str, Any]]:
    """Load every plugin of `namespace`: [(name, loaded object)], sorted by name.

    A plugin that fails to load is reported in one warning line and skipped: a broken
    third-party package never stops a job.
    """
    from stevedore import ExtensionManager

    def on_failure(manager: Any, entrypoint: Any, exc: Exception) -> None:
        print(
            f"mhtest: warning: plugin {entrypoint.name!r} ({namespace}) failed to load: "
            f"{type(exc).__name__}: {exc}",
            file=sys.stderr,
        )

    mgr = ExtensionManager(namespace, invoke_on_load=False, on_load_failure_callback=on_failure)
    return sorted(((ext.name, ext.plugin) for ext in mgr), key=lambda item: item[0])
