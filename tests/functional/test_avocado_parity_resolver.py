"""References under Avocado 113 and under mhtest: the same tests found, filtered alike;
and avocado.utils in a ported test when avocado-framework is installed beside mhtest."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .avocado_parity import ROOT, avocado_bin, listed, write_both

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

BASE_PY = '''
from FRAMEWORK import Test


class BaseTest(Test):
    """:avocado: tags=net"""

    def test_base(self):
        pass

    def helper(self):
        pass
'''

RESOLVE_PY = '''
import base
from base import BaseTest
from FRAMEWORK import Test


class Mixin:
    def test_mixin(self):
        pass


class Plain(Test):
    """:avocado: tags=fast,arch:x86_64"""

    test_attribute = 1

    def test_write(self):
        """:avocado: tags=slow"""

    async def test_mode(self):
        pass

    @property
    def test_property(self):
        return 1

    def testcamel(self):
        pass

    def helper(self):
        pass


class Inherit(Plain):
    def test_own(self):
        """:avocado: tags=arch:arm"""


class FromBase(BaseTest):
    def test_extra(self):
        pass


class FromModule(base.BaseTest):
    pass


class Disabled(Test):
    """:avocado: disable"""

    def test(self):
        pass


class FromDisabled(Disabled):
    def test_child(self):
        pass


class Enabled:
    """:avocado: enable"""

    def test_enabled(self):
        pass


class EnabledMixin(Mixin):
    """:avocado: enable"""

    def test_own(self):
        pass


class Recursive(Mixin):
    """:avocado: recursive"""

    def test_recursive(self):
        pass


class NotATest(Mixin):
    def test_nothing(self):
        pass
'''

CASES = [
    ["resolve.py"],
    ["resolve.py:Plain.test_(write|mode)"],
    ["resolve.py:test_mode$"],
    ["resolve.py:^Inherit"],
    ["resolve.py:Base"],
    ["resolve.py", "-t", "fast"],
    ["resolve.py", "-t", "fast,-slow"],
    ["resolve.py", "--filter-by-tags=-fast"],
    ["resolve.py", "-t", "arch:x86_64"],
    ["resolve.py", "-t", "arch:-arm"],
    ["resolve.py", "-t", "slow", "-t", "net"],
    ["resolve.py", "-t", "net", "--filter-by-tags-include-empty"],
    ["resolve.py", "-t", "arch:arm", "--filter-by-tags-include-empty-key"],
    ["resolve.py", "-t", "fast,arch:arm", "--filter-by-tags-include-empty-key"],
]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("resolve")
    write_both(base, {"resolve.py": RESOLVE_PY, "base.py": BASE_PY})
    return base


@pytest.mark.parametrize("args", CASES, ids=[" ".join(c) for c in CASES])
def test_same_tests_found(tree: Path, args: list[str]) -> None:
    refs = [a for a in args if a.startswith("resolve.py")]
    options = [a for a in args if a not in refs]
    avocado, mhtest = listed(tree, refs, *options)
    assert mhtest == avocado
    assert avocado, "every case finds something"


def test_what_is_found(tree: Path) -> None:
    """The full listing, spelled out: what the comparisons above agreed on."""
    _, mhtest = listed(tree, ["resolve.py"])
    assert mhtest == [
        "resolve.py:Plain.test_write",
        "resolve.py:Plain.test_mode",
        "resolve.py:Plain.testcamel",
        "resolve.py:Inherit.test_own",
        "resolve.py:Inherit.test_write",
        "resolve.py:Inherit.test_mode",
        "resolve.py:Inherit.testcamel",
        "resolve.py:FromBase.test_extra",
        "resolve.py:FromBase.test_base",
        "resolve.py:FromModule.test_base",
        "resolve.py:FromDisabled.test_child",
        "resolve.py:FromDisabled.test",
        "resolve.py:Enabled.test_enabled",
        "resolve.py:EnabledMixin.test_own",
        "resolve.py:Recursive.test_recursive",
        "resolve.py:Recursive.test_mixin",
    ]


UTILS_PY = """
from avocado.utils import process

from mhtest import Test


class UsesAvocadoUtils(Test):
    def test(self):
        result = process.run("echo hello", shell=True)
        self.assertEqual(result.stdout_text.strip(), "hello")
        self.whiteboard = result.stdout_text.strip()

    def test_failing_command(self):
        process.run("exit 3", shell=True)
"""


@pytest.fixture(scope="module")
def beside_python() -> Path:
    """A Python where avocado-framework 113 is installed beside mhtest, as a user does it."""
    avocado_bin()  # skips when Avocado cannot be installed here at all
    venv = ROOT / "bench" / ".venv-avocado-beside"
    python = venv / "bin" / "python"
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            pip = [str(venv / "bin" / "pip"), "install", "-q", "avocado-framework==113.0"]
            subprocess.run([*pip, "-e", str(ROOT)], check=True, timeout=600)
        check = "import avocado.utils.process, mhtest; print(mhtest.__file__)"
        where = subprocess.run(
            [str(python), "-c", check], check=True, capture_output=True, text=True
        ).stdout
        if not where.startswith(str(ROOT)):  # a venv made for another checkout
            subprocess.run(
                [str(venv / "bin" / "pip"), "install", "-q", "-e", str(ROOT)], check=True
            )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"avocado-framework 113 cannot be installed beside mhtest here: {exc}")
    return python


def test_avocado_utils_work_in_a_ported_test(beside_python: Path, tmp_path: Path) -> None:
    (tmp_path / "utils_test.py").write_text(textwrap.dedent(UTILS_PY))
    proc = subprocess.run(
        [str(beside_python), "-m", "mhtest", "run", "utils_test.py", "--job-results-dir", "out"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    import json

    results = json.loads((tmp_path / "out" / "latest" / "results.json").read_text())
    by_name = {t["name"].split(":", 1)[1]: t for t in results["tests"]}
    passing = by_name["UsesAvocadoUtils.test"]
    assert (passing["status"], passing["whiteboard"]) == ("PASS", "hello"), proc.stdout
    failing = by_name["UsesAvocadoUtils.test_failing_command"]
    assert failing["status"] == "ERROR"
    assert "Command 'exit 3' failed" in failing["fail_reason"]
