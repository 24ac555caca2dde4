"""References → TestSpecs by reading the AST: classes, methods, filters, tags, directories."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mhtest import spec as spec_mod
from mhtest.plugins import load_plugins
from mhtest.resolver import ResolutionError, analyse_python, filter_by_tags, resolve_references
from mhtest.spec import BROKEN, INSTRUMENTED, SIMPLE

TAGGED_PY = '''
"""A module docstring is not a class docstring."""
from mhtest import Test
import mhtest


class Base(Test):
    """:mhtest: tags=net"""

    timeout = 7

    def test_inherited(self):
        pass

    def helper(self):
        pass


class Child(Base):
    """:avocado: tags=fast,disk"""

    def test_own(self):
        """:mhtest: tags=slow"""

    async def test_async(self):
        pass


class Qualified(mhtest.Test):
    def test(self):
        pass


class NotATest:
    def test_nothing(self):
        pass


class Disabled(Test):
    """:mhtest: disable"""

    def test(self):
        pass


class Enabled:
    """:avocado: enable"""

    def test(self):
        pass
'''


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    path.chmod(mode)
    return path


@pytest.fixture
def resolvers():
    found = [cls() for _, cls in load_plugins("mhtest.resolver")]
    return sorted(found, key=lambda r: getattr(r, "priority", 30))


def refs(specs: list[spec_mod.TestSpec]) -> list[str]:
    return [s.ref for s in specs]


def test_classes_methods_inheritance_and_tags(tmp_path, resolvers, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "tagged.py", TAGGED_PY)
    specs = resolve_references(["tagged.py"], resolvers)
    by_ref = {s.ref: s for s in specs}
    assert list(by_ref) == [
        "tagged.py:Base.test_inherited",
        "tagged.py:Child.test_own",
        "tagged.py:Child.test_async",
        "tagged.py:Child.test_inherited",
        "tagged.py:Qualified.test",
        "tagged.py:Enabled.test",
    ]
    assert by_ref["tagged.py:Base.test_inherited"].tags == ["net"]
    # A class's methods get its bases' tags, its bases' methods its tags (Avocado's rule).
    assert by_ref["tagged.py:Child.test_own"].tags == ["disk", "fast", "net", "slow"]
    assert by_ref["tagged.py:Child.test_async"].tags == ["disk", "fast", "net"]
    assert by_ref["tagged.py:Child.test_inherited"].tags == ["disk", "fast", "net"]
    # A class inherits its base's timeout attribute, read from the AST.
    assert by_ref["tagged.py:Child.test_own"].timeout == 7
    assert by_ref["tagged.py:Qualified.test"].timeout is None
    assert all(s.kind == INSTRUMENTED for s in specs)
    assert by_ref["tagged.py:Child.test_own"].path == str(tmp_path / "tagged.py")


@pytest.mark.parametrize(
    "flt, expected",
    [
        ("Child.test_own", ["Child.test_own"]),
        ("Child", ["Child.test_own", "Child.test_async", "Child.test_inherited"]),
        ("test_inherited", ["Base.test_inherited", "Child.test_inherited"]),
        (".test_a", ["Child.test_async"]),
    ],
)
def test_filter_after_the_colon(tmp_path, resolvers, monkeypatch, flt, expected):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "tagged.py", TAGGED_PY)
    specs = resolve_references([f"tagged.py:{flt}"], resolvers)
    assert [r.split(":", 1)[1] for r in refs(specs)] == expected


def test_filter_matching_nothing_is_an_error(tmp_path, resolvers, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "tagged.py", TAGGED_PY)
    with pytest.raises(ResolutionError, match="no test matches 'Nope'"):
        resolve_references(["tagged.py:Nope"], resolvers)


def test_directories_are_searched_recursively_in_order(tmp_path, resolvers, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "d" / "b.py", "from mhtest import Test\nclass B(Test):\n def test(self): pass\n"
    )
    write(
        tmp_path / "d" / "a" / "deep" / "c.py",
        "import mhtest\nclass C(mhtest.Test):\n def test(self): pass\n",
    )
    write(tmp_path / "d" / "run.sh", "#!/bin/sh\nexit 0\n", mode=0o755)
    write(tmp_path / "d" / "notes.txt", "nothing\n")
    write(tmp_path / "d" / "data.sh", "not executable\n")
    write(tmp_path / "d" / "lib.py", "X = 1\n")
    write(
        tmp_path / "d" / "__pycache__" / "x.py",
        "from mhtest import Test\nclass X(Test):\n def test(self): pass\n",
    )
    write(
        tmp_path / "d" / ".hidden" / "h.py",
        "from mhtest import Test\nclass H(Test):\n def test(self): pass\n",
    )
    specs = resolve_references(["d"], resolvers)
    # A directory's own files (sorted) come before its subdirectories (sorted).
    assert refs(specs) == ["d/b.py:B.test", "d/run.sh", "d/a/deep/c.py:C.test"]
    assert [s.kind for s in specs] == [INSTRUMENTED, SIMPLE, INSTRUMENTED]


WORKER_PY = '''
from mhtest import Test

class Helper(Test):
    """Runs only inside a multi-host test.

    :mhtest: worker
    """

    def test(self):
        pass
'''


def test_worker_tests_run_when_named_but_not_from_directories(tmp_path, resolvers, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "d" / "worker.py", WORKER_PY)
    write(
        tmp_path / "d" / "b.py", "from mhtest import Test\nclass B(Test):\n def test(self): pass\n"
    )
    assert refs(resolve_references(["d"], resolvers)) == ["d/b.py:B.test"]
    named = resolve_references(["d/worker.py"], resolvers)
    assert refs(named) == ["d/worker.py:Helper.test"]
    assert named[0].worker_only


def test_a_file_with_a_multihost_test_and_its_workers_runs_the_multihost_test(
    tmp_path, resolvers, monkeypatch
):
    """The workers ERRORed on their own ("no sync server") and a passing job exited 1."""
    monkeypatch.chdir(tmp_path)
    ring = "from mhtest import MultiHostTest\nclass Ring(MultiHostTest):\n def test(self): pass\n"
    write(tmp_path / "ring.py", WORKER_PY + ring)
    assert refs(resolve_references(["ring.py"], resolvers)) == ["ring.py:Ring.test"]
    # the user may still name a worker class to run it alone
    assert refs(resolve_references(["ring.py:Helper"], resolvers)) == ["ring.py:Helper.test"]


def test_executable_python_test_file_is_instrumented(tmp_path, resolvers, monkeypatch):
    """The python resolver goes first: an executable test class file is not a simple test."""
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "x.py", "from mhtest import Test\nclass X(Test):\n def test(self): pass\n", 0o755
    )
    write(tmp_path / "script.py", "#!/usr/bin/env python3\nprint('hi')\n", 0o755)
    specs = resolve_references(["x.py", "script.py"], resolvers)
    assert [(s.ref, s.kind) for s in specs] == [
        ("x.py:X.test", INSTRUMENTED),
        ("script.py", SIMPLE),
    ]


def test_syntax_error_gives_a_broken_spec_with_line_and_message(tmp_path, resolvers, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "bad.py", "from mhtest import Test\n\nclass B(Test:\n    pass\n")
    (spec,) = resolve_references(["bad.py"], resolvers)
    assert spec.kind == BROKEN
    assert spec.error.startswith("bad.py:3: syntax error: ")
    with pytest.raises(SyntaxError):
        analyse_python((tmp_path / "bad.py").read_text(), "bad.py")


def test_reference_naming_a_missing_path(tmp_path, resolvers, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ResolutionError, match=r"'gone.py:A.test': no such file"):
        resolve_references(["gone.py:A.test"], resolvers)


def test_a_path_containing_a_colon_is_a_file_when_it_exists(tmp_path, resolvers, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a:b.sh", "#!/bin/sh\nexit 0\n", mode=0o755)
    assert refs(resolve_references(["a:b.sh"], resolvers)) == ["a:b.sh"]


def _spec(name: str, tags: list[str]) -> spec_mod.TestSpec:
    return spec_mod.TestSpec(ref=name, kind=INSTRUMENTED, path=name, tags=tags)


@pytest.mark.parametrize(
    "expressions, include_empty, expected",
    [
        ([], False, ["fast-net", "fast", "slow-net", "none"]),
        (["fast"], False, ["fast-net", "fast"]),
        (["fast,net"], False, ["fast-net"]),  # AND within a value
        (["fast,-net"], False, ["fast"]),  # -tag: must not have it
        (["-net"], False, ["fast"]),
        (["slow", "fast,-net"], False, ["fast", "slow-net"]),  # alternatives across values
        (["fast"], True, ["fast-net", "fast", "none"]),
        (["nosuch"], False, []),
    ],
)
def test_filter_by_tags(expressions, include_empty, expected):
    specs = [
        _spec("fast-net", ["fast", "net"]),
        _spec("fast", ["fast"]),
        _spec("slow-net", ["slow", "net"]),
        _spec("none", []),
    ]
    kept = filter_by_tags(specs, expressions, include_empty)
    assert refs(kept) == expected


def test_framework_base_with_its_own_test_method(tmp_path, resolvers, monkeypatch):
    """A MultihostMigration subclass writes a scenario, not a test method: it runs `test`."""
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "mig.py",
        """
        from mhtest.virt.migration import MultihostMigration


        class Scenario(MultihostMigration):
            def migration_scenario(self):
                pass


        class Custom(Scenario):
            def test_custom(self):
                pass
        """,
    )
    specs = resolve_references(["mig.py"], resolvers)
    assert [(s.ref, s.multihost) for s in specs] == [
        ("mig.py:Scenario.test", True),
        ("mig.py:Custom.test_custom", True),
    ]


@pytest.mark.parametrize(
    "flt, expected",
    [
        ("Child.test_(own|async)", ["Child.test_own", "Child.test_async"]),
        ("test_own$", ["Child.test_own"]),
        ("^Base", ["Base.test_inherited"]),
        ("Child.test_[a-i]", ["Child.test_async", "Child.test_inherited"]),
    ],
)
def test_filter_is_a_regular_expression(tmp_path, resolvers, monkeypatch, flt, expected):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "tagged.py", TAGGED_PY)
    specs = resolve_references([f"tagged.py:{flt}"], resolvers)
    assert [r.split(":", 1)[1] for r in refs(specs)] == expected


def test_a_filter_that_is_no_regular_expression_says_so(tmp_path, resolvers, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "tagged.py", TAGGED_PY)
    with pytest.raises(ResolutionError, match=r"'test_\(' is not a valid regular expression"):
        resolve_references(["tagged.py:test_("], resolvers)


AVOCADO_RULES_PY = '''
import base
from base import Base
from .rel import Rel
from pkg.deep import Deep
from mhtest import Test


class Mixin:
    def test_mixin(self):
        pass


class Methods(Test):
    test_attribute = 1

    @property
    def test_property(self):
        return 1

    def testcamel(self):
        pass

    def helper(self):
        pass


class FromBase(Base):
    def test_own(self):
        pass


class FromModule(base.Base):
    pass


class FromRelative(Rel):
    pass


class FromPackage(Deep):
    pass


class Enabled(Mixin):
    """:avocado: enable"""

    def test_enabled(self):
        pass


class Recursive(Mixin):
    """:mhtest: recursive"""

    def test_recursive(self):
        pass


class NotATest(Mixin):
    """Mentions :avocado: enable inline, which is no directive."""

    def test_nothing(self):
        pass
'''


def test_avocados_discovery_rules(tmp_path, resolvers, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "rules.py", AVOCADO_RULES_PY)
    base = "from mhtest import Test\n\nclass {0}(Test):\n    def test_{1}(self):\n        pass\n"
    write(tmp_path / "base.py", base.format("Base", "base"))
    write(tmp_path / "rel.py", base.format("Rel", "rel"))
    write(tmp_path / "pkg" / "__init__.py", "")
    write(tmp_path / "pkg" / "deep.py", base.format("Deep", "deep"))
    specs = resolve_references(["rules.py"], resolvers)
    assert [r.split(":", 1)[1] for r in refs(specs)] == [
        "Methods.testcamel",  # not properties nor attributes nor helpers
        "FromBase.test_own",  # own methods first, then the base's (base.py beside it)
        "FromBase.test_base",
        "FromModule.test_base",
        "FromRelative.test_rel",
        "FromPackage.test_deep",
        "Enabled.test_enabled",  # enable: its own methods only
        "Recursive.test_recursive",  # recursive: a test, with its bases' methods
        "Recursive.test_mixin",
    ]


def test_a_base_class_file_that_does_not_parse_is_left_out(tmp_path, resolvers, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "t.py", "from base import Base\n\nclass T(Base):\n    def test(self): pass\n")
    write(tmp_path / "base.py", "class Base(Test:\n")
    with pytest.raises(ResolutionError, match="no tests found"):
        resolve_references(["t.py"], resolvers)


@pytest.mark.parametrize(
    "expressions, include_empty_key, expected",
    [
        (["arch:x86_64"], False, ["x86"]),
        (["arch:-arm"], False, ["x86"]),  # has arch tags, none of them arm
        (["arch:arm"], True, ["arm", "flat"]),  # flat has no arch key: kept
        (["fast,arch:x86_64"], False, ["x86"]),
        (["-arch"], False, ["flat"]),  # -key: no tag of that key
        (["fast", "arch:arm"], False, ["x86", "arm", "flat"]),
    ],
)
def test_filter_by_key_value_tags(expressions, include_empty_key, expected):
    specs = [
        _spec("x86", ["arch:x86_64", "fast"]),
        _spec("arm", ["arch:arm", "fast"]),
        _spec("flat", ["fast"]),
        _spec("none", []),
    ]
    kept = filter_by_tags(specs, expressions, include_empty_key=include_empty_key)
    assert refs(kept) == expected
