"""Params that must not be written in clear: which names look secret, and masking them.

A param is secret when its name looks like one (password, token, api_key, …: see
`looks_secret`) or when the inventory lists it in `mhtest_secrets` for its host or group.
Its value reaches the test as usual; every file mhtest writes (spec.json in the results,
on every host) holds MASK instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "********"
#: A name holding one of these words is secret (db_password, github_token, …).
_WORDS = {"password", "passwd", "passphrase", "secret", "token", "credential", "credentials"}
#: …or ending with one of these (db_pass, admin_pw, sim_pin).
_LAST_WORDS = {"pass", "pw", "pwd", "pin", "apikey", "privatekey", "accesskey"}
#: …or ending with "key" after one of these (api_key, private_key, secret_key).
_KEY_KINDS = {"api", "private", "access", "secret", "signing", "encryption"}


def looks_secret(name: str) -> bool:
    """True for a param name that says it holds a secret: db_password, api_key, TOKEN, …"""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name))  # camelCase → camel_case
    words = [w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w]
    if not words:
        return False
    if _WORDS & set(words) or words[-1] in _LAST_WORDS:
        return True
    return len(words) > 1 and words[-1] == "key" and words[-2] in _KEY_KINDS


def secret_names(params: dict[str, Any], marked: Iterable[str] = ()) -> set[str]:
    """The names in `params` to mask: those that look secret and those `marked` so."""
    marked = set(marked)
    return {name for name in params if name in marked or looks_secret(name)}


def masked(params: dict[str, Any], marked: Iterable[str] = ()) -> dict[str, Any]:
    """A copy of `params` with every secret value replaced by MASK."""
    names = secret_names(params, marked)
    return {k: (MASK if k in names else v) for k, v in params.items()}


def masked_variant(variant: dict[str, Any] | None, marked: Iterable[str] = ()) -> Any:
    """A copy of a variant (mhtest.variants' dump) with secret values masked; None if it
    holds none (or is None)."""
    marked = set(marked)
    leaves = (variant or {}).get("variant") or []
    if not any(k in marked or looks_secret(k) for _, items in leaves for _, k, _ in items):
        return None
    hidden = [
        [path, [[o, k, MASK if k in marked or looks_secret(k) else v] for o, k, v in items]]
        for path, items in leaves
    ]
    return {**(variant or {}), "variant": hidden}
