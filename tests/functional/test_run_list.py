"""`mhtest list` and selection: nothing is imported, kinds shown, filters and tags."""

from __future__ import annotations

import pytest

from .conftest import user_errors
from .test_run_errors import parser_says

# Importing this file would write a marker, print, and stop the interpreter.
EXPLOSIVE_PY = """
import os
import sys

open(os.environ["MARKER"], "w").write("imported")
print("IMPORTED AT MODULE LEVEL")
raise SystemExit(3)

from mhtest import Test


class Explosive(Test):
    '''A test whose module cannot be imported.

    :mhtest: tags=boom
    '''

    def test_one(self):
        pass

    def test_two(self):
        pass
"""

TAGS_PY = """
from mhtest import Test


class Net(Test):
    '''
    :mhtest: tags=net,fast
    '''

    def test_ping(self):
        pass

    def test_slow_transfer(self):
        ''':mhtest: tags=slow'''


class Disk(Test):
    ''':avocado: tags=disk,fast'''

    def test(self):
        pass


class Untagged(Test):
    def test(self):
        pass
"""

SIMPLE_SH = "#!/bin/sh\nexit 0\n"


def listed(run) -> list[tuple[str, str, str]]:
    """(kind, ref, rest) per line of `mhtest list`."""
    out = []
    for line in run.stdout.splitlines():
        kind, ref, *rest = line.split(None, 2)
        out.append((kind, ref, rest[0] if rest else ""))
    return out


@pytest.mark.timeout(60)
def test_list_does_not_import_test_files(mhtest, write_tests, tmp_path):
    write_tests({"explosive.py": EXPLOSIVE_PY})
    marker = tmp_path / "marker"
    run = mhtest("list", "t/explosive.py", env={"MARKER": str(marker)})
    assert run.code == 0, run
    assert listed(run) == [
        ("instrumented", "t/explosive.py:Explosive.test_one", "[boom]"),
        ("instrumented", "t/explosive.py:Explosive.test_two", "[boom]"),
    ]
    assert "IMPORTED" not in run.stdout + run.stderr
    assert not marker.exists(), "mhtest list imported the test file"


@pytest.mark.timeout(60)
def test_run_imports_only_in_the_test_process(mhtest, write_tests, tmp_path):
    """`mhtest run` of the same file: the import happens in the child, whose exit is ERROR."""
    write_tests({"explosive.py": EXPLOSIVE_PY})
    marker = tmp_path / "marker"
    run = mhtest("run", "t/explosive.py:test_one", env={"MARKER": str(marker)})
    assert run.code == 1, run
    result = run.result("Explosive.test_one")
    assert result["status"] == "ERROR"
    assert "SystemExit" in result["fail_reason"]
    assert marker.exists()  # the child did import it
    assert "IMPORTED AT MODULE LEVEL" not in run.stdout  # the child's stdout goes to its file
    test_dir = run.job_dir / "test-results" / "1-t_explosive.py:Explosive.test_one"
    assert "IMPORTED AT MODULE LEVEL" in (test_dir / "stdout").read_text()


@pytest.mark.timeout(60)
def test_list_shows_the_kind_of_each_test(mhtest, write_tests):
    write_tests(
        {
            "tags.py": TAGS_PY,
            "run.sh": SIMPLE_SH,
            "sub/broken.py": "from mhtest import Test\nclass B(Test:\n  pass\n",
        },
        executable=("run.sh",),
    )
    run = mhtest("list", "t")
    assert run.code == 0, run
    line, msg = parser_says("from mhtest import Test\nclass B(Test:\n  pass\n")
    assert listed(run) == [
        ("simple", "t/run.sh", ""),
        ("instrumented", "t/tags.py:Net.test_ping", "[fast,net]"),
        ("instrumented", "t/tags.py:Net.test_slow_transfer", "[fast,net,slow]"),
        ("instrumented", "t/tags.py:Disk.test", "[disk,fast]"),
        ("instrumented", "t/tags.py:Untagged.test", ""),
        ("broken", "t/sub/broken.py", f"(t/sub/broken.py:{line}: syntax error: {msg})"),
    ]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "args, expected",
    [
        (["t/tags.py:Net"], ["Net.test_ping", "Net.test_slow_transfer"]),
        (["t/tags.py:Net.test_ping"], ["Net.test_ping"]),
        (["t/tags.py:test_ping", "t/tags.py:Disk"], ["Net.test_ping", "Disk.test"]),
        (
            ["t", "--filter-by-tags", "fast"],
            ["Net.test_ping", "Net.test_slow_transfer", "Disk.test"],
        ),
        (["t", "--filter-by-tags", "fast,-slow"], ["Net.test_ping", "Disk.test"]),
        (["t", "--filter-by-tags", "net,slow"], ["Net.test_slow_transfer"]),
        (
            ["t", "--filter-by-tags", "disk", "--filter-by-tags", "slow"],
            ["Net.test_slow_transfer", "Disk.test"],
        ),
        (
            ["t", "--filter-by-tags", "disk", "--filter-by-tags-include-empty"],
            ["Disk.test", "Untagged.test", "t/run.sh"],
        ),
    ],
)
def test_selection(mhtest, write_tests, args, expected):
    write_tests({"tags.py": TAGS_PY, "run.sh": SIMPLE_SH}, executable=("run.sh",))
    run = mhtest("list", *args)
    assert run.code == 0, run
    got = [ref.split(":", 1)[1] if ":" in ref else ref for _, ref, _ in listed(run)]
    assert sorted(got) == sorted(expected)


@pytest.mark.timeout(60)
def test_run_with_tags_runs_only_the_selection(mhtest, write_tests):
    write_tests({"tags.py": TAGS_PY, "run.sh": SIMPLE_SH}, executable=("run.sh",))
    run = mhtest("run", "t", "--filter-by-tags", "fast,-slow")
    assert run.code == 0, run
    assert run.statuses() == {"t/tags.py:Net.test_ping": "PASS", "t/tags.py:Disk.test": "PASS"}
    assert "(2/2)" in run.stdout


@pytest.mark.timeout(60)
def test_list_bad_reference(mhtest, write_tests):
    run = mhtest("list", "t/nothing-here")
    assert run.code == 2, run
    assert user_errors(run.stderr) == [
        "mhtest list: error: reference 't/nothing-here': no such file or directory (check the path)"
    ]
