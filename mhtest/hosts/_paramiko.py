"""Import paramiko without importing invoke, two thirds of paramiko's import time.

paramiko's config module imports invoke only to run ssh_config's `Match exec` lines.
`load()` imports paramiko while a stand-in for invoke sits in sys.modules: paramiko keeps
the stand-in, which imports the real invoke the first time paramiko uses it; the stand-in
then leaves sys.modules, so any other `import invoke` gets the real module.

Every mhtest module imports paramiko through `load()`. It also gives paramiko's logger a
handler that drops its records: a program that set up no logging (a script using SSHHost or
KVMGuest) would otherwise print, through Python's last-resort handler, the traceback that
paramiko's transport thread logs for each connection mhtest gives up on, as each probe of a
rebooting guest whose sshd is not there yet (what mhtest makes of them is in its own log).
Handlers set up by the program (mhtest's job.log among them) still get every record.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import types
from typing import Any


class _DeferredModule(types.ModuleType):
    """Stands in for a module until an attribute is asked for; then it is that module."""

    def __getattr__(self, attr: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


def load() -> Any:
    """The paramiko module (imported on first call, with invoke deferred)."""
    module = sys.modules.get("paramiko")
    if module is not None:
        if getattr(getattr(module, "__spec__", None), "_initializing", False):
            # Another thread is importing it: the import statement waits for its end
            # (returning the module now would hand out half of it).
            import paramiko

            return paramiko
        return module
    stand_in = None
    if "invoke" not in sys.modules:
        try:
            found = importlib.util.find_spec("invoke") is not None
        except (ImportError, ValueError):
            found = False
        if found:
            stand_in = sys.modules["invoke"] = _DeferredModule("invoke")
    try:
        import paramiko
    finally:
        if stand_in is not None and sys.modules.get("invoke") is stand_in:
            del sys.modules["invoke"]
    quiet = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in quiet.handlers):
        quiet.addHandler(logging.NullHandler())
    return paramiko
