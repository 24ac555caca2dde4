"""Variants: a YAML-to-mux tree (mhtest.mux) multiplied out, as Avocado 113 does it.

Loaded only when `-m/--mux-yaml` is given. A variant is one leaf from each `!mux`
alternative (and every other leaf), kept when its leaves' `!filter-only`/`!filter-out`
allow it. Its ID is Avocado's: the names on its leaves' paths, then 4 hex digits of the
SHA-1 of the leaves' fingerprints (`run-short-8b1d`). A test runs once per variant: the
variant travels with its TestSpec as Avocado dumps it (`dump()`), and mhtest.params
looks parameters up in it as Avocado's AvocadoParams does.

    from mhtest.variants import Variants
    variants = Variants.from_files(["sleeptest.yaml"])
    for variant in variants:
        print(variant.id, [leaf.path for leaf in variant.leaves])
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator, Sequence

from mhtest.mux import Node, apply_filters, inject, load_files

__all__ = ["DEFAULT_PATHS", "Variant", "Variants", "multiply", "verbosity"]

#: Where `params.get(key)` looks when no path is given (Avocado's --mux-path default).
DEFAULT_PATHS = ["/run/*"]
#: Avocado's names of the levels of `variants --summary/--variants`.
LEVELS = {"none": 0, "brief": 1, "normal": 2, "verbose": 3, "full": 4, "max": 99}
#: `mhtest run --execution-order`: each test with all variants, or each variant's tests.
ORDERS = ("variants-per-test", "tests-per-variant")


def verbosity(text: str) -> int:
    """A --summary/--variants level: a number or one of LEVELS' names."""
    if text.isdigit():
        return int(text)
    try:
        return LEVELS[text.lower()]
    except KeyError:
        raise ValueError(f"{text!r} is not a number nor one of {', '.join(LEVELS)}") from None


@dataclass
class Variant:
    """One variant: its ID, its leaves and the paths `params.get()` searches by default."""

    id: str
    leaves: list[Node]
    paths: list[str]

    def dump(self) -> dict[str, Any]:
        """The variant as plain data, in Avocado's shape (varianter.dump_variant)."""
        leaves = []
        for leaf in self.leaves:
            env = leaf.environment
            items = [[env.origin[k].path, k, _plain(v)] for k, v in env.items()]
            leaves.append([leaf.path, items])
        return {"paths": list(self.paths), "variant_id": self.id, "variant": leaves}


def _plain(value: Any) -> Any:
    """A YAML value as JSON can hold it (mappings as dicts; dates, sets … as text)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class Variants:
    """The variants of a tree, in Avocado's order; iterable, with len()."""

    def __init__(self, root: Node, paths: Sequence[str] | None = None) -> None:
        self.root = root
        self.paths = list(paths or DEFAULT_PATHS)
        self._variants = [
            Variant(variant_id(leaves), leaves, self.paths) for leaves in _valid(root)
        ]

    @classmethod
    def from_files(
        cls,
        files: Sequence[str],
        filter_only: Sequence[str] = (),
        filter_out: Sequence[str] = (),
        paths: Sequence[str] | None = None,
        injected: Sequence[str] = (),
    ) -> Variants:
        """The variants of YAML-to-mux `files`, with the command line's filters and values
        (Avocado's --mux-filter-only, --mux-filter-out, --mux-path, --mux-inject)."""
        root = load_files(list(files))
        inject(root, list(injected))
        apply_filters(root, list(filter_only), list(filter_out))
        return cls(root, paths)

    def __iter__(self) -> Iterator[Variant]:
        return iter(self._variants)

    def __len__(self) -> int:
        return len(self._variants)

    def to_str(self, summary: int = 0, variants: int = 1) -> str:
        """What `avocado variants --summary S --variants V` prints, line for line."""
        if not self._variants:
            return ""
        out = []
        if summary:
            out += ["Multiplex tree representation:", tree_view(self.root, summary - 1), ""]
        if variants:
            out.append(f"Multiplex variants ({len(self)}):")
            for variant in self:
                out.extend(_variant_lines(variant, variants - 1))
        return "\n".join(out)


def _pools(node: Node) -> list[Any]:
    """A tree slice's pools: its leaves, and its `!mux` nodes as lists of child slices."""
    pools: list[Any] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if current.is_leaf:
            pools.append(current)
        elif current.multiplex:
            pools.append([_pools(child) for child in current.children])
        else:
            stack.extend(reversed(current.children))
    return pools


def _combinations(pools: list[Any]) -> Iterator[list[Node]]:
    """Every combination: one leaf set from each `!mux` alternative, with every leaf."""
    choices = [
        itertools.chain.from_iterable(_combinations(slice_) for slice_ in pool)
        if isinstance(pool, list)
        else [[pool]]
        for pool in pools
    ]
    for combination in itertools.product(*choices):
        yield list(itertools.chain.from_iterable(combination))


def _valid(root: Node) -> Iterator[list[Node]]:
    for leaves in _combinations(_pools(root)):
        if _allowed(leaves):
            yield leaves


def _allowed(leaves: list[Node]) -> bool:
    """Whether the leaves' own `!filter-only` / `!filter-out` let this variant be."""
    only: set[str] = set()
    out: set[str] = set()
    for leaf in leaves:
        only.update(leaf.environment.filter_only)
        out.update(leaf.environment.filter_out)
    if not (only or out):
        return True
    only_list = list(only)
    only_parents = [f.rsplit("/", 2)[0] + "/" for f in only_list]
    for leaf in leaves:
        path = leaf.path + "/"
        if any(path.startswith(f) for f in out):
            return False
    for leaf in leaves:
        keep = remove = 0
        path = leaf.path + "/"
        parent = path.rsplit("/", 2)[0] + "/"
        for wanted, wanted_parent in zip(only_list, only_parents):
            level = wanted.count("/")
            if level < max(keep, remove):
                continue
            if parent.startswith(wanted_parent):
                if path.startswith(wanted):
                    keep = level
                else:
                    remove = level
        if remove > keep:
            return False
    return True


def variant_id(leaves: Iterable[Node]) -> str:
    """Avocado's variant ID: the names down to each leaf, once each, and a hash of them."""
    ordered = sorted(leaves, key=lambda n: n.path)
    names: list[str] = []
    for leaf in ordered:
        chain = []
        node: Node | None = leaf
        while node is not None:
            chain.append(node.name)
            node = node.parent
        # Names new to this leaf's path (a name twice on one path stays twice, as in Avocado).
        names.extend([n for n in chain[::-1][1:] if n not in names])
    fingerprint = "\n".join(leaf.fingerprint() for leaf in ordered)
    return "-".join(names) + "-" + hashlib.sha1(fingerprint.encode("utf-8")).hexdigest()[:4]


def _variant_lines(variant: Variant, verbose: int) -> list[str]:
    paths = ", ".join(leaf.path for leaf in variant.leaves)
    out = [f"{chr(10) if verbose else ''}Variant {variant.id}:    {paths}"]
    if verbose:
        env = set()
        for leaf in variant.leaves:
            for key, value in leaf.environment.items():
                env.add((f"{leaf.environment.origin[key].path}:{key}", str(value)))
        if env:
            width = max(len(where) for where, _ in env)
            out.extend(f"    {where:<{width}} => {value}" for where, value in sorted(env))
    return out


_UTF8 = {
    True: (" \u2551   ", " \u2560\u2550\u2550 ", " \u255a\u2550\u2550 "),  # down, down-right, right
    False: (" \u2503   ", " \u2523\u2501\u2501 ", " \u2517\u2501\u2501 "),
}
_ARROW = "\u2192 "


def tree_view(root: Node, verbose: int) -> str:
    """Avocado's tree_view: the tree drawn (`!mux` nodes in double lines), with values at
    verbose 1 and 3 (the node's own) and 2 and 3 (a leaf's inherited ones)."""
    out = []
    if verbose >= 2 and root.is_leaf:
        values = list(root.environment.items())
    else:
        values = list(root.value.items()) if verbose in (1, 3) else []
    for key, value in values:  # the root's: no filters, drawn apart (as Avocado draws them)
        out.extend(_wrapped(_ARROW, f"{key}: ", value))
    out.extend(_children(root, verbose))
    return "\n".join(out)


def _wrapped(prefix: str, head: str, value: Any) -> list[str]:
    """`prefix head value`, a multi-line value's lines under its first."""
    text = str(value)
    lines = (text.splitlines() or [""]) if "\n" in text else [text]
    return [prefix + head + lines[0], *(prefix + " " * len(head) + line for line in lines[1:])]


def _values(node: Node, verbose: int, arrow: str, prefix: str) -> list[str]:
    if verbose >= 2 and node.is_leaf:
        env = node.environment
        # Sorted: Avocado shows these sets in Python's hash order, which changes per run.
        values = [*env.items(), *(("filter-only", f) for f in sorted(env.filter_only))]
        values += [("filter-out", f) for f in sorted(env.filter_out)]
    elif verbose in (1, 3):
        values = [*node.value.items(), *(("filter-only", f) for f in node.filters[0])]
        values += [("filter-out", f) for f in node.filters[1]]
    else:
        return []
    return [line for key, value in values for line in _wrapped(prefix, f"{arrow}{key}: ", value)]


def _children(node: Node, verbose: int) -> list[str]:
    down, down_right, right = _UTF8[bool(node.multiplex)]
    out = []
    for i, child in enumerate(node.children):
        last = i == len(node.children) - 1
        lines = _draw(child, verbose)
        out.append((right if last else down_right) + lines[0])
        out.extend((" " * len(down_right) if last else down) + line for line in lines[1:])
    return out


def _draw(node: Node, verbose: int) -> list[str]:
    down = _UTF8[bool(node.multiplex)][0]
    prefix = down if node.children else "  "
    return [node.name, *_values(node, verbose, _ARROW, prefix), *_children(node, verbose)]


def multiply(specs: Sequence[Any], dumps: Sequence[dict], order: str = ORDERS[0]) -> list[Any]:
    """Each TestSpec once per variant (dumped: Variant.dump()), in Avocado's
    --execution-order, the variant in its spec."""
    if order == "tests-per-variant":
        pairs = [(spec, dump) for dump in dumps for spec in specs]
    else:
        pairs = [(spec, dump) for spec in specs for dump in dumps]
    return [replace(spec, variant=dump, params=dict(spec.params)) for spec, dump in pairs]
