"""The test classes of a Python file, found by reading it (and its base classes' files).

Nothing is imported: the file's AST says which classes are tests and which of their
methods are test methods, by Avocado's rules (avocado.core.safeloader):

- a test class derives from Test (mhtest's or Avocado's, by any import spelling),
  directly or through base classes in the same file or in files it imports from its own
  directory (`from base import Base`, `from .base import Base`, `import base`);
- its test methods are the `def` and `async def` methods named test*, not properties nor
  attributes, its own first, then those of its bases (same file first);
- docstring directives (`:mhtest: …` or `:avocado: …`, alone on a line): `disable` (not a
  test class), `enable` (a test class with only its own methods, whatever its bases),
  `recursive` (a test class, with its bases' methods, whatever its bases), `worker`
  (mhtest: runs only when named), `tags=a,b,key:value` (a method's tags add to its class's
  and base classes'; for one key, the class's values win, as in Avocado).
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from typing import Any

#: Base classes that make a class an instrumented test.
TEST_BASES = {"Test", "MultiHostTest", "MultihostMigration"}
MULTIHOST_BASES = {"MultiHostTest", "MultihostMigration"}
#: Framework bases that bring their own test method: a subclass that writes none runs it.
INHERITED_METHODS = {"MultihostMigration": ["test"]}
_DIRECTIVE = re.compile(r"^\s*:(?:mhtest|avocado):[ \t]+([a-zA-Z0-9][a-zA-Z0-9_:,=\-.]*)\s*$")
#: A tag set: {tag: None, key: {values}} (Avocado's shape).
Tags = dict[str, Any]


@dataclass
class ClassInfo:
    """What the AST says about one class of a test file (its own body only)."""

    name: str
    bases: list[ast.expr]
    methods: list[str]
    tags: Tags = field(default_factory=dict)
    method_tags: dict[str, Tags] = field(default_factory=dict)
    directives: set[str] = field(default_factory=set)
    timeout: float | None = None


class TestClass:
    """A test class of a file: its own info and what its bases add."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        info: ClassInfo,
        methods: list[tuple[str, Tags]],
        base_names: set[str],
        timeout: float | None,
    ) -> None:
        self.info = info
        self.methods = methods  # test methods, in order, with their tags
        self.base_names = base_names  # the names of its bases, all the way up (those found)
        self.timeout = timeout

    @property
    def multihost(self) -> bool:
        return bool(self.base_names & MULTIHOST_BASES)


class _Module:
    # Plain classes rather than dataclasses here: each dataclass costs `mhtest run` ~0.4 ms
    # of start-up to create.
    def __init__(
        self, path: str, classes: dict[str, ClassInfo], imports: dict[str, tuple[str, str]]
    ) -> None:
        self.path = path
        self.classes = classes
        self.imports = imports  # local name → (module path, symbol or "")


def directives(node: ast.AST) -> tuple[Tags, set[str]]:
    """The tags and the other directives of a class or function docstring."""
    doc = ast.get_docstring(node) or ""  # type: ignore[arg-type]
    tags: Tags = {}
    found: set[str] = set()
    for line in doc.splitlines():
        match = _DIRECTIVE.match(line)
        if not match:
            continue
        item = match.group(1)
        if not item.startswith("tags="):
            found.add(item)
            continue
        for tag in filter(None, item[len("tags=") :].split(",")):
            key, sep, value = tag.partition(":")
            if sep:
                tags[key] = (tags.get(key) or set()) | {value}
            else:
                tags[tag] = None
    return tags, found


def tag_list(tags: Tags) -> list[str]:
    """A tag set as sorted strings: 'tag' and 'key:value'."""
    out = set()
    for key, values in tags.items():
        out.update([f"{key}:{v}" for v in values] if values else [key])
    return sorted(out)


def _class_info(node: ast.ClassDef) -> ClassInfo:
    tags, found = directives(node)
    info = ClassInfo(node.name, list(node.bases), [], tags, directives=found)
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if not item.name.startswith("test") or _is_property(item):
                continue
            if item.name not in info.methods:
                info.methods.append(item.name)
                info.method_tags[item.name] = directives(item)[0]
        elif isinstance(item, ast.Assign) and isinstance(item.value, ast.Constant):
            targets = [t.id for t in item.targets if isinstance(t, ast.Name)]
            if "timeout" in targets and isinstance(item.value.value, (int, float)):
                info.timeout = float(item.value.value)
    return info


def _is_property(node: ast.AST) -> bool:
    return any(getattr(d, "id", None) == "property" for d in node.decorator_list)  # type: ignore[attr-defined]


def _parse(source: str, path: str) -> _Module:
    tree = ast.parse(source, filename=path)
    classes: dict[str, ClassInfo] = {}
    imports: dict[str, tuple[str, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            classes[node.name] = _class_info(node)
        elif isinstance(node, ast.ImportFrom):
            module = "." * (node.level or 0) + (node.module or "")
            for alias in node.names:
                imports[alias.asname or alias.name] = (module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                imports[alias.asname or alias.name] = (alias.name, "")
    return _Module(path, classes, imports)


class Finder:
    """Finds the test classes of files, reading each base class's file once."""

    def __init__(self) -> None:
        self._modules: dict[str, _Module | None] = {}

    def test_classes(self, source: str, path: str) -> list[TestClass]:
        """The test classes of the file `path` whose text is `source`.

        Raises SyntaxError for a file that does not parse (a base class's file that does
        not is only left out).
        """
        module = _parse(source, path)
        self._modules[os.path.abspath(path)] = module
        found = []
        for info in module.classes.values():
            if "disable" in info.directives:
                continue
            if "enable" in info.directives:
                methods = [(m, {**info.method_tags[m], **info.tags}) for m in info.methods]
                found.append(TestClass(info, methods, _names(info.bases), info.timeout))
                continue
            methods, names, timeout, match = self._examine(module, info, frozenset())
            if match or "recursive" in info.directives:
                if not methods:
                    methods = [(m, dict(info.tags)) for m in _inherited_methods(names)]
                found.append(TestClass(info, methods, names, timeout))
        return found

    def _examine(
        self, module: _Module, info: ClassInfo, seen: frozenset[tuple[str, str]]
    ) -> tuple[list[tuple[str, Tags]], set[str], float | None, bool]:
        """(test methods with tags, base names, timeout, derives from Test) of a class."""
        methods = [(m, {**info.method_tags[m], **info.tags}) for m in info.methods]
        names = _names(info.bases)
        timeout = info.timeout
        match = bool(names & TEST_BASES)
        seen = seen | {(module.path, info.name)}
        parents = [self._base(module, base) for base in info.bases]
        same_file_first = sorted(
            (p for p in parents if p is not None), key=lambda p: p[0] is not module
        )
        for parent_module, parent in same_file_first:
            if (parent_module.path, parent.name) in seen:
                continue
            p_methods, p_names, p_timeout, p_match = self._examine(parent_module, parent, seen)
            names |= p_names
            timeout = timeout if timeout is not None else p_timeout
            match = match or p_match
            for _, tags in methods:  # a class inherits its bases' tags
                for key, value in parent.tags.items():
                    tags.setdefault(key, value)
            own = {name: tags for name, tags in methods}
            for name, tags in p_methods:
                tags = {**tags, **info.tags}  # ... and its own tags win on its bases' methods
                if name in own:
                    for key, value in tags.items():
                        own[name].setdefault(key, value)
                else:
                    methods.append((name, tags))
                    own[name] = tags
        return methods, names, timeout, match

    def _base(self, module: _Module, base: ast.expr) -> tuple[_Module, ClassInfo] | None:
        """The class a base expression names, in this file or a file it imports."""
        if isinstance(base, ast.Name):
            if base.id in module.classes:
                return module, module.classes[base.id]
            imported = module.imports.get(base.id)
            if imported is None or not imported[1]:
                return None
            other = self._module(module.path, imported[0])
            symbol = imported[1]
        elif isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name):
            imported = module.imports.get(base.value.id)
            if imported is None:
                return None
            mod_path, symbol_name = imported
            # `import base` or `from pkg import base`: the symbol is the module.
            full = f"{mod_path}.{symbol_name}" if symbol_name else mod_path
            if symbol_name and mod_path.endswith("."):
                full = mod_path + symbol_name
            other = self._module(module.path, full)
            symbol = base.attr
        else:
            return None
        if other is None or symbol not in other.classes:
            return None
        return other, other.classes[symbol]

    def _module(self, importer: str, name: str) -> _Module | None:
        """The module `name` imported by the file `importer`, if it is a file beside it."""
        path = _locate(importer, name)
        if path is None:
            return None
        if path not in self._modules:
            try:
                with open(path, encoding="utf-8") as fh:
                    self._modules[path] = _parse(fh.read(), path)
            except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
                self._modules[path] = None
        return self._modules[path]


def _locate(importer: str, name: str) -> str | None:
    """The file of module `name` ('base', '.base', '..pkg.base') relative to `importer`'s
    directory, or None: modules elsewhere (installed ones) are not read."""
    level = len(name) - len(name.lstrip("."))
    directory = os.path.dirname(os.path.abspath(importer))
    for _ in range(max(level - 1, 0)):
        directory = os.path.dirname(directory)
    parts = [p for p in name.lstrip(".").split(".") if p]
    if not parts:
        return None
    base = os.path.join(directory, *parts)
    for candidate in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def _names(bases: list[ast.expr]) -> set[str]:
    out = set()
    for base in bases:
        if isinstance(base, ast.Name):
            out.add(base.id)
        elif isinstance(base, ast.Attribute):
            out.add(base.attr)
    return out


def _inherited_methods(names: set[str]) -> list[str]:
    return next((INHERITED_METHODS[b] for b in sorted(names) if b in INHERITED_METHODS), [])
