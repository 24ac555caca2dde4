"""Test assets: files a test fetches once (by URL or by name) and finds in a cache after.

What Test.fetch_asset() does, as Avocado's does it, in a cache laid out as Avocado's
(`by_name/NAME` for assets known by name, `by_location/SHA1-OF-BASE-URL/NAME` for the
others, `NAME-CHECKSUM` files of "algorithm hash" lines beside them), so one cache serves
both. A download goes to a temporary file next to its place and is moved there only once
its hash matches: a cache never holds a bad copy. A local file (file://, /path, ./path)
is linked into the cache rather than copied, as Avocado does.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import urlparse

LOG = logging.getLogger(__name__)
#: Avocado's default hash algorithm for assets.
DEFAULT_ALGORITHM = "sha1"
#: Seconds a download may stall before it fails.
DOWNLOAD_TIMEOUT = 300.0
#: Where assets are cached unless MHTEST_CACHE_DIRS (os.pathsep-separated) says otherwise.
DEFAULT_CACHE_DIR = "~/mhtest/data/cache"
ENV_CACHE_DIRS = "MHTEST_CACHE_DIRS"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def cache_dirs() -> list[str]:
    """The asset cache directories, in the order they are searched (the first writable
    one receives new assets)."""
    value = os.environ.get(ENV_CACHE_DIRS)
    dirs = [d for d in value.split(os.pathsep) if d] if value else [DEFAULT_CACHE_DIR]
    return [os.path.expanduser(d) for d in dirs]


def time_to_seconds(value: Any) -> float | None:
    """An `expire` value in seconds: a number, or text such as '30', '10m', '2h', '1d'."""
    if value is None:
        return None
    text = str(value).strip()
    multiplier = _UNITS.get(text[-1:].lower(), 1)
    number = text[:-1] if text[-1:].lower() in _UNITS else text
    try:
        return float(number) * multiplier
    except ValueError:
        raise ValueError(f"invalid expire time {value!r}: use seconds or 10m, 2h, 1d") from None


def file_hash(path: str, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Asset:
    """One asset: its name, the hash it must have, and where it can be fetched from."""

    name: str
    asset_hash: str | None = None
    algorithm: str | None = None
    locations: list[str] = field(default_factory=list)
    cache_dirs: list[str] = field(default_factory=cache_dirs)
    expire: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.locations, str):
            self.locations = [self.locations]
        self.locations = list(self.locations or [])
        self.algorithm = self.algorithm or DEFAULT_ALGORITHM
        parsed = urlparse(self.name)
        self._scheme = parsed.scheme
        self.basename = os.path.basename(parsed.path) if parsed.scheme else self.name

    @property
    def urls(self) -> list[str]:
        """Where to fetch it from, in order: the name when it is a URL, then the locations."""
        return ([self.name] if self._scheme else []) + self.locations

    @property
    def relative_path(self) -> str:
        """Its place inside a cache directory (Avocado's layout)."""
        if not self._scheme and (self.asset_hash or len(self.locations) > 1):
            return os.path.join("by_name", self.basename)
        if self.locations:
            first = self.locations[0]
            base = (
                os.path.dirname(first) if self.basename in first or first.endswith("/") else first
            )
        else:
            parsed = urlparse(self.name)
            base = (
                f"{parsed.scheme}://{parsed.netloc}{parsed.path}"
                if parsed.query
                else os.path.dirname(parsed.geturl())
            )
        digest = hashlib.new(DEFAULT_ALGORITHM, base.encode("utf-8")).hexdigest()
        return os.path.join("by_location", digest, self.basename)

    def find(self) -> str:
        """The cached copy (unexpired, with the right hash), or OSError."""
        if self.name and os.path.isfile(self.name):
            return self.name
        for directory in self.cache_dirs:
            path = os.path.join(directory, self.relative_path)
            if os.path.isfile(path) and self._usable(path):
                return path
        raise OSError(f"asset {self.name} is not in the cache ({', '.join(self.cache_dirs)})")

    def fetch(self, timeout: float = DOWNLOAD_TIMEOUT) -> str:
        """The cached copy, fetched from the first URL that gives the right file if needed."""
        try:
            return self.find()
        except OSError:
            LOG.info("asset %s is not in the cache: fetching it", self.name)
        if not self.urls:
            raise OSError(f"asset {self.name} is not in the cache and has no location to fetch")
        target = os.path.join(writable_cache_dir(self.cache_dirs), self.relative_path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        problems = []
        for url in self.urls:
            try:
                self._fetch_one(url, target, timeout)
            except (OSError, ValueError) as exc:
                LOG.warning("asset %s from %s: %s", self.basename, url, exc)
                problems.append(f"{url}: {exc}")
                continue
            LOG.info("asset %s fetched from %s into %s", self.basename, url, target)
            return target
        raise OSError(f"Failed to fetch {self.basename} ({'; '.join(problems)}).")  # Avocado's

    def _usable(self, path: str) -> bool:
        if self.expire is not None and time.time() > os.lstat(path).st_ctime + self.expire:
            return False
        if self.asset_hash is None:
            return True
        return self._known_hash(path) == self.asset_hash

    def _known_hash(self, path: str) -> str:
        """The asset's hash: from its CHECKSUM file, else computed and recorded there."""
        assert self.algorithm is not None
        checksum = f"{path}-CHECKSUM"
        try:
            with open(checksum, encoding="utf-8") as fh:
                for line in fh:
                    parts = line.split()
                    if len(parts) == 2 and parts[0] == self.algorithm:
                        return parts[1]
        except FileNotFoundError:
            pass
        value = file_hash(path, self.algorithm)
        with open(checksum, "a", encoding="utf-8") as fh:
            fh.write(f"{self.algorithm} {value}\n")
        return value

    def _fetch_one(self, url: str, target: str, timeout: float) -> None:
        parsed = urlparse(url)
        if parsed.scheme == "file" or (not parsed.scheme and url.startswith(("/", "./"))):
            self._link_local(parsed.path if parsed.scheme else url, target)
        elif parsed.scheme in ("http", "https", "ftp"):
            self._download(url, target, timeout)
        else:
            raise ValueError(f"unsupported protocol {parsed.scheme or url!r}")

    def _link_local(self, source: str, target: str) -> None:
        if os.path.isdir(source):
            source = os.path.join(source, self.basename)
        if not os.path.isfile(source):
            raise OSError(f"no such file {source}")
        self._check(source)
        _remove(target, f"{target}-CHECKSUM")
        os.symlink(os.path.abspath(source), target)

    def _download(self, url: str, target: str, timeout: float) -> None:
        import urllib.request

        fd, partial = tempfile.mkstemp(prefix=f".{self.basename}.", dir=os.path.dirname(target))
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
            self._check(partial)
            _remove(f"{target}-CHECKSUM")
            os.replace(partial, target)
        finally:
            _remove(partial)

    def _check(self, path: str) -> None:
        if self.asset_hash is None:
            return
        assert self.algorithm is not None
        found = file_hash(path, self.algorithm)
        if found != self.asset_hash:
            raise OSError(f"{self.algorithm} hash mismatch: {found}, expected {self.asset_hash}")


def writable_cache_dir(directories: Iterable[str]) -> str:
    """The first cache directory that is (or can be made) writable, or OSError."""
    for directory in directories:
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError:
            continue
        if os.access(directory, os.W_OK | os.X_OK):
            return directory
    raise OSError(f"no writable asset cache directory among {', '.join(directories)}")


def find_by_name(
    name: str, directories: list[str], expire: float | None, asset_hash: str | None
) -> str:
    """An asset known by name only (`by_name/NAME` in a cache directory), or OSError."""
    for directory in directories:
        asset = Asset(name, asset_hash, cache_dirs=[directory], expire=expire)
        path = os.path.join(directory, "by_name", name)
        if os.path.isfile(path) and asset._usable(path):
            return path
    raise OSError(f"File {name} not found in the cache.")  # Avocado's words


def _remove(*paths: str) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
