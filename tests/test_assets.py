"""Test.fetch_asset() and mhtest.assets, offline: a file:// location and a loopback HTTP
server started here (it counts the requests, so the cache shows)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

import mhtest
from mhtest import assets

PAYLOAD = b"an image, say\n"
SHA1 = hashlib.sha1(PAYLOAD).hexdigest()


class Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "served"
    root.mkdir()
    (root / "image.bin").write_bytes(PAYLOAD)
    (root / "other.bin").write_bytes(b"not the image\n")
    state = Server(root)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            state.requests.append(self.path)
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Handler, directory=str(root))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield state
        finally:
            httpd.shutdown()
            thread.join(10)


@pytest.fixture
def test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> mhtest.Test:
    monkeypatch.setenv(assets.ENV_CACHE_DIRS, f"{tmp_path / 'ro-cache'}:{tmp_path / 'cache'}")
    (tmp_path / "ro-cache").mkdir()
    (tmp_path / "ro-cache").chmod(0o555)
    return mhtest.Test(logdir=str(tmp_path / "logdir"))


def test_cache_dirs_come_from_the_environment(test: mhtest.Test, tmp_path: Path) -> None:
    assert test.cache_dirs == [str(tmp_path / "ro-cache"), str(tmp_path / "cache")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_first_writable_cache_dir_receives(test: mhtest.Test, server: Server, tmp_path: Path):
    path = test.fetch_asset(server.url("image.bin"), asset_hash=SHA1)
    assert path.startswith(str(tmp_path / "cache"))


def test_http_download_is_checked_and_cached(test: mhtest.Test, server: Server) -> None:
    path = test.fetch_asset(server.url("image.bin"), asset_hash=SHA1)
    assert Path(path).read_bytes() == PAYLOAD
    assert "by_location" in path and path.endswith("image.bin")
    assert test.fetch_asset(server.url("image.bin"), asset_hash=SHA1) == path
    assert test.fetch_asset(server.url("image.bin"), find_only=True) == path
    assert server.requests == ["/image.bin"]  # the cache answered the others
    assert Path(f"{path}-CHECKSUM").read_text() == f"sha1 {SHA1}\n"


def test_a_wrong_hash_never_reaches_the_cache(test: mhtest.Test, server: Server) -> None:
    with pytest.raises(OSError, match=r"Failed to fetch other.bin .*sha1 hash mismatch"):
        test.fetch_asset(server.url("other.bin"), asset_hash=SHA1)
    with pytest.raises(OSError, match="is not in the cache"):
        test.fetch_asset(server.url("other.bin"), find_only=True)
    leftovers = [p for p in Path(test.cache_dirs[1]).rglob("*") if p.is_file()]
    assert leftovers == []


def test_locations_are_tried_in_order(test: mhtest.Test, server: Server) -> None:
    wrong = server.url("other.bin")  # serves other bytes under another name
    missing = server.url("gone/image.bin")
    path = test.fetch_asset(
        "image.bin", asset_hash=SHA1, locations=[missing, wrong, server.url("image.bin")]
    )
    assert Path(path).read_bytes() == PAYLOAD and "by_name" in path
    # Known by name (and hash) from now on, no location needed.
    assert test.fetch_asset("image.bin", asset_hash=SHA1) == path
    assert test.fetch_asset("image.bin") == path


def test_file_location_is_linked_and_checked(test: mhtest.Test, tmp_path: Path) -> None:
    local = tmp_path / "local" / "image.bin"
    local.parent.mkdir()
    local.write_bytes(PAYLOAD)
    path = test.fetch_asset(f"file://{local}", asset_hash=SHA1)
    assert os.path.realpath(path) == str(local)
    with pytest.raises(OSError, match="hash mismatch"):
        test.fetch_asset(f"file://{local}", asset_hash="0" * 40, find_only=False)
    directory = test.fetch_asset("image.bin", locations=[f"file://{local.parent}/"])
    assert Path(directory).read_bytes() == PAYLOAD


def test_expired_assets_are_fetched_again(test: mhtest.Test, server: Server) -> None:
    url = server.url("image.bin")
    path = test.fetch_asset(url)
    assert test.fetch_asset(url, expire="1h") == path  # expire counts from its ctime
    assert len(server.requests) == 1
    time.sleep(1.1)
    assert test.fetch_asset(url, expire=1) == path
    assert len(server.requests) == 2


def test_missing_asset_errors_or_cancels(test: mhtest.Test) -> None:
    with pytest.raises(OSError, match=r"^File nothing.bin not found in the cache\.$"):
        test.fetch_asset("nothing.bin")
    with pytest.raises(mhtest.TestCancel, match="Missing asset nothing.bin"):
        test.fetch_asset("nothing.bin", cancel_on_missing=True)
    with pytest.raises(OSError, match="unsupported protocol 'gopher'"):
        test.fetch_asset("gopher://h/x.bin")


@pytest.mark.parametrize(
    "value, seconds",
    [(None, None), (30, 30), ("30", 30), ("10m", 600), ("2h", 7200), ("1d", 86400)],
)
def test_time_to_seconds(value, seconds) -> None:
    assert assets.time_to_seconds(value) == seconds


def test_time_to_seconds_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="invalid expire time 'soon'"):
        assets.time_to_seconds("soon")
