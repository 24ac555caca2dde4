"""InstallableObject.get(): a file, a directory, a URL (a real local HTTP server), a file
object, the content itself; and the mistakes it refuses."""

from __future__ import annotations

import functools
import http.server
import io
import os
import threading
from pathlib import Path

import pytest

from mhtest.autoserv.installable import InstallableObject, InstallError


@pytest.fixture
def http_dir(tmp_path: Path):
    """A directory served over HTTP on 127.0.0.1: (directory, base URL)."""
    served = tmp_path / "www"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_local_file_and_directory_are_used_where_they_are(tmp_path: Path) -> None:
    package = tmp_path / "pkg.deb"
    package.write_bytes(b"data")
    thing = InstallableObject()
    thing.get(str(package))
    assert thing.source_material == str(package)
    thing.get(tmp_path)  # a PathLike, a directory
    assert thing.source_material == str(tmp_path)


def test_url_is_downloaded_once_here(http_dir) -> None:
    served, base = http_dir
    (served / "linux.deb").write_bytes(b"\x00kernel" * 1000)
    thing = InstallableObject()
    thing.get(f"{base}/linux.deb")
    path = Path(thing.source_material)
    assert path.name == "linux.deb" and path.read_bytes() == b"\x00kernel" * 1000
    thing.close()
    assert not path.exists()


def test_missing_url_is_one_line_naming_it(http_dir) -> None:
    _, base = http_dir
    with pytest.raises(InstallError) as err:
        InstallableObject().get(f"{base}/nothing.deb")
    assert f"{base}/nothing.deb" in str(err.value) and "\n" not in str(err.value)


def test_file_object_and_content(tmp_path: Path) -> None:
    thing = InstallableObject()
    thing.get(io.BytesIO(b"from a stream"))
    assert Path(thing.source_material).read_bytes() == b"from a stream"
    source = tmp_path / "named.txt"
    source.write_text("named")
    with open(source, "rb") as stream:
        thing.get(stream)
    assert Path(thing.source_material).name == "named.txt"
    thing.get("echo hello\nexit 0\n")  # not a path, not a URL: the content itself
    assert Path(thing.source_material).read_text() == "echo hello\nexit 0\n"
    thing.get(b"\x7fELF")
    assert Path(thing.source_material).read_bytes() == b"\x7fELF"
    tmp = os.path.dirname(thing.source_material)
    del thing  # its temporary directory goes with it
    assert not os.path.exists(tmp)


def test_a_path_that_names_nothing_is_an_error_not_content() -> None:
    with pytest.raises(InstallError, match="/var/local/no-such-kernel.deb: no such file"):
        InstallableObject().get("/var/local/no-such-kernel.deb")
    with pytest.raises(InstallError, match="cannot get 42"):
        InstallableObject().get(42)
