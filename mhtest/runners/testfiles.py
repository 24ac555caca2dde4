"""Which files beside a test go to the hosts with it, and `.mhtestignore`.

A host gets, from each test file's directory (paths relative to it):

- the test file itself;
- its data directory `<file>.data/` (Avocado's), whole;
- for a Python file (an instrumented test, or a simple test that is a Python script): the
  modules and packages beside it that it imports (`import x`, `from x import y`,
  `from . import y`, found in its syntax tree, not by running it), and what those import
  in turn;
- files and directories beside it that it names: a word of one of its strings (Python), or
  of its text (any other script: `. ./lib.sh`, `cat input.txt`), that is the name of an
  entry of the directory. A named directory goes whole; a named script or module is read
  for names in turn. This is how a simple test gets the files it reads: mhtest cannot run
  a script to see what it opens, so a file it reads under a name it builds at run time
  goes only in its data directory, or with `--remote-send-dir`.

With `--remote-send-dir`, the whole directory goes instead, as mhtest did before.

Never sent: `__pycache__` and `.git`, and whatever `.mhtestignore` files or
`--remote-exclude PATTERN` exclude (the test file itself excepted). A `.mhtestignore` in
the test's directory, or in any directory below it, applies to that directory and below,
in gitignore's syntax (this subset):

- one pattern a line; blank lines and lines starting with `#` are skipped; `\\#` and `\\!`
  start a pattern with that character;
- `*` matches any characters but `/`, `?` one character but `/`, `[a-z]`/`[!a]` one of a
  set; `**/` at the start, `/**` at the end or `/**/` inside match any directories;
- a pattern with a `/` at its start or inside is relative to the file's directory; without
  one it matches an entry's name at any depth;
- a trailing `/` matches only directories (and so everything below them);
- `!pattern` takes back an exclusion made by an earlier line (not below an excluded
  directory); the last line that matches an entry decides.

`--remote-exclude PATTERN` lines come after those of the test directory's `.mhtestignore`.
"""

from __future__ import annotations

import ast
import logging
import os
import re
from dataclasses import dataclass, field

LOG = logging.getLogger(__name__)
IGNORE_FILE = ".mhtestignore"
#: Directories never sent.
SKIP_DIRS = ("__pycache__", ".git")
#: Files larger than this are not read for names (data, not scripts).
MAX_SCAN = 1 << 20
#: What separates the words of a script in which file names are looked for.
_WORDS = re.compile(r"[^\s'\"`;|&<>(){}\[\],=:$/\\]+")
#: Extension modules an `import x` can load besides x.py.
_EXT_SUFFIXES = (".so", ".pyd")


@dataclass
class _Rule:
    base: str  # the directory of the .mhtestignore, relative to the root ("" for the root)
    regex: re.Pattern
    dir_only: bool
    negate: bool


@dataclass
class IgnoreRules:
    """The exclusions of one test directory: its .mhtestignore files, then extra patterns."""

    rules: list[_Rule] = field(default_factory=list)
    read_dirs: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, root: str, extra: list[str] | tuple[str, ...] = ()) -> IgnoreRules:
        """The rules of `root`'s .mhtestignore files (found below it), then `extra` lines."""
        found = cls()
        found.read(root, "")
        for line in extra:
            found.add("", line)
        return found

    def read(self, root: str, rel_dir: str) -> None:
        """Add the rules of `rel_dir`/.mhtestignore (below `root`), if there is one."""
        if rel_dir in self.read_dirs:
            return
        self.read_dirs.add(rel_dir)
        path = os.path.join(root, rel_dir, IGNORE_FILE)
        try:
            with open(path, encoding="utf-8", errors="replace") as lines:
                for line in lines:
                    self.add(rel_dir, line)
        except FileNotFoundError:
            return
        except OSError as exc:
            LOG.warning("%s: cannot read it: %s", path, exc)

    def add(self, base: str, line: str) -> None:
        """One pattern line, relative to `base`."""
        line = line.rstrip("\n").rstrip()
        if not line or line.startswith("#"):
            return
        negate = line.startswith("!")
        if negate or line.startswith(("\\#", "\\!")):
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            return
        anchored = "/" in line
        body = _glob_regex(line.lstrip("/"))
        regex = re.compile(("^" if anchored else "^(?:.*/)?") + body + "$")
        self.rules.append(_Rule(base, regex, dir_only, negate))

    def excluded(self, rel: str, is_dir: bool) -> bool:
        """Whether entry `rel` (relative to the root) is excluded: the last matching rule says."""
        verdict = False
        for rule in self.rules:
            if rule.dir_only and not is_dir:
                continue
            if rule.base:
                if not rel.startswith(rule.base + "/"):
                    continue
                path = rel[len(rule.base) + 1 :]
            else:
                path = rel
            if rule.regex.match(path):
                verdict = not rule.negate
        return verdict


def _glob_regex(pattern: str) -> str:
    """A gitignore glob as a regular expression body (no anchors)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        if pattern.startswith("**/", i) and (i == 0 or pattern[i - 1] == "/"):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == n:
            out.append("/.*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            chars = pattern[i + 1 : end]
            if chars.startswith("!"):
                chars = "^" + chars[1:]
            out.append("[" + chars.replace("\\", "\\\\") + "]")
            i = end + 1
        elif pattern[i] == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def walk(root: str, rules: IgnoreRules, top: str = "") -> list[str]:
    """Every file, link and directory below `root`/`top` that is not excluded (relative paths).

    Directories come before what they hold; each directory's .mhtestignore is read as the
    walk enters it.
    """
    found: list[str] = []
    start = os.path.join(root, top) if top else root
    for current, dirs, files in os.walk(start):
        rel_dir = os.path.relpath(current, root).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir
        rules.read(root, rel_dir)
        kept = []
        for name in sorted(dirs):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if name in SKIP_DIRS or rules.excluded(rel, True):
                continue
            if os.path.islink(os.path.join(current, name)):
                found.append(rel)  # a link to a directory goes as a link
                continue
            kept.append(name)
            found.append(rel)
        dirs[:] = kept
        for name in sorted(files):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if not rules.excluded(rel, False):
                found.append(rel)
    return found


def needed(root: str, test: str, rules: IgnoreRules) -> list[str]:
    """What the test file `test` (a name in `root`) needs from `root`: relative paths.

    Whole directories are walked (minus exclusions); the test file always goes.
    """
    entries = {name for name in _listdir(root) if name not in SKIP_DIRS}
    chosen: dict[str, None] = {}  # insertion-ordered set
    todo = [test]
    scanned: set[str] = set()

    def take(name: str) -> None:
        if name not in entries or name in chosen:
            return
        path = os.path.join(root, name)
        if name != test and rules.excluded(name, os.path.isdir(path)):
            return
        chosen[name] = None
        if os.path.isdir(path) and not os.path.islink(path):
            todo.extend(rel for rel in walk(root, rules, name) if rel.endswith(".py"))
        else:
            todo.append(name)

    take(test)
    take(test + ".data")
    while todo:
        rel = todo.pop()
        if rel in scanned:
            continue
        scanned.add(rel)
        for name in _names_in(os.path.join(root, rel), rel, entries, rel == test):
            take(name)
    paths: list[str] = []
    for name in chosen:
        paths.append(name)
        if os.path.isdir(os.path.join(root, name)) and not os.path.islink(os.path.join(root, name)):
            paths.extend(walk(root, rules, name))
    return paths


def _listdir(root: str) -> list[str]:
    try:
        return os.listdir(root)
    except OSError:
        return []


def _names_in(path: str, rel: str, entries: set[str], is_test: bool) -> set[str]:
    """Names of `entries` that the file at `path` imports or mentions.

    Read: the test itself, Python modules and scripts (`#!`); not data files.
    """
    try:
        if not os.path.isfile(path) or os.path.getsize(path) > MAX_SCAN:
            return set()
        with open(path, "rb") as source:
            data = source.read()
    except OSError:
        return set()
    first = data.split(b"\n", 1)[0]
    script = first.startswith(b"#!")
    if b"\0" in data[:8192] or not (is_test or script or rel.endswith(".py")):
        return set()
    if rel.endswith(".py") or (script and b"python" in first):
        try:
            return _python_names(ast.parse(data, filename=path), rel, entries)
        except (SyntaxError, ValueError):
            pass  # then as words, like any script
    text = data.decode("utf-8", "replace")
    return {word for word in _WORDS.findall(text) if word in entries}


def _python_names(tree: ast.AST, rel: str, entries: set[str]) -> set[str]:
    """The entries a Python module imports (as modules or packages) or names in a string."""
    found: set[str] = set()
    depth = rel.count("/")  # a module inside a package: relative imports climb from there
    for node in ast.walk(tree):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level and node.level > depth:
                # Relative to the test's own directory (a script run beside its modules).
                modules = [node.module] if node.module else [a.name for a in node.names]
            elif not node.level and node.module:
                modules = [node.module]
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and len(node.value) < 4096
        ):
            found.update(w for w in _WORDS.findall(node.value) if w in entries)
        for module in modules:
            top = module.split(".")[0]
            for candidate in (top, top + ".py"):
                if candidate in entries:
                    found.add(candidate)
            found.update(
                e for e in entries if e.startswith(top + ".") and e.endswith(_EXT_SUFFIXES)
            )
    return found
