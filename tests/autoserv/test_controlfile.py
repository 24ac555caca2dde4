"""Control files recognised, compiled and resolved: kinds, Python 2 syntax in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from mhtest.autoserv.controlfile import ControlResolver, compile_control, control_kind
from mhtest.autoserv.errors import ControlSyntaxError
from mhtest.resolver import builtin_resolvers, plugin_resolvers, resolve
from mhtest.spec import BROKEN, CONTROL_CLIENT, CONTROL_SERVER


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("netperf.srv", CONTROL_SERVER),
        ("control", CONTROL_CLIENT),
        ("control.stress", None),
        ("kernbench.control", CONTROL_CLIENT),
        (".srv", None),
        ("test.py", None),
    ],
)
def test_kind_by_name(name: str, kind: str | None) -> None:
    assert control_kind(Path("dir") / name) == kind


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            'x = 1\nprint "hi"\n',
            "f.srv:2: Python 2 syntax (print statement): control files are "
            "Python 3; write print(...)",
        ),
        (
            "try:\n    pass\nexcept Exception, e:\n    pass\n",
            "f.srv:3: Python 2 syntax "
            "(except X, e:): control files are Python 3; write `except X as e:`",
        ),
        ("os.chmod(p, 0755)\n", "f.srv:1: Python 2 syntax (octal literal)"),
        ('exec "x = 1"\n', "f.srv:1: Python 2 syntax (exec statement)"),
        ("raise ValueError, 'no'\n", "f.srv:1: Python 2 syntax (raise X, 'text')"),
        ("if a <> b:\n    pass\n", "f.srv:1: Python 2 syntax (the <> operator)"),
        ("x = `y`\n", "f.srv:1: Python 2 syntax (backquotes)"),
        ("def f(:\n    pass\n", "f.srv:1: syntax error: invalid syntax"),
    ],
)
def test_syntax_errors_are_one_line_with_the_fix(source: str, expected: str) -> None:
    with pytest.raises(ControlSyntaxError) as caught:
        compile_control(source, "/x/f.srv", "f.srv")
    message = str(caught.value)
    assert message.startswith(expected), message
    assert "\n" not in message


def test_resolver_makes_specs_and_broken_ones(tmp_path: Path) -> None:
    good = tmp_path / "good.srv"
    good.write_text("print(machines)\n")
    bad = tmp_path / "bad.srv"
    bad.write_text('print "x"\n')
    client = tmp_path / "sleeptest" / "control"
    client.parent.mkdir()
    client.write_text('job.run_test("sleeptest")\n')
    resolver = ControlResolver()
    [server] = resolver.resolve(good, "good.srv")
    assert (server.kind, server.multihost, server.ref) == (CONTROL_SERVER, True, "good.srv")
    [broken] = resolver.resolve(bad, "bad.srv")
    assert broken.kind == BROKEN and broken.multihost  # runs once, here, and says why
    assert broken.error.startswith("bad.srv:1: Python 2 syntax (print statement)")
    [spec] = resolver.resolve(client, "sleeptest/control")
    assert (spec.kind, spec.multihost) == (CONTROL_CLIENT, False)
    assert resolver.resolve(tmp_path / "other.py", "other.py") is None


def test_builtin_and_plugin_resolvers_know_control_files(tmp_path: Path) -> None:
    # The entry point of an older installation lacks `control`: it is there anyway.
    assert [r.name for r in builtin_resolvers()] == ["python", "control", "exec"]
    assert "control" in [r.name for r in plugin_resolvers()]
    control = tmp_path / "run.srv"
    control.write_text("pass\n")
    control.chmod(0o755)  # executable, yet a control file: control comes before exec
    [spec] = resolve([str(control)])
    assert spec.kind == CONTROL_SERVER


def test_a_debian_control_file_is_not_a_client_control_file(tmp_path: Path) -> None:
    debian = tmp_path / "debian" / "control"
    debian.parent.mkdir()
    debian.write_text("Source: foo\nSection: net\nMaintainer: A <a@example.org>\n")
    assert ControlResolver().resolve(debian, "debian/control") is None
    assert resolve([str(tmp_path)]) == []  # a directory walk finds nothing to run there
