"""Avocado's YAML-to-mux files read into a tree of nodes (loaded only for `-m`).

A file's mappings become nodes, its other values the nodes' values; the tags `!mux`
(the node's children are alternatives), `!include`, `!using`, `!remove_node`,
`!remove_value`, `!filter-only` and `!filter-out` steer it, as Avocado 113's
yaml_to_mux plugin reads them. Values are inherited down the tree (lists are joined).
mhtest.variants turns the tree into variants.

`-m FILE` puts the file under /run; `-m /some/where:FILE` under /some/where, and
`-m where:FILE` under /run/where. A node's fingerprint and environment text are
Avocado's, character for character: the variant IDs hash them.
"""

from __future__ import annotations

import ast
import collections
import os
import re
from typing import Any, Iterator

import yaml

__all__ = ["MuxError", "Node", "apply_filters", "inject", "load_files"]

INCLUDE, USING, REMOVE_NODE, REMOVE_VALUE, MUX, FILTER_ONLY, FILTER_OUT = range(7)
_TAGS = {
    "!include": INCLUDE,
    "!using": USING,
    "!remove_node": REMOVE_NODE,
    "!remove_value": REMOVE_VALUE,
    "!filter-only": FILTER_ONLY,
    "!filter-out": FILTER_OUT,
}
_FILE_SPLIT = re.compile(r"(?<!\\):")  # FILE or WHERE:FILE, '\:' escapes a colon
_FILE_UNESCAPE = re.compile(r"(?<!\\)\\:")


class MuxError(ValueError):
    """A YAML-to-mux file cannot be read: the message names the file and what is wrong."""


class Control:
    """A control tag (`!include`, `!remove_node` …) where a key was, with its argument."""

    def __init__(self, code: int, value: Any = None) -> None:
        self.code, self.value = code, value

    def __repr__(self) -> str:
        # Avocado prints the object's address here, so a leaf that keeps a control tag
        # gets a different variant ID in each Avocado run; this one is stable.
        return f"<Control {self.code} {self.value!r}>"


class _NodeList(list):
    """A mapping that holds nodes or control tags: its items become a node's content."""


class Environment(dict):
    """A node's values with those it inherits, where each came from, and the filters."""

    def __init__(self) -> None:
        super().__init__()
        self.origin: dict[str, Node] = {}
        self.filter_only: set[str] = set()
        self.filter_out: set[str] = set()

    def copy(self) -> Environment:  # type: ignore[override]
        env = Environment()
        env.update(self)
        env.origin = dict(self.origin)
        env.filter_only = set(self.filter_only)
        env.filter_out = set(self.filter_out)
        return env

    def to_text(self) -> str:
        """Avocado's TreeEnvironment.to_text(sort=True): part of a variant's fingerprint."""
        if self:
            values = "{" + ", ".join(f"{k}: {v}" for k, v in sorted(self.items())) + "}"
            origin = ", ".join(f"{k}: {n.path}" for k, n in sorted(self.origin.items()))
            origin = "{" + origin + "}"
        else:
            values = origin = "{}"
        return ",".join(
            (values, origin, _filter_text(self.filter_only), _filter_text(self.filter_out))
        )


def _filter_text(filters: set[str]) -> str:
    return "FilterSet([" + ", ".join(sorted(f"'{f}'" for f in filters)) + "])"


def _slash(path: str) -> str:
    return path if path.endswith("/") else path + "/"


class Node:
    """A node of the tree: a name, its own values and filters, children, `!mux` or not."""

    def __init__(self, name: str = "", value: dict | None = None, children: list | None = None):
        self.name = name
        self.value: dict[str, Any] = value if value is not None else {}
        self.filters: tuple[list[str], list[str]] = ([], [])  # own filter-only, filter-out
        self.parent: Node | None = None
        self.children: list[Node] = []
        self.ctrl: list[Control] = []  # !remove_node / !remove_value, applied on merge
        self.multiplex: bool | None = None
        self._env: Environment | None = None
        for child in children or ():
            self.add_child(child)

    def __repr__(self) -> str:
        return f"Node({self.path!r})"

    @property
    def path(self) -> str:
        names = [self.name]
        node = self.parent
        while node is not None:
            names.append(node.name)
            node = node.parent
        return "/" + self.name if len(names) == 1 else "/".join(reversed(names))

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def child(self, name: str) -> Node | None:
        return next((c for c in self.children if c.name == name), None)

    def add_child(self, node: Node) -> None:
        """Append `node`, or merge it into the child of the same name where that one is."""
        same = self.child(node.name)
        if same is not None:
            same.merge(node)
        else:
            node.parent = self
            self.children.append(node)

    def merge(self, other: Node) -> None:
        """Merge `other` in: its control tags first, then its values, filters and children."""
        for ctrl in other.ctrl:
            pattern = re.compile(ctrl.value)
            if ctrl.code == REMOVE_NODE:
                self.children = [c for c in self.children if not pattern.match(c.name)]
            elif ctrl.code == REMOVE_VALUE:
                for key in [k for k in self.value if pattern.match(k)]:
                    del self.value[key]
        self.value.update(other.value)
        self.filters[0].extend(other.filters[0])
        self.filters[1].extend(other.filters[1])
        for child in other.children:
            self.add_child(child)
        if other.multiplex is not None:
            self.multiplex = other.multiplex

    @property
    def environment(self) -> Environment:
        """Values inherited from the root down to this node (lists joined), with origins."""
        if self._env is None:
            env = self.parent.environment.copy() if self.parent else Environment()
            for key, value in self.value.items():
                if isinstance(value, list) and isinstance(env.get(key), list):
                    value = env[key] + value
                env[key] = value
                env.origin[key] = self
            env.filter_only.update(_slash(f) for f in self.filters[0])
            env.filter_out.update(_slash(f) for f in self.filters[1])
            self._env = env
        return self._env

    def fingerprint(self) -> str:
        return f"{self.path}{self.environment.to_text()}{self.ctrl}"

    def preorder(self) -> Iterator[Node]:
        queue = collections.deque([self])
        while queue:
            node = queue.popleft()
            yield node
            queue.extendleft(reversed(node.children))

    def get_node(self, path: str, create: bool = False) -> Node:
        node = self
        for name in (n for n in path.split("/") if n):
            found = node.child(name)
            if found is None:
                if not create:
                    raise MuxError(f"no node {path} in the tree")
                found = Node(name)
                node.add_child(found)
            node = found
        return node

    def detach(self) -> None:
        if self.parent is not None:
            self.parent.children.remove(self)
            self.parent = None


# -- reading files -------------------------------------------------------------------------


def load_files(files: list[str]) -> Node:
    """The tree of YAML-to-mux `files` (each `FILE` or `WHERE:FILE`), merged in order."""
    root = Node()
    for spec in files:
        tree = _load(spec)
        if tree is not None:
            root.merge(tree)
    return root


def _load(spec: str) -> Node | None:
    parts = _FILE_SPLIT.split(spec, 1)
    if len(parts) == 1:
        path, using = _FILE_UNESCAPE.sub(":", parts[0]), ["run"]
    else:
        where = _FILE_UNESCAPE.sub(":", parts[0])
        using = [n for n in where.strip("/").split("/") if n]
        if not where.startswith("/"):
            using.insert(0, "run")
        path = _FILE_UNESCAPE.sub(":", parts[1])
    tree = _load_file(path)
    if tree is None:
        return None
    if using:
        tree.name = using.pop()
        while using:
            tree = Node(using.pop(), children=[tree])
        tree = Node("", children=[tree])
    return tree


def _load_file(path: str) -> Node | None:
    try:
        with open(path, encoding="utf-8") as stream:
            loader = _Loader(stream)
            loader.mux_path = path  # an !include is relative to the file that has it
            try:
                data = loader.get_single_data()
            finally:
                loader.dispose()
    except FileNotFoundError:
        raise MuxError(f"multiplex file {path} does not exist") from None
    except OSError as exc:
        raise MuxError(f"cannot read multiplex file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise MuxError(f"multiplex file {path} is not UTF-8 text (byte {exc.start})") from None
    except (yaml.YAMLError, IndexError) as exc:
        text = str(exc)
        if "mapping values are not allowed in this context" in text:
            text += "\nMake sure !tags and colons are separated by a space (eg. !include :)"
        raise MuxError(f"invalid multiplex file {path}: {text}") from None
    if data is None:
        return None
    return _node(path, "", data)


def _node(path: str, name: Any, values: Any) -> Node:
    """The node `name` made of a mapping's content (an OrderedDict or a _NodeList)."""
    node = Node(str(name))
    if not values:
        return node
    using = ""
    if isinstance(values, dict):
        items = list(values.items())
    elif isinstance(values, list):
        items = values
    else:
        raise MuxError(f"{path}: {name or 'the file'} must be a mapping, not {values!r}")
    for item in items:
        if isinstance(item, Node):
            node.add_child(item)
            continue
        if not (isinstance(item, tuple) and len(item) == 2):
            raise MuxError(f"{path}: {name or 'the file'} must be a mapping, not {values!r}")
        key, value = item
        if isinstance(key, Control):
            if key.code == USING:
                if using:
                    raise MuxError(f"!using can be used only once per node! ({path}:{name})")
                using = str(value).strip()
                using = using[1:] if using.startswith("/") else using
                using = using[:-1] if using.endswith("/") else using
            else:
                _control(path, node, key, value)
        elif isinstance(value, collections.OrderedDict) or (
            value is None and not isinstance(values, list)
        ):
            node.add_child(_node(path, key, value))
        elif value == "null" and isinstance(values, dict):
            node.value[key] = None
        else:
            node.value[key] = value
    return _using(name, using, node) if using else node


def _control(path: str, node: Node, key: Control, value: Any) -> None:
    if key.code == INCLUDE:
        included = str(value)
        if not os.path.isabs(included):
            included = os.path.join(os.path.dirname(path), included)
        if not os.path.exists(included):
            raise MuxError(f"File '{included}' included from '{path}' does not exist.")
        tree = _load_file(included)
        if tree is not None:
            node.merge(tree)
    elif key.code in (REMOVE_NODE, REMOVE_VALUE):
        node.ctrl.append(Control(key.code, value))
    elif key.code == MUX:
        node.multiplex = True
    elif key.code in (FILTER_ONLY, FILTER_OUT) and value:
        node.filters[key.code == FILTER_OUT].append(_slash(str(value)))


def _using(name: Any, using: str, node: Node) -> Node:
    """`!using a/b`: the node moved down under a/b (Avocado's way, also for a file's root)."""
    if name != "":
        for parent in reversed(using.split("/")):
            node = Node(parent, children=[node])
        return node
    names = using.split("/")[::-1]
    node.name = names.pop()
    while names:
        node = Node(names.pop(), children=[node])
    return Node("", children=[node])


def _mapping(loader: yaml.BaseLoader, node: yaml.MappingNode, looks_like_node: bool = False) -> Any:
    """A mapping: an OrderedDict of plain values, or a _NodeList when it has tags or nodes."""
    pairs = []
    for key_node, value_node in node.value:
        if key_node.tag.startswith("!"):
            key = loader.construct_object(key_node)
        else:
            key = loader.construct_scalar(key_node)
        looks_like_node |= isinstance(key, Control)
        value = loader.construct_object(value_node)
        looks_like_node |= isinstance(value, _NodeList)
        pairs.append((key, value))
    if not looks_like_node:
        return collections.OrderedDict(pairs)
    objects = _NodeList()
    for name, values in pairs:
        if isinstance(values, _NodeList):
            objects.append(_node(loader.mux_path, name, values))
        elif values is None:
            objects.append(Node(str(name)))
        elif values == "null":
            objects.append((name, None))
        else:
            objects.append((name, values))
    return objects


def _mux(loader: yaml.BaseLoader, node: yaml.Node) -> _NodeList:
    objects = _mapping(loader, node, True) if isinstance(node, yaml.MappingNode) else _NodeList()
    objects.append((Control(MUX), None))
    return objects


_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """PyYAML's safe loader with the mux tags (its own table: yaml.SafeLoader is left as is)."""

    mux_path = ""


for _tag, _code in _TAGS.items():
    _Loader.add_constructor(_tag, lambda _loader, _node, code=_code: Control(code))
_Loader.add_constructor("!mux", _mux)
_Loader.add_constructor("tag:yaml.org,2002:python/dict", yaml.SafeLoader.construct_yaml_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


# -- changing the tree -----------------------------------------------------------------------


def inject(root: Node, entries: list[str]) -> None:
    """`--mux-inject [PATH:]KEY:VALUE`: set values in the tree (VALUE a Python literal or text)."""
    for entry in entries:
        parts = entry.split(":", 2)
        if len(parts) < 2:
            raise MuxError(f"--mux-inject {entry!r}: use [path:]key:value")
        if len(parts) == 2:
            parts.insert(0, "")
        path, key, text = parts
        try:
            value: Any = ast.literal_eval(text)
        except (ValueError, SyntaxError, RecursionError, MemoryError, TypeError):
            value = text
        root.get_node(path, True).value[key] = value


def apply_filters(root: Node, only: list[str] | None = None, out: list[str] | None = None) -> Node:
    """`--mux-filter-only` / `--mux-filter-out`: drop the nodes they rule out (out wins)."""
    only = [p.rstrip("/") for p in only or () if p]
    out = [p.rstrip("/") for p in out or () if p]
    for node in list(root.preorder()):
        keep = True
        for path in only:
            if path == "":
                continue
            if node.path == path:
                keep = True
                break
            parent = path.rpartition("/")[0] or "/"
            if node.parent is not None and node.parent.path == parent:
                keep = False
        if any(path and node.path == path for path in out):
            keep = False
        if not keep:
            node.detach()
    return root
