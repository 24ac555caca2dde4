"""Test names in control files: NAME.py, NAME/control, NAME/NAME.py, beside or on the tests path."""

from __future__ import annotations

from pathlib import Path

import pytest

from mhtest.autoserv.errors import TestNotFound
from mhtest.autoserv.names import ENV_TESTS_PATH, find_test, search_dirs
from mhtest.spec import CONTROL_CLIENT, INSTRUMENTED

PASSTEST = "from mhtest import Test\n\n\nclass PassTest(Test):\n    def test(self):\n        pass\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "passtest.py").write_text(PASSTEST)
    (tmp_path / "lib" / "kernbench").mkdir(parents=True)
    (tmp_path / "lib" / "kernbench" / "control").write_text('job.run_test("kernbench")\n')
    (tmp_path / "lib" / "kernbench" / "kernbench.py").write_text(PASSTEST)
    (tmp_path / "lib" / "sleeptest").mkdir()
    (tmp_path / "lib" / "sleeptest" / "sleeptest.py").write_text(PASSTEST)
    (tmp_path / "lib" / "passtest.py").write_text(PASSTEST)
    return tmp_path


def test_beside_the_control_file_first(tree: Path) -> None:
    dirs = search_dirs(str(tree / "here" / "x.srv"), [str(tree / "lib")])
    found = find_test("passtest", dirs, "x.srv:3")
    assert found.path == str(tree / "here" / "passtest.py")
    assert [s.kind for s in found.specs] == [INSTRUMENTED]


def test_a_directory_means_its_control_then_its_module(tree: Path) -> None:
    dirs = search_dirs(str(tree / "here" / "x.srv"), [str(tree / "lib")])
    kern = find_test("kernbench", dirs, "x.srv:3")
    assert kern.path == str(tree / "lib" / "kernbench" / "control")
    assert kern.specs[0].kind == CONTROL_CLIENT
    sleep = find_test("sleeptest", dirs, "x.srv:3")
    assert sleep.path == str(tree / "lib" / "sleeptest" / "sleeptest.py")


def test_environment_path_and_references(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_TESTS_PATH, str(tree / "lib"))
    dirs = search_dirs(None, [])
    assert dirs == [str(tree / "lib")]
    assert find_test("sleeptest/sleeptest.py:PassTest", dirs, "c:1").specs[0].method == "test"


def test_a_name_that_means_nothing_says_where_it_looked(tree: Path) -> None:
    dirs = search_dirs(str(tree / "here" / "x.srv"), [str(tree / "lib")])
    with pytest.raises(TestNotFound) as caught:
        find_test("nosuch", dirs, "x.srv:7")
    message = str(caught.value)
    assert message.startswith("x.srv:7: no test named 'nosuch' (looked for nosuch.py and nosuch/")
    assert str(tree / "lib") in message and "--tests-path" in message
