"""Test parameters: YAML files, `-p key=value`, and per-host or per-worker overlays."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator, Mapping

_MISSING = object()


class ParamsError(ValueError):
    """A parameter source is malformed; the message names the file or the argument."""


class Params(Mapping[str, Any]):
    """A test's parameters, read the Avocado way: `params.get(key, path=None, default=None)`,
    `params.iteritems()`, `params.objects(key)`.

    Two layers: the job's params (`--params` files, `-p`, a host's), and the test's variant
    (`-m`, see mhtest.variants), in Avocado's dumped shape. The job's params win: a key they
    have is theirs whatever the path. In them, a `path` like "/run/net/*" looks the key up
    in the nested mapping `net` first, then at the top level. In the variant, a path is
    looked up as Avocado's AvocadoParams does: without one, in the variant's leaves under
    its default paths (/run/*) in order; a key that leaves of different nodes hold is an
    error (ValueError), as in Avocado. A non-string second argument is taken as the
    default (`params.get("size", 5)`), where Avocado would fail.
    """

    def __init__(
        self, data: Mapping[str, Any] | None = None, variant: Mapping[str, Any] | None = None
    ) -> None:
        self._data = dict(data or {})
        self._variant = VariantParams(variant) if variant and variant.get("variant") else None

    def get(self, key: str, path: str | None = None, default: Any = None) -> Any:  # type: ignore[override]
        if path is not None and not isinstance(path, str):
            # params.get("key", 5): clearly a default, not an Avocado path.
            path, default = None, path if default is None else default
        if path:
            node: Any = self._data
            for part in (p for p in path.strip("/").split("/") if p not in ("", "*", "run")):
                node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
                if node is _MISSING:
                    break
            if isinstance(node, dict) and key in node:
                return node[key]
        if self._variant is None or key in self._data:
            return self._data.get(key, default)
        return self._variant.get(key, path, default)

    def iteritems(self) -> Iterator[tuple[str, str, Any]]:
        """(path, key, value) of every parameter, as Avocado's: the variant's where they
        come from, the job's at '/'."""
        if self._variant is not None:
            yield from self._variant.iteritems()
        for key, value in self._data.items():
            yield "/", key, value

    def objects(self, key: str, path: str | None = None) -> list[Any]:
        """The names listed by parameter `key` ('nic1 nic2', or a YAML list), as Avocado
        documents it (Avocado 113's own swaps its arguments and always gives [])."""
        value = self.get(key, path, "")
        if value is None:
            return []
        if isinstance(value, (list, tuple)):
            return list(value)
        return str(value).split()

    def _flat(self) -> dict[str, Any]:
        if self._variant is None:
            return self._data
        return {**self._variant.flat(), **self._data}

    def __getitem__(self, key: str) -> Any:
        return self._flat()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._flat())

    def __len__(self) -> int:
        return len(self._flat())

    def to_dict(self) -> dict[str, Any]:
        """Every parameter by name (a variant's from its first leaf that has it)."""
        return dict(self._flat())

    def __repr__(self) -> str:
        return f"Params({self._data!r})"


class VariantParams:
    """A variant's parameters (Avocado's dump: paths, variant_id, [[leaf path, [[origin,
    key, value] …]] …]) looked up as Avocado 113's AvocadoParams does."""

    def __init__(self, variant: Mapping[str, Any]) -> None:
        leaves = [
            (str(path) + "/", {str(k): (v, str(origin)) for origin, k, v in items})
            for path, items in variant.get("variant") or ()
        ]
        #: The leaves under each default path, in order (a leaf goes to the first), then
        #: the rest: those are only searched for absolute paths.
        self._slices = []
        for pattern in variant.get("paths") or ["/run/*"]:
            regex = _path_regex(str(pattern))
            self._slices.append([leaf for leaf in leaves if regex.search(leaf[0])])
            leaves = [leaf for leaf in leaves if not regex.search(leaf[0])]
        self._rest = [leaf for leaf in leaves if "/" in leaf[0]]

    def get(self, key: str, path: str | None, default: Any) -> Any:
        regex = _path_regex("*" if path is None else path)
        slices = [*self._slices, self._rest] if regex.pattern.startswith("/") else self._slices
        for leaves in slices:
            found = [env[key] for name, env in leaves if regex.search(name) and key in env]
            if not found:
                continue
            if len({origin for _, origin in found}) > 1:
                held = [f"{origin}=>{value}" for value, origin in found]
                raise ValueError(f"Multiple {regex.pattern} leaves contain the key '{key}'; {held}")
            return found[0][0]
        return default

    def iteritems(self) -> Iterator[tuple[str, str, Any]]:
        seen = set()
        for leaves in [*self._slices, self._rest]:
            for _, env in leaves:
                for key, (value, origin) in env.items():
                    if (origin, key) not in seen:
                        seen.add((origin, key))
                        yield origin, key, value

    def flat(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for leaves in [*self._slices, self._rest]:
            for _, env in leaves:
                for key, (value, _origin) in env.items():
                    out.setdefault(key, value)
        return out


def _path_regex(path: str) -> re.Pattern[str]:
    """Avocado's path pattern: '*' is any name, a trailing '*' anything below."""
    if not path:
        return re.compile("^$")
    if path.endswith("*"):
        return re.compile(path[:-1].replace("*", "[^/]*"))
    return re.compile(path.replace("*", "[^/]*") + "$")


def variant_values(variant: Mapping[str, Any] | None) -> dict[str, Any]:
    """A simple test's variant params, as Avocado gives them: its first leaf's values."""
    leaves = (variant or {}).get("variant") or ()
    return {str(key): value for _origin, key, value in leaves[0][1]} if leaves else {}


def parse_assignment(text: str) -> tuple[str, str]:
    """Split a `-p key=value` argument; the value stays a string, as in Avocado."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ParamsError(f"malformed parameter {text!r}: use -p key=value")
    return key, value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a params YAML file: a mapping whose values keep their YAML types."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"params file {p} does not exist") from None
    except OSError as exc:
        raise ParamsError(f"cannot read params file {p}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ParamsError(
            f"params file {p} is not UTF-8 text (byte {exc.start}): save it as UTF-8"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ParamsError(f"invalid YAML in params file {p}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(
            f"params file {p} must hold a mapping of names to values, not {type(data).__name__}"
        )
    return {str(k): v for k, v in data.items()}


def merge(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Overlay parameter layers, later ones winning (files, then -p, then per-host)."""
    out: dict[str, Any] = {}
    for layer in layers:
        if layer:
            out.update(layer)
    return out
