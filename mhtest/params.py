"""Test parameters: YAML files, `-p key=value`, and per-host or per-worker overlays."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

_MISSING = object()


class ParamsError(ValueError):
    """A parameter source is malformed; the message names the file or the argument."""


class Params(Mapping[str, Any]):
    """A test's parameters, read the Avocado way: `params.get(key, path=None, default=None)`,
    `params.iteritems()`, `params.objects(key)`.

    A `path` like "/run/net/*" looks the key up in the nested mapping `net` first, then at
    the top level. A non-string second argument is taken as the default
    (`params.get("size", 5)`), where Avocado would fail.
    """

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data = dict(data or {})

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
        return self._data.get(key, default)

    def iteritems(self) -> Iterator[tuple[str, str, Any]]:
        """(path, key, value) of every parameter, as Avocado's; all sit at '/' here."""
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

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)

    def __repr__(self) -> str:
        return f"Params({self._data!r})"


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
