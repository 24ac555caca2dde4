"""InstallableObject: software fetched once with get() and installed on many hosts.

`get(location)` takes what Autoserv's did: a local file or directory (used where it is), an
http(s) or ftp URL (downloaded here once), a file-like object (its content saved here), or,
when the argument is none of those, the content itself. A string that looks like a path
(``/x``, ``./x``, ``~/x``) but names nothing is an error rather than content: a typo should
not become a package. Downloads and saved content live in a private temporary directory,
removed by close() (or when the object is garbage collected).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import weakref
from typing import Any

log = logging.getLogger(__name__)

URL_RE = re.compile(r"^(https?|ftp)://", re.IGNORECASE)
DOWNLOAD_TIMEOUT = 60.0
CHUNK = 1 << 20


class InstallError(Exception):
    """Fetching or installing an InstallableObject failed; the message names what and where."""


def _looks_like_path(text: str) -> bool:
    return "\n" not in text and text.strip().startswith(("/", "./", "../", "~"))


class InstallableObject:
    """Something to install on hosts: `get()` its source once, then `install(host)`."""

    def __init__(self) -> None:
        #: Where the source is on this machine (a file or a directory), once get() ran.
        self.source_material: str | None = None
        self._tmp: str | None = None
        self._finalizer: Any = None

    def _tmpdir(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix=f"mhtest-{type(self).__name__.lower()}-")
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._tmp, True)
        return self._tmp

    def close(self) -> None:
        """Remove what get() downloaded or saved here."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
            self._tmp = None

    def get(self, location: Any) -> None:
        """Fetch the source material (see the module docstring) and keep it here."""
        self.source_material = self._fetch(location)
        log.info("%s: source material %s", type(self).__name__, self.source_material)

    def install(self, host: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def _fetch(self, location: Any) -> str:
        if hasattr(location, "read"):
            name = os.path.basename(str(getattr(location, "name", "") or "")) or "content"
            return self._save(location.read(), name)
        if isinstance(location, (bytes, bytearray)):
            return self._save(bytes(location), "content")
        if isinstance(location, os.PathLike):
            location = os.fspath(location)
        if not isinstance(location, str):
            raise InstallError(
                f"cannot get {location!r}: give a path, a URL, a file object or the content"
            )
        if URL_RE.match(location):
            return self._download(location)
        path = os.path.expanduser(location)
        if "\n" not in location and os.path.exists(path):
            return os.path.abspath(path)
        if _looks_like_path(location):
            raise InstallError(f"{location}: no such file or directory")
        return self._save(location.encode(), "content")

    def _save(self, data: str | bytes, name: str) -> str:
        path = os.path.join(self._tmpdir(), name)
        with open(path, "wb") as out:
            out.write(data.encode() if isinstance(data, str) else data)
        return path

    def _download(self, url: str) -> str:
        name = os.path.basename(urllib.parse.urlparse(url).path) or "download"
        path = os.path.join(self._tmpdir(), name)
        try:
            with (
                urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as answer,
                open(path, "wb") as out,
            ):
                shutil.copyfileobj(answer, out, CHUNK)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise InstallError(f"cannot download {url}: {reason}") from None
        return path
