"""Bad input to `mhtest run`: one clear line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import re

import pytest

from .conftest import user_errors

PASS_PY = """
from mhtest import Test


class Pass(Test):
    def test(self):
        pass
"""


def assert_one_line_error(run, *words: str) -> str:
    """Exit 2, one error line naming `words`, no traceback, no job directory left."""
    assert run.code == 2, run
    assert "Traceback" not in run.stderr, run
    lines = user_errors(run.stderr)
    assert len(lines) == 1, run
    line = lines[0]
    assert line.startswith("mhtest run: error: "), line
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    assert run.stdout == "", run
    assert not run.results_dir.exists() or not any(run.results_dir.glob("job-*")), run
    return line


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "ref, words",
    [
        ("t/missing.py", ["t/missing.py", "no such file"]),
        ("t/nodir/", ["t/nodir/", "no such file"]),
        ("t/missing.py:Class.test", ["t/missing.py:Class.test", "no such file"]),
    ],
    ids=["file", "directory", "file-with-filter"],
)
def test_missing_reference(mhtest, write_tests, ref, words):
    write_tests({"pass.py": PASS_PY})
    # The good reference is named first: a bad one anywhere stops the job before it starts.
    assert_one_line_error(mhtest("run", "t/pass.py", ref), *words)


@pytest.mark.timeout(60)
def test_nothing_to_run(mhtest, write_tests, tmp_path):
    write_tests({"README.txt": "not a test\n", "helper.py": "X = 1\n", "pass.py": PASS_PY})
    (tmp_path / "empty").mkdir()
    assert_one_line_error(mhtest("run", "empty"), "nothing to run", "empty")
    assert_one_line_error(mhtest("run", "t/README.txt"), "t/README.txt", "no tests found")
    assert_one_line_error(mhtest("run", "t/helper.py"), "t/helper.py", "no tests found")
    assert_one_line_error(mhtest("run", "t/pass.py:Nope"), "t/pass.py:Nope", "Nope")
    assert_one_line_error(
        mhtest("run", "t/pass.py", "--filter-by-tags", "nosuchtag"), "nothing to run", "tags"
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("param", ["size", "=4", ""], ids=["no-equals", "no-key", "empty"])
def test_malformed_param(mhtest, write_tests, param):
    write_tests({"pass.py": PASS_PY})
    line = assert_one_line_error(mhtest("run", "t/pass.py", "-p", param), "-p key=value")
    assert repr(param) in line


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "content, words",
    [
        (None, ["does not exist"]),
        ("dir", ["cannot read"]),
        ("size: [1, 2\nmode: x\n", ["invalid YAML", "line"]),
        ("size: 1\n  bad indent: 2\n", ["invalid YAML", "line 2"]),
        ("- 1\n- 2\n", ["must hold a mapping", "list"]),
        ("just a string\n", ["must hold a mapping", "str"]),
        (b"size: \xff\xfe\n", ["params file"]),
    ],
    ids=["missing", "directory", "unclosed", "indent", "list", "scalar", "not-utf8"],
)
def test_bad_params_file(mhtest, write_tests, tmp_path, content, words):
    write_tests({"pass.py": PASS_PY})
    path = tmp_path / "params.yaml"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    run = mhtest("run", "t/pass.py", "--params", "params.yaml")
    assert_one_line_error(run, "params.yaml", *words)


@pytest.mark.timeout(60)
def test_unreadable_params_file_as_user(mhtest, write_tests, tmp_path):
    """Permission bits: only meaningful when not root (root reads anything)."""
    import os

    if os.geteuid() == 0:
        pytest.skip("running as root: permission bits do not stop root (see the directory case)")
    write_tests({"pass.py": PASS_PY})
    path = tmp_path / "params.yaml"
    path.write_text("a: 1\n")
    path.chmod(0)
    run = mhtest("run", "t/pass.py", "--params", "params.yaml")
    assert_one_line_error(run, "params.yaml", "cannot read", "Permission denied")


@pytest.mark.timeout(60)
def test_unwritable_results_dir(mhtest, write_tests, tmp_path):
    write_tests({"pass.py": PASS_PY})
    blocker = tmp_path / "a-file"
    blocker.write_text("I am a file, not a directory\n")
    results = blocker / "results"
    run = mhtest("run", "t/pass.py", "--job-results-dir", str(results))
    assert run.code == 2, run
    line = assert_one_line_error(run, str(results), "--job-results-dir")
    assert "Not a directory" in line


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", ["0", "-1"])
def test_bad_max_parallel(mhtest, write_tests, value):
    write_tests({"pass.py": PASS_PY})
    assert_one_line_error(mhtest("run", "t/pass.py", "--max-parallel", value), "--max-parallel")


def parser_says(source: str) -> tuple[int, str]:
    """(line, message) of the SyntaxError Python gives for `source` (after dedenting)."""
    import textwrap

    try:
        compile(textwrap.dedent(source).lstrip("\n"), "x.py", "exec")
    except SyntaxError as exc:
        return exc.lineno, exc.msg
    raise AssertionError("the source parses")


SYNTAX_ERROR_PY = """
from mhtest import Test


class Broken(Test):
    def test(self):
        if True
            pass
"""


@pytest.mark.timeout(60)
def test_syntax_error_is_that_reference_error_and_the_others_run(mhtest, write_tests):
    write_tests({"broken.py": SYNTAX_ERROR_PY, "pass.py": PASS_PY})
    run = mhtest("run", "t/broken.py", "t/pass.py")
    assert run.code == 1, run
    assert "Traceback" not in run.stderr
    broken = run.result("t/broken.py")
    assert broken["status"] == "ERROR"
    # The parser's line and message, as this Python reports them.
    line, msg = parser_says(SYNTAX_ERROR_PY)
    assert broken["fail_reason"] == f"t/broken.py:{line}: syntax error: {msg}", broken
    assert run.result("t/pass.py:Pass.test")["status"] == "PASS"
    assert re.search(
        rf"^ \(1/2\) t/broken.py: ERROR \(\d+\.\d\d s\) t/broken.py:{line}: syntax error: "
        + re.escape(msg),
        run.stdout,
        re.M,
    ), run


@pytest.mark.timeout(60)
def test_syntax_error_in_a_directory_is_listed_as_broken(mhtest, write_tests):
    write_tests({"sub/broken.py": SYNTAX_ERROR_PY, "pass.py": PASS_PY})
    run = mhtest("list", "t")
    assert run.code == 0, run
    lines = run.stdout.splitlines()
    assert any(
        ln.startswith("instrumented") and ln.split()[1] == "t/pass.py:Pass.test" for ln in lines
    )
    broken = [ln for ln in lines if "t/sub/broken.py" in ln]
    assert len(broken) == 1 and broken[0].startswith("broken"), lines
    assert "syntax error" in broken[0]


@pytest.mark.timeout(60)
def test_import_error_at_run_time_is_error(mhtest, write_tests):
    """A file that parses but fails to import: its tests are ERROR, the job goes on."""
    write_tests(
        {
            "badimport.py": PASS_PY.replace(
                "from mhtest import Test", "import no_such_module\nfrom mhtest import Test"
            ),
            "pass.py": PASS_PY,
        }
    )
    run = mhtest("run", "t/badimport.py", "t/pass.py")
    assert run.code == 1, run
    bad = run.result("t/badimport.py:Pass.test")
    assert bad["status"] == "ERROR"
    assert "No module named 'no_such_module'" in bad["fail_reason"]
    assert run.result("t/pass.py:Pass.test")["status"] == "PASS"
