"""`from autotest_lib.server import utils` in control files: Autotest's paths, mhtest's names.

While a control file runs, in its own process, a finder first on sys.meta_path answers for
`autotest_lib` and `autotest` (the package names Autotest used over the years): the modules
below hold the very objects the control file's globals hold (its `hosts`, `utils`,
`autotest`, `error`, `barrier`, `parallel`…). A module path mhtest does not provide fails
with one line listing those it does. `import common` (Autotest's path set-up module) is an
empty module unless a real one is found. Nothing is installed on sys.path, and the finder is
gone when the control file ends.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import Any

ROOTS = ("autotest_lib", "autotest")


#: Autoserv's server modules for machines one may break (mhtest.autoserv.machine_modules).
MACHINES = ("kvm", "deb_kernel", "rpm_kernel")


def module_table(names: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{module path below the root: its attributes}, from a control file's globals."""
    subcommand = {k: names[k] for k in ("parallel", "parallel_simple", "subcommand") if k in names}
    barrier = {"barrier": names["barrier"]} if "barrier" in names else {}
    table: dict[str, dict[str, Any]] = {
        "": {},
        "client": {},
        "client.bin": {},
        "server": {
            k: names[k]
            for k in ("utils", "hosts", "autotest", "autotest_remote", "error", *MACHINES)
            if k in names
        },
        "server.subcommand": subcommand,
    }
    for name in ("utils", "hosts", "autotest", "autotest_remote", *MACHINES):
        if name in names:
            table[f"server.{name}"] = vars(names[name])
    for lib in ("client.common_lib", "client.shared"):
        table[lib] = {k: names[k] for k in ("error", "utils") if k in names}
        table[f"{lib}.error"] = vars(names["error"]) if "error" in names else {}
        table[f"{lib}.utils"] = vars(names["utils"]) if "utils" in names else {}
        table[f"{lib}.barrier"] = barrier
    table["client.bin.utils"] = table["client.common_lib.utils"]
    return table


class AutotestImports(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """The finder and loader of Autotest's module paths (see the module docstring)."""

    def __init__(self, table: dict[str, dict[str, Any]]) -> None:
        self.table = table
        self.common = _CommonFinder()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        root, _, rest = fullname.partition(".")
        if root not in ROOTS:
            return None
        if rest not in self.table:
            provided = ", ".join(f"{ROOTS[0]}.{name}" for name in sorted(self.table) if name)
            raise ModuleNotFoundError(
                f"{fullname}: not provided to control files by mhtest (it provides {provided})",
                name=fullname,
            )
        return importlib.util.spec_from_loader(fullname, self, is_package=True)

    def create_module(self, spec: Any) -> None:
        return None  # the default module

    def exec_module(self, module: types.ModuleType) -> None:
        rest = module.__name__.partition(".")[2]
        for key, value in self.table[rest].items():
            if not key.startswith("__"):
                setattr(module, key, value)

    def install(self) -> AutotestImports:
        sys.meta_path.insert(0, self)
        sys.meta_path.append(self.common)
        return self

    def remove(self) -> None:
        for finder in (self, self.common):
            if finder in sys.meta_path:
                sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n.partition(".")[0] in (*ROOTS, "common")]:
            module = sys.modules[name]
            if isinstance(getattr(module, "__loader__", None), (AutotestImports, _CommonFinder)):
                del sys.modules[name]


class _CommonFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`import common`: an empty module, when no real one is found first."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "common":
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        module.__doc__ = "Autotest's path set-up module: nothing to set up under mhtest."
