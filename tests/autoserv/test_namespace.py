"""What a control file sees: utils, error names on mhtest's classes, autotest_lib imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mhtest import test as test_mod
from mhtest.autoserv.errors import error_module
from mhtest.autoserv.imports import AutotestImports, module_table
from mhtest.autoserv.namespace import form_ntuples_from_machines, sh_escape, utils_module
from mhtest.hosts import CmdError, CmdResult, HostError


def test_sh_escape_is_for_double_quotes() -> None:
    text = 'echo "$HOME" `id` \\n'
    escaped = sh_escape(text)
    assert escaped == 'echo \\"\\$HOME\\" \\`id\\` \\\\n'
    out = subprocess.run(["sh", "-c", f'printf %s "{escaped}"'], capture_output=True, text=True)
    assert out.stdout == text


def test_pairs_and_the_machine_left_over() -> None:
    pairs, left = form_ntuples_from_machines(["h1", "h2", "h3"])
    assert pairs == [["h1", "h2"]]
    assert left == [("h3", "machine can not be tupled")]
    assert form_ntuples_from_machines([]) == ([], [])
    assert form_ntuples_from_machines(list("abcdef"), 3)[0] == [list("abc"), list("def")]


def test_error_names_catch_what_hosts_raise() -> None:
    error = error_module()
    failed = CmdError(CmdResult("false", exit_status=1), "h1")
    for name in ("AutoservRunError", "AutoservError", "CmdError"):
        with pytest.raises(getattr(error, name)):
            raise failed
    assert issubclass(error.AutoservSSHTimeout, HostError)
    assert error.TestFail is test_mod.TestFail


def test_utils_runs_here() -> None:
    utils = utils_module()
    assert utils.system_output("echo hi") == "hi"
    assert utils.system("exit 3", ignore_status=True) == 3


def test_autotest_lib_imports_while_installed_only() -> None:
    utils, error = utils_module(), error_module()
    names = {"utils": utils, "error": error, "barrier": object(), "parallel": print}
    imports = AutotestImports(module_table(names)).install()
    try:
        from autotest_lib.client.common_lib import error as imported_error  # noqa: PLC0415
        from autotest_lib.server import utils as imported  # noqa: PLC0415
        from autotest_lib.server.subcommand import parallel  # noqa: PLC0415

        assert imported.sh_escape is utils.sh_escape
        assert imported_error.AutoservRunError is CmdError
        assert parallel is print
        import common  # noqa: F401, PLC0415

        with pytest.raises(ModuleNotFoundError, match="not provided to control files by mhtest"):
            import autotest_lib.server.frontend  # noqa: F401, PLC0415
    finally:
        imports.remove()
    assert not [n for n in sys.modules if n.startswith(("autotest_lib", "autotest."))]
    with pytest.raises(ModuleNotFoundError):
        import autotest_lib  # noqa: F401, PLC0415
