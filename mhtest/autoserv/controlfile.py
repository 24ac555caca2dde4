"""What a control file is: how it is recognised, compiled, and resolved into a TestSpec.

- a server control file: `*.srv`, or any file given with `mhtest run --control FILE`;
- a client control file: a file named `control` or `*.control` that uses `job` (a Debian
  package's `control` file, say, is not one).

Control files are Python 3. One that does not compile (Python 2 syntax, most often) is a
BROKEN spec whose reason is one line: the file, the line, what is wrong and how to write it
in Python 3. Both kinds run once per job place like any test, except that a server control
file runs here, once, and spans the hosts (as a multi-host test does).
"""

from __future__ import annotations

import re
from pathlib import Path
from types import CodeType

from mhtest.autoserv.errors import ControlSyntaxError
from mhtest.resolver import broken_spec
from mhtest.spec import CONTROL_CLIENT, CONTROL_SERVER, TestSpec

SERVER_SUFFIX = ".srv"
CLIENT_NAME = "control"
CLIENT_SUFFIX = ".control"

#: Python 2 idioms a SyntaxError's line may hold: (pattern, what it is, how to write it).
_PY2_LINES = (
    (re.compile(r"^\s*except\s+[^:]+,\s*\w+\s*:"), "except X, e:", "write `except X as e:`"),
    (re.compile(r"^\s*raise\s+[\w.]+\s*,"), "raise X, 'text'", "write `raise X('text')`"),
    (re.compile(r"`"), "backquotes", "write repr(...)"),
    (re.compile(r"<>"), "the <> operator", "write !="),
    (re.compile(r"\b\d+[lL]\b"), "a long literal", "drop the L"),
    (re.compile(r"\bu[rR]['\"]"), "a ur'' string", "write r''"),
)
#: Python 2 idioms SyntaxError's own message names: (start of message, what, fix).
_PY2_MESSAGES = (
    ("Missing parentheses in call to 'print'", "print statement", "write print(...)"),
    ("Missing parentheses in call to 'exec'", "exec statement", "write exec(...)"),
    ("leading zeros in decimal integer", "octal literal", "write 0o755, not 0755"),
    ("inconsistent use of tabs", "tabs mixed with spaces", "indent with spaces only"),
)


def control_kind(path: str | Path) -> str | None:
    """CONTROL_SERVER for `*.srv`, CONTROL_CLIENT for `control`/`*.control`, else None."""
    name = Path(path).name
    if name.endswith(SERVER_SUFFIX) and len(name) > len(SERVER_SUFFIX):
        return CONTROL_SERVER
    if name == CLIENT_NAME or (name.endswith(CLIENT_SUFFIX) and len(name) > len(CLIENT_SUFFIX)):
        return CONTROL_CLIENT
    return None


def syntax_reason(exc: SyntaxError, display: str) -> str:
    """A SyntaxError as one line: file, line, and (for Python 2 syntax) how to write it."""
    line = exc.text or ""
    where = f"{display}:{exc.lineno}" if exc.lineno else display
    message = str(exc.msg or "invalid syntax")
    for start, what, fix in _PY2_MESSAGES:
        if message.startswith(start):
            return f"{where}: Python 2 syntax ({what}): control files are Python 3; {fix}"
    for pattern, what, fix in _PY2_LINES:
        if pattern.search(line):
            return f"{where}: Python 2 syntax ({what}): control files are Python 3; {fix}"
    return f"{where}: syntax error: {message} ({line.strip()[:80]!r})"


def compile_control(source: str, filename: str, display: str) -> CodeType:
    """Compile a control file's text; ControlSyntaxError (one line) when it does not."""
    try:
        return compile(source, filename, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise ControlSyntaxError(syntax_reason(exc, display)) from None
    except ValueError as exc:  # NUL bytes
        raise ControlSyntaxError(f"{display}: cannot compile: {exc}") from None


def control_spec(path: Path, display: str, kind: str) -> TestSpec:
    """The spec of the control file at `path` (BROKEN, with the reason, when it does not
    compile): a server one runs here once and spans the job's hosts."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        spec = broken_spec(str(path), display, f"cannot read {display}: {exc}")
    else:
        try:
            compile_control(source, str(path), display)
        except ControlSyntaxError as exc:
            spec = broken_spec(str(path), display, str(exc))
        else:
            spec = TestSpec(ref=display, kind=kind, path=str(path.resolve()))
    # A server control file runs here once (as a multi-host test does), a broken one too.
    spec.multihost = kind == CONTROL_SERVER
    return spec


class ControlResolver:
    """The `control` resolver: Autoserv control files (see the module docstring)."""

    name = "control"
    priority = 20  # before exec: a control file may well be executable

    def resolve(self, path: Path, display: str) -> list[TestSpec] | None:
        kind = control_kind(path)
        if kind is None or not path.is_file():
            return None
        if kind == CONTROL_CLIENT and not _mentions_job(path):
            return None  # another kind of file named control (Debian's, …): not ours
        return [control_spec(path, display, kind)]


def _mentions_job(path: Path) -> bool:
    """Whether a file named like a client control file uses `job`, as every one does."""
    try:
        with open(path, "rb") as text:
            return re.search(rb"\bjob\b", text.read(1 << 20)) is not None
    except OSError:
        return True  # say why it cannot be read, as a control file
